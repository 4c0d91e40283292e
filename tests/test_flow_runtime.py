"""The runtime's Token2Wav flow (csrc/speech/flow_*.cpp, bound as ``_testing.Flow``) against the numpy
reference (tests/reference/token2wav.py) on the tiny model's own weights: the converted omni files
(F32, F16) are run by the runtime, the reference reads the same weights from the tiny checkpoint's
``assets/token2wav/flow.pt``. Checked: the whole-utterance encoder (rel_shift included), the speaker
affine, both CFG branches of the DiT velocity, the Euler CFM with an injected noise buffer, the
whole-utterance ``flow.inference`` with the stored and an explicit voice, and the streaming windows
(28-token windows, stride 25, caches trimmed to prompt + 100 frames) window by window."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import _import_convert
from relative_error import rel
from minicpmo_cpp import MinicpmoError
from minicpmo_cpp._testing import Flow

import reference.token2wav as t2w_ref
from reference.token2wav import (SILENCE_TOKEN, FlowConfig, FlowReference, HiFTConfig, HiFTReference,
                                  Token2WavReference)

# F32 runtime vs float64 numpy: float32 rounding and summation order, ~2e-6 measured after 3 Euler
# steps; 1e-4 leaves room. F16 stores every matrix and conv kernel in F16 and the CPU rounds the
# activations of F16 products to F16 too: ~7e-4 measured (reference on the unrounded weights).
TOL = {"f32": 1e-4, "f16": 5e-3}
N_STEPS = 3           # the tiny model's n_timesteps key


@pytest.fixture(scope="module")
def assets(tiny_hf):
    return tiny_hf / "assets" / "token2wav"


@pytest.fixture(scope="module")
def ref(assets):
    return flow_reference(assets)


def flow_reference(assets) -> FlowReference:
    """float64 reference of the tiny flow, from flow.pt and flow.yaml."""
    src = _import_convert(".torch_zip").TorchZipSource.open(assets / "flow.pt")
    state = {n: src.float32(n) for n in src.names()}
    yaml = _import_convert(".asset_yaml").load_plain_yaml(assets / "flow.yaml")
    return FlowReference(state, FlowConfig.from_yaml_dict(yaml["flow"]), dtype=np.float64)


@pytest.fixture(scope="module")
def hift_ref(assets):
    return hift_reference(assets)


def hift_reference(assets) -> HiFTReference:
    """The reference's Token2Wav wrapper wants a vocoder; the flow tests never call it."""
    src = _import_convert(".torch_zip").TorchZipSource.open(assets / "hift.pt")
    h = _import_convert(".asset_yaml").load_plain_yaml(assets / "hift.yaml")["hift"]
    cfg = HiFTConfig(base_channels=h["base_channels"], f0_cond_channels=h["f0_predictor"]["cond_channels"])
    return HiFTReference({n: src.float32(n) for n in src.names()}, cfg)


@pytest.fixture(scope="module")
def flows(tiny_f32, tiny_f16):
    # one thread: the tiny graphs are many small ops, and ggml's spinning thread barrier on a
    # shared 2-core machine costs 100x more than the work
    return {"f32": Flow(str(tiny_f32[1]), n_threads=1), "f16": Flow(str(tiny_f16[1]), n_threads=1)}


@pytest.fixture(scope="module")
def noise():
    return np.random.default_rng(11).standard_normal((80, 1500)).astype(np.float32)


@pytest.fixture(scope="module")
def prompt37():
    """An explicit voice of 37 tokens: P = 74 prompt frames is neither a multiple of the 50-frame
    window nor >= the 100-frame tail, so the reference's block-wise trimming order matters."""
    rng = np.random.default_rng(12)
    mel = (-5 + 2 * rng.standard_normal((80, 74))).astype(np.float32)
    return rng.integers(0, 6561, 37), mel, rng.standard_normal(192).astype(np.float32)


def test_hparams_match_the_tiny_config(flows):
    hp = flows["f32"].hparams
    assert (hp["n_mel"], hp["token_mel_ratio"], hp["vocab"], hp["silence_token"]) == (80, 2, 6561, SILENCE_TOKEN)
    assert (hp["chunk_tokens"], hp["lookahead"], hp["n_timesteps"], hp["cache_tail_frames"]) == (25, 3, N_STEPS, 100)
    assert (hp["enc_dim"], hp["dit_dim"], hp["dit_layer"], hp["noise_frames"]) == (64, 64, 2, 30000)


