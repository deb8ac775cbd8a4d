"""The detector in the pipeline (docs/contract.md 12, "In the processor"): the THRESHOLDS entries that configure
it, and how a scored reading becomes an anomaly item. handler/vectors/detection.json runs it end to end in both
processors; handler/node/test/detection.test.js checks the same rules in the Node twin."""

from __future__ import annotations

import math

import pytest
from processor_support import load_handler

index = load_handler()
START = 1_767_225_600_000
SETTINGS = index.Settings.from_env({
    "DYNAMODB_TABLE": "t", "S3_BUCKET": "b",
    "THRESHOLDS": '{"temperature":{"min":10,"max":80,"unit":"C","detector":"onset","probation":5},'
                  '"pressure":{"min":30,"max":150,"unit":"psi"}}',
})


def reading(device: str, sensor_type: str, at: int, value: float) -> object:
    record = index.Record("shardId-0", "1", device, START, b"{}", "")
    stamp = index.Stamp(device, START + at * 1000, START, None, None)
    return index._reading(record, SETTINGS, stamp, sensor_type, value)


@pytest.mark.parametrize(("spec", "expected"), [
    ({}, None),
    ({"detector": None}, None),
    ({"detector": "off", "sensitivity": 7}, None),
])
def test_an_absent_or_off_detector_scores_nothing(spec: dict, expected: object) -> None:
    assert index.detector_of(spec) is expected


def test_a_detector_takes_its_preset_sensitivity_and_probation() -> None:
    onset = index.detector_of({"detector": "onset"})
    assert (onset.params, onset.sensitivity) == (index.DETECTOR_PRESETS["onset"], 0.5)
    sustained = index.detector_of({"detector": "sustained", "sensitivity": 0.9, "probation": 20})
    assert sustained.params.probation == 20 and sustained.params.z_scale == 5.5 and sustained.sensitivity == 0.9


@pytest.mark.parametrize("spec", [
    {"detector": "fast"}, {"detector": 1}, {"detector": "onset", "sensitivity": 0},
    {"detector": "onset", "sensitivity": 1.5}, {"detector": "onset", "sensitivity": None},
    {"detector": "onset", "sensitivity": True}, {"detector": "onset", "probation": 2.5},
    {"detector": "onset", "probation": -1}, {"detector": "onset", "probation": 1_000_001},
])
def test_a_malformed_detector_fails_the_start_naming_thresholds(spec: dict) -> None:
    with pytest.raises(ValueError, match="THRESHOLDS"):
        index.Settings.from_env({"DYNAMODB_TABLE": "t", "S3_BUCKET": "b",
                                 "THRESHOLDS": index.json.dumps({"temperature": {"max": 1, **spec}})})


def test_series_are_scored_apart_in_batch_order_each_before_it_is_learned() -> None:
    values = [20.0, 20.1, 19.9, 20.0, 20.2, 20.1, 35.0]
    batch = [r for i, v in enumerate(values) for r in (reading("a", "temperature", i, v),
                                                       reading("b", "temperature", i, 20.0 + v / 100))]
    states: dict = {}
    judged = index.score_readings(batch, SETTINGS, states)
    params = SETTINGS.thresholds["temperature"].detector.params
    alone, last = index.detect_series([(START + i * 1000, v) for i, v in enumerate(values)], params)
    assert states[("a", "temperature")] == last
    spike = judged[12].item
    assert (spike["rule"]["S"], spike["status"]["S"], spike["anomalyDetected"]["BOOL"]) == ("model", "ANOMALY", True)
    assert float(spike["score"]["N"]) == alone[6].score >= 0.5
    low = alone[6].expected - alone[6].width
    assert float(spike["expectedLow"]["N"]) == low
    assert spike["reason"]["S"] == f"expected {index.format_number(low)} to {spike['expectedHigh']['N']}"
    assert spike["anomalySk"]["S"] == f"{START + 6000:013d}#a#temperature"
    assert not any(r.anomaly for r in judged[:12])


def test_a_bound_anomaly_keeps_its_rule_and_gains_the_model_figures() -> None:
    first = index.score_readings([reading("a", "temperature", 0, 95.0)], SETTINGS, {})[0].item
    assert (first["rule"]["S"], first["reason"]["S"]) == ("bound", "above max 80")
    assert (first["score"]["N"], first["expectedLow"]["N"], first["expectedHigh"]["N"]) == ("0", "95", "95")


def test_a_type_without_a_detector_is_judged_by_its_bounds_alone() -> None:
    states: dict = {}
    judged = index.score_readings([reading("a", "pressure", 0, 200.0), reading("a", "pressure", 1, 100.0)],
                                  SETTINGS, states)
    assert states == {}
    assert judged[0].item["rule"]["S"] == "bound" and "score" not in judged[0].item
    assert not judged[1].anomaly and "rule" not in judged[1].item


@pytest.mark.parametrize(("number", "expected"), [
    (0.25, {"N": "0.25"}), (1e-200, {"N": "0"}), (-1e-131, {"N": "0"}), (1e126, None), (-math.inf, None),
    (math.nan, None),
])
def test_model_figures_are_numbers_dynamodb_accepts(number: float, expected: object) -> None:
    assert index._number_attribute(number) == expected
