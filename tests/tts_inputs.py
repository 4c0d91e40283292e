"""Inputs for the TTS runtime tests: random text chunks (ids + LLM hidden rows) of the tiny model."""

from __future__ import annotations

import numpy as np

TINY_LLM_DIM = 64  # the tiny model's n_embd (spec §8): the width of the hidden rows the TTS conditions on


def text_chunk(n: int, seed: int):
    """n random text ids (below the special tokens) and their (n, 64) float32 hidden rows, from `seed`."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 151000, size=n).astype(np.int32)
    hidden = rng.standard_normal((n, TINY_LLM_DIM)).astype(np.float32)
    return ids, hidden
