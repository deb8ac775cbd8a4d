"""The adaptive detector of docs/contract.md 12 in the Python processor: the shared vectors, and each rule of
the contract on a small series (the Node twin runs the same vectors in handler/node/test/detector.test.js)."""

from __future__ import annotations

import json
import math
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from detector_vectors import START_MS, STEP_MS, VECTOR_DIR, build, close
from processor_support import REPO, load_handler

from iotpipe.config import load_config

index = load_handler()
PARAMS = index.DetectorParams(probation=5, relearn=3)


def run(values: list[float], params: object = PARAMS) -> tuple[list, object]:
    return index.detect_series([(START_MS + i * STEP_MS, v) for i, v in enumerate(values)], params)


@pytest.mark.parametrize("name", sorted(build(index)))
def test_committed_vectors_match_the_processor(name: str) -> None:
    committed = json.loads((VECTOR_DIR / f"{name}.json").read_text())
    fresh = build(index)[name]
    assert committed["points"] == fresh["points"]
    assert committed["params"] == fresh["params"]
    for i, (old, new) in enumerate(zip(committed["expect"], fresh["expect"], strict=True)):
        assert all(close(a, b) for a, b in zip(old[:3] + old[4:], new[:3] + new[4:], strict=True)), (name, i, old, new)
        assert old[3] == new[3]
    assert all(close(a, b) for a, b in zip(committed["state"], fresh["state"], strict=True))


def test_one_step_is_the_contract_arithmetic() -> None:
    state = index.DetectorState(count=200, newest_ms=1000, mean=10.0, var=4.0, short=10.0, interval=1000.0,
                                shifted=0, peak=1.0, last=9.0, run=3, longest=4, tail=0.5, below=98)
    params = index.DetectorParams(probation=5, long_alpha=0.01, z_scale=4.0, clip_z=4.0)
    scored, after = index.detect_step(state, 2000, 16.0, params)
    # spread 2; z_point 3; short 11.2, z_shift 0.6 / sqrt(0.2 / 1.8) = 1.8; novel (3 - 1) / max(1, 0.5) = 2;
    # score 4 / (4 + 16); the band 4 x 1 x 2 either side
    assert scored.score == pytest.approx(0.2)
    assert (scored.expected, scored.spread, scored.width, scored.learned) == (10.0, 2.0, 8.0, True)
    # z 3 passes the tail 0.5: a 64th up, the count below it kept
    assert (after.tail, after.below) == (0.5 + 1 / 64, 98)
    # alpha 0.01, deviation 6 (under the clip of 8): mean 10.06, var 0.99 * (4 + 0.36)
    assert after.mean == pytest.approx(10.06)
    assert after.var == pytest.approx(0.99 * 4.36)
    assert after.short == pytest.approx(11.2)
    assert after.peak == pytest.approx(3.0)
    # 16 is not the last value 9: the run of 3 ends and becomes the longest (4 stays, it is longer)
    assert (after.last, after.run, after.longest) == (16.0, 0, 4)
    assert (after.count, after.newest_ms, after.interval, after.shifted) == (201, 2000, 1000.0, 0)


def test_scores_are_zero_during_the_probation_and_in_range_after() -> None:
    scored, _ = run([1.0, 9.0, 2.0, 1.5, 1.0, 1.2, 1.1, 30.0, 1.0])
    assert [s.score for s in scored[:5]] == [0.0] * 5
    assert all(0.0 <= s.score <= 1.0 for s in scored)
    assert scored[7].score > 0.5 > scored[6].score


def test_the_recent_peak_is_learned_from_the_second_half_of_probation() -> None:
    params = index.DetectorParams(probation=40, relearn=1000)
    calm = [1.0 + 0.1 * ((i * 7) % 5 - 2) for i in range(60)]
    _, first_half = run(calm[:19], params)  # 2 x 19 < 40: nothing remembered yet
    _, second_half = run(calm[:30], params)
    assert first_half.peak == 0.0 and second_half.peak > 0.0
    # so the first ordinary deviation after probation is judged against the noise already seen, not against 0:
    # a wobble just past the noise seen alarmed when the peak started at 0 (as it did) and does not now
    after = run(calm[:40], params)[1]
    wobble = after.mean + (after.peak + 0.5 * params.z_scale * max(1.0, after.tail)) * after.var ** 0.5
    assert index.detect_step(after, START_MS + 40 * STEP_MS, wobble, params)[0].score < 0.5
    assert index.detect_step(after._replace(peak=0.0), START_MS + 40 * STEP_MS, wobble, params)[0].score > 0.5


