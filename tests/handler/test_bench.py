"""`make bench` (bench/bench_processor.py) keeps working: run as a user runs it, at a tiny size, in its own
process (the tests never import the benchmark, nor it the tests). Speed itself is measured by ``make bench``, never
asserted here; what is asserted are the API calls per reading, the failures and the lines a user reads."""

from __future__ import annotations

import re
import shutil
from functools import partial
from pathlib import Path

import pytest

from script_runner import run_script

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "bench_processor.py"
TINY = ["--sizes", "50", "--readings-per-size", "100", "--repeat", "1", "--layouts", "item-per-reading"]
NODE_READY = shutil.which("node") is not None and (
    REPO / "handler" / "node" / "node_modules" / "@aws-sdk" / "client-s3").is_dir()
ROW = r"^(\S.*?)\s+{size}\s+(\d+)\s+[\d,]+\s+([\d.]+)\s+(\d+)\s+(?:[\d,]+|-)$"  # ..., server ms/1000


run_bench = partial(run_script, BENCH)


def rows(output: str, size: int = 50) -> dict[str, tuple[int, float, int]]:
    """label -> (readings, calls per 1,000 readings, failures) of the rows of ``size``-reading batches."""
    return {m.group(1).strip(): (int(m.group(2)), float(m.group(3)), int(m.group(4)))
            for m in re.finditer(ROW.format(size=size), output, re.MULTILINE)}


def test_help_names_the_optional_seed_dir() -> None:
    done = run_bench("--help")
    assert done.returncode == 0, done.stderr
    assert "--seed-dir" in done.stdout and "../shared" not in done.stdout


def test_the_benchmark_runs_every_row_and_counts_the_calls_without_the_seed() -> None:
    done = run_bench(*TINY)

    assert done.returncode == 0, done.stderr
    found = rows(done.stdout)
    # per 50-reading event: one archive PUT and two BatchWriteItem calls (25 + 25), so 60 per 1,000
    assert found["python, moto server"] == (100, 60.0, 0)
    assert found["python, 10 ms per call (no server)"] == (100, 60.0, 0)
    assert found["moto alone: same items, BatchWriteItem"] == (100, 40.0, 0)
    if NODE_READY:
        assert found["node twin, moto server"] == (100, 60.0, 0)
    assert not any("seed" in label for label in found)
    assert "no --seed-dir given: no seed rows" in done.stderr
    assert "same checks (targets are judged at 1,000), python: calls/1000 <= 50 NOT met (60.0)" in done.stdout
    assert "10 ms model at zero CPU, archived first: at most 2,500/s" in done.stdout
    assert not any("packed" in label for label in found)
    assert not any("emulator" in label for label in found)  # --emulator's rows only when asked for
    # the moto server's CPU per 1,000 readings on the rows that reach it, none on the 10 ms model's
    assert re.search(r"^python, moto server\s.*\s0\s+[1-9][\d,]*$", done.stdout, re.MULTILINE)
    assert re.search(r"^python, 10 ms per call \(no server\)\s.*\s0\s+-$", done.stdout, re.MULTILINE)


def test_the_packed_layout_rows_write_fewer_items() -> None:
    # 120 readings of 60 device-sensor pairs in one second: 60 packed items and 2 anomalies instead of 120 items
    done = run_bench("--sizes", "120", "--readings-per-size", "240", "--repeat", "1", "--layouts", "packed")

    assert done.returncode == 0, done.stderr
    found = rows(done.stdout, 120)
    # per event: one archive PUT and three BatchWriteItem calls (25 + 25 + 12 items): 4 per 120 readings
    assert found["python, moto server, packed"] == (240, pytest.approx(33.3, abs=0.1), 0)
    if NODE_READY:
        assert found["node twin, moto server, packed"] == (240, pytest.approx(33.3, abs=0.1), 0)
    assert "python, moto server" not in found
    assert "python packed: calls/1000 <= 50 met (33.3)" in done.stdout


@pytest.mark.skipif(not NODE_READY, reason="the seed handler is Node: needs node and the AWS SDK (make install)")
def test_the_seed_row_counts_a_put_per_reading(tmp_path: Path) -> None:
    shutil.copy(REPO / "tests" / "data" / "seed_TapStack.yml", tmp_path / "TapStack.yml")

    done = run_bench(*TINY, "--seed-dir", str(tmp_path))

    assert done.returncode == 0, done.stderr
    # an S3 PUT and a PutItem per reading, a PutMetricData per event
    assert rows(done.stdout)["seed node handler, moto server"] == (100, 2020.0, 0)
    assert re.search(r"^\s+python / seed on moto\s+50\s+[\d.]+x$", done.stdout, re.MULTILINE)


def test_a_seed_dir_without_the_template_is_named(tmp_path: Path) -> None:
    done = run_bench("--sizes", "50", "--readings-per-size", "50", "--repeat", "1", "--seed-dir", str(tmp_path))

    assert done.returncode == 0, done.stderr
    if NODE_READY:
        assert f"no TapStack.yml in --seed-dir {tmp_path}" in done.stderr
    assert "seed node handler" not in done.stdout


