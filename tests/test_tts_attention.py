"""The speech-token decoder's attention node (csrc/tts/tts_attention) against float64 numpy: RoPE on the
new rows' queries and keys, their keys and values stored into the cache (read back and checked), and
each row's attention over the filled slots, causal among the new rows, with the cache laid out as the
decode step reads it (keys a row per slot, values transposed, more slots than filled). F16 and F32
caches, query heads sharing key heads, head sizes on and off the 8-wide path, more slots than the
node keeps on its stack, 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest

from minicpmo_cpp import _testing

THETA = 10000.0


def rope(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Rotate-half RoPE over the whole head in float64: pair (i, i + hd/2) by pos * THETA^(-2i/hd)."""
    hd = x.shape[-1]
    half = hd // 2
    ang = pos[:, None, None].astype(np.float64) * THETA ** (-2.0 * np.arange(half) / hd)
    c, s = np.cos(ang), np.sin(ang)
    x0, x1 = x[..., :half].astype(np.float64), x[..., half:].astype(np.float64)
    return np.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1)


def reference(q, keys, values, mask):
    n, H, hd = q.shape
    Hkv = keys.shape[1]
    out = np.zeros((n, H, hd))
    for h in range(H):
        kv = h // (H // Hkv)
        s = q[:, h] @ keys[:, kv].T / np.sqrt(hd) + mask
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out[:, h] = p @ values[:, kv]
    return out.reshape(n, H * hd)


# RoPE: the node's angles advance by repeated float multiplication (as ggml's), a few ulp of the angle
# per pair at positions up to a few thousand: ~1e-4 absolute at most on unit-size keys, which bounds
# the rotated keys' and the outputs' error (F32 sums over up to 5000 slots add ~1e-6).
TOL_ROPE = 2e-4
TOL_OUT = 1e-3


@pytest.mark.parametrize("f16", [True, False])
@pytest.mark.parametrize("n,H,Hkv,hd,n_cached", [(1, 12, 12, 64, 150), (1, 4, 2, 12, 8), (3, 2, 1, 16, 5000), (2, 3, 3, 8, 0)])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_matches_float64(f16, n, H, Hkv, hd, n_cached, n_threads):
    rng = np.random.default_rng(n_cached + hd + n)
    q = rng.standard_normal((n, H, hd)).astype(np.float32)
    k = rng.standard_normal((n, Hkv, hd)).astype(np.float32)
    v = rng.standard_normal((n, Hkv, hd)).astype(np.float32)
    old_k = rng.standard_normal((n_cached, Hkv, hd)).astype(np.float32)
    old_v = rng.standard_normal((n_cached, Hkv, hd)).astype(np.float32)
    if f16:
        old_k, old_v = old_k.astype(np.float16).astype(np.float32), old_v.astype(np.float16).astype(np.float32)
    pos = np.arange(n_cached, n_cached + n) + 1  # a gap of one position, as the streaming layout has
    S = n_cached + n
    mask = np.zeros((n, S), np.float32)
    for i in range(n):
        mask[i, n_cached + i + 1:] = -np.inf  # causal among the new rows
    got, keys, values = _testing.tts_attention(q, k, v, pos.tolist(), old_k, old_v, mask, f16_cache=f16,
                                               capacity=S + 7, rope_theta=THETA, n_threads=n_threads)
    want_k = rope(k, pos)
    # the stored rows: the old ones unchanged, the new keys rotated, values as given (F16 cache: rounded)
    rounding = 2.0 ** -11 if f16 else 0.0
    assert np.array_equal(keys[:n_cached], old_k.reshape(n_cached, Hkv * hd))
    assert np.array_equal(values[:n_cached], old_v.reshape(n_cached, Hkv * hd))
    assert np.all(np.abs(keys[n_cached:] - want_k.reshape(n, -1)) <= TOL_ROPE + rounding * np.abs(want_k.reshape(n, -1)))
    assert np.all(np.abs(values[n_cached:] - v.reshape(n, -1)) <= rounding * np.abs(v.reshape(n, -1)))
    # the attention over the slots as stored (their rounding is the cache's, not the node's error)
    all_k = keys.reshape(S, Hkv, hd).astype(np.float64)
    all_v = values.reshape(S, Hkv, hd).astype(np.float64)
    want = reference(rope(q, pos), all_k, all_v, mask)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= TOL_OUT * max(1.0, np.max(np.abs(want)))
