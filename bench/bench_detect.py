"""Benchmark the adaptive detector on NAB and SKAB: the static rules, a naive z-score and the processor's detector
side by side, with per-reading CPU time and state bytes.

    python bench/bench_detect.py [--data ../shared/eval-data] [--nab-files N] [--held-out] [--skip-nab] [--skip-skab]

NAB (nab/data/<category>/<file>.csv, labels/combined_windows.json) is scored by iotpipe's own NAB scorer
(:mod:`iotpipe.evaluate`: windows, the scaled sigmoid, the three profiles, one corpus threshold chosen by the
optimiser, normalisation between the null and the perfect detector). SKAB (the labelled files under skab/, every
sensor column one sensor of one device, ``device_flag`` = any sensor flagged) is scored with point F1, FAR and MAR
over all files together, as SKAB's leaderboard does. ``--held-out`` adds, for ``iotpipe onset``, each category's
score at the threshold chosen on the other files (leave one category out: how far one corpus threshold carries
over). A last table counts the readings ``onset`` flags on healthy series, where every one is a false alarm:
100 hours of seeded Gaussian and heavy-tailed noise at 1 Hz, SKAB's anomaly-free.csv and NAB's
artificialNoAnomaly, at the default sensitivity and above. The data is looked for at ``../shared/eval-data`` next
to the checkout; when it is absent the benchmark says so and exits 0 (a clone has no such folder).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from iotpipe.archive import load_processor  # noqa: E402
from iotpipe.config import SEED_THRESHOLDS  # noqa: E402
from iotpipe.detect import parse_timestamp, read_series  # noqa: E402
from iotpipe.evaluate import PROFILES, category_scores, held_out_scores, nab_score, point_metrics  # noqa: E402

# the development data next to the checkout, when there is any; a user gives --data
DATA_CANDIDATES = (REPO.parent / "shared" / "eval-data",)
HANDLER = REPO / "handler" / "python" / "index.py"  # this checkout's processor, measured before it is installed
PSI_PER_BAR = 14.5038
NAIVE_ALPHA = 0.01
NAIVE_Z = 4.0
# SKAB columns with a static rule of the seed's thresholds, and the factor to its unit (vibration is acceleration
# in g there, velocity in mm/s here: not comparable, so it has no static rule).
SKAB_STATIC = {"Pressure": ("pressure", PSI_PER_BAR), "Temperature": ("temperature", 1.0)}

Scorer = Callable[[Sequence[int], Sequence[float]], tuple[list[float], int]]


@dataclass(frozen=True)
class Timing:
    """CPU seconds and readings a detector spent, and its largest state."""

    cpu_s: float
    readings: int
    state_bytes: int

    @property
    def us_per_reading(self) -> float:
        """CPU microseconds per reading."""
        return 1e6 * self.cpu_s / max(1, self.readings)


def ours(index: Any, preset: str = "onset") -> Scorer:
    """The processor's detector with a preset's parameters: scores and the final state's bytes."""
    params = index.DETECTOR_PRESETS[preset]

    def score(stamps: Sequence[int], values: Sequence[float]) -> tuple[list[float], int]:
        scored, state = index.detect_series(zip(stamps, values, strict=True), params)
        return [s.score for s in scored], len(json.dumps(state.to_list(), separators=(",", ":")))
    return score


def naive(stamps: Sequence[int], values: Sequence[float]) -> tuple[list[float], int]:
    """An EWMA z-score: |x - mean| / sd of the exponentially weighted mean and variance, scored z² / (z² + 16)."""
    del stamps
    mean, var, scores = values[0], 0.0, []
    for n, x in enumerate(values):
        sd = math.sqrt(var)
        z = abs(x - mean) / sd if sd > 0 else 0.0
        scores.append(0.0 if n < 150 else z * z / (z * z + NAIVE_Z * NAIVE_Z))
        alpha = max(NAIVE_ALPHA, 1.0 / (n + 1))
        d = x - mean
        mean += alpha * d
        var = (1 - alpha) * (var + alpha * d * d)
    return scores, len(json.dumps([mean, var, len(values)]))


def timed(scorer: Scorer, series: Iterable[tuple[Sequence[int], Sequence[float]]]) -> tuple[list[list[float]], Timing]:
    """Each series' scores, and the CPU time and largest state over all of them."""
    results, readings, state_bytes, cpu = [], 0, 0, 0.0
    for stamps, values in series:
        start = time.process_time()
        scores, size = scorer(stamps, values)
        cpu += time.process_time() - start
        results.append(scores)
        readings += len(values)
        state_bytes = max(state_bytes, size)
    return results, Timing(cpu, readings, state_bytes)


NabFile = tuple[list[str], list[int], list[float], list[tuple[str, str]]]


def read_nab_file(path: Path) -> tuple[list[str], list[int], list[float]]:
    """A NAB data file's timestamp texts, their epoch ms and its values."""
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    texts = [row["timestamp"] for row in rows]
    return texts, [parse_timestamp(t) or 0 for t in texts], [float(row["value"]) for row in rows]


