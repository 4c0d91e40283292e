"""numpy front ends of a voice prompt (spec §5.2.1), matching the reference's torch/torchaudio ops:

- resample_sinc_hann: torchaudio's default Resample (Hann-windowed sinc, lowpass_filter_width 6,
  rolloff 0.99), polyphase over the reduced ratio;
- whisper_log_mel: the 128-bin log-mel the S3 speech tokenizer takes (Whisper's recipe: centred
  400-point STFT, hop 160, power, last frame dropped, log10, max-8 floor, (x+4)/4);
- kaldi_fbank: Kaldi/torchaudio `fbank` (25/10 ms frames, snip edges, DC removal, pre-emphasis 0.97,
  povey window, 512-point power spectrum, 80 Kaldi mel bins 20 Hz..Nyquist, natural log);
- prompt_mel: the 24 kHz 80-bin log-mel the flow is conditioned on (reflect pad 720, 1920-point
  STFT, hop 480, magnitude with +1e-9, Slaney mel 0..8000 Hz, ln with 1e-5 floor).

Everything is computed in float64 and returned as float32.
"""

from __future__ import annotations

import math

import numpy as np

from .mel_filters import mel_filter_bank

_F32_EPS = float(np.finfo(np.float32).eps)  # torchaudio's log floor (torch.finfo(torch.float).eps)


def resample_sinc_hann(x: np.ndarray, orig: int, new: int, width_zeros: int = 6, rolloff: float = 0.99) -> np.ndarray:
    """torchaudio.functional.resample(x, orig, new) (method sinc_interp_hann) for a 1-D signal.

    Output sample m of phase j (m = k*new' + j over the reduced ratio orig'/new') is the dot product
    of the zero-padded input around k*orig' with a Hann-windowed sinc cut at `width_zeros` zero
    crossings of the lower band edge (rolloff x the lower Nyquist rate).
    """
    x = np.asarray(x, dtype=np.float64)
    if orig == new:
        return x.astype(np.float32)
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    base = min(o, n) * rolloff
    width = math.ceil(width_zeros * o / base)
    idx = np.arange(-width, width + o, dtype=np.float64)[None, :] / o
    t = (np.arange(0, -n, -1, dtype=np.float64)[:, None] / n + idx) * base
    t = np.clip(t, -width_zeros, width_zeros)
    window = np.cos(t * math.pi / width_zeros / 2) ** 2
    t = t * math.pi
    safe = np.where(t == 0, 1.0, t)
    kernels = np.where(t == 0, 1.0, np.sin(safe) / safe) * window * (base / o)  # (n, 2*width + o)
    length = x.shape[-1]
    padded = np.concatenate([np.zeros(width), x, np.zeros(width + o)])
    n_out_blocks = (padded.size - kernels.shape[1]) // o + 1
    frames = np.lib.stride_tricks.sliding_window_view(padded, kernels.shape[1])[::o][:n_out_blocks]
    out = (frames @ kernels.T).reshape(-1)  # block-major: block k gives outputs k*n .. k*n + n-1
    target = math.ceil(n * length / o)
    return out[:target].astype(np.float32)


def _frames(x: np.ndarray, size: int, hop: int) -> np.ndarray:
    n = 1 + (x.size - size) // hop
    return np.lib.stride_tricks.sliding_window_view(x, size)[::hop][:n]


def _hann(n: int, periodic: bool = True) -> np.ndarray:
    m = n if periodic else n - 1
    return 0.5 - 0.5 * np.cos(2 * math.pi * np.arange(n) / m)


def whisper_log_mel(audio_16k: np.ndarray, n_mel: int = 128) -> np.ndarray:
    """(n_mel, T) float32; T = len // 160 (the centred STFT's last frame is dropped)."""
    x = np.asarray(audio_16k, dtype=np.float64)
    if x.size <= 200:
        raise ValueError("audio too short for a 400-point centred STFT (needs more than 200 samples)")
    padded = np.pad(x, (200, 200), mode="reflect")
    spec = np.fft.rfft(_frames(padded, 400, 160) * _hann(400), axis=-1)
    power = (spec.real ** 2 + spec.imag ** 2)[:-1]  # (T, 201)
    mel = power @ mel_filter_bank(n_mel, 400, 16000, 0.0, 8000.0).astype(np.float64).T
    log = np.log10(np.maximum(mel, 1e-10))
    log = np.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).T.astype(np.float32)


