"""Scoring anomaly detectors the way NAB and SKAB do, written from their papers and READMEs.

NAB (Lavin & Ahmad 2015, numenta/NAB): every labelled window rewards its earliest detection with a scaled sigmoid
of its position (+1 at the window's start, 0 at its end), a window without a detection costs ``fn_weight``, a
detection outside every window costs ``fp_weight`` times a sigmoid of its distance past the previous window (a full
``fp_weight`` before the first window); the first 15 % of a file (at most 750 rows) is not scored; one threshold is
chosen for the whole corpus, the one giving the highest raw score; the result is normalised to 100 x (raw - null) /
(perfect - null), where null never detects and perfect detects each window at its start (``tp_weight`` each).

SKAB (waico/SKAB, outlier detection): point F1 of the 0/1 predictions against the ``anomaly`` column over all files
together, FAR = FP / (FP + TN) and MAR = FN / (FN + TP), in per cent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PROBATION_FRACTION = 0.15
PROBATION_CAP_ROWS = 5000


@dataclass(frozen=True)
class CostMatrix:
    """A NAB profile's weights."""

    tp_weight: float
    fp_weight: float
    fn_weight: float


# numenta/NAB config/profiles.json
PROFILES: Mapping[str, CostMatrix] = {
    "standard": CostMatrix(1.0, 0.11, 1.0),
    "reward_low_FP_rate": CostMatrix(1.0, 0.22, 1.0),
    "reward_low_FN_rate": CostMatrix(1.0, 0.11, 2.0),
}


@dataclass(frozen=True)
class ScoredRow:
    """One row's anomaly score, the NAB weight a detection there would earn, and its window (None: outside)."""

    anomaly_score: float
    weight: float
    window: str | None
    probationary: bool


@dataclass(frozen=True)
class NabResult:
    """A detector's NAB result under one profile: raw and normalised score at the corpus threshold."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    per_file: Mapping[str, float]

    @property
    def normalised(self) -> float:
        """100 x (raw - null) / (perfect - null); NaN for files without a window (nothing to detect)."""
        if self.perfect == self.null:
            return math.nan
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def scaled_sigmoid(position: float) -> float:
    """NAB's reward at a relative position: 2 sigmoid(-5 x) - 1, and -1 beyond 3 window lengths."""
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probation_rows(rows: int) -> float:
    """The rows at the start of a file NAB does not score."""
    return min(math.floor(PROBATION_FRACTION * rows), PROBATION_FRACTION * PROBATION_CAP_ROWS)


def weigh_rows(name: str, timestamps: Sequence[str], scores: Sequence[float],
               windows: Sequence[tuple[str, str]], cost: CostMatrix) -> list[ScoredRow]:
    """Each row of one file with the weight NAB gives a detection on it (windows are [start, end] timestamps)."""
    index = {stamp: i for i, stamp in enumerate(timestamps)}
    spans = sorted((index[start], index[end]) for start, end in windows)
    max_tp = scaled_sigmoid(-1.0)
    probation = probation_rows(len(timestamps))
    rows = []
    current: tuple[int, int] | None = None
    previous: tuple[int, int] | None = None
    pending = list(spans)
    for i, score in enumerate(scores):
        if pending and i == pending[0][0]:
            current = pending.pop(0)
        if current is not None:
            width = current[1] - current[0] + 1
            weight = scaled_sigmoid(-(current[1] - i + 1) / width) * cost.tp_weight / max_tp
            window: str | None = f"{name}|{current[0]}"
        else:
            if previous is None:
                unweighted = -1.0
            else:
                unweighted = scaled_sigmoid(abs(previous[1] - i) / (previous[1] - previous[0]))
            weight = unweighted * cost.fp_weight
            window = None
        rows.append(ScoredRow(float(score), weight, window, i < probation))
        if current is not None and i == current[1]:
            previous, current = current, None
    return rows


def scores_by_threshold(rows: Sequence[ScoredRow], cost: CostMatrix) -> list[tuple[float, float]]:
    """(threshold, raw score) for every distinct anomaly score, highest first, after (1.1, no detection)."""
    scorable = sorted((row for row in rows if not row.probationary), key=lambda row: row.anomaly_score, reverse=True)
    parts: dict[str, float] = {row.window: -cost.fn_weight for row in scorable if row.window is not None}
    false_positives = 0.0
    result = []
    threshold = 1.1
    for row in scorable:
        if row.anomaly_score != threshold:
            result.append((threshold, false_positives + sum(parts.values())))
            threshold = row.anomaly_score
        if row.window is None:
            false_positives += row.weight
        else:
            parts[row.window] = max(parts[row.window], row.weight)
    result.append((threshold, false_positives + sum(parts.values())))
    return result