def load_nab(root: Path, limit: int | None) -> dict[str, NabFile]:
    """name -> (timestamp texts, epoch ms, values, windows) for the NAB files present under ``root``."""
    windows = json.loads((root / "labels" / "combined_windows.json").read_text())
    files = {}
    for name in sorted(windows):
        path = root / "data" / name
        if not path.is_file():
            continue  # the held-out category is not in the development data
        files[name] = (*read_nab_file(path), [(start[:19], end[:19]) for start, end in windows[name]])
        if limit is not None and len(files) >= limit:
            break
    return files


def bench_nab(root: Path, limit: int | None, index: Any, held_out: bool = False) -> list[str]:
    """Lines of the NAB table: each detector's normalised score under each profile, CPU and state; with
    ``held_out``, ours per category also at thresholds chosen without the category."""
    files = load_nab(root, limit)
    names = list(files)
    lines = [f"NAB: {len(files)} files, {sum(len(f[2]) for f in files.values()):,} readings ({root})",
             f"{'detector':<16}{'standard':>10}{'low FP':>10}{'low FN':>10}{'threshold':>11}{'us/reading':>12}"
             f"{'state B':>9}"]
    static = [[0.0] * len(files[n][2]) for n in names]  # NAB's series have no static bounds: the null detector
    detectors: list[tuple[str, list[list[float]], Timing | None]] = [("static rules", static, None)]
    for label, scorer in (("naive z-score", naive), ("iotpipe onset", ours(index))):
        scores, spent = timed(scorer, ((files[n][1], files[n][2]) for n in names))
        detectors.append((label, scores, spent))
    categories: dict[str, dict[str, float]] = {}
    left_out: dict[str, dict[str, tuple[float, float]]] = {}
    for label, scores, timing in detectors:
        corpus = {n: (files[n][0], s, files[n][3]) for n, s in zip(names, scores, strict=True)}
        results = {profile: nab_score(corpus, profile) for profile in PROFILES}
        cost = f"{timing.us_per_reading:>12.2f}{timing.state_bytes:>9}" if timing else f"{'-':>12}{'-':>9}"
        lines.append(f"{label:<16}" + "".join(f"{results[p].normalised:>10.1f}" for p in PROFILES)
                     + f"{results['standard'].threshold:>11.3f}" + cost)
        if label == "iotpipe onset":
            categories = {p: category_scores(corpus, p, results[p].threshold) for p in PROFILES}
            if held_out:
                left_out = {p: held_out_scores(corpus, p) for p in PROFILES}
    lines.append("iotpipe onset per category, at the corpus thresholds (NaN: no window)")
    for category in categories["standard"]:
        lines.append(f"  {category:<22}" + "".join(f"{categories[p][category]:>10.1f}" for p in PROFILES))
    if left_out:
        held = list(left_out["standard"])
        lines.append("iotpipe onset per category, leaving it out (threshold chosen on the other files; standard"
                     " threshold)")
        for category in held:
            lines.append(f"  {category:<22}" + "".join(f"{left_out[p][category][0]:>10.1f}" for p in PROFILES)
                         + f"{left_out['standard'][category][1]:>11.3f}")
        lines.append(f"  {'mean':<22}" + "".join(
            f"{sum(left_out[p][c][0] for c in held) / max(1, len(held)):>10.1f}" for p in PROFILES))
    return lines


def skab_files(root: Path) -> list[Path]:
    """The labelled SKAB files under ``root`` (anomaly-free.csv has no labels)."""
    return sorted(p for p in root.rglob("*.csv") if p.name != "anomaly-free.csv")


def bench_skab(root: Path, index: Any) -> list[str]:
    """Lines of the SKAB table: point F1, FAR and MAR of each detector's device flag over the labelled files."""
    labels: list[int] = []
    flags: dict[str, list[bool]] = {"static rules": [], "naive z-score": [], "iotpipe onset": [],
                                    "iotpipe sustained": []}
    readings, cpu = 0, 0.0
    cut = index.DEFAULT_SENSITIVITY
    for path in skab_files(root):
        text = path.read_text(encoding="utf-8-sig")
        series = read_series(text)
        with path.open() as handle:
            labels += [int(float(row["anomaly"])) for row in csv.DictReader(handle, delimiter=";")]
        rows = len(series.timestamps)
        device = {name: [False] * rows for name in flags}
        for column, values in series.columns.items():
            rule = SKAB_STATIC.get(column)
            if rule is not None:
                bound = SEED_THRESHOLDS[rule[0]]
                for i, v in enumerate(values):
                    x = v * rule[1]
                    device["static rules"][i] |= (bound.max is not None and x > bound.max) or (
                        bound.min is not None and x < bound.min)
            naive_scores, _ = naive(series.timestamps, values)
            start = time.process_time()
            onset, _ = ours(index, "onset")(series.timestamps, values)
            cpu += time.process_time() - start
            sustained, _ = ours(index, "sustained")(series.timestamps, values)
            readings += rows
            for i in range(rows):
                device["naive z-score"][i] |= naive_scores[i] >= 0.5
                device["iotpipe onset"][i] |= onset[i] >= cut
                device["iotpipe sustained"][i] |= sustained[i] >= cut
        for name in flags:
            flags[name] += device[name]
    lines = [f"SKAB: {len(skab_files(root))} labelled files, {len(labels):,} rows, {readings:,} readings ({root})",
             f"{'detector':<18}{'F1':>8}{'FAR %':>9}{'MAR %':>9}"]
    for name, flagged in flags.items():
        m = point_metrics(labels, flagged)
        lines.append(f"{name:<18}{m.f1:>8.3f}{m.far:>9.2f}{m.mar:>9.2f}")
    lines.append(f"iotpipe: {1e6 * cpu / max(1, readings):.2f} us per reading, threshold {cut:g}")
    return lines


