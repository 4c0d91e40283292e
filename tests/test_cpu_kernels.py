"""The project's own vectorised CPU kernels against float64 numpy: the sine of HiFT's Snake
(token2wav/hift_snake) and the exp and BF16 / F32 softmax between the two products of the oneDNN
backend's attention (core/softmax_rows), and the F16 -> BF16 rounding that packs F16 weights for that backend
(core/bf16_convert). Each is built for AVX-512, AVX2 and baseline x86-64 and picked by CPUID
at load; these tests run whichever clone this CPU gets. Odd lengths leave remainders after every
vector width."""

from __future__ import annotations

import numpy as np
import pytest

from minicpmo_cpp import _testing

# sin: the Taylor series to r^11 on |r| <= pi/2 leaves < 6e-8, and the float32 reduction and
# polynomial add a few units of 2^-24 (measured max 1.6e-7; numpy's float32 sin: 7e-8).
TOL_SINE = 2.5e-7
# exp: Taylor to r^6 on |r| <= ln 2 / 2 leaves < 2e-8 relative, plus float32 rounding of the
# reduction, polynomial and scaling (measured in the test's output on failure).
TOL_EXP_REL = 5e-7
# softmax into BF16: 8 significant bits, so rounding to nearest moves each probability by up to 2^-8
# of itself (the unit roundoff); the exp and the F32 sums add ~1e-6.
TOL_SOFTMAX_REL = 2.0 ** -8 + 1e-5
# the F32 softmax (int8 sessions): the exp's few ulp, the sum's rounding over up to 5000 terms
# (float32, vectorised order) and the final product: measured at most 6.5e-7 (AMD Zen 3, AVX2 clone)
TOL_SOFTMAX_F32_REL = 1e-5
SOFTMAX = {"bf16": (_testing.softmax_bf16, TOL_SOFTMAX_REL), "f32": (_testing.softmax_f32, TOL_SOFTMAX_F32_REL)}


pytestmark = pytest.mark.sanitize