def test_the_excess_is_measured_in_the_series_own_tail() -> None:
    state = index.DetectorState(count=200, newest_ms=1000, mean=10.0, var=4.0, short=10.0, interval=1000.0,
                                peak=1.0, last=9.0, tail=2.0)
    params = index.DetectorParams(probation=5)
    scored, _ = index.detect_step(state, 2000, 16.0, params)
    # novel (3 - 1) / 2 = 1; score 1 / (1 + 0.54^2); the band 0.54 x 2 x 2 either side
    assert scored.score == pytest.approx(1 / 1.2916)
    assert scored.width == pytest.approx(2.16)
    # without a tail (sustained) the same excess is in spreads, and the tail is not learned
    flat = replace(params, tail_down=0)
    untailed, after = index.detect_step(state, 2000, 16.0, flat)
    assert untailed.score == pytest.approx(4 / 4.2916) and untailed.width == pytest.approx(1.08)
    assert (after.tail, after.below) == (2.0, 0)


def test_the_tail_settles_at_the_99th_percentile_of_the_deviation() -> None:
    params = index.DetectorParams(probation=5)
    state = index.DetectorState(count=300, newest_ms=1000, mean=0.0, var=1.0, short=0.0, interval=1000.0, tail=3.0)
    # one reading past the tail: a 64th up; 99 below it: a 64th down, the count restarting
    up = index.detect_step(state, 2000, 5.0, params)[1]
    assert (up.tail, up.below) == (3.0 + 1 / 64, 0)
    below = state._replace(below=97)
    once = index.detect_step(below, 2000, 0.0, params)[1]
    assert (once.tail, once.below) == (3.0, 98)
    twice = index.detect_step(once, 3000, 0.0, params)[1]
    assert (twice.tail, twice.below) == (3.0 - 1 / 64, 0)
    # during probation a step is an eighth; a series starts at the tail of Gaussian noise, 3, and its second
    # reading (no spread yet) moves nothing
    young = index.DetectorState(count=3, newest_ms=1000, mean=0.0, var=1.0, short=0.0, interval=1000.0, tail=1.0)
    assert index.detect_step(young, 2000, 5.0, params)[1].tail == 1.125
    second = index.detect_step(index.DetectorState(), 0, 1.0, params)[1]
    assert second.tail == 3.0
    assert index.detect_step(second, 1000, 9.0, params)[1].tail == 3.0
    # over a long series the share of deviations past the tail comes out near 1 in 100
    values = [math.sin(2.3 * i) * math.sin(0.71 * i) ** 3 for i in range(20_000)]
    scored, final = run(values, index.DetectorParams(probation=150))
    past = sum(abs(v - s.expected) / s.spread > final.tail for v, s in zip(values[-5000:], scored[-5000:],
                                                                            strict=True))
    assert 10 <= past <= 150


def test_a_heavy_tailed_series_alarms_less_on_its_bursts() -> None:
    # bursts several spreads out are this series' normal: the tail grows to them, and only a larger burst scores
    vector = json.loads((VECTOR_DIR / "heavy_tail.json").read_text())
    scores = [e[0] for e in vector["expect"]]
    assert vector["state"][11] > 2.0  # the learned tail, in spreads
    assert [i for i, s in enumerate(scores) if s >= 0.5] == [350]
    # the same excess in spreads, at the same scale, alarms on an ordinary burst too
    untailed, _ = index.detect_series([(int(t), float(v)) for t, v in vector["points"]],
                                      index.DetectorParams(tail_down=0))
    assert next(i for i, s in enumerate(untailed) if s.score >= 0.5) < 350


def test_a_late_reading_is_scored_but_not_learned() -> None:
    _, state = run([1.0, 2.0, 1.5, 1.7, 1.2, 1.4, 1.3])
    scored, after = index.detect_step(state, START_MS, 50.0, PARAMS)
    assert after == state
    assert not scored.learned and scored.score > 0.9


