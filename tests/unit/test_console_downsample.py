"""LTTB keeps a long series' shape in a few points: the ends, the peaks and dips."""

from __future__ import annotations

import math

import pytest

from iotpipe.console.downsample import lttb
from iotpipe.errors import ParameterError


def test_a_day_at_one_hertz_becomes_at_most_the_threshold_and_keeps_its_spike() -> None:
    times = [float(t) for t in range(86_400)]
    values = [math.sin(t / 3600) for t in range(86_400)]
    values[50_000] = 40.0  # one spike: averaging would flatten it, every n-th point would miss it
    shown_t, shown_v = lttb(times, values, 2000)
    assert len(shown_t) == len(shown_v) == 2000
    assert (shown_t[0], shown_t[-1]) == (0.0, 86_399.0)
    assert shown_t == sorted(shown_t)
    assert 40.0 in shown_v and shown_t[shown_v.index(40.0)] == 50_000.0
    assert min(shown_v) == pytest.approx(-1.0, abs=1e-3)


def test_a_short_series_is_returned_as_it_is() -> None:
    assert lttb([1.0, 2.0, 3.0], [5.0, 6.0, 7.0], 10) == ([1.0, 2.0, 3.0], [5.0, 6.0, 7.0])


def test_bad_arguments_name_the_parameter() -> None:
    with pytest.raises(ParameterError, match="threshold"):
        lttb([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], 2)
    with pytest.raises(ParameterError, match="values"):
        lttb([1.0, 2.0], [1.0], 10)


def _one_point_at_a_time(times: list[float], values: list[float], threshold: int) -> list[int]:
    """The algorithm as written in the paper, point by point: the indexes it keeps."""
    count, every, chosen, kept = len(times), (len(times) - 2) / (threshold - 2), 0, [0]
    for bucket in range(threshold - 2):
        nxt = range(int((bucket + 1) * every) + 1, min(int((bucket + 2) * every) + 1, count))
        avg_t, avg_v = sum(times[i] for i in nxt) / len(nxt), sum(values[i] for i in nxt) / len(nxt)
        bucket_range = range(int(bucket * every) + 1, int((bucket + 1) * every) + 1)
        best, best_area = bucket_range[0], -1.0
        for i in bucket_range:
            area = abs((times[chosen] - avg_t) * (values[i] - values[chosen])
                       - (times[chosen] - times[i]) * (avg_v - values[chosen]))
            if area > best_area:
                best, best_area = i, area
        kept.append(best)
        chosen = best
    return [*kept, count - 1]


@pytest.mark.parametrize("seed", range(3))
def test_the_points_kept_are_the_point_by_point_algorithms(seed: int) -> None:
    import random

    rng = random.Random(seed)
    times = sorted(rng.uniform(0, 1e6) for _ in range(5000))
    values = [rng.choice((20.0, 21.5, rng.gauss(50, 10))) for _ in range(5000)]  # ties among the areas too
    for threshold in (3, 100, 1234):
        kept = _one_point_at_a_time(times, values, threshold)
        assert lttb(times, values, threshold) == ([times[i] for i in kept], [values[i] for i in kept])
    values[77] = math.inf  # the point-by-point way, the same points
    kept = _one_point_at_a_time(times, values, 500)
    assert lttb(times, values, 500) == ([times[i] for i in kept], [values[i] for i in kept])
