"""The C++ front ends of run-time voice cloning (csrc/voice/sinc_resample, prompt_mel) against
independent references: torchaudio's resampling formula evaluated output by output, and the
reference's prompt mel written with torch ops (both in tests/test_voice_frontend.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minicpmo_cpp import _testing
from test_voice_frontend import _signal, direct_resample, reference_prompt_mel


@pytest.mark.parametrize("orig,new", [(16000, 24000), (44100, 16000), (48000, 24000), (22050, 24000),
                                      (8000, 16000), (24000, 16000)])
def test_resampler_matches_the_torchaudio_formula(orig, new):
    x = _signal(orig + 37, orig)  # 1 s and a bit: the quiet first half, the loud second half, a ragged end
    got = _testing.voice_resample(x, orig, new)
    ref = direct_resample(x, orig, new)
    assert got.dtype == np.float32 and got.shape == ref.shape == (math.ceil(len(x) * new / orig),)
    # float64 sums in another order, then float32 rounding of values < 0.5 (half an ulp is 3e-8)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-7)


def test_resampler_keeps_equal_rates_bit_for_bit():
    x = _signal(5000, 16000)
    assert np.array_equal(_testing.voice_resample(x, 16000, 16000), x)


@pytest.mark.torch
@pytest.mark.parametrize("n", [24000 * 2 + 77, 721, 24000 * 17])
def test_prompt_mel_matches_torch_stft(n):
    a = _signal(n, 24000)
    ref = reference_prompt_mel(a)
    got = _testing.voice_prompt_mel(a)
    assert got.shape == ref.shape == (len(a) // 480 if len(a) >= 480 else 1 + (len(a) + 1440 - 1920) // 480, 80)
    # both float64 rounded once to float32; the C++ filter bank is rounded to float32 like librosa's,
    # the torch one is float64: measured 1.5e-7 on |values| <= 12 -> 1e-6
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_prompt_mel_refuses_too_short_audio():
    with pytest.raises(_testing.MinicpmoError, match="too short for the prompt mel"):
        _testing.voice_prompt_mel(np.zeros(720, np.float32))


def test_fit_mel_frames_replicates_or_truncates():
    m = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert np.array_equal(_testing.voice_fit_mel_frames(m, 2), m[:2])
    padded = _testing.voice_fit_mel_frames(m, 6)
    assert np.array_equal(padded[:4], m) and np.array_equal(padded[4:], np.stack([m[3], m[3]]))
