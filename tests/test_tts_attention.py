"""The speech-token decoder's attention node (csrc/tts/tts_attention) against float64 numpy: one row
per head over the key/value cache as the decode step reads it (keys a row per slot, values transposed,
in caches with more slots than filled), F16 and F32 caches, query heads sharing key heads, head sizes
that are and are not a multiple of 8, more slots than the node keeps on its stack, a masked slot,
and 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest

from minicpmo_cpp import _testing


def reference(q, k, v, mask, scale):
    n, H, hd = q.shape
    Hkv = k.shape[1]
    out = np.zeros((n, H, hd))
    for h in range(H):
        kv = h // (H // Hkv)
        s = q[:, h].astype(np.float64) @ k[:, kv].T.astype(np.float64) * scale + mask
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out[:, h] = p @ v[:, kv].astype(np.float64)
    return out.reshape(n, H * hd)


# F32 cache: F32 products and sums over at most a few thousand slots and the vectorised exp's few ulp;
# 1e-5 of the largest |output|. F16 cache: the keys and values rounded to 11 bits first (the reference
# gets the same rounded values), then the same.
TOL = 1e-5


@pytest.mark.parametrize("f16", [True, False])
@pytest.mark.parametrize("n,H,Hkv,hd,S", [(1, 12, 12, 64, 150), (1, 4, 2, 12, 9), (3, 2, 1, 16, 5000), (2, 3, 3, 8, 1)])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_matches_float64(f16, n, H, Hkv, hd, S, n_threads):
    rng = np.random.default_rng(S + hd + n)
    q = rng.standard_normal((n, H, hd)).astype(np.float32)
    k = rng.standard_normal((S, Hkv, hd)).astype(np.float32)
    v = rng.standard_normal((S, Hkv, hd)).astype(np.float32)
    if f16:
        k, v = k.astype(np.float16).astype(np.float32), v.astype(np.float16).astype(np.float32)
    mask = np.zeros((n, S), np.float32)
    if S > 1:
        mask[:, -1] = -np.inf  # a slot not yet visible
    scale = 1.0 / np.sqrt(hd)
    got = _testing.tts_attention(q, k, v, mask, scale, f16_cache=f16, capacity=S + 7, n_threads=n_threads)
    want = reference(q, k, v, mask, scale)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= TOL * np.max(np.abs(want))
