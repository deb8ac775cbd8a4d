"""``make bench-console``: the console in chromium (Playwright) on ``iotpipe local``, as a person opens it.

Seeds the local table with the data contract's items (written straight into the emulator's DynamoDB: this measures
the console, not the pipeline): ``--devices`` devices with a reading each, and one device with a day at 1 Hz
(``--day-readings`` temperature readings, one item each, or ``--layout packed``: 60 s packed items). Then starts
``iotpipe console --no-browser --port 0`` (it reads the fleet once before the first page asks) and measures:

- fleet first render: navigation (with the token) to every row in the table, and the fleet request to its rows;
- one day at 1 Hz: the chart's request to the chart drawn (uPlot's draw hook), the series LTTB-downsampled on the
  server to at most 2,000 points; and from the device page's first request (the device's sensors and anomalies,
  which starts the partition read the charts share) to the chart drawn.

Targets (issue 22): fleet first render < 1 s with 1,000 devices; a day at 1 Hz < 500 ms request to drawn. Every
loop is bounded in count and time. Needs mosquitto and chromium (make install).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3

CLI = [sys.executable, "-c", "from iotpipe.cli import main; main()"]
CHROMIUM = os.environ.get("IOTPIPE_CHROMIUM", "/usr/bin/chromium")
DAY_MS = 86_400_000
SHARD = "shardId-000000000000"


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``iotpipe ARGS`` in a subprocess."""
    return subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def item(device: str, when: int, value: float, ttl: int) -> dict[str, Any]:
    """One reading's item in the item-per-reading layout (docs/contract.md)."""
    return {"deviceId": {"S": device}, "sk": {"S": f"{when:013d}#temperature#{value:g}"},
            "timestamp": {"N": str(when)}, "sensorType": {"S": "temperature"}, "value": {"N": f"{value:g}"},
            "unit": {"S": "celsius"}, "status": {"S": "NORMAL"}, "anomalyDetected": {"BOOL": False},
            "receivedAt": {"N": str(when)}, "ttl": {"N": str(ttl)}}


def packed(device: str, start: int, values: list[tuple[int, float]], ttl: int, seq: int) -> dict[str, Any]:
    """One packed item: a device's temperature readings of one 60 s window."""
    text = ",".join(f"{offset}:{value:g}" for offset, value in values)
    return {"deviceId": {"S": device}, "sk": {"S": f"{start:013d}#temperature#packed#{SHARD}#{seq}#0"},
            "readings": {"S": text}, "sensorType": {"S": "temperature"}, "unit": {"S": "celsius"},
            "status": {"S": "NORMAL"}, "ttl": {"N": str(ttl)}, "shardId": {"S": SHARD}}


def write(dynamodb: Any, table: str, items: list[dict[str, Any]]) -> None:
    """BatchWriteItem, 25 at a time, unprocessed items retried (bounded)."""
    for start in range(0, len(items), 25):
        requests = {table: [{"PutRequest": {"Item": i}} for i in items[start:start + 25]]}
        for _ in range(20):
            left = dynamodb.batch_write_item(RequestItems=requests).get("UnprocessedItems", {})
            if not left:
                break
            requests = left