@pytest.mark.parametrize("kind", ["f32", "f16"])
@pytest.mark.parametrize("n", [1, 2, 17])
def test_encoder(flows, ref, kind, n):
    """Whole-utterance encoder (look-ahead zero-padded): h after the final LayerNorm and mu. n = 1
    has one key (no rel_shift), n = 2 and 17 shift."""
    tok = np.random.default_rng(n).integers(0, 6561, n)
    h, mu = flows[kind].encode(tok)
    h_ref = ref.encode(ref.embedding[tok])
    assert rel(h, h_ref) < TOL[kind]
    assert rel(mu, ref.project(h_ref)) < TOL[kind]


def test_encoder_positions_matter(flows, ref, monkeypatch):
    """The check above can tell rel_shift apart from a neighbour: a shift off by one relative
    position moves the encoder output far beyond the tolerance (8e-3 measured: the tiny weights
    keep attention a modest part of the residual stream)."""
    tok = np.random.default_rng(17).integers(0, 6561, 17)
    h, _ = flows["f32"].encode(tok)
    good = t2w_ref.rel_shift
    monkeypatch.setattr(t2w_ref, "rel_shift", lambda x: np.roll(good(x), 1, axis=-1))
    assert rel(h, ref.encode(ref.embedding[tok])) > 20 * TOL["f32"]


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_speaker(flows, ref, kind):
    x = np.random.default_rng(3).standard_normal(192).astype(np.float32) * 7
    assert rel(flows[kind].speaker(x), ref.speaker(x)) < TOL[kind]


@pytest.mark.parametrize("kind", ["f32", "f16"])
@pytest.mark.parametrize("t", [0.0, 0.37, 1.0])
def test_dit_velocity_both_branches(flows, ref, kind, t):
    """One batched DiT call: the conditional branch and the unconditional one (mu, spk, cond zeroed)."""
    rng = np.random.default_rng(4)
    T = 23
    x, mu, cond = (rng.standard_normal((80, T)).astype(np.float32) for _ in range(3))
    spk = rng.standard_normal(80).astype(np.float32)
    v_c, v_u = flows[kind].velocity(x, mu, spk, cond, t)
    assert rel(v_c, ref.velocity(x, mu, spk, cond, t)[0]) < TOL[kind]
    z = np.zeros_like(mu)
    assert rel(v_u, ref.velocity(x, z, np.zeros_like(spk), z, t)[0]) < TOL[kind]


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_cfm_with_injected_noise(flows, ref, noise, kind):
    rng = np.random.default_rng(5)
    T = 31
    mu, cond = (rng.standard_normal((80, T)).astype(np.float32) for _ in range(2))
    spk = rng.standard_normal(80).astype(np.float32)
    f = flows[kind]
    f.set_noise(noise)
    for offset in (0, 7):
        got = f.cfm(mu, spk, cond, noise_offset=offset)
        assert rel(got, ref.cfm(mu, spk, cond, noise, N_STEPS, noise_offset=offset)[0]) < TOL[kind]
    # another Euler step count than the model's
    assert rel(f.cfm(mu, spk, cond, n_timesteps=5), ref.cfm(mu, spk, cond, noise, 5)[0]) < TOL[kind]


def test_stored_voice_is_the_default_voice_npz(flows, assets):
    f = flows["f32"]
    assert f.voice_names == ["default"] and f.default_voice == "default"
    tokens, xvec, mel = f.voice()
    npz = np.load(assets / "default_voice.npz")
    assert np.array_equal(tokens, npz["tokens"]) and np.array_equal(xvec, npz["spk"])
    assert np.array_equal(mel, npz["mel"].T)  # stored frame-major (2n, 80), returned (80, 2n)


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_inference_whole_utterance(flows, ref, noise, prompt37, kind):
    """flow.inference: prompt + tokens through the encoder, CFM over all frames with the prompt mel
    as condition, prompt frames dropped. Stored default voice and an explicit one."""
    f = flows[kind]
    f.set_noise(noise)
    tok = np.random.default_rng(6).integers(0, 6561, 40)
    ptok, xvec, pmel = f.voice()
    got = f.inference(tok)
    assert got.shape == (80, 80)
    assert rel(got, ref.inference(tok, ptok, pmel, xvec, noise, N_STEPS)) < TOL[kind]
    ptok, pmel, xvec = prompt37
    got = f.inference(tok, prompt_tokens=ptok, prompt_mel=pmel, xvec=xvec)
    assert rel(got, ref.inference(tok, ptok, pmel, xvec, noise, N_STEPS)) < TOL[kind]