def score_at(rows: Sequence[ScoredRow], cost: CostMatrix, threshold: float) -> float:
    """The raw score when every row scoring ``threshold`` or more is a detection."""
    best = 0.0
    for candidate, score in scores_by_threshold(rows, cost):
        if candidate < threshold:
            break
        best = score
    return best


def nab_score(files: Mapping[str, tuple[Sequence[str], Sequence[float], Sequence[tuple[str, str]]]],
              profile: str = "standard") -> NabResult:
    """A detector's NAB result over ``files`` (name -> timestamps, anomaly scores, windows) under ``profile``."""
    cost = PROFILES[profile]
    weighed = {name: weigh_rows(name, stamps, scores, windows, cost)
               for name, (stamps, scores, windows) in files.items()}
    everything = [row for rows in weighed.values() for row in rows]
    threshold, raw = max(scores_by_threshold(everything, cost), key=lambda pair: pair[1])
    windows = sum(len(spec[2]) for spec in files.values())
    per_file = {name: score_at(rows, cost, threshold) for name, rows in weighed.items()}
    return NabResult(profile, threshold, raw, _null_score(everything, cost), windows * cost.tp_weight, per_file)


def _null_score(rows: Sequence[ScoredRow], cost: CostMatrix) -> float:
    """The raw score of the detector that never detects (NAB's null), the best of its two thresholds."""
    null_rows = [ScoredRow(0.0, row.weight, row.window, row.probationary) for row in rows]
    return max(score for _, score in scores_by_threshold(null_rows, cost))


def category_scores(files: Mapping[str, tuple[Sequence[str], Sequence[float], Sequence[tuple[str, str]]]],
                    profile: str, threshold: float) -> dict[str, float]:
    """Each category's normalised score (files named ``<category>/<file>``) at one ``threshold``, the corpus
    threshold ``nab_score`` chose or one chosen without the category (a leave-one-category-out check); NaN for
    a category without windows."""
    cost = PROFILES[profile]
    groups: dict[str, list[str]] = {}
    for name in files:
        groups.setdefault(name.split("/")[0], []).append(name)
    result = {}
    for category, names in sorted(groups.items()):
        rows = [row for name in names for row in weigh_rows(name, files[name][0], files[name][1], files[name][2],
                                                              cost)]
        perfect = sum(len(files[name][2]) for name in names) * cost.tp_weight
        null = _null_score(rows, cost)
        raw = score_at(rows, cost, threshold)
        result[category] = math.nan if perfect == null else 100.0 * (raw - null) / (perfect - null)
    return result


def held_out_scores(files: Mapping[str, tuple[Sequence[str], Sequence[float], Sequence[tuple[str, str]]]],
                    profile: str) -> dict[str, tuple[float, float]]:
    """Leave one category out: for each category with windows, (its normalised score, the threshold) when the
    threshold is the one ``nab_score`` chooses on every *other* file. It shows how far a corpus threshold carries
    over to a category it was not chosen on, as it must to the held-out NAB category."""
    categories = sorted({name.split("/")[0] for name in files})
    result = {}
    for category in categories:
        if not any(spec[2] for name, spec in files.items() if name.split("/")[0] == category):
            continue
        others = {name: spec for name, spec in files.items() if name.split("/")[0] != category}
        threshold = nab_score(others, profile).threshold
        result[category] = (category_scores(files, profile, threshold)[category], threshold)
    return result


@dataclass(frozen=True)
class PointMetrics:
    """SKAB's outlier-detection metrics: F1, false alarm rate and missed alarm rate (per cent)."""

    f1: float
    far: float
    mar: float


def point_metrics(labels: Sequence[int], flags: Sequence[bool]) -> PointMetrics:
    """F1, FAR and MAR of 0/1 predictions against 0/1 labels (all files concatenated)."""
    tp = sum(1 for label, flag in zip(labels, flags, strict=True) if label and flag)
    fp = sum(1 for label, flag in zip(labels, flags, strict=True) if not label and flag)
    fn = sum(1 for label, flag in zip(labels, flags, strict=True) if label and not flag)
    tn = len(labels) - tp - fp - fn
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    far = 100.0 * fp / (fp + tn) if fp + tn else 0.0
    mar = 100.0 * fn / (fn + tp) if fn + tp else 0.0
    return PointMetrics(f1, far, mar)
