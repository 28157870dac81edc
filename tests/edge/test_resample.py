"""Streaming resampling to the fall models' rate: the same signal on the target grid, no aliasing, any chunking."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from edge.resample import StreamResampler

Array = npt.NDArray[np.float64]
T0 = 1_790_000_000.0


def tone(rate_hz: float, seconds: float, freq_hz: float, amplitude: float = 0.5, t0: float = 0.0) -> Array:
    """Gravity on z plus a sine of `freq_hz` on x (and a slower one on y), sampled at `rate_hz` from `t0`."""
    t = t0 + np.arange(round(seconds * rate_hz)) / rate_hz
    return np.column_stack(
        [amplitude * np.sin(2 * np.pi * freq_hz * t), 0.2 * np.sin(2 * np.pi * 0.3 * t), np.ones_like(t)]
    )


def push_all(resampler: StreamResampler, x: Array, rate_hz: float, chunk: int, t0: float = T0) -> tuple[Array, float]:
    """Feed `x` in chunks of `chunk` samples; the concatenated output and the time of its first sample."""
    out, first = [], None
    for i in range(0, len(x), chunk):
        y, t = resampler.push(x[i : i + chunk], t0 + i / rate_hz)
        if len(y):
            first = t if first is None else first
            out.append(y)
    assert first is not None
    return np.vstack(out), first


@pytest.mark.parametrize("rate_in", [60.0, 100.0, 200.0])
def test_a_faster_device_gives_the_same_slow_signal_on_the_target_grid(rate_in: float) -> None:
    resampler = StreamResampler(rate_in, 50.0)
    out, first = push_all(resampler, tone(rate_in, 20.0, 2.0), rate_in, round(rate_in))
    assert first == pytest.approx(T0 - resampler.delay_s, abs=1e-6)  # sample times keep the filter's delay off
    assert resampler.delay_s == pytest.approx(0.2, abs=0.01)
    expected = tone(50.0, len(out) / 50.0, 2.0, t0=first - T0)
    settled = slice(round(2 * resampler.delay_s * 50), None)  # past the filter's start
    assert np.abs(out[settled] - expected[settled]).max() < 0.01  # a 2-Hz movement passes unchanged
    assert len(out) == 1000  # one every 20 ms, the last for the last input sample (stamped delay_s earlier)


def test_what_the_target_rate_cannot_hold_is_filtered_out_not_folded_back() -> None:
    # 40 Hz at 200 Hz would show up as 10 Hz at 50 Hz, at full amplitude, if the samples were just picked
    out, _ = push_all(StreamResampler(200.0, 50.0), tone(200.0, 10.0, 40.0, amplitude=1.0), 200.0, 200)
    assert np.abs(out[50:, 0]).max() < 0.02
    assert out[50:, 2] == pytest.approx(1.0, abs=1e-3)  # gravity stays 1 g


def test_a_slower_device_is_interpolated_through_its_own_samples() -> None:
    x = tone(25.0, 10.0, 1.0)
    out, first = push_all(StreamResampler(25.0, 50.0), x, 25.0, 25)
    assert first == T0
    assert len(out) == 2 * len(x) - 1  # the grid up to the last sample
    # every other point is a device sample (but for the rounding of Unix times): its peaks stay as measured
    assert np.allclose(out[::2], x, rtol=0, atol=1e-6)
    assert np.allclose(out[1::2], (x[:-1] + x[1:]) / 2, rtol=0, atol=1e-6)


def test_gravity_alone_comes_out_as_gravity_from_the_first_sample() -> None:
    still = np.tile([0.0, 0.0, 1.0], (100, 1))
    out, _ = StreamResampler(100.0, 50.0).push(still, T0)
    assert np.allclose(out, still[: len(out)])  # no step from zero that a detector could take for a free fall


@pytest.mark.parametrize(("rate_in", "chunk"), [(100.0, 1), (100.0, 37), (100.0, 500), (25.0, 7), (30.0, 30)])
def test_how_the_samples_are_chunked_does_not_change_the_output(rate_in: float, chunk: int) -> None:
    x = tone(rate_in, 12.0, 3.0)
    reference, t_ref = push_all(StreamResampler(rate_in, 50.0), x, rate_in, round(rate_in))
    out, t = push_all(StreamResampler(rate_in, 50.0), x, rate_in, chunk)
    assert t == pytest.approx(t_ref, abs=1e-9)
    assert out.shape == reference.shape
    # chunk t0s differ in the rounding of Unix times (a quarter microsecond: 2e-6 g at this tone's steepest)
    assert np.allclose(out, reference, rtol=0, atol=1e-5)


def test_consecutive_outputs_are_consecutive_and_a_redelivery_gives_nothing() -> None:
    resampler = StreamResampler(100.0, 50.0)
    x = tone(100.0, 3.0, 1.0)
    a, ta = resampler.push(x[:100], T0)
    b, tb = resampler.push(x[100:200], T0 + 1.0)
    assert tb == pytest.approx(ta + len(a) / 50.0, abs=1e-9)  # what a detector expects of a stream
    again, _ = resampler.push(x[100:200], T0 + 1.0)  # the same batch delivered twice
    assert len(again) == 0
    c, tc = resampler.push(x[200:300], T0 + 2.0)
    assert len(c) == 50
    assert tc == pytest.approx(tb + len(b) / 50.0, abs=1e-9)


def test_a_gap_starts_a_new_stream_and_jitter_does_not() -> None:
    resampler = StreamResampler(100.0, 50.0)
    x = tone(100.0, 2.0, 1.0)
    resampler.push(x[:100], T0)
    jittered, t = resampler.push(x[100:], T0 + 1.0 - 0.05)  # a device clock 50 ms early: still the same stream
    assert len(jittered) == 50
    assert t == pytest.approx(T0 - resampler.delay_s + 50 / 50.0, abs=1e-9)
    later, t_later = resampler.push(x[:100], T0 + 30.0)  # half a minute later: a new stream from its first sample
    assert t_later == pytest.approx(T0 + 30.0 - resampler.delay_s, abs=1e-9)
    assert len(later) == 50


def test_wrong_shapes_and_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(0.0, 50.0)
    with pytest.raises(ValueError, match="shape"):
        StreamResampler(100.0, 50.0).push(np.zeros((10, 2)), T0)
