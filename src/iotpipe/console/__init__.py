"""``iotpipe console``: a small local web app over iotpipe's library (fleet, device charts, anomalies, pipeline
health, SQL, live updates). :mod:`~iotpipe.console.data` reads the views, :mod:`~iotpipe.console.app` serves them,
:mod:`~iotpipe.console.downsample` keeps long series small; the page and its vendored uPlot are in ``static/``."""
