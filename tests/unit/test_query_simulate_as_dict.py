"""Every result type of ``iotpipe.query`` and ``iotpipe.simulate`` has ``as_dict()``: JSON as is, every field.

(deploy, devices and doctor results: test_results_as_dict.py.)
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pkgutil
from pathlib import Path
from typing import Any

import pytest

import iotpipe.query
import iotpipe.simulate
from iotpipe.config import Threshold
from iotpipe.query import LogLine, MetricSeries, MetricsReport, Reading
from iotpipe.query.fleet import DeviceSummary, SensorRange, SensorSeries
from iotpipe.simulate import BrokerTarget, DeviceCredentials, SimMessage, SimPlan, SimSummary
from iotpipe.simulate.claim import ClaimSettings, Provisioned

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z

CASES: list[tuple[Any, dict[str, Any]]] = [
    (Reading("press-1", T0, "temperature", 85.5, "celsius", "ANOMALY", True, "above max 80"),
     {"deviceId": "press-1", "time": "2026-01-01T00:00:00.000Z", "timestamp": T0, "sensorType": "temperature",
      "value": 85.5, "unit": "celsius", "status": "ANOMALY", "anomaly": True, "reason": "above max 80",
      "rule": "", "score": None, "expectedLow": None, "expectedHigh": None}),
    (Reading("press-1", T0, "temperature", 35.0, "celsius", "ANOMALY", True, "expected 19.5 to 20.5", "model",
             0.97, 19.5, 20.5),
     {"deviceId": "press-1", "time": "2026-01-01T00:00:00.000Z", "timestamp": T0, "sensorType": "temperature",
      "value": 35.0, "unit": "celsius", "status": "ANOMALY", "anomaly": True, "reason": "expected 19.5 to 20.5",
      "rule": "model", "score": 0.97, "expectedLow": 19.5, "expectedHigh": 20.5}),
    (LogLine(T0, "2026/01/01/[$LATEST]abc", "WARN", "record quarantined", (("reason", "bad json"),), "e-1"),
     {"time": "2026-01-01T00:00:00.000Z", "timestamp": T0, "stream": "2026/01/01/[$LATEST]abc", "level": "WARN",
      "message": "record quarantined", "fields": {"reason": "bad json"}, "eventId": "e-1"}),
    (MetricSeries("AnomaliesDetected", (1.0, 0.0, 2.0)),
     {"name": "AnomaliesDetected", "values": [1.0, 0.0, 2.0], "total": 3.0}),
    (MetricsReport("dev", 300, (T0, T0 + 300_000),
                   (MetricSeries("SensorReadingsProcessed", (4.0, 6.0)),
                    MetricSeries("AnomaliesDetected", (0.0, 1.0)))),
     {"environment": "dev", "periodSeconds": 300,
      "periods": [{"start": "2026-01-01T00:00:00.000Z", "SensorReadingsProcessed": 4.0, "AnomaliesDetected": 0.0},
                  {"start": "2026-01-01T00:05:00.000Z", "SensorReadingsProcessed": 6.0, "AnomaliesDetected": 1.0}],
      "totals": {"SensorReadingsProcessed": 10.0, "AnomaliesDetected": 1.0}}),
    (SimMessage(0.5, "sim-001", "sensor/sim-001/data", {"deviceId": "sim-001", "value": 1.5}, 1, 0),
     {"offsetSeconds": 0.5, "deviceId": "sim-001", "topic": "sensor/sim-001/data",
      "payload": {"deviceId": "sim-001", "value": 1.5}, "readings": 1, "anomalies": 0, "faults": []}),
    (SimPlan(("sim-001", "sim-002"), (("temperature", Threshold(10.0, 80.0, "celsius")),
                                      ("vibration", Threshold(None, 5.0, "mm/s"))),
             rate_hz=2.0, count=10, duration_s=None, anomaly_rate=0.1, fmt="multi", seed=7, batch=5,
             failure="drift", failing_devices=("sim-001",), failure_sensor="temperature", healthy_s=20.0),
     {"deviceIds": ["sim-001", "sim-002"],
      "thresholds": {"temperature": {"min": 10.0, "max": 80.0, "unit": "celsius"},
                     "vibration": {"min": None, "max": 5.0, "unit": "mm/s"}},
      "rateHz": 2.0, "count": 10, "durationSeconds": None, "anomalyRate": 0.1, "format": "multi", "seed": 7,
      "batch": 5, "failure": "drift", "failingDevices": ["sim-001"], "failureSensor": "temperature",
      "healthySeconds": 20.0}),
    (SimSummary(sent=9, failed=1, readings=30, anomalies_injected=2, devices=2, elapsed_s=4.5, failed_readings=3,
                start_ms=T0),
     {"sent": 9, "failed": 1, "readings": 30, "anomaliesInjected": 2, "devices": 2, "elapsedSeconds": 4.5,
      "interrupted": False, "failedReadings": 3, "startMs": T0}),
    (BrokerTarget("127.0.0.1", 1883, "iotpipe-run", "secret"),
     {"host": "127.0.0.1", "port": 1883, "username": "iotpipe-run", "passwordSet": True}),
    (DeviceCredentials("press-07", "abc-ats.iot.us-east-1.amazonaws.com", 8883, Path("certs/press-07.cert.pem"),
                       Path("certs/press-07.private.key"), None),
     {"deviceId": "press-07", "endpoint": "abc-ats.iot.us-east-1.amazonaws.com", "port": 8883,
      "certificate": "certs/press-07.cert.pem", "privateKey": "certs/press-07.private.key", "caFile": None,
      "tls": True, "username": None, "passwordSet": False}),
    (ClaimSettings(Path("claim"), "iotpipe-prod-fleet", DeviceCredentials(
        "claim", "127.0.0.1", 1883, Path("claim/claim.cert.pem"), Path("claim/claim.private.key"), None, tls=False)),
     {"directory": "claim", "template": "iotpipe-prod-fleet", "credentials": {
         "deviceId": "claim", "endpoint": "127.0.0.1", "port": 1883, "certificate": "claim/claim.cert.pem",
         "privateKey": "claim/claim.private.key", "caFile": None, "tls": False, "username": None,
         "passwordSet": False}}),
    (DeviceSummary("press-07", True, "active", T0, 60, 1, "online"),
     {"deviceId": "press-07", "registered": True, "certificate": "active", "lastSeen": T0, "silentFor": None,
      "readingsLastHour": 60, "openAnomalies": 1, "state": "online"}),
    (SensorRange((Reading("press-1", T0, "temperature", 20.5, "celsius", "NORMAL", False, ""),), False),
     {"readings": [{"deviceId": "press-1", "time": "2026-01-01T00:00:00.000Z", "timestamp": T0,
                    "sensorType": "temperature", "value": 20.5, "unit": "celsius", "status": "NORMAL",
                    "anomaly": False, "reason": "", "rule": "", "score": None, "expectedLow": None,
                    "expectedHigh": None}], "truncated": False}),
    (SensorSeries((T0, T0 + 1000), (20.5, 21.0), (), True),
     {"times": [T0, T0 + 1000], "values": [20.5, 21.0], "anomalies": [], "truncated": True}),
    (Provisioned("press-0042", "c0ffee", Path("claim/devices/press-0042")),
     {"thingName": "press-0042", "certificateId": "c0ffee", "certDir": "claim/devices/press-0042"}),
]


def _frozen_dataclasses(package: Any) -> set[type]:
    found: set[type] = set()
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        module = importlib.import_module(info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if (value.__module__ == module.__name__ and dataclasses.is_dataclass(value)
                    and value.__dataclass_params__.frozen):  # type: ignore[attr-defined]
                found.add(value)
    return found


def test_every_result_type_is_covered() -> None:
    assert _frozen_dataclasses(iotpipe.query) | _frozen_dataclasses(iotpipe.simulate) == \
        {type(result) for result, _ in CASES}


@pytest.mark.parametrize(("result", "expected"), CASES, ids=[type(result).__name__ for result, _ in CASES])
def test_as_dict_is_json_and_carries_every_field(result: Any, expected: dict[str, Any]) -> None:
    as_dict = result.as_dict()
    assert json.loads(json.dumps(as_dict)) == expected  # plain JSON types only: no default= needed
    # every field of the dataclass shows in the dict (under its camelCase name, or as the rows built from it)
    assert len(dataclasses.fields(result)) <= len(as_dict)
