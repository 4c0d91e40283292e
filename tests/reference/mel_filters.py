"""numpy reference of the Whisper mel filter bank (MODEL_SPEC.md §3.1): Slaney's mel scale and
Slaney's area normalisation, written from the formulas. librosa / transformers compute the same bank
(test_convert_audio.py checks this one against transformers' mel_filter_bank), so the tests of the
audio front end run without transformers installed.
"""

from __future__ import annotations

import numpy as np

# Slaney's mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above it with 27 mel per
# factor 6.4 of frequency, continuous at 1 kHz (15 mel).
_HZ_PER_MEL_LINEAR = 200.0 / 3.0
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _HZ_PER_MEL_LINEAR
_MEL_PER_LOG_HZ = 27.0 / np.log(6.4)


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, np.float64)
    log_part = _BREAK_MEL + np.log(np.maximum(hz, _BREAK_HZ) / _BREAK_HZ) * _MEL_PER_LOG_HZ
    return np.where(hz < _BREAK_HZ, hz / _HZ_PER_MEL_LINEAR, log_part)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    log_part = _BREAK_HZ * np.exp((np.maximum(mel, _BREAK_MEL) - _BREAK_MEL) / _MEL_PER_LOG_HZ)
    return np.where(mel < _BREAK_MEL, mel * _HZ_PER_MEL_LINEAR, log_part)


def slaney_mel_filters(n_freq: int = 201, n_mel: int = 80, sample_rate: int = 16000,
                       f_min: float = 0.0, f_max: float = 8000.0) -> np.ndarray:
    """(n_mel, n_freq) float64: triangle m rises from corner m to corner m+1 and falls to corner m+2
    (n_mel + 2 corners equally spaced in mel between f_min and f_max), over the n_freq rfft bin
    frequencies 0 .. sample_rate / 2, scaled by 2 / (its width in Hz) so every triangle has unit area."""
    freqs = np.linspace(0.0, sample_rate / 2, n_freq)
    corners = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mel + 2))
    bank = np.zeros((n_mel, n_freq))
    for m in range(n_mel):
        left, centre, right = corners[m], corners[m + 1], corners[m + 2]
        rise = (freqs - left) / (centre - left)
        fall = (right - freqs) / (right - centre)
        bank[m] = np.clip(np.minimum(rise, fall), 0.0, None) * (2.0 / (right - left))
    return bank
