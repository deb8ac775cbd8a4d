"""`make bench-cost` (bench/bench_cost.py) keeps working: run as a user runs it, at a tiny size, in its own
process (the tests never import the benchmark). Agreement is judged by ``make bench-cost`` at its full size;
asserted here is that every line is measured and predicted and the run stores every reading."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from script_runner import run_script

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "bench_cost.py"


run_bench = partial(run_script, BENCH)


def test_a_tiny_run_on_prod_measures_and_predicts_every_line() -> None:
    done = run_bench("--env", "prod", "--readings", "600", "--devices", "5")
    assert done.returncode in (0, 1), done.stderr
    out = done.stdout
    assert "packed, 60 s windows, Basic Ingest" in out and "0 failed records" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("iot.", "kinesis.",
                                                                                             "lambda.", "dynamodb.",
                                                                                             "s3.", "cloudwatch."))}
    assert {"iot.rules_triggered", "lambda.requests", "dynamodb.write_request_units", "s3.put_requests",
            "cloudwatch.log_ingestion_gb", "kinesis.on_demand_data_in_gb"} <= set(rows)
    assert rows["iot.messages"][1] == "0"  # Basic Ingest
    assert rows["iot.rules_triggered"][1] == rows["iot.rules_triggered"][2] == "40"  # 600 readings / 15
    assert float(rows["dynamodb.write_request_units"][1]) > 0
    assert "agreement within 10%:" in out


def test_bad_readings_per_message_is_refused() -> None:
    done = run_bench("--env", "prod", "--readings", "30", "--readings-per-message", "4")
    assert done.returncode != 0
    assert "multiple of --sensors" in done.stderr
