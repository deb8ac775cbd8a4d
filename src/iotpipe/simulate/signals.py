"""The signal model: realistic values per sensor type inside the configured thresholds, and injected anomalies."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

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


@dataclass
class SignalModel:
    """A sensor's signal over time: a model per sensor type, state kept between steps."""

    sensor_type: str
    threshold: Threshold
    rng: random.Random
    drift: float = 0.0
    wear: float = 0.0
    wear_steps_left: int = 0
    phase: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.phase = self.rng.uniform(0, 2 * math.pi)

    def step(self, t: float) -> float:
        """The next normal value at ``t`` seconds (inside the normal band)."""
        lo, hi = normal_band(self.threshold)
        width = hi - lo
        mid = (lo + hi) / 2
        if self.sensor_type == "temperature":
            # slow mean-reverting drift plus a slow cycle and a little noise
            self.drift = 0.98 * self.drift + self.rng.gauss(0, 0.03 * width)
            value = (
                mid
                + self.drift
                + 0.15 * width * math.sin(2 * math.pi * t / 3600 + self.phase)
                + self.rng.gauss(0, 0.02 * width)
            )
        elif self.sensor_type == "pressure":
            value = (
                mid
                + 0.3 * width * math.sin(2 * math.pi * t / 30 + self.phase)
                + self.rng.gauss(0, 0.03 * width)
            )
        elif self.sensor_type == "vibration":
            # low baseline; now and then a bearing starts wearing and the level creeps up, then is "replaced"
            if self.wear_steps_left == 0 and self.rng.random() < 0.01:
                self.wear_steps_left = self.rng.randint(20, 120)
            if self.wear_steps_left > 0:
                self.wear = min(self.wear + 0.01 * width, 0.7 * width)
                self.wear_steps_left -= 1
            else:
                self.wear = 0.0
            value = lo + 0.2 * width + self.wear + abs(self.rng.gauss(0, 0.05 * width))
        else:
            value = mid + self.rng.gauss(0, 0.1 * width)
        return round(min(max(value, lo), hi), 2)

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
