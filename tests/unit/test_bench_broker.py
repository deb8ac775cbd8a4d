"""`make bench-broker` (bench/bench_broker.py) keeps working: run as a user runs it, at a tiny size, in its own
process (the tests never import the benchmark). Speed is measured by ``make bench-broker``, never asserted here;
what is asserted is that every row runs and loses nothing."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from script_runner import run_script

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "bench_broker.py"


run_bench = partial(run_script, BENCH)


def test_help_lists_the_options() -> None:
    done = run_bench("--help")
    assert done.returncode == 0, done.stderr
    assert all(option in done.stdout for option in ("--kinds", "--publishers", "--messages", "--rate"))


@pytest.mark.mqtt
def test_every_row_runs_end_to_end_at_a_tiny_size() -> None:
    done = run_bench("--kinds", "mosquitto", "amqtt", "--publishers", "2", "--messages", "40", "--seconds", "5",
                     "--rate", "200", "--drain-s", "10")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    rows = [line.split() for line in out.splitlines() if line.startswith(("mosquitto ", "amqtt "))
            and "msg/s at QoS 1" not in line]
    assert [(row[0], " ".join(row[1:3])) for row in rows] == [
        (kind, mode) for kind in ("mosquitto", "amqtt") for mode in ("full q0", "full q1", "paced q1")
    ]
    for row in rows:
        sent, delivered, lost = (int(value) for value in row[-7:-4])
        assert (sent, delivered, lost) == (40, 40, 0)
    assert "mosquitto: " in out and "amqtt: " in out
