"""Audio inputs for the chat and duplex tests: the speech-like 16 kHz signal (defined in
minicpmo_cpp.signals, which the benchmarks import too), the placeholder count of one audio on the chat
path, and the tiny model's mel filter bank as its companion file stores it."""

from __future__ import annotations

import math

import numpy as np

from minicpmo_cpp.signals import SAMPLE_RATE as SR, speechlike  # noqa: F401


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
