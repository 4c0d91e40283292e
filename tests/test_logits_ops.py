"""The logits operations the samplers are composed of (csrc/sampling/logits_ops.h, pick.h), one by
one against numpy written from their documented rules, through tests/c/logits_ops_demo.cpp linked
against the installed library. The samplers themselves are checked token for token elsewhere
(test_sampling.py, test_tts_*.py, test_duplex_session.py); this file pins the rules that tell the
references apart: ties at the k-th value, where a nucleus ends (reaches vs passes top_p), the
ascending TopP warper with min_keep, the sign rules of the penalties, the inverse-CDF draw.

Tolerances: every op whose arithmetic is a single float32 or double operation per element, or a
sequential sum, is compared bit for bit (the references add in the same order); exp() is compared
with rtol 1e-15 (numpy's exp and the C library's may differ in the last bit); penalty^count with
2 float32 ulps (numpy's float32 power and powf may differ in the last bit).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
NEG_INF = np.float32(-np.inf)
RNG_SEED = 2468


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    import minicpmo_cpp

    cxx = shutil.which("c++") or shutil.which("g++")
    assert cxx, "a C++ compiler is needed to build tests/c/logits_ops_demo.cpp"
    pkg = Path(minicpmo_cpp.__file__).parent
    exe = tmp_path_factory.mktemp("logits_ops") / "logits_ops_demo"
    cmd = [cxx, "-std=c++17", "-O1", f"-I{REPO_ROOT / 'csrc'}", str(REPO_ROOT / "tests" / "c" / "logits_ops_demo.cpp"),
           "-o", str(exe), f"-L{pkg}", "-lminicpmo", f"-Wl,-rpath,{pkg}"]
    subprocess.run(cmd, check=True)
    return exe


def _hex(values) -> str:
    return " ".join(float(v).hex() for v in values)


def run(exe: Path, op: str, row, ids=(), *args) -> str:
    head = " ".join([op, *(float(a).hex() if isinstance(a, (float, np.floating)) else str(a) for a in args)])
    stdin = f"{head}\n{_hex(row)}\n{' '.join(str(int(i)) for i in ids)}\n"
    res = subprocess.run([str(exe)], input=stdin, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def row_f32(out: str) -> np.ndarray:
    return np.array([float.fromhex(w) for w in out.split()], dtype=np.float64).astype(np.float32)


def row_f64(out: str) -> np.ndarray:
    return np.array([float.fromhex(w) for w in out.split()], dtype=np.float64)


def bits(x: np.ndarray) -> list[int]:
    return np.asarray(x, np.float32).view(np.uint32).tolist()


def seq_sum(values) -> float:
    total = 0.0
    for v in values:
        total += float(v)
    return total


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(RNG_SEED)


# ---- scaling and penalties ----


def test_temperature(demo, rng):
    x = rng.standard_normal(64).astype(np.float32) * 5
    t = np.float32(0.7)
    assert bits(row_f32(run(demo, "temperature", x, (), t))) == bits(x / t)


def test_penalise_ids_sign_rule(demo, rng):
    x = rng.standard_normal(40).astype(np.float32)
    x[[3, 4]] = [0.0, -0.0]
    ids = [1, 3, 4, 7, 7, 7, 20, -1, 40, 99]  # duplicates once; ids outside the row ignored
    p = np.float32(1.3)
    want = x.copy()
    for i in sorted(set(i for i in ids if 0 <= i < len(x))):
        want[i] = want[i] / p if want[i] > 0 else want[i] * p
    assert bits(row_f32(run(demo, "penalise_ids", x, ids, p))) == bits(want)


def test_divide_ids_whatever_the_sign(demo, rng):
    x = rng.standard_normal(40).astype(np.float32)
    ids = [0, 5, 5, 9, 39, 41]
    p = np.float32(1.05)
    want = x.copy()
    for i in {0, 5, 9, 39}:
        want[i] = want[i] / p  # a negative logit moves up (the duplex reference's quirk)
    got = row_f32(run(demo, "divide_ids", x, ids, p))
    assert bits(got) == bits(want)
    assert any(x[i] < 0 and got[i] > x[i] for i in (0, 5, 9, 39))


def test_penalise_by_count(demo, rng):
    x = rng.standard_normal(12).astype(np.float32) * 3
    history = [1, 2, 2, 5, 5, 5, 0, 11, 11, 3]
    p, window = np.float32(1.05), 7
    counts = np.bincount(history[-window:], minlength=len(x))
    want = x.astype(np.float64)
    for i, c in enumerate(counts):
        if c:
            alpha = np.float32(p) ** np.float32(c)
            want[i] = np.float32(x[i] * alpha) if x[i] < 0 else np.float32(x[i] / alpha)
    got = row_f32(run(demo, "penalise_by_count", x, history, p, window))
    assert bits(got[counts <= 1]) == bits(want[counts <= 1])  # penalty^1 is the penalty: exact
    np.testing.assert_allclose(got, want, rtol=2 * 2.0**-23, atol=0)  # float32 pow: 2 ulp


# ---- top-k ----


@pytest.mark.parametrize("k", [1, 2, 5, 17, 50])
def test_top_k_keeps_ties_with_the_kth(demo, rng, k):
    x = rng.integers(-3, 4, size=50).astype(np.float32)  # many ties
    kth = np.sort(x)[::-1][k - 1]
    want = np.where(x < kth, NEG_INF, x)
    got = row_f32(run(demo, "top_k", x, (), k))
    assert bits(got) == bits(want)
    assert np.count_nonzero(got != NEG_INF) >= k


# ---- top-p ----


def _top_p_descending_reference(x: np.ndarray, top_p: float, end: str) -> np.ndarray:
    ids = [int(i) for i in np.argsort(-x, kind="stable") if x[i] != NEG_INF]  # largest first, ties by id
    w = np.exp(x[ids].astype(np.float64) - np.float64(x[ids[0]]))
    total = seq_sum(w)
    cum, keep = 0.0, len(ids)
    for n, v in enumerate(w):
        cum += float(v) / total
        if (cum >= top_p) if end == "reaches" else (cum > top_p):
            keep = n + 1
            break
    out = x.copy()
    out[ids[keep:]] = NEG_INF
    return out


@pytest.mark.parametrize("end", ["reaches", "passes"])
def test_top_p_descending(demo, rng, end):
    for _ in range(5):
        x = (rng.standard_normal(80) * 2).astype(np.float32)
        x[rng.integers(0, 80, 6)] = NEG_INF
        top_p = np.float32(0.8)
        got = row_f32(run(demo, "top_p_descending", x, (), top_p, end))
        assert bits(got) == bits(_top_p_descending_reference(x, float(top_p), end))


def test_top_p_reaches_and_passes_differ_on_the_boundary(demo):
    x = np.zeros(4, np.float32)  # probabilities 1/4 each: the cumulative mass hits 0.5 exactly
    reaches = row_f32(run(demo, "top_p_descending", x, (), np.float32(0.5), "reaches"))
    passes = row_f32(run(demo, "top_p_descending", x, (), np.float32(0.5), "passes"))
    assert bits(reaches) == bits(np.array([0, 0, -np.inf, -np.inf], np.float32))
    assert bits(passes) == bits(np.array([0, 0, 0, -np.inf], np.float32))


def _top_p_ascending_reference(x: np.ndarray, top_p: float, min_keep: int) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    s = x[order]
    shifted = (s - s.max()).astype(np.float32)  # the shift in float32, as torch.softmax on float32
    e = np.where(s == NEG_INF, 0.0, np.exp(shifted.astype(np.float64)))
    p = e / seq_sum(e)
    cum = np.cumsum(p)  # sequential
    remove = cum <= 1.0 - np.float64(top_p)
    if min_keep > 0:
        remove[-min_keep:] = False
    out = x.copy()
    out[order[remove]] = NEG_INF
    return out


@pytest.mark.parametrize("min_keep", [1, 3, 40])
def test_top_p_ascending_min_keep(demo, rng, min_keep):
    for _ in range(5):
        x = (rng.standard_normal(30) * 2).astype(np.float32)
        x[rng.integers(0, 30, 3)] = NEG_INF
        top_p = np.float32(0.85)
        got = row_f32(run(demo, "top_p_ascending", x, (), top_p, min_keep))
        assert bits(got) == bits(_top_p_ascending_reference(x, float(top_p), min_keep))


def test_top_p_ascending_boundary_and_ties(demo):
    x = np.zeros(4, np.float32)  # ascending cumulative 1/4, 1/2, 3/4, 1: <= 1 - 0.5 drops two, ties by id
    got = row_f32(run(demo, "top_p_ascending", x, (), np.float32(0.5), 1))
    assert bits(got) == bits(np.array([-np.inf, -np.inf, 0, 0], np.float32))


def test_nucleus_size(demo, rng):
    w = np.sort(rng.random(50))[::-1]
    for top_p in (0.1, 0.5, 0.8, 0.95):
        total = seq_sum(w)
        cum, want = 0.0, len(w)
        for n, v in enumerate(w):
            cum += float(v) / total
            if cum >= np.float32(top_p):
                want = n + 1
                break
        assert int(run(demo, "nucleus_size", w, (), np.float32(top_p), "reaches")) == want
    assert int(run(demo, "nucleus_size", w, (), np.float32(1.0), "reaches")) == len(w)


# ---- picking ----


def test_softmax_float_shift(demo, rng):
    x = (rng.standard_normal(100) * 4).astype(np.float32)
    x[[5, 50]] = NEG_INF
    shifted = (x - x.max()).astype(np.float32)
    e = np.where(x == NEG_INF, 0.0, np.exp(shifted.astype(np.float64)))
    got = row_f64(run(demo, "softmax_float_shift", x))
    np.testing.assert_allclose(got, e / seq_sum(e), rtol=1e-15, atol=0)  # exp: last bit
    assert got[5] == 0.0 and got[50] == 0.0


def test_exp_weights_shift_in_double(demo, rng):
    x = (rng.standard_normal(100) * 4).astype(np.float32)
    x[7] = NEG_INF
    want = np.where(x == NEG_INF, 0.0, np.exp(x.astype(np.float64) - np.float64(x.max())))
    got = row_f64(run(demo, "exp_weights", x))
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)  # exp: last bit
    assert got[7] == 0.0 and got[int(np.argmax(x))] == 1.0


def test_pick_inverse_cdf(demo, rng):
    w = rng.random(40)
    w[[0, 3, 4, 39]] = 0.0
    cum = np.cumsum(w)  # sequential, as the C++ running sum
    for u in [0.0, 1e-12, *rng.random(30).tolist(), 0.999999999]:
        want = int(np.searchsorted(cum, u * cum[-1], side="right"))  # first running sum above u * total
        got = int(run(demo, "pick_inverse_cdf", w, (), u))
        assert got == want
        assert w[got] > 0.0  # a zero weight is never chosen
    assert int(run(demo, "pick_inverse_cdf", [0.0, 0.0], (), 0.5)) == 2  # nothing above: size, caller's fallback


def test_argmax_first_of_ties(demo):
    assert int(run(demo, "argmax", np.array([1, 3, 2, 3, 3], np.float32))) == 1
