"""The detector vectors in handler/vectors/detector/: series with the scores docs/contract.md 12 gives them.

``python tests/handler/detector_vectors.py`` rewrites them from the Python processor; the Python test checks the
committed files still match, the Node test (handler/node/test/detector.test.js) that the twin gives the same
scores to 1e-9 relative. Inputs come from a fixed linear congruential generator, so they never change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from processor_support import REPO, load_handler

VECTOR_DIR = REPO / "handler" / "vectors" / "detector"
START_MS = 1_718_000_000_000
STEP_MS = 60_000


def noise(seed: int) -> Iterator[float]:
    """Uniform numbers in [-1, 1) from a 32-bit LCG (Numerical Recipes' constants)."""
    state = seed
    while True:
        state = (1664525 * state + 1013904223) % 2**32
        yield state / 2**31 - 1.0


def _regular(values: list[float]) -> list[list[float]]:
    return [[START_MS + i * STEP_MS, value] for i, value in enumerate(values)]


def cases() -> dict[str, dict[str, Any]]:
    """Name -> {description, params (overrides of the defaults), points [[ms, value], ...]}."""
    rng = noise(7)
    base = [20.0 + next(rng) for _ in range(400)]
    spike = list(base)
    spike[300] = 30.0
    shift = base[:250] + [v + 8.0 for v in base[250:]]
    flat = [5.0] * 200 + [5.01] + [5.0] * 20
    irregular: list[list[float]] = []
    t = START_MS
    for value in base[:300]:
        t += int(30_000 + 60_000 * (next(rng) + 1.0))
        irregular.append([t, value])
    gap = _regular(base[:200]) + [[START_MS + 200 * STEP_MS + 2 * 86_400_000 + i * STEP_MS, v + 3.0]
                                  for i, v in enumerate(base[200:260])]
    repeated = [[START_MS + (i // 2) * STEP_MS, value] for i, value in enumerate(base[:240])]
    late = _regular(base[:220])
    late[210], late[211] = late[211], late[210]
    late.append([START_MS, 99.0])
    short = {"probation": 20, "relearn": 10}
    stuck = base[:250] + [base[249]] * 40
    sustained = {"probation": 20, "long_alpha": 0.0005, "z_scale": 5.5, "clip_z": 4.0, "relearn": 3600,
                 "shift_z": 5.5, "novelty": 0.0, "tail_down": 0}
    heavy = [20.0 + 6.0 * next(rng) ** 5 for _ in range(400)]  # mostly calm, now and then a burst
    heavy[350] = 34.0
    return {
        "spike": {"description": "noise, then one reading 10 units off", "params": {}, "points": _regular(spike)},
        "level_shift": {"description": "a lasting shift of 8 units: alarms, then re-learns", "params": short,
                        "points": _regular(shift)},
        "flatline": {"description": "a constant series: the spread floor (0.1 % of the level)", "params": short,
                     "points": _regular(flat)},
        "irregular": {"description": "intervals of 30 to 150 s", "params": short, "points": irregular},
        "gap": {"description": "two days off, then a level 3 units higher", "params": short, "points": gap},
        "repeated": {"description": "every timestamp twice", "params": short, "points": repeated},
        "sustained": {"description": "the sustained preset on a shift: every shifted reading scores",
                      "params": sustained, "points": _regular(shift)},
        "stuck": {"description": "a sensor stuck at its last value: one alarm when the run passes flat_min",
                  "params": short, "points": _regular(stuck)},
        "stuck_sustained": {"description": "the sustained preset on a stuck sensor: every reading past flat_min",
                            "params": sustained, "points": _regular(stuck)},
        "heavy_tail": {"description": "bursty noise: the tail grows, then steps down; a larger burst still alarms",
                       "params": {}, "points": _regular(heavy)},
        "late": {"description": "two readings swapped and one far older than the newest: scored, not learned",
                 "params": short, "points": late},
    }


def build(index: Any) -> dict[str, dict[str, Any]]:
    """Every vector with the expected results from ``index`` (the Python processor)."""
    vectors = {}
    for name, case in cases().items():
        params = index.DetectorParams(**case["params"])
        scored, state = index.detect_series([(int(t), float(v)) for t, v in case["points"]], params)
        vectors[name] = {**case, "params": asdict(params),
                         "expect": [[s.score, s.expected, s.spread, s.learned, s.width] for s in scored],
                         "state": state.to_list()}
    return vectors


def close(a: float, b: float) -> bool:
    """Equal to 1e-9 relative (or 1e-12 absolute near zero)."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


if __name__ == "__main__":
    VECTOR_DIR.mkdir(parents=True, exist_ok=True)
    for vector_name, vector in build(load_handler()).items():
        Path(VECTOR_DIR / f"{vector_name}.json").write_text(json.dumps(vector, indent=None) + "\n")