def _stream(f, t2w, speech, check):
    """The caller protocol (TokenStreamer): [4218]*3 + tokens, 28-token windows with stride 25,
    the rest as the final window; `check(window, got, want)` per window."""
    buf = [SILENCE_TOKEN] * 3 + [int(t) for t in speech]
    n = 0
    while len(buf) >= 28:
        check(buf[:28], f.stream_chunk(buf[:28]), t2w.flow_chunk(buf[:28]))
        buf = buf[25:]
        n += 1
    check(buf, f.stream_chunk(buf, last_chunk=True), t2w.flow_chunk(buf, last_chunk=True))
    return n


@pytest.mark.parametrize("kind", ["f32", "f16"])
@pytest.mark.parametrize("voice", ["stored", "explicit37"])
def test_streaming_windows(flows, ref, hift_ref, noise, prompt37, kind, voice):
    """Token2wav.set_stream_cache + flow part of stream() per window: mel of the window's fresh
    tokens equals the reference's, with the estimator noise offset and both caches' trimming
    (estimator: [:P] ‖ [-100:] of the newest-first order; conformer: prompt + last 100 frames)."""
    f = flows[kind]
    f.set_noise(noise)
    if voice == "stored":
        ptok, xvec, pmel = f.voice()
        f.stream_start()
    else:
        ptok, pmel, xvec = prompt37
        f.stream_start(prompt_tokens=ptok, prompt_mel=pmel, xvec=xvec)
    t2w = Token2WavReference(ref, hift_ref, noise, lambda n: None, n_timesteps=N_STEPS)
    t2w.set_stream_cache(ptok, pmel, xvec)
    P = 2 * len(ptok)
    assert f.stream_estimator_frames == P and f.stream_encoder_token_frames == len(ptok)

    def check(window, got, want):
        fresh = len(window) if len(window) < 28 else 25
        assert got.shape == (80, 2 * fresh)
        assert rel(got, want) < TOL[kind], len(window)
        assert f.stream_estimator_frames == t2w.cache["estimator_att_cache"].shape[4]
        assert f.stream_encoder_token_frames == t2w.cache["conformer_att_cache"].shape[2] // 2

    speech = np.random.default_rng(7).integers(0, 6561, 140)
    assert _stream(f, t2w, speech, check) == 5
    assert f.stream_estimator_frames == P + 100  # trimmed since the third window


def test_streaming_restart_gives_the_same_windows(flows, noise):
    """stream_start resets every cache: a second stream repeats the first exactly."""
    f = flows["f32"]
    f.set_noise(noise)
    window = [SILENCE_TOKEN] * 3 + list(range(100, 125))
    runs = []
    for _ in range(2):
        f.stream_start()
        runs.append([f.stream_chunk(window) for _ in range(3)])
    for a, b in zip(*runs):
        assert np.array_equal(a, b)


def test_seeded_noise(tiny_f32, noise):
    """Without injected noise the buffer comes from the seed: equal seeds, equal mel."""
    tok = list(range(500, 520))
    a = Flow(str(tiny_f32[1]), n_threads=1, seed=42).inference(tok)
    b = Flow(str(tiny_f32[1]), n_threads=1, seed=42).inference(tok)
    c = Flow(str(tiny_f32[1]), n_threads=1, seed=43).inference(tok)
    assert np.array_equal(a, b)
    assert rel(a, c) > 1e-2
    f = Flow(str(tiny_f32[1]), n_threads=1, seed=43)
    f.set_noise(noise)
    f.reseed_noise(42)
    assert np.array_equal(f.inference(tok), a)


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------

def test_bad_tokens(flows, prompt37):
    f = flows["f32"]
    for bad in ([0, 6561, 5], [-1], [2 ** 32 + 5]):
        with pytest.raises(MinicpmoError, match="not a speech token"):
            f.encode(bad)
        with pytest.raises(MinicpmoError, match="not a speech token"):
            f.inference(bad)
    with pytest.raises(MinicpmoError, match="at least one speech token"):
        f.encode([])
    with pytest.raises(MinicpmoError, match="at least one speech token"):
        f.inference([])
    ptok, pmel, xvec = prompt37
    with pytest.raises(MinicpmoError, match=r"prompt_tokens\[0\] = 7000"):
        f.inference([1, 2], prompt_tokens=[7000] + list(ptok[1:]), prompt_mel=pmel, xvec=xvec)


