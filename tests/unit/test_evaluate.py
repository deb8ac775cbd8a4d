"""iotpipe.evaluate: the NAB scorer against NAB's published per-file scores of one detector, its normalisation
and threshold choice on small corpora, and SKAB's point metrics."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from iotpipe.evaluate import (
    PROFILES,
    category_scores,
    held_out_scores,
    nab_score,
    point_metrics,
    scaled_sigmoid,
    score_at,
    weigh_rows,
)

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "nab_reference"


def _published() -> list[tuple[str, str, float, float]]:
    with (REFERENCE / "numenta_published_scores.csv").open() as handle:
        return [(r["profile"], r["file"], float(r["threshold"]), float(r["score"])) for r in csv.DictReader(handle)]


@pytest.mark.parametrize(("profile", "name", "threshold", "published"), _published())
def test_per_file_scores_equal_nabs_published_ones(profile: str, name: str, threshold: float,
                                                   published: float) -> None:
    windows = json.loads((REFERENCE / "windows.json").read_text())[name]
    with (REFERENCE / f"numenta_{Path(name).stem}.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    stamps = [row["timestamp"] for row in rows]
    scores = [float(row["anomaly_score"]) for row in rows]
    weighed = weigh_rows(name, stamps, scores, [tuple(w) for w in windows], PROFILES[profile])
    assert score_at(weighed, PROFILES[profile], threshold) == pytest.approx(published, abs=1e-9)


def test_the_sigmoid_rewards_early_detection() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(3.5) == -1.0


def _corpus(scores: list[float]) -> dict:
    stamps = [f"t{i:04d}" for i in range(1000)]
    return {"a.csv": (stamps, scores, [("t0500", "t0599")])}


def test_normalisation_is_100_for_perfect_and_0_for_null() -> None:
    perfect = [1.0 if i == 500 else 0.0 for i in range(1000)]
    assert nab_score(_corpus(perfect)).normalised == pytest.approx(100.0)
    assert nab_score(_corpus([0.0] * 1000)).normalised == pytest.approx(0.0)


def test_files_without_windows_have_no_normalised_score() -> None:
    stamps = [f"t{i:04d}" for i in range(100)]
    result = nab_score({"quiet.csv": (stamps, [0.0] * 100, [])})
    assert math.isnan(result.normalised)


def test_the_threshold_maximises_the_corpus_score() -> None:
    # an early false positive (0.95) before the window, a late detection (0.9) in it: at 0.9 both count, and
    # the late reward minus one false positive's 0.11 beats missing the window (-1)
    scores = [0.0] * 1000
    scores[300], scores[590] = 0.95, 0.9
    result = nab_score(_corpus(scores))
    assert result.threshold == 0.9
    assert result.raw == pytest.approx(scaled_sigmoid(-(599 - 590 + 1) / 100) / scaled_sigmoid(-1.0) - 0.11)
    assert 0 < result.normalised < 100


def test_categories_are_scored_apart_at_a_given_threshold() -> None:
    stamps = [f"t{i:04d}" for i in range(1000)]
    found = [1.0 if i == 500 else 0.0 for i in range(1000)]
    missed = [0.0] * 1000
    quiet = [0.0] * 1000
    quiet[700] = 1.0  # a false positive in a file without windows
    corpus = {"good/a.csv": (stamps, found, [("t0500", "t0599")]),
              "bad/b.csv": (stamps, missed, [("t0500", "t0599")]),
              "none/c.csv": (stamps, quiet, [])}
    scores = category_scores(corpus, "standard", 0.5)
    assert scores["good"] == pytest.approx(100.0)
    assert scores["bad"] == pytest.approx(0.0)
    assert math.isnan(scores["none"])
    # the corpus result at the same threshold is the categories' raw scores together
    assert nab_score(corpus).raw == pytest.approx(1.0 - 1.0 - 0.11)


def test_a_held_out_category_is_scored_at_the_threshold_the_others_choose() -> None:
    stamps = [f"t{i:04d}" for i in range(1000)]
    quiet = [0.0] * 1000
    high = list(quiet)
    high[520] = 0.9  # found at a threshold of 0.9 or less
    low = list(quiet)
    low[520], low[300] = 0.3, 0.6  # found only at 0.3, with a false positive at 0.6 above it
    corpus = {"high/a.csv": (stamps, high, [("t0500", "t0599")]),
              "low/b.csv": (stamps, low, [("t0500", "t0599")]),
              "none/c.csv": (stamps, quiet, [])}
    held = held_out_scores(corpus, "standard")
    assert set(held) == {"high", "low"}  # a category without windows has nothing to hold out
    # without "low" the others choose 0.9, where low's window is missed and its false positive not made
    assert held["low"] == (pytest.approx(0.0), 0.9)
    # without "high" the others choose 0.3 (the window's reward beats the false positive's cost): high is found
    assert held["high"][1] == 0.3
    assert held["high"][0] > 50
    assert held["high"][0] == pytest.approx(category_scores(corpus, "standard", 0.3)["high"])


def test_rows_in_the_probationary_period_are_not_scored() -> None:
    scores = [0.0] * 1000
    scores[10] = 1.0  # inside the first 15 %: no false positive
    assert nab_score(_corpus(scores)).raw == pytest.approx(-1.0)


def test_point_metrics_as_skab_computes_them() -> None:
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    flags = [False, False, True, False, True, True, False, False]
    metrics = point_metrics(labels, flags)
    assert metrics.f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert metrics.far == pytest.approx(25.0)
    assert metrics.mar == pytest.approx(50.0)
