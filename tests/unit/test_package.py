"""Packaging the processor: a deterministic, content-addressed zip (the default) or the inline source; the template
fits CloudFormation's TemplateBody limit with the zip; `iotpipe local` reads the zip from the emulator's S3."""

from __future__ import annotations

import hashlib
import io
import zipfile
from typing import Any

import pytest

from iotpipe.config import ConfigError, load_config
from iotpipe.deploy.plan import TEMPLATE_BODY_LIMIT
from iotpipe.errors import LocalError
from iotpipe.local.functions.spec import function_from_stack
from iotpipe.local.stack import DeployedStack
from iotpipe.package import (
    ARTEFACT_BUCKET_PATTERN,
    artefact_bucket_name,
    artefacts,
    deterministic_zip,
    handler_source,
    processor_artefact,
    processor_code,
)
from iotpipe.render import render_template

# The sources as the installed package ships them (iotpipe.handlers), which is what the template carries.
SOURCES = {runtime: handler_source(runtime) for runtime in ("python3.13", "nodejs22.x")}


@pytest.mark.parametrize(("runtime", "member"), [("python3.13", "index.py"), ("nodejs22.x", "index.js")])
def test_the_zip_holds_the_processor_under_its_handler_module(runtime: str, member: str) -> None:
    artefact = processor_artefact(runtime)
    with zipfile.ZipFile(io.BytesIO(artefact.body)) as archive:
        assert archive.namelist() == [member]
        info = archive.getinfo(member)
        assert archive.read(member).decode("utf-8") == SOURCES[runtime]
    assert info.date_time == (1980, 1, 1, 0, 0, 0) and (info.external_attr >> 16) & 0o777 == 0o644


def test_same_code_same_bytes_same_key_and_the_key_is_the_zips_hash() -> None:
    first, second = processor_artefact("python3.13"), processor_artefact("python3.14")
    assert first.body == second.body  # one source serves every python runtime
    assert first.key == f"processor/{hashlib.sha256(first.body).hexdigest()}.zip" == second.key
    assert processor_artefact("nodejs24.x").key != first.key


def test_a_code_change_changes_the_key_and_file_order_does_not() -> None:
    base = deterministic_zip({"index.py": b"x = 1\n", "util.py": b"y = 2\n"})
    assert deterministic_zip({"util.py": b"y = 2\n", "index.py": b"x = 1\n"}) == base
    assert deterministic_zip({"index.py": b"x = 2\n", "util.py": b"y = 2\n"}) != base


def test_zip_packaging_names_the_artefact_in_the_accounts_bucket() -> None:
    cfg = load_config(None, "dev")
    assert cfg.processor.packaging == "zip"
    code = processor_code(cfg.processor).to_dict()
    assert code == {"S3Bucket": {"Fn::Sub": ARTEFACT_BUCKET_PATTERN}, "S3Key": processor_artefact("python3.13").key}
    assert artefacts(cfg.processor) == (processor_artefact("python3.13"),)
    assert artefact_bucket_name("123456789012", "eu-west-1") == "iotpipe-artefacts-123456789012-eu-west-1"


def test_inline_packaging_stays_available() -> None:
    cfg = load_config(None, "dev", {"processor.packaging": "inline"})
    assert processor_code(cfg.processor).to_dict() == {
        "ZipFile": SOURCES["python3.13"]}
    assert artefacts(cfg.processor) == ()


def test_packaging_is_validated_like_every_option() -> None:
    with pytest.raises(ConfigError, match=r"processor\.packaging"):
        load_config(None, "dev", {"processor.packaging": "s3"})


@pytest.mark.parametrize("runtime", ["python3.13", "nodejs22.x"])
def test_with_the_zip_the_template_fits_the_template_body_limit_and_inline_does_not(runtime: str) -> None:
    zipped = render_template(load_config(None, "dev", {"processor.runtime": runtime}))
    inline = render_template(load_config(None, "dev", {"processor.runtime": runtime, "processor.packaging": "inline"}))
    assert len(zipped.encode("utf-8")) <= TEMPLATE_BODY_LIMIT < len(inline.encode("utf-8"))


# ---------------------------------------------------------------- iotpipe local reads the zip

def deployed(code: dict[str, Any]) -> DeployedStack:
    template = {"Resources": {"Fn": {"Type": "AWS::Lambda::Function", "Properties": {
        "Runtime": "python3.13", "Handler": "index.handler", "Code": code, "Role": "arn:role"}}}}
    return DeployedStack(name="s", region="us-east-1", account_id="123456789012", template=template,
                         parameters={}, physical_ids={"Fn": "fn"}, last_updated="t")


def test_local_reads_the_handler_module_from_the_zip_in_s3() -> None:
    artefact = processor_artefact("python3.13")
    reads: list[tuple[str, str]] = []

    def read_object(bucket: str, key: str) -> bytes:
        reads.append((bucket, key))
        return artefact.body

    code = {"S3Bucket": {"Fn::Sub": ARTEFACT_BUCKET_PATTERN}, "S3Key": artefact.key}
    spec = function_from_stack(deployed(code), "Fn", read_object)
    assert spec.code == SOURCES["python3.13"]
    assert reads == [("iotpipe-artefacts-123456789012-us-east-1", artefact.key)]


def test_local_says_what_is_wrong_with_code_it_cannot_read() -> None:
    code = {"S3Bucket": "b", "S3Key": "k.zip"}
    with pytest.raises(LocalError, match=r"cannot read its code index.py from s3://b/k.zip .*holds util.py"):
        function_from_stack(deployed(code), "Fn", lambda _bucket, _key: deterministic_zip({"util.py": b""}))
    with pytest.raises(LocalError, match=r"Code\.ZipFile or Code\.S3Bucket/S3Key; this template gives ImageUri"):
        function_from_stack(deployed({"ImageUri": "x"}), "Fn", lambda _bucket, _key: b"")