def seed(info: dict[str, Any], table: str, devices: int, day_readings: int, layout: str) -> None:
    """``devices`` devices with one reading each, and ``bench-day`` with ``day_readings`` over the last day."""
    dynamodb = boto3.client("dynamodb", endpoint_url=info["awsEndpoint"], region_name="us-east-1",
                            aws_access_key_id=info["awsAccessKeyId"],
                            aws_secret_access_key=info["awsSecretAccessKey"])
    now = int(time.time() * 1000)
    ttl = now // 1000 + 90 * 86_400
    write(dynamodb, table, [item(f"press-{n:04d}", now - (n % 120) * 60_000, 20.0 + n % 50, ttl)
                            for n in range(devices)])
    step = DAY_MS // max(1, day_readings)
    points = [(now - DAY_MS + i * step, 50.0 + 10 * ((i // 600) % 2) + (i % 17) / 10) for i in range(day_readings)]
    if layout == "packed":
        windows: dict[int, list[tuple[int, float]]] = {}
        for when, value in points:
            start = when // 60_000 * 60_000
            windows.setdefault(start, []).append((when - start, value))
        write(dynamodb, table, [packed("bench-day", start, values, ttl, seq)
                                for seq, (start, values) in enumerate(sorted(windows.items()))])
    else:
        write(dynamodb, table, [item("bench-day", when, value, ttl) for when, value in points])


def first_line(process: subprocess.Popen[str]) -> str:
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(process.stdout.readline() if process.stdout else ""))
    reader.start()
    reader.join(timeout=120)
    if not found or not found[0].startswith("http"):
        raise SystemExit(f"the console printed no URL: {found}")
    return found[0].strip()


def wait_for_fleet(url: str, timeout_s: float = 600) -> None:
    """Until the console has read the fleet once (it does at start): the page's first render is then its own."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout_s)
        connection.request("GET", f"/api/fleet?{parts.query}")  # an API request may carry the token itself
        answer = connection.getresponse()
        answer.read()
        connection.close()
        if answer.status == 200:
            return
        time.sleep(1)
    raise SystemExit("the console did not read the fleet in time")


def measure(url: str, runs: int) -> dict[str, list[float]]:
    """Fleet render and day-chart figures over ``runs`` fresh browser contexts."""
    from playwright.sync_api import sync_playwright

    figures: dict[str, list[float]] = {"fleet_navigation_ms": [], "fleet_request_ms": [], "chart_ms": []}
    base = url.split("?")[0].rstrip("/")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for _ in range(runs):
                context = browser.new_context(viewport={"width": 1280, "height": 860})
                page = context.new_page()
                page.set_default_timeout(300_000)
                started = time.perf_counter()
                page.goto(url)
                page.wait_for_selector("main[data-ready=fleet]")
                figures["fleet_navigation_ms"].append((time.perf_counter() - started) * 1000)
                timings = page.evaluate("window.consoleTimings")
                figures["fleet_request_ms"].append(next(t["ms"] for t in timings if t["what"] == "fleet"))
                page.goto(base + "/#/device/bench-day/24h")
                try:
                    page.wait_for_selector("figure[data-sensor=temperature] .chart[data-drawn=true]",
                                           state="attached")
                except Exception:  # say what the page says (a read timeout of the emulator, say)
                    print(page.inner_text("main")[:2000], file=sys.stderr)
                    raise
                timings = page.evaluate("window.consoleTimings")
                chart = next(t for t in timings if t["what"] == "chart" and t["sensor"] == "temperature")
                figures["chart_ms"].append(chart["ms"])
                figures.setdefault("chart_from_page_ms", []).append(chart.get("fromPage", float("nan")))
                # where the chart's time went: its request until the answer's first byte (the console's read,
                # LTTB and JSON), the rest of the answer, and the page's work after it (JSON parse, uPlot's draw)
                entry = page.evaluate("""() => performance.getEntriesByType("resource")
                    .filter((e) => e.name.includes("/series/temperature")).map((e) => e.toJSON()).pop()""")
                if entry:
                    figures.setdefault("chart_wait_ms", []).append(entry["responseStart"] - entry["requestStart"])
                    figures.setdefault("chart_after_answer_ms", []).append(
                        chart["ms"] - (entry["responseEnd"] - entry["startTime"]))
                figures.setdefault("chart_points", []).append(chart["points"])
                figures.setdefault("chart_shown", []).append(chart["shown"])
                context.close()
        finally:
            browser.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--day-readings", type=int, default=86_400)
    parser.add_argument("--layout", choices=["item-per-reading", "packed"], default="item-per-reading")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as folder:
        workdir = Path(folder)
        (workdir / "iotpipe.toml").write_text("")
        from iotpipe.local.state import STATE_DIR_VARIABLE

        env = {**os.environ, STATE_DIR_VARIABLE: str(workdir / "state")}
        console: subprocess.Popen[str] | None = None
        try:
            started = cli("local", "up", "--detach", "--output", "json", env=env, cwd=workdir)
            if started.returncode:
                raise SystemExit(started.stderr)
            info = json.loads(started.stdout)
            outputs = json.loads(cli("outputs", "--env", "local", "--output", "json", env=env, cwd=workdir).stdout)
            began = time.perf_counter()
            seed(info, outputs["SensorDataTableName"], args.devices, args.day_readings, args.layout)
            print(f"seeded {args.devices} devices and {args.day_readings} readings ({args.layout}) in "
                  f"{time.perf_counter() - began:.0f} s", file=sys.stderr)
            console = subprocess.Popen([*CLI, "console", "--env", "local", "--no-browser", "--port", "0"], env=env,
                                       cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            url = first_line(console)
            began = time.perf_counter()
            wait_for_fleet(url)
            read_s = time.perf_counter() - began
            figures = measure(url, args.runs)
        finally:
            if console is not None:
                console.terminate()
                console.wait(timeout=30)
            cli("local", "down", env=env, cwd=workdir)
    median = {key: statistics.median(values) for key, values in figures.items()}
    print(f"console on iotpipe local: {args.devices} devices, a day of {args.day_readings} readings ({args.layout}), "
          f"median of {args.runs} runs")
    print(f"  the console's first read of the fleet     {read_s * 1000:8.0f} ms   (at start, before a page asks)")
    print(f"  fleet first render, navigation to rows   {median['fleet_navigation_ms']:8.0f} ms   (target < 1000)")
    print(f"  fleet request to rows                    {median['fleet_request_ms']:8.0f} ms")
    print(f"  day chart, request to drawn              {median['chart_ms']:8.0f} ms   (target < 500; "
          f"{median['chart_points']:.0f} readings, {median['chart_shown']:.0f} drawn)")
    print(f"  day chart, device page's first request to drawn {median['chart_from_page_ms']:4.0f} ms")
    print("  every run (ms): " + "; ".join(f"{key} {', '.join(f'{v:.0f}' for v in values)}"
                                          for key, values in figures.items() if key.endswith("_ms")))


if __name__ == "__main__":
    main()
