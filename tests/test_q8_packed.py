"""The TTS's packed Q8_0 products (csrc/core/q8_packed) against float64 numpy, on every instruction set
this CPU runs, each forced in turn: odd shapes (rows not a multiple of the 16-row group, one column
block, one row, many activation rows), extreme weights (-128, 127) and activations (zeros, one spike),
and 1 and 2 threads splitting the row groups."""

from __future__ import annotations

import numpy as np
import pytest

import minicpmo_cpp
from minicpmo_cpp import MinicpmoError, _testing

ISAS = _testing.q8_isas()


def q8_0_blocks(w: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """ggml's Q8_0 bytes of w (N x K) and the dequantized float64 matrix they hold."""
    n, k = w.shape
    blocks = w.reshape(n, k // 32, 32)
    d = (np.abs(blocks).max(axis=2, keepdims=True) / 127.0).astype(np.float16)
    d32 = d.astype(np.float32)
    q = np.where(d32 > 0, np.rint(blocks / np.where(d32 > 0, d32, 1)), 0).clip(-128, 127).astype(np.int8)
    raw = np.concatenate([d.view(np.uint8).reshape(n, k // 32, 2), q.view(np.uint8)], axis=2)
    return raw.reshape(n, k // 32 * 34), (q.astype(np.float64) * d32.astype(np.float64)).reshape(n, k)


def quantized_activations(x: np.ndarray) -> np.ndarray:
    """x as the kernels quantize it, the way ggml quantizes a Q8_0 product's activations: per block of
    32, q = round-half-even(x * (127 / max|x|)) in float32, scale max|x| / 127 rounded to F16."""
    m, k = x.shape
    b = x.reshape(m, k // 32, 32)
    amax = np.abs(b).max(axis=2, keepdims=True)
    inv = np.where(amax > 0, np.float32(127.0) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    q = np.rint(b * inv)
    d = (amax / np.float32(127.0)).astype(np.float16).astype(np.float64)
    return (q.astype(np.float64) * d).reshape(m, k)


# Against x quantized as the kernels do, the products are exact integer block sums times two scales:
# only F32 rounding of the block terms and their sum remains, ~K/32 roundings of 2^-24 each relative to
# the sum of |terms|: 1e-5 of that sum leaves ample room.
TOL_SAME_QUANTIZATION = 1e-5


def check(x: np.ndarray, raw: np.ndarray, w64: np.ndarray, isa: str, n_threads: int) -> None:
    got = _testing.q8_packed_product(x, raw, isa, n_threads=n_threads).astype(np.float64)
    xq = quantized_activations(x)
    want = xq @ w64.T
    scale = np.abs(xq) @ np.abs(w64).T + 1e-30
    assert got.shape == want.shape
    assert np.all(np.abs(got - want) <= TOL_SAME_QUANTIZATION * scale), np.max(np.abs(got - want) / scale)
    # Against unquantized x: each activation moves by at most half its block's step d_x / 2, so
    # |error| <= sum_b d_x,b / 2 * sum_k in b |w| (+ the F32 rounding above)
    step = np.abs(x.reshape(x.shape[0], -1, 32)).max(axis=2) / 127.0
    bound = (step / 2) @ np.abs(w64.reshape(w64.shape[0], -1, 32)).sum(axis=2).T * 1.001 + 2e-5 * scale
    assert np.all(np.abs(got - x.astype(np.float64) @ w64.T) <= bound)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n_rows,k,m", [(1, 32, 1), (17, 64, 1), (768, 768, 1), (6562, 768, 2), (40, 3072, 5),
                                         (33, 96, 150)])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_matches_float64(isa, n_rows, k, m, n_threads):
    rng = np.random.default_rng(n_rows * 7 + k + m)
    raw, w64 = q8_0_blocks(rng.standard_normal((n_rows, k)).astype(np.float32), rng)
    x = rng.standard_normal((m, k)).astype(np.float32)
    check(x, raw, w64, isa, n_threads)


@pytest.mark.parametrize("isa", ISAS)
def test_extreme_values(isa):
    """Weights at -128 and 127 (a file may hold -128, which the quantizer never writes), all-zero blocks of
    weights and of activations, one large activation beside tiny ones: no int16 saturation, no NaN."""
    rng = np.random.default_rng(5)
    n, k = 19, 128
    q = rng.choice(np.array([-128, 127, -127, 0], dtype=np.int8), size=(n, k))
    q[3] = 0
    d = np.full((n, k // 32, 1), 0.01, dtype=np.float16)
    d[4, 1] = 0
    raw = np.concatenate([d.view(np.uint8).reshape(n, k // 32, 2), q.reshape(n, k // 32, 32).view(np.uint8)],
                         axis=2).reshape(n, k // 32 * 34)
    w64 = (q.reshape(n, k // 32, 32).astype(np.float64) * d.astype(np.float64)).reshape(n, k)
    x = rng.standard_normal((3, k)).astype(np.float32)
    x[0, :32] = 0
    x[1, 40] = 1e4
    x[2] = -np.abs(x[2])
    check(x, raw, w64, isa, 2)


def test_the_tts_takes_the_best_kernel_the_cpu_module_also_has():
    """With MINICPMO_CPU_VARIANT=haswell (CI's AVX2 run) the TTS's matrices run the AVX2 kernel too."""
    module = set(minicpmo_cpp.cpu_features())
    if "AVX512_VNNI" in module and "avx512_vnni" in ISAS:
        want = "avx512_vnni"
    elif {"AVX2", "FMA", "F16C"} <= module and "avx2" in ISAS:
        want = "avx2"
    else:
        want = None
    assert _testing.q8_best_isa() == want


@pytest.mark.parametrize("isa", ISAS)
def test_rejects_a_shape_that_is_not_q8_0(isa):
    with pytest.raises(MinicpmoError, match="N x"):
        _testing.q8_packed_product(np.zeros((1, 48), np.float32), np.zeros((2, 51), np.uint8), isa)
    with pytest.raises(MinicpmoError, match="isa"):
        _testing.q8_packed_product(np.zeros((1, 32), np.float32), np.zeros((2, 34), np.uint8), "sse")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m", [1, 3])
def test_gated_and_residual_products(isa, m):
    """The feed-forward block's nodes: silu(gate . x) * (up . x) from one stacked matrix, and a product
    with the skip connection added in the node."""
    rng = np.random.default_rng(11 + m)
    k, half = 96, 48
    raw, w64 = q8_0_blocks(rng.standard_normal((2 * half, k)).astype(np.float32), rng)
    x = rng.standard_normal((m, k)).astype(np.float32)
    xq = quantized_activations(x)
    g, u = xq @ w64[:half].T, xq @ w64[half:].T
    want = g / (1 + np.exp(-g)) * u
    got = _testing.q8_packed_product(x, raw, isa, n_threads=2, gated=True)
    # the two products as above, then silu and the product in F32 (a few ulp of each)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))
    res = rng.standard_normal((m, 2 * half)).astype(np.float32)
    got = _testing.q8_packed_product(x, raw, isa, n_threads=2, residual=res)
    assert np.max(np.abs(got - (res + xq @ w64.T))) <= 1e-5 * np.max(np.abs(xq) @ np.abs(w64).T)
    with pytest.raises(MinicpmoError, match="multiple of 32"):
        _testing.q8_packed_product(x, raw[:40], isa, gated=True)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("gated", [False, True])
def test_products_of_rms_normed_rows(isa, gated):
    """The norm ahead of a block folded into its product's node: x / sqrt(mean(x^2) + eps) * weight,
    then quantized and multiplied as above."""
    rng = np.random.default_rng(21)
    k, n = 128, 64
    raw, w64 = q8_0_blocks(rng.standard_normal((n, k)).astype(np.float32), rng)
    x = (rng.standard_normal((2, k)) * 3).astype(np.float32)
    weight = rng.uniform(0.5, 1.5, k).astype(np.float32)
    eps = 1e-5
    normed = (x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1, keepdims=True) + eps) * weight).astype(np.float32)
    xq = quantized_activations(normed)
    got = _testing.q8_packed_product(x, raw, isa, n_threads=2, gated=gated, rms_weight=weight, rms_eps=eps)
    if gated:
        g, u = xq @ w64[: n // 2].T, xq @ w64[n // 2:].T
        want = g / (1 + np.exp(-g)) * u
    else:
        want = xq @ w64.T
    # the normed rows agree with numpy's to a few ulp, which can move a value across a rounding step of
    # its quantization (rarely): one step d_x in one product term, far below 1e-2 of the largest output
    assert np.max(np.abs(got - want)) <= 1e-2 * np.max(np.abs(want))
    assert np.median(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))
