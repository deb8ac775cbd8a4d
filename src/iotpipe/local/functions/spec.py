"""What ``iotpipe local`` runs of a deployed ``AWS::Lambda::Function``: its code (the template's ``Code.ZipFile``,
or its module read from the zip at ``Code.S3Bucket`` / ``S3Key`` in the emulator's S3, where ``iotpipe deploy``
uploaded it), runtime, handler, environment, timeout, memory and log group."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iotpipe.errors import LocalError
from iotpipe.local.stack import DeployedStack


@dataclass(frozen=True)
class FunctionSpec:
    """What the runner needs of a deployed ``AWS::Lambda::Function``."""

    name: str
    arn: str
    runtime: str
    handler: str
    code: str
    environment: Mapping[str, str]
    timeout_s: int
    memory_mb: int
    log_group: str
    role_arn: str = ""


def function_from_stack(stack: DeployedStack, logical_id: str,
                        read_object: Callable[[str, str], bytes] | None = None) -> FunctionSpec:
    """The function ``logical_id`` of the deployed stack, its code inline or read with ``read_object(bucket,
    key)`` from a zip in S3; LocalError if the code is neither, or cannot be read."""
    properties = stack.properties(logical_id)
    handler = properties.get("Handler", "index.handler")
    source = _function_code(logical_id, properties.get("Code", {}), properties["Runtime"], handler, read_object)
    name = stack.physical_ids[logical_id]
    logging_config = properties.get("LoggingConfig", {})
    return FunctionSpec(
        name=name,
        arn=f"arn:aws:lambda:{stack.region}:{stack.account_id}:function:{name}",
        runtime=properties["Runtime"],
        handler=handler,
        code=source,
        environment={key: str(value) for key, value in
                     properties.get("Environment", {}).get("Variables", {}).items()},
        timeout_s=int(properties.get("Timeout", 3)),
        memory_mb=int(properties.get("MemorySize", 128)),
        log_group=logging_config.get("LogGroup") or f"/aws/lambda/{name}",
        role_arn=str(properties.get("Role", "")),
    )


def _function_code(logical_id: str, code: Mapping[str, Any], runtime: str, handler: str,
                   read_object: Callable[[str, str], bytes] | None) -> str:
    """The handler module's source: ``Code.ZipFile``, or the module file of the zip at S3Bucket/S3Key."""
    from iotpipe.package import read_zip_member

    if "ZipFile" in code:
        return str(code["ZipFile"])
    if "S3Bucket" not in code or "S3Key" not in code or read_object is None:
        raise LocalError(f"function {logical_id}: iotpipe local runs code given as Code.ZipFile or Code.S3Bucket/"
                         f"S3Key; this template gives {', '.join(sorted(code)) or 'no code'}")
    bucket, key = str(code["S3Bucket"]), str(code["S3Key"])
    module = handler.rpartition(".")[0] + (".py" if runtime.startswith("python") else ".js")
    try:
        return read_zip_member(read_object(bucket, key), module)
    except Exception as exc:  # botocore, a bad zip or a missing member: the user needs the same answer
        raise LocalError(f"function {logical_id}: cannot read its code {module} from s3://{bucket}/{key} in the "
                         f"emulator ({exc}); deploy with `iotpipe deploy`, which uploads it") from None


def node_modules_dir() -> Path:
    """Where the Node twin's AWS SDK is installed (``npm install --prefix handler/node``)."""
    import iotpipe.handlers

    return Path(iotpipe.handlers.__path__[0]) / "node" / "node_modules"
