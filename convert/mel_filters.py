"""Whisper's mel filter bank (spec §3.1): triangular filters on the Slaney mel scale with Slaney
area normalisation, written into the companion so the runtime does not recompute it.

Slaney's scale is linear below 1 kHz (3 mels per 200 Hz) and logarithmic above (27 mels per factor
6.4); the triangles' corners are n_mel + 2 points spaced evenly in mel between f_min and f_max,
evaluated on the rfft bin centres, and each triangle is scaled by 2 / (its width in Hz) so all
filters have equal area.
"""

from __future__ import annotations

import numpy as np

_F_BREAK = 1000.0  # Hz where the scale turns from linear to logarithmic
_MEL_PER_HZ = 3.0 / 200.0  # slope of the linear part
_MEL_BREAK = _F_BREAK * _MEL_PER_HZ  # 15 mels at 1 kHz
_LOG_STEP = np.log(6.4) / 27.0  # natural-log units per mel above the break


def hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    above = _MEL_BREAK + np.log(np.maximum(hz, _F_BREAK) / _F_BREAK) / _LOG_STEP
    return np.where(hz < _F_BREAK, hz * _MEL_PER_HZ, above)


def mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    above = _F_BREAK * np.exp(_LOG_STEP * (np.maximum(mel, _MEL_BREAK) - _MEL_BREAK))
    return np.where(mel < _MEL_BREAK, mel / _MEL_PER_HZ, above)


def mel_filter_bank(n_mel: int = 80, n_fft: int = 400, sample_rate: int = 16000,
                    f_min: float = 0.0, f_max: float = 8000.0) -> np.ndarray:
    """(n_mel, n_fft // 2 + 1) float32 weights: mel energy m = W @ |rfft(frame)|**2.

    Computed in float64 and rounded once to float32.
    """
    if n_mel <= 0 or n_fft < 2 or sample_rate <= 0 or not 0.0 <= f_min < f_max:
        raise ValueError(f"bad mel filter bank parameters: n_mel={n_mel} n_fft={n_fft} "
                         f"sample_rate={sample_rate} f_min={f_min} f_max={f_max}")
    bins = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)  # rfft bin centres in Hz
    corners = mel_to_hz_slaney(np.linspace(hz_to_mel_slaney(f_min), hz_to_mel_slaney(f_max), n_mel + 2))
    lo, mid, hi = corners[:-2, None], corners[1:-1, None], corners[2:, None]
    rising = (bins[None, :] - lo) / (mid - lo)
    falling = (hi - bins[None, :]) / (hi - mid)
    tri = np.maximum(0.0, np.minimum(rising, falling))
    return (tri * (2.0 / (hi - lo))).astype(np.float32)