def test_a_series_scored_with_readings_not_learned_is_scored_as_one_step_at_a_time() -> None:
    """The processor passes the readings a state already absorbed (a retry) as not to be learned: each is scored
    against the state as it stands and leaves it as it was, as a step whose state is dropped."""
    rng = random.Random(5)
    points = [(START_MS + i * STEP_MS, 10.0 + rng.gauss(0.0, 1.0) + (8.0 if i == 30 else 0.0)) for i in range(60)]
    learn = [i % 3 != 1 for i in range(60)]
    expected, state = [], index.DetectorState()
    for (timestamp_ms, value), learns in zip(points, learn, strict=True):
        scored, after = index.detect_step(state, timestamp_ms, value, PARAMS)
        expected.append(scored)
        state = after if learns else state
    scored, last = index.detect_series(points, PARAMS, None, learn)
    assert scored == expected and last == state
    assert last.count == sum(learn) and any(s.score > 0.5 for s in scored)
    first, _ = index.detect_series(points, PARAMS)
    assert first != scored  # not learning a reading changes the later scores: the flags are obeyed
    untouched = index.DetectorState(count=3, newest_ms=START_MS, mean=1.0, var=1.0, short=1.0, interval=1000.0)
    assert index.detect_series(points[:5], PARAMS, untouched, [False] * 5)[1] is untouched
    with pytest.raises(ValueError):  # a flag per reading, or the readings without one would be dropped silently
        index.detect_series(points, PARAMS, None, learn[:-1])


def test_a_repeated_timestamp_is_learned() -> None:
    _, state = run([1.0, 2.0, 1.5, 1.7, 1.2])
    scored, after = index.detect_step(state, state.newest_ms, 1.4, PARAMS)
    assert scored.learned and after.count == state.count + 1
    assert after.interval < state.interval  # the usual interval shrinks towards 0


def test_a_gap_restarts_the_short_mean() -> None:
    _, state = run([1.0, 2.0, 1.5, 1.7, 1.2, 1.4, 1.3])
    scored, after = index.detect_step(state, state.newest_ms + 100 * STEP_MS, 1.6, PARAMS)
    assert scored.learned and scored.expected == state.mean  # scored against the baseline it kept
    assert after.short == 1.6
    assert after.interval == state.interval


def test_a_lasting_shift_is_relearned_and_the_scores_fall_back() -> None:
    values = [10.0 + 0.1 * math.sin(i) for i in range(40)] + [20.0 + 0.1 * math.sin(i) for i in range(40)]
    scored, state = run(values)
    assert scored[40].score > 0.9
    assert max(s.score for s in scored[60:]) < 0.2
    assert state.mean > 19.0  # moved to the new level (the short mean it took lags it a little)


def test_a_flat_series_has_a_spread_floor() -> None:
    scored, _ = run([5.0] * 10 + [5.01, 5.0])
    assert scored[10].spread == pytest.approx(0.005)
    assert math.isfinite(scored[10].score) and scored[10].score > 0.0


def test_the_state_is_small_and_round_trips() -> None:
    _, state = run([1.0, 2.0, 1.5, 1.7, 1.2, 1.4, 1.3])
    text = json.dumps(state.to_list())
    assert len(text.encode()) <= 1024
    assert index.DetectorState.from_list(json.loads(text)) == state


def test_the_presets_are_the_contracts() -> None:
    onset = index.DetectorParams(probation=150, long_alpha=0.002, short_alpha=0.2, z_scale=0.54, clip_z=10.0,
                                 relearn=60, shift_z=2.0, gap_intervals=20.0, peak_decay=0.995, novelty=1.0,
                                 flat_min=10, flat_factor=2.0, tail_down=99)
    sustained = index.DetectorParams(probation=400, long_alpha=0.0005, short_alpha=0.2, z_scale=5.5, clip_z=4.0,
                                     relearn=3600, shift_z=5.5, gap_intervals=20.0, peak_decay=0.995, novelty=0.0,
                                     flat_min=10, flat_factor=2.0, tail_down=0)
    assert {"onset": onset, "sustained": sustained} == index.DETECTOR_PRESETS
    assert index.DetectorParams() == onset
    assert index.DEFAULT_SENSITIVITY == 0.5


