"""The broker benchmark (bench/bench_broker.py) end to end at a tiny size. Speed is measured by
``make bench-broker``, never asserted here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bench_broker


def test_the_payload_is_a_small_reading_stamped_at_a_fixed_offset() -> None:
    body = bench_broker.payload(1_796_044_595_123_456_789, 3, 42)
    assert 100 <= len(body) <= 140
    assert bench_broker.stamp_of(body) == 1_796_044_595_123_456_789
    reading = json.loads(body)
    assert (reading["deviceId"], reading["seq"], reading["value"]) == ("bench-003", 42, 71.25)


def test_percentiles_are_nearest_rank_in_ms() -> None:
    values = [n * 1_000_000 for n in range(1, 101)]
    assert bench_broker.percentile(values, 0.50) == 51.0
    assert bench_broker.percentile(values, 0.99) == 100.0


@pytest.mark.mqtt
def test_every_row_runs_end_to_end_at_a_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_broker.main(["--kinds", "mosquitto", "amqtt", "--publishers", "2", "--messages", "40",
                              "--seconds", "5", "--rate", "200", "--drain-s", "10"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith(("mosquitto ", "amqtt "))
            and "msg/s at QoS 1" not in line]
    assert [(row[0], " ".join(row[1:3])) for row in rows] == [
        (kind, mode) for kind in ("mosquitto", "amqtt") for mode in ("full q0", "full q1", "paced q1")
    ]
    for row in rows:
        sent, delivered, lost = (int(value) for value in row[-7:-4])
        assert (sent, delivered, lost) == (40, 40, 0)
    assert "mosquitto: " in out and "amqtt: " in out
