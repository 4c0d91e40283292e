"""compute_type="bf16" (or MINICPMO_COMPUTE=bf16): the matrix products of the vision tower, the Whisper
encoder and the Token2Wav flow through oneDNN in BF16 (core/onednn_matmul: AMX or AVX-512 BF16, oneDNN's choice at run
time) against the float64 numpy references, on the tiny model's F32 weights. Also: a build without
oneDNN, a CPU without AVX-512 (where oneDNN has only its reference code: every test here then checks
the refusal), or a bad value, says so.

Tolerance: BF16 keeps 8 significant bits, so both operands of every product are rounded by up to
2^-9 = 2e-3 relative (the weights once, the activations at every product), with F32 accumulation.
Through the tiny towers (2 ViT layers + resampler; 2 Whisper layers + projector + pooling) that gives
max-abs errors of 4e-3 to 8e-3 of the largest output value (measured on Intel Sapphire Rapids, AMX;
printed by each test); 2e-2 leaves room and still catches a wrong layout or transposition (O(1)). The same session in f32 mode meets the
1e-4 bound of tests/test_vision_encoder.py, and the two runs must differ by more than F32's summation
noise, which shows the BF16 products ran."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

from minicpmo_cpp import MinicpmoError, OmniSession, _testing, build_info

import reduced_precision as cases
from audio_weights import smooth_mel
from relative_error import rel
from test_vision_encoder import smooth_noise_image
import test_int8_compute as int8_tests
from gguf_values import bf16_round

BF16_REL_TOL = 2e-2  # see the module docstring
F32_REL_TOL = 1e-4   # tests/test_vision_encoder.py, tests/test_audio_encoder.py
MIN_BF16_EFFECT = 1e-4  # bf16 vs f32 runs: BF16 rounding gives ~1e-3, F32 summation order ~1e-6


# oneDNN's BF16 products need AVX-512 (native BF16 instructions, or BF16 emulated with AVX-512 FMAs);
# elsewhere it offers only its reference code, and compute_type bf16 is refused (core/onednn_matmul)
BF16_RUNS = build_info.MINICPMO_ONEDNN and {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= set(cases.cpu_flags())
# what a refusal says: the missing build option, or the CPU's missing instructions and the way out
REFUSAL = ("no fast BF16 matrix product for this CPU.*compute_type f32" if build_info.MINICPMO_ONEDNN
           else "oneDNN.*libdnnl-dev")


@contextlib.contextmanager
def _environment(value: str):
    """MINICPMO_COMPUTE=value while sessions are made; restored at once so that other tests' sessions
    keep the default."""
    old = os.environ.get("MINICPMO_COMPUTE")
    os.environ["MINICPMO_COMPUTE"] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ["MINICPMO_COMPUTE"]
        else:
            os.environ["MINICPMO_COMPUTE"] = old


def _session(path, compute: str = "auto") -> OmniSession:
    s = OmniSession(str(path), n_threads=2, device="cpu", n_ctx=512, compute_type=compute)
    s.encode_image(np.zeros((32, 32, 3), np.uint8), max_slice_nums=1)  # makes the vision encoder now
    _testing.hooks(s).audio_encode_mel(smooth_mel(0, 100), "block")  # and the audio encoder
    return s


def _check(label: str, got, exact, want, f32_tol: float = F32_REL_TOL) -> None:
    cases.check("bf16", BF16_REL_TOL, MIN_BF16_EFFECT, label, got, exact, want, f32_tol)


@pytest.fixture(scope="module")
def bf16_and_f32(tiny_f32):
    if not BF16_RUNS:
        with pytest.raises(MinicpmoError, match=REFUSAL):
            _session(tiny_f32[0], "bf16")
        return None
    return _session(tiny_f32[0], "bf16"), _session(tiny_f32[0], "f32")


def _refused(bf16_and_f32) -> bool:
    """True in a build without oneDNN or on a CPU without AVX-512, where making the fixture's BF16
    session was refused (and checked to be, with REFUSAL's message)."""
    assert (bf16_and_f32 is None) == (not BF16_RUNS)
    return bf16_and_f32 is None


@pytest.mark.sanitize  # the sanitizer build has no oneDNN: CI checks the refusal there
def test_bf16_needs_onednn_and_avx512_or_runs(tiny_f32, bf16_and_f32):
    if BF16_RUNS:
        assert bf16_and_f32 is not None
        return
    # a build without oneDNN, or a CPU without AVX-512, refuses clearly, naming what to do
    with pytest.raises(MinicpmoError, match=REFUSAL):
        _session(tiny_f32[0], "bf16")


@pytest.mark.sanitize
def test_a_bad_compute_value_is_refused(tiny_f32):
    with pytest.raises(MinicpmoError, match="compute_type 'f8': expected auto, f32, bf16 or int8"):
        _session(tiny_f32[0], "f8")
    with _environment("f8"), pytest.raises(MinicpmoError, match="MINICPMO_COMPUTE='f8': expected auto, f32, bf16 or int8"):
        _session(tiny_f32[0])
    with pytest.raises(TypeError, match="compute_type must be a str"):
        OmniSession(str(tiny_f32[0]), compute_type=None)


def test_the_environment_sets_the_default_and_the_argument_wins(tiny_f32, bf16_and_f32):
    img = smooth_noise_image(448, 448)
    if bf16_and_f32 is None:
        with _environment("bf16"), pytest.raises(MinicpmoError, match=REFUSAL):
            _session(tiny_f32[0])
        return
    bf16, f32 = (s.encode_image(img, max_slice_nums=1) for s in bf16_and_f32)
    with _environment("bf16"):
        from_env, overridden = _session(tiny_f32[0]), _session(tiny_f32[0], "f32")
    # the same products give the same numbers; the other precision differs by BF16 rounding
    assert rel(from_env.encode_image(img, max_slice_nums=1), np.asarray(bf16, np.float64)) < 1e-6
    assert rel(overridden.encode_image(img, max_slice_nums=1), np.asarray(f32, np.float64)) < 1e-6
    assert rel(bf16, np.asarray(f32, np.float64)) > MIN_BF16_EFFECT


@pytest.mark.parametrize("size", [(448, 448), (1024, 768)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_vision_bf16_matches_reference(bf16_and_f32, tiny_state, size):
    if _refused(bf16_and_f32):
        return
    _check(*cases.vision_case(*bf16_and_f32, tiny_state, size))


def test_vision_bf16_on_f16_weights_matches_reference(tiny_f16, tiny_state):
    """An F16 file: its tower's GELU is ggml's non-exact one, which a BF16 session computes with
    oneDNN's vectorised kernel (the F32 file composes GELU from F32 ops), and its attention is the
    fused BF16 one (core/onednn_attention). Reference on the F16-rounded weights; the exact path on
    the same file is bounded by tests/test_vision_encoder.py's F16 tolerance (1e-2)."""
    if not BF16_RUNS:
        with pytest.raises(MinicpmoError, match=REFUSAL):
            _session(tiny_f16[0], "bf16")
        return
    from reference import round_weights
    sd, cfg = tiny_state
    # 5 slices of 28 x 37 patches: 1036 queries, a short last block
    sessions = _session(tiny_f16[0], "bf16"), _session(tiny_f16[0], "f32")
    _check(*cases.vision_case(*sessions, (round_weights(sd, "f16"), cfg), (1024, 768), "vision F16 file"), f32_tol=1e-2)


@pytest.mark.parametrize("n_frames", [257, 3000])
def test_audio_bf16_matches_reference(bf16_and_f32, tiny_state, n_frames):
    if _refused(bf16_and_f32):
        return
    _check(*cases.audio_case(*bf16_and_f32, tiny_state, n_frames))


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_audio_bf16_streaming_chunks_match_reference(bf16_and_f32, tiny_f16, tiny_state, kind):
    """Duplex-style streaming: each chunk's queries attend over the key/value cache (F32 in the f32
    file, F16 in the f16 one: widened to F32 for oneDNN) through the fused BF16 attention
    (core/onednn_attention, with the F16 mask of its padded keys); 6 chunks."""
    if _refused(bf16_and_f32):
        return
    f32_tol = F32_REL_TOL
    if kind == "f16":  # the reference keeps the unrounded weights: tests/test_audio_encoder.py's F16 bound
        bf16_and_f32, f32_tol = (_session(tiny_f16[0], "bf16"), _session(tiny_f16[0], "f32")), 1e-2
    for case in cases.audio_stream_cases(*bf16_and_f32, tiny_state, f"audio {kind} stream"):
        _check(*case, f32_tol)


def test_flow_bf16_matches_reference(tiny_f32, tiny_hf):
    """The Token2Wav flow's CFM (encoder-free part: 3 Euler steps of the DiT, both CFG branches) with
    an injected noise buffer, 40 frames (80 rows per product with the CFG batch)."""
    import test_flow_runtime as flow_tests
    from minicpmo_cpp._testing import Flow

    if not BF16_RUNS:
        with pytest.raises(MinicpmoError, match=REFUSAL):
            Flow(str(tiny_f32[1]), n_threads=1, compute_type="bf16")
        return
    _check(*cases.flow_cfm_case(tiny_f32[1], "bf16", tiny_hf), flow_tests.TOL["f32"])


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_flow_bf16_streaming_matches_reference(tiny_f32, tiny_f16, tiny_hf, kind):
    """Streaming windows (the duplex path): the DiT attends over its key/value cache, F32 in the f32
    file and F16 in the f16 one, through the fused BF16 attention with the F16 mask of the cache's
    empty slots; 6 windows, the reference's cache trimming included."""
    import test_flow_runtime as flow_tests
    from minicpmo_cpp._testing import Flow

    path = {"f32": tiny_f32, "f16": tiny_f16}[kind][1]
    if not BF16_RUNS:
        with pytest.raises(MinicpmoError, match=REFUSAL):
            Flow(str(path), n_threads=1, compute_type="bf16")
        return
    for case in cases.flow_stream_cases(path, "bf16", tiny_hf, f"flow {kind} stream"):
        _check(*case, flow_tests.TOL[kind])


# (H, Lq, Lk, D, Dv): the int8 tests' shapes (tests/test_int8_compute.py), and a streamed DiT window's
# (16 heads: 8 of each CFG branch; 50 queries over the cache's 256 key slots). Up to 128 queries whose
# scores fit in 2 MiB take oneDNN's batched products over every head (130 x 1024 goes block by block).
BF16_ATTENTION_SHAPES = [*int8_tests.ATTENTION_SHAPES, (16, 50, 256, 64, 64)]


@pytest.mark.parametrize("kv", ["f32", "f16-cache", "bf16-cache"])
@pytest.mark.parametrize("shape", BF16_ATTENTION_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bf16_fused_attention_matches_float64(shape, kv):
    """The BF16 sessions' fused attention (core/onednn_attention: Q, K, V and the probabilities
    rounded to BF16, F32 sums and softmax) against float64, with the int8 tests' mask (some keys of
    every query hidden, all keys of the last one) and their cache layout, in F16 or in BF16 (the
    flow's DiT cache in BF16 sessions: read without conversion). Each output is a
    weighted mean of V rows, so the operands' 2^-9 roundings give ~3e-3 of the largest output;
    BF16_REL_TOL (2e-2) catches a wrong head, key or mask row, which errs by O(1)."""
    f16_kv, bf16_kv, cache_layout = kv == "f16-cache", kv == "bf16-cache", kv != "f32"
    H, Lq, Lk, D, Dv = shape
    q, k, v, mask, scale = int8_tests.attention_inputs(shape)
    if not BF16_RUNS:
        with pytest.raises(MinicpmoError, match=REFUSAL):
            _testing.fused_attention(q, k, v, mask, scale, "bf16", f16_kv)
        return
    got = _testing.fused_attention(q, k, v, mask, scale, "bf16", f16_kv, 2, cache_layout, bf16_kv)
    if f16_kv:
        k, v = k.astype(np.float16).astype(np.float32), v.astype(np.float16).astype(np.float32)
    if bf16_kv:
        k, v = bf16_round(k), bf16_round(v)
    err = rel(got, int8_tests.attention_float64(q, k, v, mask, scale))
    print(f"{shape} {kv} keys/values: {err:.2e} of the largest output")
    assert got.shape == (H, Lq, Dv)
    assert err < BF16_REL_TOL


def _cpu_has_bf16_instructions() -> bool:
    """From /proc/cpuinfo, independently of oneDNN: AMX tiles or AVX-512 BF16."""
    flags = cases.cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


@pytest.mark.sanitize
def test_auto_takes_bf16_where_the_cpu_has_bf16_instructions(tiny_f32):
    want = "bf16" if build_info.MINICPMO_ONEDNN and _cpu_has_bf16_instructions() else "f32"
    for value in ("", "auto"):
        with _environment(value):
            s = OmniSession(str(tiny_f32[0]), n_threads=1, device="cpu", n_ctx=64)
            assert s.compute_type == want, f"MINICPMO_COMPUTE={value!r}"
    s = OmniSession(str(tiny_f32[0]), n_threads=1, device="cpu", n_ctx=64, compute_type="f32")
    assert s.compute_type == "f32"
    # the suite itself runs the exact path unless asked otherwise (conftest.py)
    assert OmniSession(str(tiny_f32[0]), n_threads=1, device="cpu", n_ctx=64).compute_type == \
        os.environ["MINICPMO_COMPUTE"]


def test_sessions_of_one_model_share_the_packed_weights_from_two_threads(tiny_f32, bf16_and_f32):
    """Two BF16 sessions over one loaded model (GgufWeights::kernel_copy packs each matrix once, under
    a lock, for both) encode at the same time from two threads: each result equals a lone session's
    (same packed weights, same kernels: 1e-6 leaves F32 summation-order noise only)."""
    if _refused(bf16_and_f32):
        return
    img = smooth_noise_image(448, 448)
    alone = bf16_and_f32[0].encode_image(img, max_slice_nums=1)
    for r in cases.encode_from_threads(tiny_f32[0], ["bf16", "bf16"], img):
        assert rel(r, np.asarray(alone, np.float64)) < 1e-6


def test_prepared_images_pack_before_the_first_image_and_encode_the_same(tiny_f32, bf16_and_f32):
    """prepare_images packs the vision tower's matrices and makes their kernels without computing:
    a fresh model then packs nothing more at its first image (its count of packed matrices does not
    change), and that image's embeddings equal those of a session that packed while encoding (same
    packed weights, same kernels: 1e-6 leaves F32 summation-order noise only)."""
    if _refused(bf16_and_f32):
        return
    img = smooth_noise_image(448, 448)
    alone = np.asarray(bf16_and_f32[0].encode_image(img, max_slice_nums=1), np.float64)
    s = OmniSession(str(tiny_f32[0]), n_threads=2, device="cpu", n_ctx=512, compute_type="bf16")
    model = _testing.hooks(s).model
    assert model.vision_packed_matrices == 0  # a model of its own, nothing packed yet
    s.prepare_images(448, 448, max_slice_nums=1)
    packed = model.vision_packed_matrices
    # every product with a weight of the tiny tower: the patch embedding; q, k, v, o, fc1 and fc2 of
    # its 2 layers; the resampler's kv, q, k, v, out and proj
    assert packed == 1 + 6 * 2 + 6, packed
    assert rel(s.encode_image(img, max_slice_nums=1), alone) < 1e-6
    assert model.vision_packed_matrices == packed
    # a size no image may have, or a non-integer one, is refused and changes nothing
    for w, h in ((0, 448), (448, 20000)):
        with pytest.raises(MinicpmoError, match=r"must be >= 1, got 0x448|448x20000 is too large"):
            s.prepare_images(w, h)
    with pytest.raises(MinicpmoError, match="width must be an integer"):
        s.prepare_images(448.0, 448)
    assert model.vision_packed_matrices == packed


@pytest.mark.parametrize("isa, auto, bf16", [
    ("AVX512_CORE", "f32", "runs"),  # BF16 emulated in F32 FMAs: no gain, so auto keeps f32
    ("AVX2", "f32", "refused"),      # only oneDNN's reference code: asking for bf16 is an error
])
def test_auto_and_bf16_follow_the_kernels_onednn_offers(tiny_f32, isa, auto, bf16, tmp_path):
    """ONEDNN_MAX_CPU_ISA caps the instructions oneDNN uses (read once per process: a subprocess),
    which stands in for an older CPU."""
    import subprocess
    import sys
    import textwrap

    if not build_info.MINICPMO_ONEDNN:  # its refusal: test_bf16_needs_onednn_and_avx512_or_runs
        return
    if not BF16_RUNS:
        bf16 = "refused"  # a CPU without AVX-512 gets oneDNN's reference code whatever the cap
    script = textwrap.dedent(f"""
        import numpy as np
        from minicpmo_cpp import MinicpmoError, OmniSession
        path = {str(tiny_f32[0])!r}
        print("auto", OmniSession(path, n_threads=1, device="cpu", n_ctx=64).compute_type)
        try:
            s = OmniSession(path, n_threads=1, device="cpu", n_ctx=64, compute_type="bf16")
            s.encode_image(np.zeros((64, 64, 3), np.uint8), max_slice_nums=1)
            print("bf16 runs")
        except MinicpmoError as e:
            print("bf16 refused:", e)
    """)
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa, "MINICPMO_COMPUTE": "auto"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"auto {auto}"
    assert lines[1].startswith(f"bf16 {bf16}")
    if bf16 == "refused":
        assert "no fast BF16 matrix product for this CPU" in lines[1] and "compute_type f32" in lines[1]