def test_the_state_stays_under_200_bytes_whatever_the_values() -> None:
    worst = index.DetectorState(count=2**53, newest_ms=253_402_300_799_999, mean=-1.2345678901234567e-300,
                                var=1.2345678901234567e+300, short=-2.2250738585072014e-308,
                                interval=-1.2345678901234567e-300, shifted=2**31, peak=-1.7976931348623157e+308,
                                last=-1.2345678901234567e-300, run=2**53, longest=2**53,
                                tail=-1.7976931348623157e+308, below=2**53)
    stored = index.states_text({"t": worst})
    assert len(stored) - len('{"t":}') <= 2 + 12 + 13 * 13  # 13 numbers of at most 13 characters, and commas
    assert index.read_states(stored)["t"] == worst


def noisy(count: int, level: float = 20.0) -> list[float]:
    return [level + 0.5 * math.sin(1.7 * i) + 0.3 * math.cos(0.31 * i) for i in range(count)]


def test_a_stuck_sensor_alarms_once_at_the_onset_of_the_flat_line() -> None:
    # 200 readings of noise, then the sensor repeats its last value: 10 repeats are tolerated, the 11th alarms
    values = noisy(200) + [noisy(200)[-1]] * 40
    scored, state = run(values, index.DetectorParams(probation=50))
    flagged = [i for i, s in enumerate(scored) if s.score >= 0.5 and i >= 200]
    assert flagged == [210]
    assert scored[210].score == 1.0
    assert state.run == 40


def test_the_sustained_preset_flags_every_reading_of_a_flat_line() -> None:
    values = noisy(200) + [noisy(200)[-1]] * 40
    scored, _ = run(values, replace(index.DETECTOR_PRESETS["sustained"], probation=50))
    assert [i for i, s in enumerate(scored) if s.score >= 0.5 and i >= 200] == list(range(210, 240))


def test_repeats_the_series_always_has_are_not_a_flat_line() -> None:
    # a counter that sits at 0 for 15 readings at a time: a run of 15 (within twice the longest seen) is normal
    block = [0.0] * 16 + [3.0, 5.0, 2.0, 4.0]
    scored, state = run(block * 20, index.DetectorParams(probation=50))
    assert state.longest == 15
    assert all(s.score < 1.0 for s in scored)


def test_a_state_of_the_previous_release_still_loads() -> None:
    old = [300, 1718000000000, 20.0, 0.25, 20.5, 60000.0, 0, 1.5]
    state = index.DetectorState.from_list(old)
    assert (state.last, state.run, state.longest) == (20.0, 0, 0)
    assert state.to_list()[:8] == old
    # 11 numbers (before the tail): the recent peak, the largest deviation of about the last 200 readings, is the
    # nearest estimate of the tail the series had; a series too young to track its peak starts where a new one does
    eleven = [*old, 20.5, 2, 7]
    assert index.DetectorState.from_list(eleven).to_list() == [*eleven, 1.5, 0]
    assert index.DetectorState.from_list([*old[:7], 0, 20.5, 2, 7]).tail == index.TAIL_START == 3.0


@pytest.mark.parametrize("number", [20.43, 0.1, -12345.678901234567, 1.2345678901234567e+300, 5e-324,
                                    -2.2250738585072014e-308, 1_767_225_600_000, 2**53])
def test_a_long_state_number_is_stored_as_its_bits(number: float) -> None:
    text = index.stored_number(number)
    assert len(text) <= 13
    if text.startswith('"'):
        assert len(index.format_number(number)) > 13 and len(text) == 13
    else:
        assert text == index.format_number(number)
    state = index.DetectorState(mean=number)
    assert index.read_states(index.states_text({"t": state}))["t"].mean == number


@pytest.mark.parametrize("bad", ['"QAExd4JLDv"', '"QAExd4JLDv4="', '"QAExd4JLDv5"', '"QAExd4JLD+4"', '"0x1p3"'])
def test_a_malformed_stored_double_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="base64url"):
        index.parse_states(f'{{"t":[1,2,{bad},0,0,0,0,0,0,0,0,1,0]}}')


def test_a_stored_states_text_reads_back_as_the_states_written() -> None:
    # whole numbers, extremes and an 8-number state of the previous release, as the state item holds them
    worst = index.DetectorState(count=2**53, newest_ms=253_402_300_799_999, mean=-1.2345678901234567e-300,
                                var=1.2345678901234567e+300, short=-2.2250738585072014e-308, interval=60000.0,
                                shifted=7, peak=205.125, last=1e21, run=0, longest=3)
    _, learned = run([1.0, 2.0, 1.5, 1.7, 1.2, 1.4, 1.3])
    states = {"pressure": worst, "temperature": learned, "vibration": index.DetectorState()}
    text = index.states_text(states)
    assert index.read_states(text) == states
    assert index.states_text(index.read_states(text)) == text
    old = index.parse_states('{"temperature":[300,1718000000000,20,0.25,20.5,60000,0,1.5]}')["temperature"]
    assert old == index.DetectorState(300, 1718000000000, 20.0, 0.25, 20.5, 60000.0, 0, 1.5, 20.0, 0, 0, 1.5, 0)
    with pytest.raises(ValueError):
        index.parse_states('{"temperature":[NaN,1,2,3,4,5,6,7]}')


