"""The processor benchmark (bench/bench_processor.py) end to end at a tiny size, and its verdict arithmetic.
Speed itself is measured by ``make bench``, never asserted here."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from processor_support import REPO, load_handler

sys.path.insert(0, str(REPO / "bench"))
import bench_processor


def test_the_round_trip_bound_is_archive_then_waves_of_writes() -> None:
    assert bench_processor.round_trip_ceiling(100, 16, 25) == pytest.approx(5_000)  # 1 PUT + 1 wave of 4 calls
    assert bench_processor.round_trip_ceiling(1000, 16, 25) == pytest.approx(25_000)  # 1 PUT + 3 waves of 40
    assert bench_processor.round_trip_ceiling(1000, 8, 25) == pytest.approx(1000 / 0.06)  # 1 PUT + 5 waves


def test_verdicts_name_each_target_met_or_not() -> None:
    latency = {"python": "python, model", "node twin": "node twin, model"}
    best = {
        bench_processor.MOTO_ALONE: {"per_second": 5_000.0},
        bench_processor.PYTHON_MOTO: {"per_second": 4_200.0, "calls_per_1000": 41.0},
        "python, model": {"per_second": 4_999.0},
        bench_processor.SEED_MOTO: {"per_second": 200.0},
    }

    lines = bench_processor.target_verdicts(best, latency, 1000, load_handler())

    assert lines[0] == ("  targets, python: calls/1000 <= 50 met (41.0); vs seed >= 20x met (21.0x); "
                        "10 ms model >= 5,000/s NOT met (4,999)")
    assert lines[1] == "  bounds: moto alone / seed 25.0x; 10 ms model at zero CPU, archived first: at most 25,000/s"
    other_size = bench_processor.target_verdicts(best, latency, 100, load_handler())
    assert other_size[0].startswith("  same checks (targets are judged at 1,000), python:")
    twin = {**best, bench_processor.TWIN_MOTO: {"per_second": 4_000.0, "calls_per_1000": 41.0},
            "node twin, model": {"per_second": 20_000.0}}
    assert bench_processor.target_verdicts(twin, latency, 1000, load_handler())[1] == (
        "  same checks (the targets are the python processor's), node twin: calls/1000 <= 50 met (41.0); "
        "vs seed >= 20x met (20.0x); 10 ms model >= 5,000/s met (20,000)")


def test_the_benchmark_runs_every_row_and_counts_the_calls(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_processor.main(["--sizes", "50", "--readings-per-size", "100", "--repeat", "1",
                                 "--layouts", "item-per-reading"]) == 0

    output = capsys.readouterr().out
    rows = {m.group(1).strip(): (int(m.group(2)), float(m.group(3)), int(m.group(4))) for m in re.finditer(
        r"^(\S.*?)\s+50\s+(\d+)\s+[\d,]+\s+([\d.]+)\s+(\d+)$", output, re.MULTILINE)}
    # per 50-reading event: one archive PUT and two BatchWriteItem calls (25 + 25), so 60 per 1,000
    assert rows[bench_processor.PYTHON_MOTO] == (100, 60.0, 0)
    assert rows["python, 10 ms per call (no server)"] == (100, 60.0, 0)
    assert rows[bench_processor.MOTO_ALONE] == (100, 40.0, 0)
    assert rows[bench_processor.TWIN_MOTO] == (100, 60.0, 0)  # make install provides node and its SDK
    assert "10 ms model at zero CPU, archived first: at most 2,500/s" in output
    assert bench_processor.PYTHON_PACKED not in output


def test_the_packed_layout_rows_write_fewer_items(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # 120 readings of 60 device-sensor pairs in one second: 60 packed items and 2 anomalies instead of 120 items
    assert bench_processor.main(["--sizes", "120", "--readings-per-size", "240", "--repeat", "1",
                                 "--layouts", "packed", "--seed-dir", str(tmp_path)]) == 0

    output = capsys.readouterr().out
    rows = {m.group(1).strip(): (int(m.group(2)), float(m.group(3)), int(m.group(4))) for m in re.finditer(
        r"^(\S.*?)\s+120\s+(\d+)\s+[\d,]+\s+([\d.]+)\s+(\d+)$", output, re.MULTILINE)}
    # per event: one archive PUT and three BatchWriteItem calls (25 + 25 + 12 items): 4 per 120 readings
    assert rows[bench_processor.PYTHON_PACKED] == (240, pytest.approx(33.3, abs=0.1), 0)
    assert rows[bench_processor.TWIN_PACKED] == (240, pytest.approx(33.3, abs=0.1), 0)
    assert bench_processor.PYTHON_MOTO not in rows
    assert "python packed: calls/1000 <= 50 met (33.3)" in output


SEED_DIR = REPO.parent / "shared" / "seed"


@pytest.mark.skipif(not (SEED_DIR / "TapStack.yml").is_file(),
                    reason="the seed template (../shared/seed beside the checkout) is only in the workspace, "
                           "not in a clone")
def test_the_seed_row_counts_a_put_per_reading(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_processor.main(["--sizes", "50", "--readings-per-size", "100", "--repeat", "1",
                                 "--seed-dir", str(SEED_DIR)]) == 0

    rows = {m.group(1).strip(): (int(m.group(2)), float(m.group(3)), int(m.group(4))) for m in re.finditer(
        r"^(\S.*?)\s+50\s+(\d+)\s+[\d,]+\s+([\d.]+)\s+(\d+)$", capsys.readouterr().out, re.MULTILINE)}
    # an S3 PUT and a PutItem per reading, a PutMetricData per event
    assert rows[bench_processor.SEED_MOTO] == (100, 2020.0, 0)


def test_without_the_seed_the_benchmark_still_runs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert bench_processor.main(["--sizes", "50", "--readings-per-size", "50", "--repeat", "1",
                                 "--seed-dir", str(tmp_path)]) == 0

    output = capsys.readouterr()
    assert bench_processor.PYTHON_MOTO in output.out and bench_processor.SEED_MOTO not in output.out
    assert "no seed rows" in output.err
