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