HEALTHY_CUTS = (0.5, 0.7, 0.8, 0.9)
NOISE_READINGS = 360_000  # 100 hours at 1 Hz


def healthy_noise(heavy: bool = False, readings: int = NOISE_READINGS, seed: int = 7) -> tuple[list[int], list[float]]:
    """A healthy 1 Hz sensor: a level with noise and nothing else, Gaussian or (``heavy``) Student's t with 5
    degrees of freedom, whose rare large values are ordinary for it (seeded, so every run is the same)."""
    rng = random.Random(seed)
    values = []
    for _ in range(readings):
        noise = rng.gauss(0.0, 1.0)
        if heavy:
            noise /= math.sqrt(rng.gammavariate(2.5, 2.0) / 5.0)  # a chi-squared of 5 degrees over 5
        values.append(50.0 + 2.0 * noise)
    return [i * 1000 for i in range(readings)], values


def healthy_row(label: str, series: Sequence[tuple[Sequence[int], Sequence[float]]], index: Any) -> str:
    """One row of the healthy-series table: readings, series-hours, and the readings ``onset`` flags at each of
    HEALTHY_CUTS (all false alarms: the series have no anomaly)."""
    params = index.DETECTOR_PRESETS["onset"]
    alarms = [0] * len(HEALTHY_CUTS)
    readings, hours = 0, 0.0
    for stamps, values in series:
        scored, _ = index.detect_series(zip(stamps, values, strict=True), params)
        alarms = [n + sum(1 for s in scored if s.score >= cut) for n, cut in zip(alarms, HEALTHY_CUTS, strict=True)]
        readings += len(values)
        hours += (stamps[-1] - stamps[0]) / 3_600_000 if stamps else 0.0
    return f"{label:<42}{readings:>10,}{hours:>9.1f}" + "".join(f"{n:>7}" for n in alarms)


def bench_healthy(data: Path, index: Any) -> list[str]:
    """Lines of the healthy-series table: how often ``onset`` flags a reading where nothing happens, at the default
    sensitivity and above (seeded noise; SKAB's anomaly-free.csv and NAB's artificialNoAnomaly when
    there)."""
    lines = ["healthy series (no anomaly): readings iotpipe onset flags at each sensitivity",
             f"{'series':<42}{'readings':>10}{'hours':>9}" + "".join(f"{cut:>7}" for cut in HEALTHY_CUTS),
             healthy_row("Gaussian noise, 1 Hz (seeded)", [healthy_noise()], index),
             healthy_row("Student's t noise (5 dof), 1 Hz (seeded)", [healthy_noise(heavy=True)], index)]
    anomaly_free = data / "skab" / "anomaly-free.csv"
    if anomaly_free.is_file():
        series = read_series(anomaly_free.read_text(encoding="utf-8-sig"))
        lines.append(healthy_row(f"SKAB anomaly-free.csv ({len(series.columns)} sensors)",
                                 [(series.timestamps, values) for values in series.columns.values()], index))
    quiet = [read_nab_file(path)[1:] for path in sorted((data / "nab" / "data" / "artificialNoAnomaly").glob("*.csv"))]
    if quiet:
        lines.append(healthy_row(f"NAB artificialNoAnomaly ({len(quiet)} files)", quiet, index))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="eval-data folder (nab/, skab/); default ../shared/eval-data")
    parser.add_argument("--nab-files", type=int, help="score only the first N NAB files (a quick run)")
    parser.add_argument("--held-out", action="store_true",
                        help="also score each NAB category at the threshold chosen without it")
    parser.add_argument("--skip-nab", action="store_true")
    parser.add_argument("--skip-skab", action="store_true")
    args = parser.parse_args(argv)
    data = args.data or next((p for p in DATA_CANDIDATES if p.is_dir()), DATA_CANDIDATES[0])
    if not data.is_dir():
        print(f"bench-detect: skipped, no development data at {data} (it lives next to the checkout as "
              "../shared/eval-data; give --data to use another folder)")
        return 0
    args.data = data
    index = load_processor(HANDLER)
    if not args.skip_nab and (args.data / "nab").is_dir():
        print("\n".join(bench_nab(args.data / "nab", args.nab_files, index, args.held_out)), flush=True)
    if not args.skip_skab and (args.data / "skab").is_dir():
        print("\n".join(bench_skab(args.data / "skab", index)), flush=True)
    print("\n".join(bench_healthy(args.data, index)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