def test_compare_detection_adds_rows_with_the_detector_on_and_the_ratio() -> None:
    done = run_bench(*TINY, "--compare-detection", "--detection-pairs", "3", "--pair-readings", "100")

    assert done.returncode == 0, done.stderr
    found = rows(done.stdout)
    # the default rows run the static bounds only; with the detector on, each 50-reading event of 20 devices also
    # reads their state items (one BatchGetItem) and writes them (one BatchWriteItem): 5 calls an event, not 3
    assert found["python, moto server"] == (100, 60.0, 0)
    assert found["python, moto server, detection on"] == (100, 100.0, 0)
    assert found["python, 10 ms per call (no server), detection on"][0] == 100
    assert re.search(r"^  detection on / off: python, moto server\s+50\s+[\d.]+x$", done.stdout, re.MULTILINE)
    # the 15 % budget is judged on the 10 ms model's row, its figure the median of the on / off ratios of the pairs
    pairs = re.search(r"^  detection on / off, paired: python, 10 ms per call \(no server\)\s+50\s+([\d.]+)x  "
                      r"median of ([\d.]+) ([\d.]+) ([\d.]+)$", done.stdout, re.MULTILINE)
    assert pairs, done.stdout
    median = sorted(float(pairs.group(n)) for n in (2, 3, 4))[1]
    assert float(pairs.group(1)) == pytest.approx(median, abs=0.006)
    verdict = re.search(r"^  same checks \(targets are judged at 1,000\), python: .*; 10 ms model detection on / off "
                        r">= 0\.85 (met|NOT met) \(([\d.]+)x, median of 3 pairs\)$", done.stdout, re.MULTILINE)
    assert verdict, done.stdout
    assert float(verdict.group(2)) == pytest.approx(median, abs=0.006)
    assert (verdict.group(1) == "met") == (float(verdict.group(2)) >= 0.85)
    assert re.search(r"^  detector memory: a series' state is 13 numbers, \d+ B stored \(JSON, long doubles as "
                     r"their bits\), [\d,]+ B as a Python "
                     r"object; a device's state item of 3 series [\d,]+ B", done.stdout, re.MULTILINE)
    assert re.search(r"^  batch memory \(python, tracemalloc peak, one 50-reading batch, 10 ms model\): detection off "
                     r"[\d,]+ KB, on [\d,]+ KB$", done.stdout, re.MULTILINE)
    if NODE_READY:
        assert found["node twin, moto server, detection on"] == (100, 100.0, 0)
    # the 10 ms model keeps the state items written to it and answers their reads, starting from items past the
    # probation: a model that answered reads with nothing would leave each series a handful of readings learned
    for label in ["python, 10 ms per call (no server), detection on",
                  *(["node twin, 10 ms per call (no server), detection on"] if NODE_READY else [])]:
        learned = re.search(rf"^  state items after the run: {re.escape(label)}: each series has learned ([\d,]+) "
                            r"to ([\d,]+) readings \(probation (\d+)\)$", done.stdout, re.MULTILINE)
        assert learned, done.stdout
        fewest, most, probation = (int(learned.group(n).replace(",", "")) for n in (1, 2, 3))
        assert probation < fewest <= most


def test_the_emulator_rows_run_against_iotpipe_locals_keep_alive_server_with_and_without_detection() -> None:
    done = run_bench(*TINY, "--compare-detection", "--emulator")

    assert done.returncode == 0, done.stderr
    found = rows(done.stdout)
    # the same calls as against moto's own server: 3 an event, 5 with the detector's state read and written
    assert found["python, local emulator (keep-alive)"] == (100, 60.0, 0)
    assert found["python, local emulator (keep-alive), detection on"] == (100, 100.0, 0)
    assert found["python, moto server, detection on"] == (100, 100.0, 0)
    assert re.search(r"^  detection on / off: python, local emulator \(keep-alive\)\s+50\s+[\d.]+x$", done.stdout,
                     re.MULTILINE)
    assert re.search(r"^  detection on / off: python, moto server\s+50\s+[\d.]+x$", done.stdout, re.MULTILINE)
    # the emulator's own CPU per 1,000 readings is measured for its rows
    assert re.search(r"^python, local emulator \(keep-alive\)\s.*\s0\s+[1-9][\d,]*$", done.stdout, re.MULTILINE)
    labels = ["python, local emulator (keep-alive)", "python, local emulator (keep-alive), detection on"]
    if NODE_READY:
        assert found["node twin, local emulator (keep-alive)"] == (100, 60.0, 0)
        assert found["node twin, local emulator (keep-alive), detection on"] == (100, 100.0, 0)
        assert re.search(r"^  detection on / off: node twin, local emulator \(keep-alive\)\s+50\s+[\d.]+x$",
                         done.stdout, re.MULTILINE)
        labels += ["node twin, local emulator (keep-alive)", "node twin, local emulator (keep-alive), detection on"]
    # keep-alive: the server answered the row's requests (its warm-up batch's too: 3 events' worth) on fewer
    # connections than requests, where moto's own server takes one connection per request
    for label, requests in zip(labels, [9, 15] * 2, strict=False):
        kept = re.search(rf"^  keep-alive: {re.escape(label)}, 50-reading batches: (\d+) connections for "
                         rf"{requests} requests \(warm-up batch included\)$", done.stdout, re.MULTILINE)
        assert kept, label
        assert 1 <= int(kept.group(1)) < requests
