"""Audio inputs for the chat and duplex tests: a speech-like 16 kHz signal, the placeholder count of
one audio on the chat path, and the tiny model's mel filter bank as its companion file stores it."""

from __future__ import annotations

import math

import numpy as np

SR = 16000  # the audio front end's sample rate


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Harmonics with a wandering pitch under a syllable-rate envelope, plus a little noise: a
    signal whose mel frames differ from frame to frame. float32 at 16 kHz."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.2 * env * x + 0.01 * rng.standard_normal(n)).astype(np.float32)


def chat_audio_token_count(n_samples: int) -> int:
    """Placeholders the official processor writes for one audio of <= 30 s on the chat path (spec §3.3):
    mel frames (hop 160), the encoder's stride-2 conv, then pooling by 5."""
    frames = math.ceil(n_samples / 160)
    enc = (frames - 1) // 2 + 1
    return max(0, (enc - 5) // 5 + 1)


def tiny_mel_filters(tiny_f32) -> np.ndarray:
    """The (80, 201) mel filter bank stored in the tiny model's companion file (tiny_f32 = (llm, omni))."""
    from gguf import GGUFReader

    t = next(t for t in GGUFReader(tiny_f32[1]).tensors if t.name == "a.mel_filters")
    return np.asarray(t.data, np.float32).reshape(80, 201)