@pytest.mark.parametrize("bound", [4.0, 100.0, 8192.0, 1e5])
def test_vectorised_sine_matches_float64_sin(bound):
    # past |x| = 8192 rows fall back to sinf
    x = np.random.default_rng(int(bound)).uniform(-bound, bound, 100_003).astype(np.float32)
    got = _testing.hift_sine(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.abs(got - np.sin(x.astype(np.float64))).max() < TOL_SINE


def test_vectorised_sine_special_values():
    x = np.array([0.0, -0.0, 1e-30, np.pi, -np.pi / 2, 8192.0, 8193.0, np.inf, -np.inf, np.nan], np.float32)
    got = _testing.hift_sine(x)
    with np.errstate(invalid="ignore"):  # sin(inf) is NaN
        want = np.sin(x.astype(np.float64))
    finite = np.isfinite(x)
    assert np.abs(got[finite] - want[finite]).max() < TOL_SINE
    assert np.signbit(got[1]) and got[2] == np.float32(1e-30)  # sin(-0) = -0, sin(x) = x for tiny x
    assert np.isnan(got[~finite]).all()


def test_vectorised_exp_matches_float64_exp():
    x = np.concatenate([np.random.default_rng(1).uniform(-87.0, 88.7, 200_001),
                        np.linspace(-1.0, 1.0, 1001)]).astype(np.float32)
    got = _testing.vector_exp(x)
    want = np.exp(x.astype(np.float64))
    worst = (np.abs(got - want) / want).max()
    assert worst < TOL_EXP_REL, worst


def test_vectorised_exp_limits():
    x = np.array([-1e30, -200.0, -87.5, 0.0, 89.0, 1e30, -np.inf, np.inf, np.nan], np.float32)
    got = _testing.vector_exp(x)
    assert (got[:3] >= 0).all() and (got[:3] <= np.exp(-87.0)).all()  # underflow: 0 or a tiny normal
    assert got[3] == 1.0 and np.isposinf(got[4]) and np.isposinf(got[5])
    assert got[6] == 0.0 and np.isposinf(got[7]) and np.isnan(got[8])


@pytest.mark.parametrize("out", ["bf16", "f32"])
@pytest.mark.parametrize("cols", [1, 17, 1024, 1501, 5000])  # 5000: past the kernel's stack row buffer
def test_softmax_matches_float64(cols, out):
    softmax, tol = SOFTMAX[out]
    rng = np.random.default_rng(cols)
    scores = (rng.standard_normal((37, cols)) * 6.0).astype(np.float32)
    scale = 0.125
    got = softmax(scores, scale)
    s = scores.astype(np.float64) * scale
    want = np.exp(s - s.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    assert got.shape == scores.shape
    worst = float((np.abs(got - want) / want).max())
    assert worst <= tol, worst
    if out == "bf16":  # the values are BF16: their low 16 bits are zero
        assert not (got.view(np.uint32) & 0xFFFF).any()


@pytest.mark.parametrize("out", ["bf16", "f32"])
def test_softmax_with_an_additive_mask(out):
    softmax, tol = SOFTMAX[out]
    rng = np.random.default_rng(7)
    scores = rng.standard_normal((9, 100)).astype(np.float32)
    mask = np.where(rng.random((9, 100)) < 0.3, -np.inf, 0.0).astype(np.float32)
    mask[4] = -np.inf                                    # a query that sees no key: zeros
    mask[5] = rng.standard_normal(100).astype(np.float32)  # any additive values
    got = softmax(scores, 0.5, mask)
    t = scores.astype(np.float64) * 0.5 + mask
    with np.errstate(invalid="ignore"):
        want = np.exp(t - t.max(axis=1, keepdims=True))
        want /= want.sum(axis=1, keepdims=True)
    want[4] = 0.0
    assert (np.abs(got - want) <= tol * want + 1e-30).all()
    assert (got[mask == -np.inf] == 0).all()


@pytest.mark.parametrize("out", ["bf16", "f32"])
def test_softmax_rows_of_minus_infinity_and_nan(out):
    scores = np.zeros((3, 8), np.float32)
    scores[0, :] = -np.inf           # nothing to attend to: zeros, not NaN
    scores[1, 3] = np.nan            # a broken score is not hidden: its row is NaN
    scores[2, :4] = -np.inf          # masked half: the other half shares the mass
    got = SOFTMAX[out][0](scores, 1.0)
    assert (got[0] == 0).all()
    assert np.isnan(got[1]).all()
    assert (got[2, :4] == 0).all() and np.allclose(got[2, 4:], 0.25)


def _nearest_bf16_even(x: np.ndarray) -> np.ndarray:
    """BF16 bits of float32 x rounded to nearest, ties to even, chosen by comparing the two BF16
    neighbours in float64 (not by the kernel's integer trick); finite x only."""
    bits = x.view(np.uint32)
    down = (bits >> 16).astype(np.uint32)  # truncation: toward zero
    up = down + 1  # the next BF16 away from zero (a carry into the exponent is the right neighbour)
    widen = lambda b: (b << 16).astype(np.uint32).view(np.float32).astype(np.float64)
    err_down = np.abs(widen(down) - x.astype(np.float64))
    err_up = np.abs(widen(up) - x.astype(np.float64))
    pick_up = (err_up < err_down) | ((err_up == err_down) & (down % 2 == 1))
    return np.where(pick_up, up, down).astype(np.uint16)


def test_f16_to_bf16_every_half_value():
    # all 65536 half bit patterns: zeros, subnormals, normals, infinities, NaN
    bits = np.arange(1 << 16, dtype=np.uint16)
    got = _testing.f16_to_bf16(bits)
    assert got.dtype == np.uint16 and got.shape == bits.shape
    exact = bits.view(np.float16).astype(np.float32)  # F16 -> F32 is exact
    nan, finite = np.isnan(exact), np.isfinite(exact)
    assert np.array_equal(got[finite], _nearest_bf16_even(exact[finite]))
    assert np.array_equal(got[np.isinf(exact)], np.where(exact[np.isinf(exact)] > 0, 0x7F80, 0xFF80))
    widened = (got.astype(np.uint32) << 16).view(np.float32)
    assert np.isnan(widened[nan]).all()  # NaN stays NaN (never turns into infinity)
    assert np.array_equal(np.signbit(widened), np.signbit(exact))


def test_f16_to_f32_every_half_value():
    bits = np.arange(1 << 16, dtype=np.uint16)
    got = _testing.f16_to_f32(bits)
    want = bits.view(np.float16).astype(np.float32)  # exact
    assert got.dtype == np.float32
    nan = np.isnan(want)
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))  # bit for bit: -0, subnormals
    assert np.isnan(got[nan]).all()
