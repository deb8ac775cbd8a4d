"""The signal model: realistic values per sensor type inside the configured thresholds, and injected anomalies."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from iotpipe.config import Threshold


def normal_band(threshold: Threshold) -> tuple[float, float]:
    """Where normal values stay: inside [min, max] with a margin; one-sided ranges get a plausible span."""
    lo, hi = threshold.min, threshold.max
    if lo is not None and hi is not None:
        width = hi - lo
        return (lo + 0.1 * width, hi - 0.1 * width) if width > 0 else (lo, hi)
    if hi is not None:
        width = abs(hi) or 1.0
        return (max(hi - width, 0.0) if hi > 0 else hi - width, hi - 0.1 * width)
    assert lo is not None  # config validation guarantees min or max
    width = abs(lo) or 1.0
    return (lo + 0.1 * width, lo + width)


def anomalous_value(threshold: Threshold, rng: random.Random) -> float:
    """A value strictly outside the threshold range (above max or below min), rounded like normal values."""
    lo, hi = threshold.min, threshold.max
    band_lo, band_hi = normal_band(threshold)
    width = max(band_hi - band_lo, 1.0)
    above = hi is not None and (lo is None or rng.random() < 0.5)
    if above:
        assert hi is not None
        value = round(hi + width * rng.uniform(0.05, 0.5), 2)
        return value if value > hi else math.nextafter(hi, math.inf)
    assert lo is not None
    value = round(lo - width * rng.uniform(0.05, 0.5), 2)
    return value if value < lo else math.nextafter(lo, -math.inf)


FAILURES = ("drift", "spike", "level-shift", "variance", "flatline")
NOISE = 0.01  # a healthy reading's noise, as a fraction of the normal band's width
DAY_S = 86_400.0


@dataclass
class SignalModel:
    """A sensor's signal over time: a steady level of its own with small noise and a slow daily rhythm, healthy
    until its ``failure`` (if any) starts at ``failure_start_s``; state kept between steps.

    The healthy signal is what a machine at a steady operating point sends: a level that differs between
    machines but holds still, so a detector learns it within its probation and a failure inside the static
    bounds stands out. Failures, with ``w`` the normal band's width and noise ``0.01 w``: ``drift`` moves the
    level by ``0.002 w`` a second, ``spike`` makes 5 % of the readings jump by ``0.15``-``0.3 w``,
    ``level-shift`` moves the level by ``0.15 w`` at once, ``variance`` grows the noise by its own size every
    5 seconds, ``flatline`` repeats the last healthy value.
    """

    sensor_type: str
    threshold: Threshold
    rng: random.Random
    failure: str | None = None  # one of FAILURES
    failure_start_s: float = 0.0  # seconds after the run's start
    level: float = 0.0
    phase: float = 0.0
    direction: float = 1.0
    last: float | None = None
    faulty: bool = False  # whether the last step's value is a failed one (ground truth)

    def __post_init__(self) -> None:
        lo, hi = normal_band(self.threshold)
        self.level = (lo + hi) / 2 + self.rng.uniform(-0.15, 0.15) * (hi - lo)
        self.phase = self.rng.uniform(0, 2 * math.pi)
        # A failure moves the level towards the side with more room, so it stays inside the normal band.
        self.direction = 1.0 if self.level <= (lo + hi) / 2 else -1.0

    def failing(self, t: float) -> bool:
        """Whether the failure has started at ``t`` seconds."""
        return self.failure is not None and t >= self.failure_start_s

    def step(self, t: float) -> float:
        """The next value at ``t`` seconds (inside the normal band), failed if the failure has started."""
        lo, hi = normal_band(self.threshold)
        width = hi - lo
        rhythm = 0.02 * width * math.sin(2 * math.pi * t / DAY_S + self.phase)
        noise = self.rng.gauss(0, NOISE * width)
        mode = self.failure if self.failing(t) else None
        since = t - self.failure_start_s
        offset = 0.0
        self.faulty = mode is not None
        if mode == "flatline" and self.last is not None:
            return self.last
        if mode == "drift":
            offset = self.direction * 0.002 * width * since
        elif mode == "level-shift":
            offset = self.direction * 0.15 * width
        elif mode == "variance":
            noise *= 1.0 + since / 5.0
        elif mode == "spike":
            self.faulty = self.rng.random() < 0.05
            if self.faulty:
                offset = self.rng.choice((-1.0, 1.0)) * self.rng.uniform(0.15, 0.3) * width
        value = round(min(max(self.level + rhythm + noise + offset, lo), hi), 2)
        self.last = value
        return value

    def sample(self, t: float, anomaly_rate: float) -> tuple[float, bool]:
        """The value at ``t``; with probability ``anomaly_rate`` an injected out-of-range value instead."""
        value = self.step(t)
        if anomaly_rate > 0 and self.rng.random() < anomaly_rate:
            return anomalous_value(self.threshold, self.rng), True
        return value, False


def device_rng(seed: int | None, device: str, sensor: str) -> random.Random:
    """The random generator of one device's sensor: seeded from ``seed``, the device and the sensor."""
    # One generator per device and sensor: the values do not depend on how many others are simulated.
    return random.Random(f"{seed}:{device}:{sensor}") if seed is not None else random.Random()
