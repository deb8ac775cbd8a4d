"""The pure parts of hotswap: what counts as production, what differs besides code, the file watcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from iotpipe import package
from iotpipe.config import build_config
from iotpipe.deploy.client import Stack
from iotpipe.deploy.hotswap import code_changes, non_code_differences, plan_hotswap, production_reason, watch_files
from iotpipe.deploy.plan import DeployRequest
from iotpipe.errors import DeployError
from iotpipe.render import render_template


def template(code: dict[str, Any], batch: int = 100) -> dict[str, Any]:
    return {"Resources": {
        "Fn": {"Type": "AWS::Lambda::Function", "Properties": {"Code": code, "Handler": "index.handler"}},
        "Esm": {"Type": "AWS::Lambda::EventSourceMapping", "Properties": {"BatchSize": batch}}},
        "Outputs": {"A": {"Value": "x"}}}


def test_only_code_changed() -> None:
    old, new = template({"S3Key": "processor/a.zip"}), template({"S3Key": "processor/b.zip"})
    assert non_code_differences(old, new) == ()
    assert code_changes(old, new) == ("Fn",)


def test_inline_code_change_is_code_only() -> None:
    old, new = template({"ZipFile": "print(1)"}), template({"ZipFile": "print(2)"})
    assert non_code_differences(old, new) == () and code_changes(old, new) == ("Fn",)


def test_other_changes_are_named() -> None:
    old = template({"S3Key": "processor/a.zip"})
    new = template({"S3Key": "processor/b.zip"}, batch=50)
    new["Outputs"] = {}
    new["Resources"]["Extra"] = {"Type": "AWS::SNS::Topic"}
    assert non_code_differences(old, new) == ("Esm", "Extra", "the Outputs section")


def test_production_markers() -> None:
    protected = Stack(name="s", stack_id="id", status="UPDATE_COMPLETE", termination_protection=True)
    plain = Stack(name="s", stack_id="id", status="UPDATE_COMPLETE")
    assert production_reason(protected, "dev", False) == "stack s has termination protection"
    assert production_reason(plain, "dev", True) == "env dev sets termination_protection = true"
    assert production_reason(None, "Production", False) == "env Production is named as a production env"
    assert production_reason(plain, "dev", False) is None
    assert production_reason(plain, "produce", False) is None


def test_watch_calls_back_once_per_save_and_is_bounded(tmp_path: Path) -> None:
    source = tmp_path / "index.py"
    source.write_text("v1")
    calls: list[str] = []
    polls = iter(range(100))

    def sleep(_: float) -> None:
        poll = next(polls)
        if poll in (2, 5):
            source.write_text(source.read_text() + "!")
        if poll == 7:  # mid-save: an editor that replaces the file removes it for a moment (no call)
            source.unlink()
        if poll == 8:
            source.write_text("v1!!!")

    seen = watch_files([source], lambda: calls.append(source.read_text()), interval_s=0, max_polls=10,
                       sleep=sleep)
    assert calls == ["v1!", "v1!!", "v1!!!"] and seen == 3


def test_a_rollout_env_is_refused_as_such_not_as_more_than_code(monkeypatch: pytest.MonkeyPatch) -> None:
    # Under processor.rollout the mapping invokes an alias of a published version: a new $LATEST would reach no
    # record, and the version's logical id (a hash of its code) made the refusal list resources the user never
    # changed ("more than the processor's code changed (ProcessorVersion..., ...)").
    cfg = build_config({}, "dev", {"processor.rollout": "canary10-5m", "processor.packaging": "inline"})
    original = package.handler_source
    before = render_template(cfg)
    monkeypatch.setattr(package, "handler_source", lambda runtime: original(runtime) + "\n# edited\n")
    after = render_template(cfg)
    assert before != after

    class Client:
        def get_template(self, _stack_id: str) -> str:
            return before

    stack = Stack(name="iotpipe-dev", stack_id="id", status="UPDATE_COMPLETE")
    with pytest.raises(DeployError) as refused:
        plan_hotswap(Client(), DeployRequest(stack_name="iotpipe-dev", template_body=after), stack)
    message = str(refused.value)
    assert "processor.rollout = canary10-5m" in message and "more than the processor's code" not in message
    assert "run a full `iotpipe deploy --env dev`" in message
