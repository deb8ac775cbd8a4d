"""Packaging of the processor: a content-addressed zip artefact in the artefacts bucket (the default), or its
one-file source inlined into the template as ``Code.ZipFile``.

Like ``sam package`` / ``aws cloudformation package``, a zip artefact's key is a hash of the zip, and the zip's
bytes depend only on the code, so the same code always gives the same key: a deploy uploads it once, and a
change set shows a code change as a changed ``S3Key``. The template names the bucket through pseudo parameters,
so ``iotpipe render`` needs no AWS access and the template stays under CloudFormation's 51,200-byte
``TemplateBody`` limit (the inline source alone is about 40 KB): ``diff`` and ``status`` can then create their
change sets without writing to S3.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from troposphere import Sub, awslambda

from iotpipe import pretraffic
from iotpipe.config import ProcessorConfig
from iotpipe.errors import ConfigError

# CloudFormation zips an inline ZipFile into a 4 MB package; a one-file handler stays far below.
MAX_INLINE_BYTES = 4 * 1024 * 1024
_SOURCES = {"python": "python/index.py", "nodejs": "node/index.js"}
_MODULE_FILES = {"python": "index.py", "nodejs": "index.js"}
# One artefacts bucket per account and region (Lambda reads code only from a bucket in its own region).
ARTEFACT_BUCKET_PATTERN = "iotpipe-artefacts-${AWS::AccountId}-${AWS::Region}"
PROCESSOR_PREFIX = "processor/"
HOOK_PREFIX = "pretraffic-hook/"
# The earliest time a zip entry can carry: the zip's bytes never depend on when or where it was built.
_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Artefact:
    """A file deploy uploads to the artefacts bucket before the stack needs it; ``key`` is content-addressed."""

    key: str
    body: bytes

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the body (the key's name)."""
        return hashlib.sha256(self.body).hexdigest()


def runtime_family(runtime: str) -> str:
    """``python`` or ``nodejs`` for a Lambda runtime identifier such as ``python3.13``."""
    family = "nodejs" if runtime.startswith("nodejs") else "python" if runtime.startswith("python") else ""
    if not family:
        raise ConfigError(f"processor.runtime: {runtime!r} is neither a python nor a nodejs runtime")
    return family


def handler_path(runtime: str) -> Path:
    """The file the processor source for ``runtime`` is read from (``handler/python/index.py`` in a checkout)."""
    return Path(str(resources.files("iotpipe.handlers").joinpath(_SOURCES[runtime_family(runtime)])))


def handler_source(runtime: str) -> str:
    """The processor source for ``runtime``, read from the installed package (works from a wheel too)."""
    relative = _SOURCES[runtime_family(runtime)]
    path = resources.files("iotpipe.handlers").joinpath(relative)
    if not path.is_file():
        raise ConfigError(f"processor.runtime: no processor source for {runtime} ({relative} is missing "
                          "from the iotpipe package); choose another runtime")
    source = path.read_text(encoding="utf-8")
    if len(source.encode("utf-8")) > MAX_INLINE_BYTES:
        raise ConfigError(f"{relative} is larger than the {MAX_INLINE_BYTES} bytes CloudFormation inlines")
    return source


def inline_code(runtime: str) -> awslambda.Code:
    """``Code`` with the processor source inlined as ``ZipFile``."""
    return awslambda.Code(ZipFile=handler_source(runtime))


def deterministic_zip(files: dict[str, bytes]) -> bytes:
    """A zip of ``files`` whose bytes depend only on their names and contents.

    Entries are sorted, dated 1980-01-01, mode 0644, from a Unix host, and stored uncompressed: deflate output
    may differ between zlib builds (zlib-ng, say), and the key must not change with the machine that built it.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIMESTAMP)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = (0o100644 & 0xFFFF) << 16
            archive.writestr(info, files[name])
    return buffer.getvalue()


def processor_artefact(runtime: str) -> Artefact:
    """The processor for ``runtime`` as a zip (``index.py`` or ``index.js``), keyed ``processor/<sha256>.zip``."""
    family = runtime_family(runtime)
    body = deterministic_zip({_MODULE_FILES[family]: handler_source(runtime).encode("utf-8")})
    return Artefact(key=f"{PROCESSOR_PREFIX}{hashlib.sha256(body).hexdigest()}.zip", body=body)


def processor_code(processor: ProcessorConfig) -> awslambda.Code:
    """The function's ``Code``: the zip artefact in the artefacts bucket, or the inline source."""
    if processor.packaging == "inline":
        return inline_code(processor.runtime)
    artefact = processor_artefact(processor.runtime)
    return awslambda.Code(S3Bucket=Sub(ARTEFACT_BUCKET_PATTERN), S3Key=artefact.key)


def hook_source() -> str:
    """The rollout's pre-traffic hook (:mod:`iotpipe.pretraffic`) with its sample of the shipped vectors."""
    return pretraffic.hook_code(pretraffic.hook_sample(pretraffic.shipped_vectors()))


def hook_artefact() -> Artefact:
    """The pre-traffic hook as a zip (``index.py``), keyed ``pretraffic-hook/<sha256>.zip``."""
    body = deterministic_zip({"index.py": hook_source().encode("utf-8")})
    return Artefact(key=f"{HOOK_PREFIX}{hashlib.sha256(body).hexdigest()}.zip", body=body)


def hook_code(processor: ProcessorConfig) -> awslambda.Code:
    """The pre-traffic hook's ``Code``, packaged as the processor is: a zip artefact (which keeps its 3 KB out of
    the template's 51,200-byte body), or inline."""
    if processor.packaging == "inline":
        return awslambda.Code(ZipFile=hook_source())
    return awslambda.Code(S3Bucket=Sub(ARTEFACT_BUCKET_PATTERN), S3Key=hook_artefact().key)


def artefacts(processor: ProcessorConfig) -> tuple[Artefact, ...]:
    """What deploy must upload before the template for ``processor`` can be deployed (nothing when inline): the
    processor, and the pre-traffic hook when a rollout shifts traffic gradually."""
    if processor.packaging == "inline":
        return ()
    hook = () if processor.rollout == "all-at-once" else (hook_artefact(),)
    return (processor_artefact(processor.runtime), *hook)


def artefact_bucket_name(account_id: str, region: str) -> str:
    """The artefacts bucket of ``account_id`` in ``region`` (``ARTEFACT_BUCKET_PATTERN`` resolved)."""
    return ARTEFACT_BUCKET_PATTERN.replace("${AWS::AccountId}", account_id).replace(
        "${AWS::Region}", region or "us-east-1")


def read_zip_member(body: bytes, name: str) -> str:
    """The text of ``name`` in the zip ``body``; ValueError naming what the zip holds when it is absent."""
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        names = archive.namelist()
        if name not in names:
            raise ValueError(f"the zip holds {', '.join(names) or 'nothing'}, not {name}")
        return archive.read(name).decode("utf-8")