def test_a_warm_function_reads_back_the_states_it_wrote_without_parsing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    _, learned = run([1.0, 2.0, 1.5, 1.7, 1.2, 1.4, 1.3])
    states = {"temperature": learned, "vibration": learned._replace(mean=-3.25)}
    text = index.states_text(states)  # as the batch before wrote it
    monkeypatch.setattr(index.DetectorState, "from_list", classmethod(lambda _cls, _values: pytest.fail("parsed")))
    read = index.parse_states(text)
    assert read == states
    read.pop("temperature")  # a copy: what a batch does with its states is not remembered
    assert index.parse_states(text) == states


@pytest.mark.parametrize("number", [-0.0, math.nan, math.inf])
def test_only_states_that_read_back_as_themselves_are_remembered(number: float) -> None:
    # -0 is stored as 0; a number that is not finite has no JSON text, so its state must fail to read, as it would
    # on a cold start
    # a state equal to it (-0 == 0) formatted first, in another text
    index.states_text({"t": index.DetectorState(count=5, mean=0.0), "u": index.DetectorState(count=6)})
    text = index.states_text({"t": index.DetectorState(count=5, mean=number)})
    if number == 0:
        mean = index.parse_states(text)["t"].mean
        assert mean == 0 and math.copysign(1.0, mean) == 1.0
    else:
        with pytest.raises(ValueError):
            index.parse_states(text)


def test_the_states_memo_forgets_the_oldest_past_its_bound() -> None:
    memo = index.StatesMemo(max_chars=64 * 10)
    for n in range(100):
        memo.remember(f"{n:010d}", {"t": index.DetectorState(count=n)})
    memo.remember("x" * 11, {})  # longer than a 64th of the bound: not kept
    assert memo.chars == sum(map(len, memo.states)) <= 640
    assert memo.recall(f"{99:010d}") == {"t": index.DetectorState(count=99)}
    assert memo.recall(f"{0:010d}") is None and memo.recall("x" * 11) is None
    assert index.KNOWN_STATES.max_chars == 1_000_000


def test_the_states_memo_keeps_its_bound_when_threads_share_it() -> None:
    # the pool's threads read state items (and so remember their texts) while the main thread writes others
    memo = index.StatesMemo(max_chars=64 * 10)
    state = {"t": index.DetectorState(count=1)}

    def churn(offset: int) -> None:
        for n in range(20_000):
            memo.remember(f"{offset + n:010d}", state)
            memo.recall(f"{offset + n - 5:010d}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(churn, range(0, 80_000, 20_000)))  # re-raises what a thread raised
    assert memo.chars == sum(map(len, memo.states)) <= 640


@pytest.mark.parametrize("whole", [0, 1, -7, 150, 1_767_225_600_000, 2**53, -(2**53), 10**20])
def test_a_whole_number_has_the_text_of_its_double(whole: int) -> None:
    assert index.format_number(whole) == index.format_number(float(whole)) == str(whole)


def test_healthy_noise_alarms_at_the_default_sensitivity_and_never_at_prods() -> None:
    # 100 hours of a healthy 1 Hz sensor, Gaussian noise and nothing else: every flagged reading is a false alarm
    rng = random.Random(7)
    scored, _ = index.detect_series(((i * 1000, 50.0 + 2.0 * rng.gauss(0.0, 1.0)) for i in range(360_000)),
                                    index.DETECTOR_PRESETS["onset"])
    scores = [s.score for s in scored]
    # the built-in default (NAB's best) flags about one reading an hour: an e-mail an hour per series in a plant
    assert sum(score >= index.DEFAULT_SENSITIVITY for score in scores) >= 50
    prod = load_config(REPO / "iotpipe.toml", "prod")
    assert prod.thresholds and all(t.sensitivity > max(scores) for t in prod.thresholds.values())
