"""``make bench-fleet``: ``iotpipe device register --from devices.csv`` for N devices (1,000 by default) against
the AWS emulator of ``iotpipe local`` (``python -m iotpipe.local.moto_server``, the same server process the
supervisor starts), then the same CSV again (a resumed run: every device skipped) and ``device audit`` over them.

Registration is unpaced here (``--per-second 0``): the emulator has no rate limits, and against AWS the default
pacing (10 registrations/s) is what bounds the time, not the client. Figures: devices/s and ms per device for each
phase. ``BENCH_FLEET_ARGS="--devices 50"`` for a smoke run. Every loop is bounded by the device count.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from iotpipe import fleet
from iotpipe.aws import ClientFactory
from iotpipe.local.processes import free_port
from iotpipe.local.supervisor import MotoServer

POLICY = "SensorDevicePolicy-bench"


def timed(label: str, count: int, action: object) -> float:
    """Run ``action()``, print its figures and return the seconds it took."""
    started = time.perf_counter()
    action()  # type: ignore[operator]
    seconds = time.perf_counter() - started
    print(f"{label:<28} {count:>6} devices  {seconds:8.2f} s  {count / seconds:8.1f} devices/s  "
          f"{1000 * seconds / count:7.2f} ms/device")
    return seconds


def main() -> None:
    """Parse the arguments, start the emulator, run the three phases, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=1000)
    args = parser.parse_args()
    count = max(1, min(args.devices, 100_000))
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the emulator takes any key
        os.environ.setdefault(variable, "bench")
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as scratch:
        work = Path(scratch)
        server = MotoServer(free_port(), work / "moto.log")
        try:
            server.wait_ready(30)
            iot = ClientFactory(region="us-east-1", endpoint_url=server.url).client("iot")
            iot.create_policy(policyName=POLICY, policyDocument=json.dumps({
                "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}))
            csv_path = work / "devices.csv"
            csv_path.write_text("id,location\n" + "".join(f"dev-{n:05d},line-{n % 7}\n" for n in range(count)))
            rows = fleet.read_devices_csv(csv_path)
            out = work / "certs"
            results: dict[str, fleet.BulkSummary] = {}

            def register(label: str) -> None:
                results[label] = fleet.register_many(iot, rows, policy_name=POLICY, out_dir=out,
                                                     environment="bench", per_second=0)

            timed("register --from (new)", count, lambda: register("first"))
            timed("register --from (resumed)", count, lambda: register("again"))
            findings: list[fleet.Finding] = []

            def audit() -> None:
                names = [row.thing_name for row in rows]
                findings.extend(fleet.audit_findings(fleet.collect_certificates(iot, names),
                                                     now=datetime.now(UTC), expiring_within=timedelta(0)))

            timed("audit", count, audit)
            first, again = results["first"], results["again"]
            print(f"registered {first.count('registered')}, failed {first.count('failed')}; resumed run skipped "
                  f"{again.count('skipped')}; audit findings {len(findings)}; files {len(list(out.iterdir()))}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
