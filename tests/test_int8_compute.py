"""compute_type="int8" (or MINICPMO_COMPUTE=int8): the matrix products of the vision tower, the Whisper
encoder and the Token2Wav flow as 8-bit integer products through oneDNN (core/onednn_matmul,
core/int8_quantize), checked here against float64 numpy, on odd shapes, on every instruction set
oneDNN can be capped to on this CPU, and stage by stage against the numpy references on the tiny
model's F32 weights.

The scheme, which `quantize()` below writes again in numpy: each weight row (an output channel) in
7-bit integers (|q| <= 63, so that AVX2's saturating byte products cannot overflow), scale max|w| / 63;
each activation row in unsigned bytes over a range that includes 0, with a zero point; the integer
sums are exact, then scaled back to F32.

Tolerances:
  * one product against the float64 product of the unquantized operands: 7-bit weights round each
    weight by up to 1/126 of its row's peak, 8-bit activations each value by 1/510 of its row's range.
    On Gaussian operands that gives 1.5e-2 to 2.1e-2 of the largest output (the measured worst over
    the shapes here is printed); 4e-2 leaves room and still catches a wrong layout, scale or zero
    point (O(1) errors).
  * one product against the numpy emulation of the same quantization (float32 scales, exact integer
    sums): equal but for a value rounded the other way where float32 rounding of x / scale lands on a
    tie (one term off by one step: below 1e-3 of the largest output); 2e-3.
  * stages (tiny towers: 2 ViT layers + resampler, 2 Whisper layers + projector, 3 flow steps):
    INT8_REL_TOL below, the measured errors printed by each test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from minicpmo_cpp import MinicpmoError, OmniSession, _testing, build_info

import reduced_precision as cases
from relative_error import rel
from test_vision_encoder import smooth_noise_image

PRODUCT_TOL = 4e-2      # one product against float64 (module docstring)
EMULATION_TOL = 2e-3    # one product against the numpy emulation of the scheme (module docstring)
INT8_REL_TOL = 8e-2     # a stage against its float64 reference (module docstring; measured values printed)
F32_REL_TOL = 1e-4      # tests/test_vision_encoder.py, tests/test_audio_encoder.py
MIN_INT8_EFFECT = 1e-3  # int8 vs f32: quantization gives ~1e-2, F32 summation order ~1e-6


INT8_RUNS = bool(build_info.MINICPMO_ONEDNN)  # oneDNN's int8 kernels run on every x86-64 CPU
REFUSAL = "oneDNN.*libdnnl-dev"               # a build without oneDNN says what is missing


def _round_even(v):
    return np.rint(v)  # numpy rounds half to even, as the CPU's default mode


def quantize(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T by the int8 scheme, in numpy: float32 scales as core/int8_quantize computes them,
    exact integer sums."""
    x, w = np.asarray(x, np.float32), np.asarray(w, np.float32)
    peak = np.abs(w).max(1)
    sw = (peak / np.float32(63)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv_w = (np.float32(1) / sw).astype(np.float32)
    zero_w = ~np.isfinite(inv_w)
    inv_w[zero_w], sw[zero_w] = 0, 1
    qw = np.clip(_round_even(w * inv_w[:, None]), -63, 63).astype(np.int64)
    lo = np.minimum(x.min(1), np.float32(0))
    hi = np.maximum(x.max(1), np.float32(0))
    sx = ((hi - lo) / np.float32(255)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv_x = (np.float32(1) / sx).astype(np.float32)
    zero_x = ~np.isfinite(inv_x)
    inv_x[zero_x], sx[zero_x] = 0, 1
    z = _round_even(-lo * inv_x)
    qx = np.clip(_round_even(x * inv_x[:, None]) + z[:, None], 0, 255).astype(np.int64)
    acc = qx @ qw.T - z.astype(np.int64)[:, None] * qw.sum(1)[None, :]
    return (sx[:, None] * sw[None, :]).astype(np.float32) * acc.astype(np.float32)


# M x K times (N x K).T: tile remainders, K = 1, N = 1, M = 1, a Whisper-length batch of 1500 rows
SHAPES = [(1, 1, 1), (1, 37, 5), (3, 1, 7), (5, 65, 1), (33, 129, 17), (64, 1152, 130), (1500, 80, 3),
          (37, 257, 300)]


def _operands(M, K, N, seed=0):
    rng = np.random.default_rng(seed + M * 7 + K * 13 + N)
    return rng.standard_normal((M, K)).astype(np.float32), (rng.standard_normal((N, K)) * 0.05).astype(np.float32)


@pytest.mark.parametrize("f16_weight", [False, True], ids=["f32-weight", "f16-weight"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_int8_product_matches_float64_and_the_scheme(shape, f16_weight):
    x, w = _operands(*shape)
    if f16_weight:
        w = w.astype(np.float16).astype(np.float32)  # the values the F16 weight holds
    if not INT8_RUNS:
        with pytest.raises(MinicpmoError, match=REFUSAL):
            _testing.matrix_product(x, w, "int8", f16_weight)
        return
    got = _testing.matrix_product(x, w, "int8", f16_weight, 2)
    exact = _testing.matrix_product(x, w, "f32", f16_weight, 2)
    want = x.astype(np.float64) @ w.astype(np.float64).T
    e_int8, e_scheme, e_f32 = rel(got, want), rel(got, quantize(x, w)), rel(exact, want)
    print(f"{shape}: int8 vs float64 {e_int8:.2e}, vs the scheme {e_scheme:.2e}, f32 path {e_f32:.2e}")
    assert e_int8 < PRODUCT_TOL
    assert e_scheme < EMULATION_TOL
    # ggml rounds the activations to F16 for an F16 weight (2^-11 relative), F32 otherwise
    assert e_f32 < (2e-3 if f16_weight else 1e-5)
    if shape[1] > 1:  # K = 1 products of a row's peak are exact in both: no effect to see
        assert rel(got, exact) > MIN_INT8_EFFECT / 10


def test_int8_special_rows():
    """An all-zero activation row gives zeros, a row with NaN or infinity gives NaN (as F32 arithmetic
    would) and leaves the other rows alone, an all-zero weight row gives a zero column, a constant
    row and a row far from zero keep their accuracy."""
    if not INT8_RUNS:
        return
    x, w = _operands(6, 96, 10, seed=3)
    x[0] = 0
    x[1, 5] = np.nan
    x[2, 7] = np.inf
    x[3] = 2.5
    x[4] = 1e4 + x[4]      # far from zero: the range from 0 to 1e4 is what the bytes resolve
    w[9] = 0
    got = _testing.matrix_product(x, w, "int8", False, 2)
    assert np.all(got[0] == 0)
    assert np.all(np.isnan(got[1])) and np.all(np.isnan(got[2]))
    assert np.all(np.isfinite(got[[0, 3, 4, 5]]))
    assert np.all(got[:, 9][[0, 3, 4, 5]] == 0)
    rows = [0, 3, 4, 5]
    want = x[rows].astype(np.float64) @ w.astype(np.float64).T
    assert rel(got[rows], want) < PRODUCT_TOL


def test_a_non_finite_weight_is_a_clear_error():
    """F32 arithmetic would carry a NaN weight into every output; a 7-bit scale cannot hold it, so the
    product is refused, naming the row."""
    if not INT8_RUNS:
        return
    x, w = _operands(40, 64, 8, seed=4)
    w[3, 10] = np.nan
    with pytest.raises(MinicpmoError, match="weight row 3 holds a non-finite value"):
        _testing.matrix_product(x, w, "int8", False, 1)


# (H, Lq, Lk, D, Dv): one key or query, a block tail (130 = 128 + 2 query rows), the vision tower's
# 1024 x 72, a 30-s Whisper clip's 1500 keys, Dv != D
ATTENTION_SHAPES = [(1, 1, 1, 1, 1), (2, 3, 5, 64, 64), (4, 130, 1024, 72, 72), (2, 37, 1500, 64, 64),
                    (3, 19, 258, 64, 80)]
# softmax(scale q k^T + mask) v in F32 against float64: the products' summation order and the
# softmax's exp and sum (a few ulp each, tests/test_cpu_kernels.py) give ~1e-6 of the largest output
ATTENTION_F32_TOL = 2e-5


def attention_inputs(shape):
    """q, k, v, mask, scale of an attention of `shape` (H, Lq, Lk, D, Dv): normal values, and an
    additive mask (its F16 values) that hides some keys of every query and all keys of the last one."""
    H, Lq, Lk, D, Dv = shape
    rng = np.random.default_rng(Lq * 31 + Lk)
    q = rng.standard_normal((H, Lq, D)).astype(np.float32)
    k = rng.standard_normal((H, Lk, D)).astype(np.float32)
    v = rng.standard_normal((H, Lk, Dv)).astype(np.float32)
    mask = None
    if Lk > 1:
        mask = np.where(rng.random((Lq, Lk)) < 0.3, -np.inf, rng.standard_normal((Lq, Lk)) * 0.5)
        mask = mask.astype(np.float16).astype(np.float32)  # the values the F16 mask holds
        mask[:, 0] = 0.0
        mask[-1] = -np.inf
    return q, k, v, mask, 1.0 / np.sqrt(D)


def attention_float64(q, k, v, mask, scale):
    s = np.einsum("hqd,hkd->hqk", q.astype(np.float64), k.astype(np.float64)) * scale
    if mask is not None:
        s = s + mask.astype(np.float64)[None]
    with np.errstate(invalid="ignore"):
        p = np.exp(s - s.max(axis=2, keepdims=True))
        p /= p.sum(axis=2, keepdims=True)
    p[~np.isfinite(p)] = 0  # a query whose keys are all masked attends to nothing
    return np.einsum("hqk,hkd->hqd", p, v.astype(np.float64))


@pytest.mark.parametrize("kv", ["f32", "f16", "f16-cache"])
@pytest.mark.parametrize("shape", ATTENTION_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_int8_sessions_fused_attention_is_f32(shape, kv):
    """The int8 sessions' attention (one fused op per layer, core/onednn_attention with F32 operands)
    keeps F32 accuracy: against float64 on odd shapes, with an additive mask that hides some keys of
    every query and all keys of one, and with keys and values in F16 as a streaming cache holds them
    (the reference then reads the F16-rounded values), stored densely or ("f16-cache") read through
    views of caches laid out as the encoders' (a key's row holding every head; values transposed),
    which the F16 keys and values are widened from."""
    f16_kv, cache_layout = kv != "f32", kv == "f16-cache"
    H, Lq, Lk, D, Dv = shape
    q, k, v, mask, scale = attention_inputs(shape)
    if not INT8_RUNS:
        with pytest.raises(MinicpmoError, match=REFUSAL):
            _testing.fused_attention(q, k, v, mask, scale, "int8", f16_kv)
        return
    got = _testing.fused_attention(q, k, v, mask, scale, "int8", f16_kv, 2, cache_layout)
    if f16_kv:
        k, v = k.astype(np.float16).astype(np.float32), v.astype(np.float16).astype(np.float32)
    want = attention_float64(q, k, v, mask, scale)
    err = rel(got, want)
    print(f"{shape} {kv} keys/values: {err:.2e} of the largest output")
    assert got.shape == (H, Lq, Dv)
    assert err < ATTENTION_F32_TOL
    if mask is not None and Lq > 1:
        assert np.all(got[:, -1] == 0)  # the query that sees no key


def test_int8_results_are_the_same_on_every_instruction_set(tmp_path):
    """ONEDNN_MAX_CPU_ISA caps oneDNN's kernels (read once per process: a subprocess per cap), which
    stands in for an older CPU: AVX2 (byte products through vpmaddubsw), and where this CPU has them
    AVX-512 and its VNNI and AMX forms. The integer sums are exact and the 7-bit weights keep AVX2's
    16-bit pairs from saturating, so every cap gives the same bits."""
    if not INT8_RUNS:
        return
    flags = set(cases.cpu_flags())
    caps = ["DEFAULT", "AVX2"]
    if "avx512bw" in flags:
        caps.append("AVX512_CORE")
    if "avx512_vnni" in flags:
        caps.append("AVX512_CORE_VNNI")
    if "amx_int8" in flags:
        caps.append("AVX512_CORE_AMX")
    x, w = _operands(301, 777, 129, seed=9)
    x = x * 3  # wide rows: many byte products near the 16-bit limit of AVX2's pairs
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    script = textwrap.dedent(f"""
        import numpy as np
        from minicpmo_cpp import _testing
        x, w = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'w.npy')!r})
        np.save({str(tmp_path)!r} + "/out.npy", _testing.matrix_product(x, w, "int8", False, 2))
    """)
    results = {}
    for cap in caps:
        env = dict(os.environ)
        env.pop("ONEDNN_MAX_CPU_ISA", None)
        if cap != "DEFAULT":
            env["ONEDNN_MAX_CPU_ISA"] = cap
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        results[cap] = np.load(tmp_path / "out.npy")
    for cap in caps[1:]:
        np.testing.assert_array_equal(results[cap], results["DEFAULT"], err_msg=cap)
    assert rel(results["DEFAULT"], quantize(x, w)) < EMULATION_TOL


def _session(path, compute: str) -> OmniSession:
    return OmniSession(str(path), n_threads=2, device="cpu", n_ctx=512, compute_type=compute)


@pytest.fixture(scope="module")
def int8_and_f32(tiny_f32):
    if not INT8_RUNS:
        with pytest.raises(MinicpmoError, match=REFUSAL):
            _session(tiny_f32[0], "int8").encode_image(np.zeros((32, 32, 3), np.uint8), max_slice_nums=1)
        return None
    return _session(tiny_f32[0], "int8"), _session(tiny_f32[0], "f32")


def _check(label: str, got, exact, want, f32_tol: float = F32_REL_TOL) -> None:
    cases.check("int8", INT8_REL_TOL, MIN_INT8_EFFECT, label, got, exact, want, f32_tol)


@pytest.mark.sanitize
def test_int8_is_named_and_never_automatic(tiny_f32):
    """compute_type reports "int8" when asked; "auto" never takes it (it is bf16 or f32, see
    tests/test_bf16_compute.py), with MINICPMO_COMPUTE=int8 taking it for "auto" sessions."""
    if not INT8_RUNS:
        with pytest.raises(MinicpmoError, match=REFUSAL):
            _session(tiny_f32[0], "int8").encode_image(np.zeros((32, 32, 3), np.uint8), max_slice_nums=1)
        return
    assert _session(tiny_f32[0], "INT8").compute_type == "int8"
    old = os.environ.get("MINICPMO_COMPUTE")
    try:
        os.environ["MINICPMO_COMPUTE"] = "auto"
        assert OmniSession(str(tiny_f32[0]), n_threads=1, device="cpu", n_ctx=64).compute_type in ("bf16", "f32")
        os.environ["MINICPMO_COMPUTE"] = "int8"
        assert OmniSession(str(tiny_f32[0]), n_threads=1, device="cpu", n_ctx=64).compute_type == "int8"
    finally:
        if old is None:
            del os.environ["MINICPMO_COMPUTE"]
        else:
            os.environ["MINICPMO_COMPUTE"] = old


def test_int8_sessions_leave_no_weight_product_to_ggml(tiny_f32):
    """Every product with a weight in the int8 stages runs on oneDNN, the convolutions' too: their
    kernels reach the product as views of the weights (reshaped to matrices), which the scheduler asks
    about before views get their buffers, and which were once left to ggml's kernels (a third of the
    DiT's products, in ggml's F16 kernel for F16 files). (HiFT's products are oneDNN's F32 ones from 32
    rows up; the tiny model's shorter ones stay on ggml by design: core/onednn_matmul, min_rows.)"""
    if not INT8_RUNS:
        return  # refused: test_int8_is_named_and_never_automatic
    from minicpmo_cpp.signals import speechlike

    s = _session(tiny_f32[0], "int8")
    s.chat([{"role": "user", "content": "Say something."}], do_sample=False, max_new_tokens=2,
           generate_audio=True, max_speech_tokens=10)
    s.encode_image(smooth_noise_image(64, 64), max_slice_nums=1)
    s.encode_audio(speechlike(1.0, seed=1))
    placed = s.graph_placements()
    print(placed)
    for stage in ("vision", "audio", "flow"):
        assert placed[stage]["graphs"] > 0, stage
        assert placed[stage]["ggml_weight_products"] == 0, (stage, placed[stage])


@pytest.mark.parametrize("size", [(448, 448), (1024, 768)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_vision_int8_matches_reference(int8_and_f32, tiny_state, size):
    if int8_and_f32 is None:
        return
    _check(*cases.vision_case(*int8_and_f32, tiny_state, size))


@pytest.mark.parametrize("n_frames", [257, 3000])
def test_audio_int8_matches_reference(int8_and_f32, tiny_state, n_frames):
    if int8_and_f32 is None:
        return
    _check(*cases.audio_case(*int8_and_f32, tiny_state, n_frames))


def test_audio_int8_streaming_chunks_match_reference(int8_and_f32, tiny_state):
    """Duplex-style streaming chunks over the key/value cache, 6 chunks."""
    if int8_and_f32 is None:
        return
    for case in cases.audio_stream_cases(*int8_and_f32, tiny_state):
        _check(*case)


def test_flow_int8_matches_reference(tiny_f32, tiny_hf):
    """The Token2Wav flow's CFM (3 Euler steps of the DiT, both CFG branches), 40 frames."""
    import test_flow_runtime as flow_tests
    from minicpmo_cpp._testing import Flow

    if not INT8_RUNS:
        with pytest.raises(MinicpmoError, match=REFUSAL):
            Flow(str(tiny_f32[1]), n_threads=1, device="cpu", compute_type="int8")
        return
    _check(*cases.flow_cfm_case(tiny_f32[1], "int8", tiny_hf), flow_tests.TOL["f32"])


def test_flow_int8_streaming_matches_reference(tiny_f32, tiny_hf):
    """Streaming windows (the duplex path) over the DiT's key/value cache; 6 windows."""
    import test_flow_runtime as flow_tests

    if not INT8_RUNS:
        return  # refused: test_flow_int8_matches_reference
    for case in cases.flow_stream_cases(tiny_f32[1], "int8", tiny_hf):
        _check(*case, flow_tests.TOL["f32"])


def test_int8_and_other_sessions_of_one_model_from_two_threads(tiny_f32, int8_and_f32):
    """Two int8 sessions and an f32 one over one loaded model (and a BF16 one where this CPU runs BF16):
    the model keeps one packed copy per kind (GgufWeights::kernel_copy), so sessions of different
    kinds never read each other's; run at the same time from threads, each equals a lone session of
    its kind (the same integer sums: 1e-6)."""
    if int8_and_f32 is None:
        return
    img = smooth_noise_image(448, 448)
    kinds = ["int8", "f32", "int8"]
    try:  # where this CPU (or ONEDNN_MAX_CPU_ISA) lets oneDNN run BF16: tests/test_bf16_compute.py says when
        _session(tiny_f32[0], "bf16").encode_image(img, max_slice_nums=1)
        kinds.append("bf16")
    except MinicpmoError as e:
        assert "no fast BF16 matrix product for this CPU" in str(e)
    alone = {k: _session(tiny_f32[0], k).encode_image(img, max_slice_nums=1) for k in set(kinds)}
    for k, r in zip(kinds, cases.encode_from_threads(tiny_f32[0], kinds, img)):
        assert rel(r, np.asarray(alone[k], np.float64)) < 1e-6, k
