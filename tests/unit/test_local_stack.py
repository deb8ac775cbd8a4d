"""The deployed template resolved as CloudFormation would, and the local state file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from iotpipe.errors import LocalError
from iotpipe.local import state as local_state
from iotpipe.local.processes import command_line
from iotpipe.local.stack import DeployedStack

TEMPLATE = {
    "Parameters": {"EnvironmentSuffix": {"Type": "String", "Default": "dev"},
                   "AlarmEmail": {"Type": "String", "Default": ""}},
    "Conditions": {"HasAlarmEmail": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}},
    "Resources": {
        "Stream": {"Type": "AWS::Kinesis::Stream"},
        "Queue": {"Type": "AWS::SQS::Queue"},
        "Role": {"Type": "AWS::IAM::Role"},
        "Rule": {"Type": "AWS::IoT::TopicRule", "Properties": {
            "RuleName": {"Fn::Sub": "SensorDataRule_${EnvironmentSuffix}"},
            "TopicRulePayload": {
                "Sql": "SELECT * FROM 'sensor/+/data'",
                "Actions": [{"Kinesis": {"StreamName": {"Ref": "Stream"}, "PartitionKey": "${topic(2)}",
                                         "RoleArn": {"Fn::GetAtt": ["Role", "Arn"]}}}],
                "Note": {"Fn::Sub": ["${Who}-${AWS::Region}-${!literal}", {"Who": {"Ref": "AWS::AccountId"}}]},
                "Mail": {"Fn::If": ["HasAlarmEmail", "yes", "no"]},
                "Queue": {"Fn::GetAtt": "Queue.Arn"},
                "Joined": {"Fn::Join": ["/", [{"Ref": "EnvironmentSuffix"}, "x"]]},
                "Picked": {"Fn::Select": [1, ["a", {"Ref": "EnvironmentSuffix"}]]},
            },
        }},
    },
}


def stack(**parameters: str) -> DeployedStack:
    return DeployedStack(
        name="iotpipe-local", region="us-east-1", account_id="123456789012", template=TEMPLATE,
        parameters={"EnvironmentSuffix": "local", "AlarmEmail": "", **parameters},
        physical_ids={"Stream": "sensor-data-stream-local", "Role": "IoTRuleRole-local",
                      "Queue": "http://127.0.0.1:5000/123456789012/dlq-local"},
        last_updated="t1")


def test_intrinsics_resolve_as_cloudformation_does() -> None:
    properties = stack().properties("Rule")
    payload = properties["TopicRulePayload"]
    assert properties["RuleName"] == "SensorDataRule_local"
    assert payload["Actions"][0]["Kinesis"] == {
        "StreamName": "sensor-data-stream-local", "PartitionKey": "${topic(2)}",
        "RoleArn": "arn:aws:iam::123456789012:role/IoTRuleRole-local"}
    assert payload["Note"] == "123456789012-us-east-1-${literal}"
    assert payload["Mail"] == "no"
    assert stack(AlarmEmail="ops@example.com").properties("Rule")["TopicRulePayload"]["Mail"] == "yes"
    assert payload["Queue"] == "arn:aws:sqs:us-east-1:123456789012:dlq-local"
    assert payload["Joined"] == "local/x"
    assert payload["Picked"] == "local"


def test_unknown_references_are_errors_naming_them() -> None:
    with pytest.raises(LocalError, match="Ref Missing"):
        stack().resolve({"Ref": "Missing"})
    with pytest.raises(LocalError, match=r"Fn::GetAtt Stream\.StreamId"):
        stack().resolve({"Fn::GetAtt": ["Stream", "StreamId"]})
    with pytest.raises(LocalError, match="Fn::Base64 is not resolved"):
        stack().resolve({"Fn::Base64": "x"})


def sample_state(pid: int) -> local_state.LocalState:
    return local_state.LocalState(env="local", stack_name="iotpipe-local", region="us-east-1",
                                  aws_endpoint="http://127.0.0.1:5000", mqtt="mqtt://127.0.0.1:1883",
                                  broker="mosquitto", pid=pid, child_pids=(pid,), started_at="2026-11-30T00:00:00",
                                  ready=True, log_file="local.log", command=command_line(pid))


def test_state_round_trip_and_running_state_ignores_dead_processes(tmp_path: Path) -> None:
    local_state.write_state(sample_state(os.getpid()), tmp_path)
    assert local_state.read_state(tmp_path) == sample_state(os.getpid())
    assert local_state.running_state(tmp_path) == sample_state(os.getpid())
    assert json.loads((tmp_path / "state.json").read_text())["aws_endpoint"] == "http://127.0.0.1:5000"
    dead = 2**22 + 12345  # above the default pid_max: no such process
    local_state.write_state(sample_state(dead), tmp_path)
    assert local_state.running_state(tmp_path) is None
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind


def test_a_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(LocalError, match="not an iotpipe local state file"):
        local_state.read_state(tmp_path)
    assert local_state.running_state(tmp_path) is None


def test_remove_state_keeps_a_file_of_another_process(tmp_path: Path) -> None:
    local_state.write_state(sample_state(os.getpid()), tmp_path)
    local_state.remove_state(tmp_path, pid=os.getpid() + 1)
    assert local_state.read_state(tmp_path) is not None
    local_state.remove_state(tmp_path, pid=os.getpid())
    assert local_state.read_state(tmp_path) is None
