"""The raw archive as the processor writes it, written with the processor's own code.

``iotpipe sql`` reads the archive; this module writes archive (and quarantine) objects exactly as the shipped
Python processor does (``iotpipe.handlers``: its ``Record``, ``archive_lines``, ``batch_suffix``, ``jsonl_gzip``,
``interpret`` and ``quarantine_line``), so a known archive can be put in a bucket (moto, ``iotpipe local``, a test
bucket) without running the pipeline: to try ``iotpipe sql``, to test queries against known answers, to benchmark.
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

from iotpipe import contract

_LOADS = itertools.count()


def load_processor(path: Path | None = None) -> ModuleType:
    """A fresh copy of the Python processor module (its own module state): the one shipped in the package, or
    the file at ``path`` (e.g. a checkout's ``handler/python/index.py``)."""
    if path is None:
        with resources.as_file(resources.files("iotpipe.handlers").joinpath("python/index.py")) as shipped:
            return load_processor(Path(shipped))
    name = f"iotpipe_processor_index_{next(_LOADS)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the processor from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def record(processor: ModuleType, shard_id: str, sequence: int | str, arrived_at_ms: int, data: bytes,
           partition_key: str) -> Any:
    """A processor ``Record`` as it decodes one from a Kinesis event record (``data`` is the record's bytes)."""
    return processor.Record(shard_id, str(sequence), partition_key, arrived_at_ms, data,
                            base64.b64encode(data).decode())


def quarantine_lines(processor: ModuleType, records: Iterable[Any], thresholds_json: str) -> list[dict[str, Any]]:
    """The quarantine lines the processor writes for ``records`` under the given thresholds (its ``interpret``
    and ``quarantine_line``): one per record it refuses in whole or in part."""
    settings = processor.Settings.from_env({"DYNAMODB_TABLE": "archive", "S3_BUCKET": "archive",
                                            "THRESHOLDS": thresholds_json})
    found = (processor.interpret(r, settings) for r in records)
    return [processor.quarantine_line(i) for i in found if i.rejections]


def batch_objects(processor: ModuleType, records: Sequence[Any],
                  quarantine: Iterable[Mapping[str, Any]] = ()) -> dict[str, bytes]:
    """The objects the processor writes for one batch: ``raw/<partitions>/<shard>/<first>-<last>.jsonl.gz``, and
    the quarantine object under the same suffix when ``quarantine`` has lines. Key -> gzip JSON lines."""
    suffix = processor.batch_suffix(records)
    raw_prefix, quarantine_prefix = contract.ARCHIVE_PREFIXES
    objects = {raw_prefix + suffix: processor.jsonl_gzip(processor.archive_lines(records))}
    lines = list(quarantine)
    if lines:
        objects[quarantine_prefix + suffix] = processor.jsonl_gzip(lines)
    return objects


def put_objects(s3: Any, bucket: str, objects: Mapping[str, bytes]) -> None:
    """PUT each object into ``bucket`` (one per batch, as the processor does)."""
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
