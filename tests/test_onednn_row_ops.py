"""The steps between the oneDNN backend's products that it runs itself (core/onednn_row_ops: ADD and
MUL of rows or same-shape tensors, NORM alone or with the MUL and ADD of rows after it) and the
consumers it fuses into a BF16 product (core/onednn_matmul: bias, activation, gate, residual as
oneDNN post-ops), each chain built as the encoders' graphs build it (_testing.fused_chain), against
float64 numpy, and the whole chain in one scheduler split: no step left to ggml's CPU backend.

Tolerances: the products round both operands to BF16 (2^-9 each, F32 sums): BF16_REL_TOL = 2e-2 of
the largest output (tests/test_bf16_compute.py), or int8's 4e-2 for one product
(tests/test_int8_compute.py); the LayerNorm is F32 arithmetic (row mean and variance in F32 partial
sums, ~1e-7 relative) against float64: 1e-5."""

from __future__ import annotations

import numpy as np
import pytest

from minicpmo_cpp import MinicpmoError, _testing
from relative_error import rel
from test_bf16_compute import BF16_REL_TOL, BF16_RUNS, REFUSAL as BF16_REFUSAL
from test_int8_compute import INT8_RUNS, PRODUCT_TOL, REFUSAL as INT8_REFUSAL

NORM_TOL = 1e-5
# (M, K, N): one row; a streamed DiT window's 100 rows of 512; odd sizes
SHAPES = [(1, 16, 8), (100, 512, 512), (37, 96, 200)]
COMPUTE = {"bf16": (BF16_RUNS, BF16_REFUSAL, BF16_REL_TOL), "int8": (INT8_RUNS, INT8_REFUSAL, PRODUCT_TOL)}


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def _inputs(shape):
    M, K, N = shape
    rng = np.random.default_rng(M * 1000 + K + N)
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = (rng.standard_normal((N, K)) / np.sqrt(K)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    gate = rng.standard_normal(N).astype(np.float32)
    residual = rng.standard_normal((M, N)).astype(np.float32)
    return x, w, b, gate, residual


def _run(compute, *args, **kw):
    runs, refusal, _ = COMPUTE[compute]
    if not runs:
        with pytest.raises(MinicpmoError, match=refusal):
            _testing.fused_chain(*args, compute_type=compute, n_threads=2, **kw)
        return None
    y, splits = _testing.fused_chain(*args, compute_type=compute, n_threads=2, **kw)
    # BF16 sessions leave a product of fewer than 32 rows with a weight that is not a model's to
    # ggml's F16 kernels (core/onednn_matmul kMinRows): then it and its steps are a split of their own
    short = compute == "bf16" and args[0] != "layer_norm" and args[1].shape[0] < 32
    assert splits == (2 if short else 1), f"{args[0]}: {splits} scheduler splits"
    return y


@pytest.mark.parametrize("compute", ["bf16", "int8"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_bias_gelu(shape, compute):
    x, w, b, _, _ = _inputs(shape)
    got = _run(compute, "linear_gelu", x, w, b)
    if got is None:
        return
    want = _gelu_tanh(x.astype(np.float64) @ w.T.astype(np.float64) + b)
    err = rel(got, want)
    print(f"{shape} {compute}: {err:.2e}")
    assert err < COMPUTE[compute][2]


@pytest.mark.parametrize("compute", ["bf16", "int8"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_gated_residual(shape, compute):
    """residual + gate * (x w^T + b): the DiT's gated branches"""
    x, w, b, gate, residual = _inputs(shape)
    got = _run(compute, "linear_gated", x, w, b, gate, residual)
    if got is None:
        return
    branch = (x.astype(np.float64) @ w.T.astype(np.float64) + b) * gate
    err = np.abs(got - (residual + branch)).max() / np.abs(branch).max()  # of the branch: the residual is exact
    print(f"{shape} {compute}: {err:.2e} of the largest gated branch")
    assert err < COMPUTE[compute][2]


@pytest.mark.parametrize("compute", ["bf16", "int8"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_layer_norm_with_affine(shape, compute):
    M, K, _ = shape
    x, _, _, _, _ = _inputs(shape)
    x = x * 3.0 + 1.5  # rows off zero mean and unit variance
    rng = np.random.default_rng(K)
    w = rng.standard_normal((1, K)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    got = _run(compute, "layer_norm", x, w, b, eps=1e-6)
    if got is None:
        return
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=1, keepdims=True)
    want = (x64 - mean) / np.sqrt(((x64 - mean) ** 2).mean(axis=1, keepdims=True) + 1e-6) * w[0] + b
    err = rel(got, want)
    print(f"{shape} {compute}: {err:.2e}")
    assert err < NORM_TOL


def test_the_exact_path_computes_the_same_chains():
    """compute_type f32: ggml's kernels (one split, the CPU backend), within F32 rounding of float64"""
    x, w, b, gate, residual = _inputs((37, 96, 200))
    y, splits = _testing.fused_chain("linear_gated", x, w, b, gate, residual, compute_type="f32", n_threads=2)
    want = residual + (x.astype(np.float64) @ w.T.astype(np.float64) + b) * gate
    assert splits == 1
    assert rel(y, want) < 1e-5