def test_bad_voice(flows, prompt37):
    f = flows["f32"]
    ptok, pmel, xvec = prompt37
    with pytest.raises(MinicpmoError, match="no voice named 'nobody'"):
        f.inference([1, 2, 3], voice="nobody")
    with pytest.raises(MinicpmoError, match="together"):
        f.inference([1, 2, 3], prompt_tokens=ptok, xvec=xvec)
    with pytest.raises(MinicpmoError, match=r"prompt_mel must have shape \(80, 74\)"):
        f.inference([1, 2, 3], prompt_tokens=ptok, prompt_mel=pmel[:, :70], xvec=xvec)
    with pytest.raises(MinicpmoError, match=r"xvec must have shape \(192,\)"):
        f.stream_start(prompt_tokens=ptok, prompt_mel=pmel, xvec=xvec[:100])
    with pytest.raises(MinicpmoError, match="non-finite"):
        f.inference([1, 2, 3], prompt_tokens=ptok, prompt_mel=pmel, xvec=np.full(192, np.nan, np.float32))
    with pytest.raises(MinicpmoError, match="float array"):
        f.inference([1, 2, 3], prompt_tokens=ptok, prompt_mel=pmel.astype(np.int32), xvec=xvec)


def test_bad_streaming_calls(tiny_f32):
    f = Flow(str(tiny_f32[1]), n_threads=1)
    window = [SILENCE_TOKEN] * 3 + list(range(25))
    with pytest.raises(MinicpmoError, match="not started"):
        f.stream_chunk(window)
    f.stream_start()
    with pytest.raises(MinicpmoError, match="at least 2 fresh tokens"):
        f.stream_chunk(window[:4])
    with pytest.raises(MinicpmoError, match="at most 28 tokens"):
        f.stream_chunk(window + [1])
    with pytest.raises(MinicpmoError, match="at least one token"):
        f.stream_chunk([], last_chunk=True)
    with pytest.raises(MinicpmoError, match="not a speech token"):
        f.stream_chunk(window[:-1] + [6561])
    assert f.stream_chunk(window).shape == (80, 50)  # the refused calls left the stream usable


def test_bad_arrays(flows):
    f = flows["f32"]
    x = np.zeros((80, 5), np.float32)
    with pytest.raises(MinicpmoError, match=r"mu must have shape \(80, 5\)"):
        f.velocity(x, np.zeros((80, 4), np.float32), np.zeros(80, np.float32), x, 0.5)
    with pytest.raises(MinicpmoError, match=r"x must have shape \(80, frames\)"):
        f.velocity(np.zeros((79, 5), np.float32), x, np.zeros(80, np.float32), x, 0.5)
    with pytest.raises(MinicpmoError, match="noise frames"):
        f.cfm(x, np.zeros(80, np.float32), x, noise_offset=10 ** 6)
    with pytest.raises(MinicpmoError, match="noise"):
        f.set_noise(np.zeros((80, 0), np.float32))


def test_missing_component_and_missing_voice(tiny_f32, tiny_hf, tmp_path_factory):
    with pytest.raises(MinicpmoError, match="no token2wav component"):
        Flow(str(tiny_f32[0]))  # the LLM file, not the omni companion
    # a companion converted from an asset folder without default_voice.npz has no voice
    d = tmp_path_factory.mktemp("novoice")
    t2w = d / "token2wav"
    shutil.copytree(tiny_hf / "assets" / "token2wav", t2w)
    (t2w / "default_voice.npz").unlink()
    _, omni = _import_convert("").convert_checkpoint(tiny_hf, d, outtype="f32", name="NoVoice", quiet=True,
                                                     token2wav_dir=t2w)
    f = Flow(str(omni), n_threads=1)
    assert f.voice_names == []
    with pytest.raises(MinicpmoError, match="has no voice prompt"):
        f.inference([1, 2, 3])
    with pytest.raises(MinicpmoError, match="has no voice prompt"):
        f.stream_start()
