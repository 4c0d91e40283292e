"""The stage cases that tests/test_bf16_compute.py and tests/test_int8_compute.py both run: the same
inputs through a reduced-precision session (bf16 or int8) and the exact one, with the float64 numpy
reference of each. Each case function returns (or yields) (label, fast output, exact output,
reference), which `check` bounds with the tolerances each test module states."""

from __future__ import annotations

import numpy as np

from minicpmo_cpp import _testing

from audio_weights import smooth_mel
from reference.audio import AudioReference, StreamingWhisperReference, duplex_chunk
from reference.vision import VisionReference, preprocess
from relative_error import rel
from test_vision_encoder import smooth_noise_image


def cpu_flags() -> list[str]:
    """The CPU's instruction-set flags from /proc/cpuinfo (independent of oneDNN and ggml)."""
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])


def check(compute, fast_tol, min_effect, label, got, exact, want, f32_tol) -> None:
    """`compute`'s output `got` within fast_tol of the float64 reference `want`, the exact path's
    `exact` within f32_tol, and the two runs more than min_effect apart (which shows the reduced
    precision ran)."""
    e_fast, e_f32, effect = rel(got, want), rel(exact, want), rel(got, np.asarray(exact, np.float64))
    print(f"{label}: {compute} rel {e_fast:.2e}, f32 rel {e_f32:.2e}, {compute} vs f32 {effect:.2e}")
    assert e_fast < fast_tol
    assert e_f32 < f32_tol
    assert effect > min_effect


def vision_case(fast, exact, state, size, label="vision"):
    """One image of `size` (w, h) through both sessions (up to 9 slices) and the reference on `state`
    (state dict, config)."""
    vref = VisionReference(*state)
    img = smooth_noise_image(*size)
    _, slices = preprocess(img, 9, vref.scale_resolution, vref.patch_size)
    want = np.concatenate([vref.resample(vref.vit(s.patches, s.h, s.w), s.h, s.w) for s in slices])
    return (f"{label} {size}", fast.encode_image(img, max_slice_nums=9), exact.encode_image(img, max_slice_nums=9),
            want)


def _audio_reference(tiny_state):
    return AudioReference(tiny_state[0], tiny_state[1]["audio_config"]["encoder_attention_heads"])


def audio_case(fast, exact, tiny_state, n_frames):
    """A mel of n_frames through the whole encoder (block attention) + projector and pooling."""
    mel = smooth_mel(n_frames, n_frames)
    aref = _audio_reference(tiny_state)
    want = aref.project_and_pool(aref.encode(mel, "block"))
    got, _ = _testing.hooks(fast).audio_encode_mel(mel, "block")
    ref_out, _ = _testing.hooks(exact).audio_encode_mel(mel, "block")
    return f"audio {n_frames} frames", got, ref_out, want


def audio_stream_cases(fast, exact, tiny_state, label="audio stream"):
    """Duplex-style streaming, 6 chunks over the key/value cache; the sessions' streams are reset
    before and after (module-scoped sessions are shared)."""
    hooks = [_testing.hooks(s) for s in (fast, exact)]
    ref = StreamingWhisperReference(_audio_reference(tiny_state))
    for h in hooks:
        h.audio_stream_reset()
    mel = smooth_mel(11, 100 * 6 + 2)
    for k in range(6):
        chunk, prefix, suffix = duplex_chunk(mel, k)
        chunk = np.ascontiguousarray(chunk)
        got, ref_out = (h.audio_stream_chunk(chunk, prefix, suffix)[1] for h in hooks)
        yield f"{label} chunk {k}", got, ref_out, ref.push(chunk, prefix, suffix)
    for h in hooks:
        h.audio_stream_reset()


def flow_cfm_case(path, compute, tiny_hf):
    """The Token2Wav flow's CFM (3 Euler steps of the DiT, both CFG branches) with an injected noise
    buffer, 40 frames (80 rows per product with the CFG batch), on `compute` and f32."""
    import test_flow_runtime as flow_tests
    from minicpmo_cpp._testing import Flow

    ref = flow_tests.flow_reference(tiny_hf / "assets" / "token2wav")
    rng = np.random.default_rng(5)
    T = 40
    mu, cond = (rng.standard_normal((80, T)).astype(np.float32) for _ in range(2))
    spk = rng.standard_normal(80).astype(np.float32)
    noise = np.random.default_rng(11).standard_normal((80, 1500)).astype(np.float32)
    want = ref.cfm(mu, spk, cond, noise, flow_tests.N_STEPS)[0]
    outs = {}
    for c in (compute, "f32"):
        f = Flow(str(path), n_threads=1, device="cpu", compute_type=c)
        f.set_noise(noise)
        outs[c] = f.cfm(mu, spk, cond)
    return f"flow cfm {T} frames", outs[compute], outs["f32"], want


def flow_stream_cases(path, compute, tiny_hf, label="flow stream"):
    """Streaming windows (the duplex path): the DiT attends over its key/value cache; 6 windows of 28
    tokens, the reference's cache trimming included, on `compute` and f32."""
    import test_flow_runtime as flow_tests
    from minicpmo_cpp._testing import Flow
    from reference.token2wav import Token2WavReference

    assets = tiny_hf / "assets" / "token2wav"
    ref, hift_ref = flow_tests.flow_reference(assets), flow_tests.hift_reference(assets)
    noise = np.random.default_rng(11).standard_normal((80, 1500)).astype(np.float32)
    flows = {c: Flow(str(path), n_threads=1, device="cpu", compute_type=c) for c in (compute, "f32")}
    for f in flows.values():
        f.set_noise(noise)
        f.stream_start()
    ptok, xvec, pmel = flows["f32"].voice()
    t2w = Token2WavReference(ref, hift_ref, noise, lambda n: None, n_timesteps=flow_tests.N_STEPS)
    t2w.set_stream_cache(ptok, pmel, xvec)
    buf = [flow_tests.SILENCE_TOKEN] * 3 + np.random.default_rng(7).integers(0, 6561, 140).tolist()
    k = 0
    while buf:
        last = len(buf) < 28
        window = buf if last else buf[:28]
        got, exact = (flows[c].stream_chunk(window, last_chunk=last) for c in (compute, "f32"))
        yield f"{label} window {k}", got, exact, t2w.flow_chunk(window, last_chunk=last)
        buf = [] if last else buf[25:]
        k += 1
    assert k == 6


def encode_from_threads(model_path, kinds, img):
    """One session per entry of `kinds` (compute types) over one loaded model, each encoding `img`
    at the same time from its own thread; their outputs in order (an exception in any is raised)."""
    import threading

    from minicpmo_cpp import _core

    model = _core.Model(str(model_path), "", 0, True, "cpu")
    sessions = [_core.Session(model, 512, 1, 512, "f16", k) for k in kinds]
    pixels = np.ascontiguousarray(img)
    results, errors = [None] * len(kinds), []

    def run(i):
        try:
            results[i] = sessions[i].encode_image(pixels, 1)
        except Exception as e:  # re-raised below: a thread's exception would otherwise be lost
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(kinds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
