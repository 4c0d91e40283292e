"""HiFT's conv1d node (csrc/core/conv1d_node) against a float64 numpy convolution.

In a session with oneDNN products (compute_type "int8" here: it runs on every x86-64 CPU, and the
node is F32 whatever the session's products) oneDNN's convolution computes the node
(csrc/core/onednn_convolution): in spans of 256 output steps, the last overlapping the one before,
or, with fewer steps, once over a zero-padded copy. Without oneDNN ("f32") the CPU backend's own loop
runs it. Both are F32 arithmetic in another summation order than the reference, so the tolerance is
F32 rounding over sums of up to C_in * K = 352 terms: 1e-5 relative (measured ~1e-7)."""

from __future__ import annotations

import numpy as np
import pytest

from minicpmo_cpp import _testing, build_info
from minicpmo_cpp._core import MinicpmoError

from relative_error import rel

TOL = 1e-5  # see the module docstring
ONEDNN = bool(build_info.MINICPMO_ONEDNN)


def reference(x, w, b, dilation, stride):
    """y[t, o] = b[o] + sum_{c, k} w[o, c, k] x[t * stride + k * dilation, c], in float64."""
    T, _ = x.shape
    C_out, _, K = w.shape
    T_out = (T - dilation * (K - 1) - 1) // stride + 1
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    y = np.zeros((T_out, C_out)) if b is None else np.tile(b.astype(np.float64), (T_out, 1))
    for k in range(K):
        taps = x64[k * dilation: k * dilation + (T_out - 1) * stride + 1: stride]   # [T_out, C_in]
        y += taps @ w64[:, :, k].T
    return y


# (T, C_in, C_out, K, dilation, stride): fewer outputs than a span (padded; HiFT's F0 convolutions),
# exactly one and two spans, two to six spans with an overlapping last one (HiFT's ResBlocks: K 3 / 7 / 11,
# dilation 1 / 3 / 5), a strided one (the source downsampling: K = 2 stride), K = 1, one channel
SHAPES = [(37, 5, 7, 3, 1, 1), (58, 80, 32, 7, 1, 1), (258, 16, 8, 3, 1, 1), (514, 16, 8, 3, 1, 1), (600, 16, 24, 7, 3, 1),
          (1500, 8, 8, 11, 5, 1), (2100, 18, 12, 30, 1, 15), (700, 9, 5, 1, 1, 1), (900, 1, 3, 5, 2, 2)]


@pytest.mark.parametrize("compute", ["f32", "int8"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-ci{}-co{}-k{}-d{}-s{}".format(*s))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_matches_float64(compute, shape, bias):
    T, C_in, C_out, K, dilation, stride = shape
    rng = np.random.default_rng(T + 7 * K)
    x = rng.standard_normal((T, C_in)).astype(np.float32)
    w = (rng.standard_normal((C_out, C_in, K)) / np.sqrt(C_in * K)).astype(np.float32)
    b = rng.standard_normal(C_out).astype(np.float32) if bias else None
    if compute == "int8" and not ONEDNN:
        with pytest.raises(MinicpmoError, match="oneDNN"):
            _testing.conv1d(x, w, b, dilation, stride, compute)
        return
    y, left_to_ggml = _testing.conv1d(x, w, b, dilation, stride, compute, n_threads=2)
    want = reference(x, w, b, dilation, stride)
    assert y.shape == want.shape
    assert rel(y, want) < TOL
    if compute == "int8":
        assert left_to_ggml == 0   # the scheduler gave the node to oneDNN, not to the CPU backend's loop


def test_onednn_and_cpu_loop_agree_across_lengths():
    """One kernel over many lengths, as a stream of utterances gives it: each length served by the
    same few compiled spans, every result within F32 rounding of the CPU loop's."""
    if not ONEDNN:
        return  # test_matches_float64 checks the refusal
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((16, 16, 7)) / np.sqrt(16 * 7)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    for T in (19, 200, 255 + 18, 256 + 18, 1031, 2500):
        x = rng.standard_normal((T, 16)).astype(np.float32)
        fast, _ = _testing.conv1d(x, w, b, 3, 1, "int8", n_threads=2)
        loop, _ = _testing.conv1d(x, w, b, 3, 1, "f32", n_threads=2)
        assert rel(fast, loop) < TOL, T
        assert rel(fast, reference(x, w, b, 3, 1)) < TOL, T


def test_rejects_bad_shapes():
    x = np.zeros((10, 4), np.float32)
    with pytest.raises(MinicpmoError, match="C_in"):
        _testing.conv1d(x, np.zeros((3, 5, 3), np.float32))          # channel count differs
    with pytest.raises(MinicpmoError, match="dilation"):
        _testing.conv1d(x, np.zeros((3, 4, 6), np.float32), dilation=2)   # input shorter than the kernel span
    with pytest.raises(MinicpmoError, match="C_out"):
        _testing.conv1d(x, np.zeros((3, 4, 3), np.float32), np.zeros(2, np.float32))
