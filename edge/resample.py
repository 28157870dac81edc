"""Streaming resampling of one device's accelerometer chunks to another rate (the fall models' 50 Hz).

The fall models are trained at 50 Hz, and a wearable may sample at anything the wire contract allows (10-200 Hz).
`StreamResampler` turns consecutive chunks at the device's rate into consecutive chunks at the target rate, as they
arrive, with bounded memory (the filter's state and one sample):

- faster devices are low-pass filtered first, so that what lies above the target's Nyquist frequency does not fold
  back into the signal: a linear-phase FIR of `2 * round(10 * rate_in / rate_out) + 1` taps with a Kaiser window
  (beta 5) and its cutoff at the target's Nyquist frequency, the filter `scipy.signal.resample_poly` designs. It is
  the filter the waist model's training data went through (SisFall, decimated from 200 Hz with a zero-phase
  anti-alias FIR). It is causal here, so its constant group delay (0.2 s whatever the input rate) is taken off the
  sample times: a sample keeps its time, and the output lags the input by that delay;
- then the target grid (one sample every 1 / rate_out s from the stream's first sample) is interpolated linearly
  between the input samples around each point, the last sample of the previous chunk included. A slower device is
  only interpolated: its peaks stay what the device measured.

Stream rules are the detector's (`edge.falls.FallDetector`): a chunk whose t0 is more than `max_jitter_s` away from
where the previous one ended starts a new stream (a gap, a reset device), and one already seen (a redelivery) gives
nothing. Within a stream every chunk anchors the sample times on its own t0, so a device clock drifting against its
nominal rate does not accumulate into a gap.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import numpy.typing as npt
from scipy import signal

Array = npt.NDArray[np.float64]
#: Chunks whose t0 is this far from where the previous chunk ended start a new stream (as in edge.falls).
MAX_JITTER_S = 0.1
_EMPTY = np.zeros((0, 3))


@cache
def anti_alias_taps(rate_in: float, rate_out: float) -> Array:
    """The low-pass FIR for going from `rate_in` down to `rate_out` (resample_poly's design), made once."""
    ratio = rate_in / rate_out
    half = max(1, round(10 * ratio))
    taps = signal.firwin(2 * half + 1, rate_out / 2.0, window=("kaiser", 5.0), fs=rate_in)
    return np.asarray(taps, dtype=np.float64)


class StreamResampler:
    """Resamples one device's consecutive chunks of (n, 3) samples from `rate_in` to `rate_out` (see the module)."""

    def __init__(self, rate_in: float, rate_out: float, max_jitter_s: float = MAX_JITTER_S) -> None:
        if not (rate_in > 0 and rate_out > 0 and math.isfinite(rate_in) and math.isfinite(rate_out)):
            raise ValueError(f"rates must be positive, not {rate_in} Hz and {rate_out} Hz")
        self.rate_in = rate_in
        self.rate_out = rate_out
        self.max_jitter_s = max_jitter_s
        self._taps = anti_alias_taps(rate_in, rate_out) if rate_in > rate_out else None
        #: What the filter delays the signal by, seconds; sample times are corrected for it.
        self.delay_s = (len(self._taps) - 1) / 2 / rate_in if self._taps is not None else 0.0
        self._restart()

    def _restart(self) -> None:
        self._history = _EMPTY  # the filter's memory: the last taps - 1 input samples
        self._next_in: float | None = None  # where the next input chunk should start
        # Times inside a stream are seconds from its first sample (`_origin`): Unix times hold only a quarter of a
        # microsecond, and the interpolation weights would inherit that noise. Filtered sample i stands for the
        # input at (its time - delay_s); output point k is at k / rate_out on the same scale.
        self._origin = 0.0
        self._last_t = -math.inf  # time of the last input sample
        self._last_x = _EMPTY  # ... and its (filtered) value, (1, 3); empty at the start of a stream
        self._out_count = 0  # output samples given so far

    def push(self, samples: npt.NDArray[np.float64], t0: float) -> tuple[Array, float]:
        """Feed (n, 3) samples, the first taken at t0; return the output samples they complete, (m, 3) at
        `rate_out`, and the time of the first of them (m may be 0)."""
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"samples must have shape (n, 3), not {x.shape}")
        n = len(x)
        if n == 0:
            return _EMPTY, self._next_out_t()
        if self._next_in is not None and abs(t0 - self._next_in) > self.max_jitter_s:
            if t0 + n / self.rate_in <= self._next_in + self.max_jitter_s:
                return _EMPTY, self._next_out_t()  # already seen
            self._restart()
        self._next_in = t0 + n / self.rate_in
        if self._taps is not None:
            x = self._filter(x)
        starting = not self._last_x.size
        if starting:
            self._origin = t0
        start = t0 - self._origin
        if not starting and start <= self._last_t:
            # a chunk that starts early within the jitter tolerance: it follows the previous one
            start = self._last_t + 1.0 / self.rate_in
        times = start + np.arange(n) / self.rate_in
        xp = times if starting else np.concatenate([[self._last_t], times])
        fp = x if starting else np.concatenate([self._last_x, x])
        self._last_t = float(times[-1])
        self._last_x = x[-1:].copy()
        first = self._out_count
        # the last grid point the input covers (give or take the rounding of the chunks' Unix times)
        last = math.floor(self._last_t * self.rate_out + 1e-4)
        if last < first:
            return _EMPTY, self._next_out_t()
        self._out_count = last + 1
        grid = np.arange(first, last + 1) / self.rate_out
        out = np.empty((len(grid), 3))
        for axis in range(3):
            out[:, axis] = np.interp(grid, xp, fp[:, axis])
        return out, self._origin - self.delay_s + first / self.rate_out

    def _filter(self, x: Array) -> Array:
        """The anti-alias filter's output for these input samples (one np.convolve per axis: a third of the cost of
        scipy.signal.lfilter on one-second chunks)."""
        taps = self._taps
        assert taps is not None
        memory = len(taps) - 1
        if not self._history.size:  # start as if the first sample had always been there (no step from zero)
            self._history = np.repeat(x[:1], memory, axis=0)
        padded = np.concatenate([self._history, x])
        self._history = padded[len(padded) - memory :].copy()
        out = np.empty_like(x)
        for axis in range(3):
            out[:, axis] = np.convolve(padded[:, axis], taps, "valid")
        return out

    def _next_out_t(self) -> float:
        return self._origin - self.delay_s + self._out_count / self.rate_out
