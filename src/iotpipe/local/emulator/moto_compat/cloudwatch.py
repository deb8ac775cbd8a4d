"""moto's CloudWatch metrics."""

from __future__ import annotations

from typing import Any

from iotpipe.local.emulator.moto_compat.base import Patch, Recorder


def _exact_dimensions(patches: Recorder) -> None:
    """moto's GetMetricStatistics matches every metric whose dimensions include those asked for; CloudWatch
    matches the exact set. The processor publishes each count under ``Environment`` and under ``Environment,
    SensorType``, so asking for ``Environment`` counted every reading twice (``iotpipe doctor --env local``)."""
    from moto.cloudwatch.models import CloudWatchBackend

    original = CloudWatchBackend.get_metric_statistics

    class _Exact:
        """The backend as ``get_metric_statistics`` reads it, holding only the metrics of one dimension set."""

        def __init__(self, backend: Any, wanted: set[tuple[str, str | None]]) -> None:
            self._backend = backend
            self._wanted = wanted

        def get_all_metrics(self) -> list[Any]:
            return [datum for datum in self._backend.get_all_metrics()
                    if {(dimension.name, dimension.value) for dimension in datum.dimensions} == self._wanted]

    def get_metric_statistics(self: Any, namespace: str, metric_name: str, start_time: Any, end_time: Any,
                              period: int, stats: list[str], dimensions: list[dict[str, str]],
                              unit: str | None = None) -> Any:
        wanted = {(item["Name"], item.get("Value")) for item in dimensions or []}
        return original(_Exact(self, wanted), namespace, metric_name, start_time, end_time,  # type: ignore[arg-type]
                        period, stats, dimensions, unit)

    patches.setattr(CloudWatchBackend, "get_metric_statistics", get_metric_statistics)


PATCHES: tuple[Patch, ...] = (
    Patch("cloudwatch.exact_dimensions", "parity",
          "GetMetricStatistics matches the exact dimension set",
          _exact_dimensions,
          upstream="https://github.com/getmoto/moto/issues/2662 (related)"),
)
