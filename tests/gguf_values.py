"""Decoding GGUFReader tensors to float32 here, independently of the gguf package's dequantizers,
and the roundings an F32 value goes through when stored as F16 / BF16. Shared by the companion tests."""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as Q


def decode(t) -> np.ndarray:
    """A GGUFReader tensor as float32 in PyTorch order (ggml's ne reversed)."""
    shape = tuple(int(n) for n in reversed(t.shape))
    if t.tensor_type in (Q.F32, Q.F16):
        return np.asarray(t.data, dtype=np.float32).reshape(shape)
    raw = np.ascontiguousarray(t.data, dtype=np.uint8)
    if t.tensor_type == Q.BF16:
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    assert t.tensor_type == Q.Q8_0, t.tensor_type
    blocks = raw.reshape(-1, 34)  # per 32 values: an f16 scale d, then 32 int8 q; value = d * q
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)
    q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
    return (d * q).reshape(shape)


def f16_round(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def bf16_round(x: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return (u.astype(np.uint32) << 16).view(np.float32)