def kaldi_mel_banks(n_mel: int = 80, n_fft: int = 512, sample_rate: int = 16000, low: float = 20.0,
                    high: float = 0.0) -> np.ndarray:
    """(n_mel, n_fft // 2 + 1) Kaldi mel banks (mel = 1127 ln(1 + f/700), triangles in mel; the
    Nyquist bin gets weight 0). high <= 0 means Nyquist + high, as in Kaldi."""
    nyquist = sample_rate / 2.0
    high = nyquist + high if high <= 0 else high
    mel = lambda f: 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)  # noqa: E731
    lo_mel, hi_mel = mel(low), mel(high)
    delta = (hi_mel - lo_mel) / (n_mel + 1)
    left = lo_mel + np.arange(n_mel)[:, None] * delta
    centre, right = left + delta, left + 2 * delta
    f_mel = mel(np.arange(n_fft // 2) * sample_rate / n_fft)[None, :]
    up = (f_mel - left) / (centre - left)
    down = (right - f_mel) / (right - centre)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.concatenate([banks, np.zeros((n_mel, 1))], axis=1)


def kaldi_fbank(audio_16k: np.ndarray, n_mel: int = 80, sample_rate: int = 16000) -> np.ndarray:
    """(T, n_mel) float32 log mel filterbank energies, torchaudio.compliance.kaldi.fbank defaults
    (dither 0); T = 1 + (len - 400) // 160."""
    x = np.asarray(audio_16k, dtype=np.float64)
    size, hop = int(sample_rate * 0.025), int(sample_rate * 0.010)
    if x.size < size:
        raise ValueError(f"audio too short for one 25 ms Kaldi frame ({size} samples)")
    frames = _frames(x, size, hop).copy()
    frames -= frames.mean(axis=1, keepdims=True)  # remove DC offset
    prev = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - 0.97 * prev  # pre-emphasis (first sample against itself)
    frames *= _hann(size, periodic=False) ** 0.85  # povey window
    n_fft = 1 << (size - 1).bit_length()
    spec = np.fft.rfft(frames, n=n_fft, axis=-1)
    power = spec.real ** 2 + spec.imag ** 2
    energies = power @ kaldi_mel_banks(n_mel, n_fft, sample_rate).T
    return np.log(np.maximum(energies, _F32_EPS)).astype(np.float32)


def prompt_mel(audio_24k: np.ndarray, n_mel: int = 80, sample_rate: int = 24000, n_fft: int = 1920,
               hop: int = 480) -> np.ndarray:
    """(T, n_mel) float32 natural-log mel of the flow's prompt; T = len // hop for len >= n_fft - hop."""
    x = np.asarray(audio_24k, dtype=np.float64)
    pad = (n_fft - hop) // 2
    if x.size <= pad:
        raise ValueError(f"audio too short for the prompt mel (needs more than {pad} samples at 24 kHz)")
    padded = np.pad(x, (pad, pad), mode="reflect")
    spec = np.fft.rfft(_frames(padded, n_fft, hop) * _hann(n_fft), axis=-1)
    mag = np.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)
    mel = mag @ mel_filter_bank(n_mel, n_fft, sample_rate, 0.0, 8000.0).astype(np.float64).T
    return np.log(np.maximum(mel, 1e-5)).astype(np.float32)


def fit_frames(mel: np.ndarray, n_frames: int) -> np.ndarray:
    """Replicate the last frame or truncate to exactly n_frames (the reference's replicate pad)."""
    if mel.shape[0] >= n_frames:
        return np.ascontiguousarray(mel[:n_frames])
    return np.concatenate([mel, np.repeat(mel[-1:], n_frames - mel.shape[0], axis=0)], axis=0)
