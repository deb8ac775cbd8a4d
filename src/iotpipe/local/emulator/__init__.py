"""The AWS emulator of ``iotpipe local``: moto's WSGI application served by waitress (:mod:`.server`), the clients
pointed at it (:mod:`.clients`) and the versioned patches that make moto behave as AWS does for our template
(:mod:`.moto_compat`). This room imports moto, botocore and boto3, and from iotpipe only ``errors``, ``aws`` and
``naming``; the other rooms reach the emulator over HTTP or through :mod:`.clients`.
"""
