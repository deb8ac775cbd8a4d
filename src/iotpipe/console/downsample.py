"""Largest-Triangle-Three-Buckets (Steinarsson, 2013): a long series reduced to ``threshold`` points that keep its
shape (peaks and dips survive, unlike averaging or taking every n-th point)."""

from __future__ import annotations

from collections.abc import Sequence

from iotpipe.errors import ParameterError


def lttb(times: Sequence[float], values: Sequence[float], threshold: int) -> tuple[list[float], list[float]]:
    """``times`` (ascending) and ``values`` reduced to at most ``threshold`` points; the first and last kept.

    A series of ``threshold`` points or fewer is returned as it is.
    """
    if len(times) != len(values):
        raise ParameterError("values", len(values), f"has a different length from times ({len(times)})")
    if threshold < 3:
        raise ParameterError("threshold", threshold, "is too small; use 3 or more points")
    count = len(times)
    if count <= threshold:
        return list(times), list(values)
    out_t, out_v = [times[0]], [values[0]]
    every = (count - 2) / (threshold - 2)
    chosen = 0
    for bucket in range(threshold - 2):
        # the next bucket's average is the third corner of the triangle
        next_start = int((bucket + 1) * every) + 1
        next_end = min(int((bucket + 2) * every) + 1, count)
        span = next_end - next_start
        avg_t = sum(times[next_start:next_end]) / span
        avg_v = sum(values[next_start:next_end]) / span
        start, end = int(bucket * every) + 1, int((bucket + 1) * every) + 1
        at, av = times[chosen], values[chosen]
        best, best_area = start, -1.0
        for index in range(start, end):
            area = abs((at - avg_t) * (values[index] - av) - (at - times[index]) * (avg_v - av))
            if area > best_area:
                best, best_area = index, area
        out_t.append(times[best])
        out_v.append(values[best])
        chosen = best
    out_t.append(times[-1])
    out_v.append(values[-1])
    return out_t, out_v
