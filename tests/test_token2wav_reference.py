"""Properties of the numpy Token2Wav reference (tests/reference/token2wav.py) that need no torch:
the streaming protocol (28-token windows with stride 25, the 3 silence tokens, exactly 24000
samples per non-final window, the HiFT cross-fade delay), cache trimming, identities between the
streaming and whole-utterance paths, weight-norm folding, and clear errors on bad inputs.
The numbers themselves are checked against the official code in
test_token2wav_reference_vs_stepaudio2.py."""

from __future__ import annotations

import numpy as np
import pytest

from reference.token2wav import (SILENCE_TOKEN, FlowConfig, FlowReference, HiFTReference, Token2WavReference,
                                  TokenStreamer, rel_shift)
from token2wav_weights import (FLOW_TINY, HIFT_TINY, SourceRandomness, random_flow_state, random_hift_state,
                               smooth_mel)

N_STEPS = 2            # Euler steps: the protocol does not depend on it; keeps the tests fast
PROMPT_TOKENS = 10     # -> P = 20 prompt mel frames, so trimming (P + 100) starts at the 3rd window
HOP = 480              # samples per mel frame (HiFT 8*5*3 * iSTFT hop 4)


def rel(a, ref):
    a = np.asarray(a, np.float64)
    ref = np.asarray(ref, np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


@pytest.fixture(scope="module")
def weights():
    return random_flow_state(FLOW_TINY, seed=0), random_hift_state(HIFT_TINY, seed=1)


@pytest.fixture(scope="module")
def flow(weights):
    return FlowReference(weights[0], FLOW_TINY)


@pytest.fixture(scope="module")
def hift(weights):
    return HiFTReference(weights[1], HIFT_TINY)


@pytest.fixture(scope="module")
def prompt():
    rng = np.random.default_rng(3)
    return (rng.integers(0, 6561, PROMPT_TOKENS), smooth_mel(rng, 2 * PROMPT_TOKENS),
            rng.standard_normal(192).astype(np.float32))


@pytest.fixture(scope="module")
def cfm_noise():
    return np.random.default_rng(4).standard_normal((80, 1000)).astype(np.float32)


def make_t2w(flow, hift, cfm_noise, prompt, **kw):
    t2w = Token2WavReference(flow, hift, cfm_noise, SourceRandomness(5), n_timesteps=N_STEPS, **kw)
    t2w.set_stream_cache(*prompt)
    return t2w


@pytest.fixture(scope="module")
def streamed(flow, hift, cfm_noise, prompt):
    """60 speech tokens through the caller protocol, with every stream() call recorded."""
    t2w = make_t2w(flow, hift, cfm_noise, prompt)
    calls = []
    inner = t2w.stream

    def spy(tokens, last_chunk=False):
        out = inner(tokens, last_chunk)
        calls.append((list(tokens), last_chunk, len(out),
                      t2w.cache["estimator_att_cache"].shape[4], t2w.cache["conformer_att_cache"].shape[2],
                      t2w.cache["conformer_att_cache"].copy()))
        return out

    t2w.stream = spy
    speech = np.random.default_rng(6).integers(0, 6561, 60)
    st = TokenStreamer(t2w)
    chunks = st.push(speech[:30]) + st.push(speech[30:])
    last = st.finish()
    return speech, calls, chunks, last


# ------------------------------------------------------------------------------------------------
# streaming protocol
# ------------------------------------------------------------------------------------------------

def test_windows_are_28_tokens_with_stride_25_after_3_silence_tokens(streamed):
    speech, calls, _, _ = streamed
    buf = [SILENCE_TOKEN] * 3 + list(speech)
    assert [c[0] for c in calls] == [buf[0:28], buf[25:53], buf[50:]]
    assert [c[1] for c in calls] == [False, False, True]
    assert calls[0][0][:3] == [SILENCE_TOKEN] * 3


def test_each_non_final_window_gives_exactly_24000_samples(streamed):
    speech, calls, chunks, last = streamed
    assert [len(c) for c in chunks] == [24000, 24000]
    # the first chunk is delayed by the 3840-sample cross-fade: it starts with exact zeros
    assert np.all(chunks[0][:3840] == 0) and np.any(chunks[0][3840:] != 0)
    # the final window (13 tokens, 3 zero look-ahead rows padded) flushes 8 cached + 26 new frames
    assert len(last) == (8 + 2 * 13) * HOP
    # whole stream: 3840 delay samples + the 3 silence tokens + every speech token, 960 samples each
    assert sum(map(len, chunks)) + len(last) == 3840 + 960 * (3 + len(speech))
    # HiFT clamps to ±0.99, but the Hamming cross-fade halves sum to ~1.08 (not 1): seams may exceed it
    w = np.hamming(2 * 3840)
    bound = np.float32(0.99) * np.max(w[:3840] + w[3840:])
    assert 1.07 < np.max(w[:3840] + w[3840:]) < 1.09
    assert all(np.all(np.isfinite(c)) and np.max(np.abs(c)) <= bound for c in chunks + [last])


def test_caches_are_trimmed_to_prompt_plus_100_frames(streamed):
    _, calls, _, _ = streamed
    P = 2 * PROMPT_TOKENS
    # estimator and conformer caches: P, then + 50 mel frames per window, capped at P + 100
    assert [c[3] for c in calls] == [P + 50, P + 100, P + 100]
    assert [c[4] for c in calls] == [P + 50, P + 100, P + 100]
    for *_, att in calls:   # the token-rate conformer layers stay tiled twice
        n1, half = FLOW_TINY.num_blocks, att.shape[2] // 2
        assert np.array_equal(att[:n1, :, :half], att[:n1, :, half:])


def test_trim_keeps_the_official_frames(flow, hift, cfm_noise, prompt):
    """The 1.0.7 selection on frame-numbered caches: estimator (stored newest first) keeps its first
    P and last 100 entries; conformer keeps token frames [:P/2] ++ [-50:] (re-tiled) and mel frames
    [:P] ++ [-100:]."""
    t2w = make_t2w(flow, hift, cfm_noise, prompt)
    P = t2w.prompt_frames
    T = P + 150
    est = np.broadcast_to(np.arange(T, dtype=np.float32), (N_STEPS, 2, 2, 2, T)).copy()[..., None]
    n1, n2 = FLOW_TINY.num_blocks, FLOW_TINY.num_up_blocks
    tok = np.arange(T // 2, dtype=np.float32)
    conf = np.concatenate([np.broadcast_to(np.concatenate([tok, tok]), (n1, 2, T)),
                           np.broadcast_to(1000 + np.arange(T, dtype=np.float32), (n2, 2, T))], 0)[..., None]
    t2w.cache = dict(estimator_att_cache=est, conformer_att_cache=conf.copy())
    t2w._trim()
    kept_est = t2w.cache["estimator_att_cache"][0, 0, 0, 0, :, 0]
    assert np.array_equal(kept_est, np.concatenate([np.arange(P), np.arange(T - 100, T)]))
    c = t2w.cache["conformer_att_cache"][..., 0]
    kept_tok = np.concatenate([np.arange(P // 2), np.arange(T // 2 - 50, T // 2)])
    assert np.array_equal(c[0, 0], np.concatenate([kept_tok, kept_tok]))
    assert np.array_equal(c[n1, 0], 1000 + np.concatenate([np.arange(P), np.arange(T - 100, T)]))


def test_setup_lookahead_is_three_silence_tokens(flow, hift, cfm_noise, prompt):
    t2w = make_t2w(flow, hift, cfm_noise, prompt)
    assert list(t2w.setup_lookahead) == [SILENCE_TOKEN] * 3
    # the prompt frames come from prompt ++ [4218]*3 with the look-ahead stripped
    ptok = prompt[0]
    h, _, att = flow.encode_chunk(flow.embed_tokens(np.concatenate([ptok, [SILENCE_TOKEN] * 3])))
    assert h.shape[0] == 2 * len(ptok) and att.shape[2] == 2 * len(ptok)
    assert np.array_equal(att, t2w.cache["conformer_att_cache"])
    other = make_t2w(flow, hift, cfm_noise, prompt, setup_lookahead=ptok[:3])   # minicpmo-utils 1.0.7
    assert not np.array_equal(other.cache["conformer_cnn_cache"], t2w.cache["conformer_cnn_cache"])


def test_last_chunk_padding_equals_whole_utterance_encoder(flow):
    """One final chunk without caches = the non-streaming encoder: the 3 zero rows appended after
    the embedding are the non-streaming pre-lookahead right padding; pe and attention identical.
    float32 BLAS on different matrix shapes: ~1e-7 relative."""
    x = flow.embed_tokens(np.random.default_rng(7).integers(0, 6561, 23))
    h_chunk, _, _ = flow.encode_chunk(x, last_chunk=True)
    assert h_chunk.shape == (46, FLOW_TINY.encoder_output_size)
    assert rel(h_chunk, flow.encode(x)) < 1e-6


def test_two_chunks_continue_the_conformer_cache(flow):
    """A second chunk appends its K/V to the conformer cache of the first without changing it:
    20 fresh tokens -> 40 mel-rate frames per call, the cache grows 40 -> 80."""
    tok = np.random.default_rng(8).integers(0, 6561, 40)
    x = flow.embed_tokens(tok)
    h1, cnn, att = flow.encode_chunk(x[:23])            # 20 fresh + 3 look-ahead
    h2, _, att2 = flow.encode_chunk(x[20:], last_chunk=True, cnn_cache=cnn, att_cache=att)
    assert h1.shape[0] == 40 and h2.shape[0] == 40
    assert att2.shape[2] == 80
    # the first 40 mel-rate cache frames of the second call are the first call's (unchanged)
    n1 = FLOW_TINY.num_blocks
    assert np.array_equal(att2[n1:, :, :40], att[n1:])


def test_whole_utterance_length(flow, hift, cfm_noise, prompt):
    t2w = Token2WavReference(flow, hift, cfm_noise, SourceRandomness(5), n_timesteps=N_STEPS)
    wav = t2w.synthesize(np.arange(100, 117), *prompt)
    assert wav.shape == (17 * 2 * HOP,) and np.all(np.isfinite(wav))


# ------------------------------------------------------------------------------------------------
# numeric identities
# ------------------------------------------------------------------------------------------------

def test_rel_shift_square_picks_relative_position(flow):
    """For t_q == t_k the shifted score [i, j] is column (t-1) - i + j of the unshifted table, i.e.
    the pe row of relative position i - j (rows run t-1 ... -(t-1))."""
    t = 7
    x = np.random.default_rng(9).standard_normal((2, t, 2 * t - 1))
    y = rel_shift(x)
    i, j = np.meshgrid(np.arange(t), np.arange(t), indexing="ij")
    assert np.array_equal(y, x[:, i, t - 1 - i + j])


def test_sinegen_random_phases_have_no_effect(hift):
    """Official quirk: the phases are added to sample 0 only, which the x1/480 linear down-sampling
    never reads; the additive noise does matter."""
    rng = np.random.default_rng(10)
    f0 = np.abs(rng.normal(120, 60, 12)).astype(np.float32)
    noise = rng.standard_normal((12 * HOP, 9)).astype(np.float32)
    a, uv = hift.source(f0, rng.uniform(0, 1, 9), noise)
    b, _ = hift.source(f0, rng.uniform(0, 1, 9), noise)
    c, _ = hift.source(f0, rng.uniform(0, 1, 9), rng.standard_normal((12 * HOP, 9)))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)
    assert 0 < uv.mean() < 1 or np.all(f0 > 10)


def test_float32_matches_float64(weights, cfm_noise, prompt):
    """Same op sequence in float32 and float64: flow mel through 2 Euler steps agrees to ~1e-6
    relative; 1e-5 leaves room for float32 rounding in 6 conformer and 2 DiT layers."""
    tok = np.arange(200, 230)
    m32 = FlowReference(weights[0], FLOW_TINY).inference(tok, *prompt, cfm_noise, N_STEPS)
    m64 = FlowReference(weights[0], FLOW_TINY, np.float64).inference(tok, *prompt, cfm_noise, N_STEPS)
    assert m32.dtype == np.float32 and m64.dtype == np.float64
    assert rel(m32, m64) < 1e-5


def test_weight_norm_names_and_generator_prefix_fold_the_same(weights):
    """hift.pt may hold parametrizations.weight.original0/1 or weight_g/weight_v, with or without
    the ``generator.`` prefix: the folded weights are identical."""
    a = HiFTReference(weights[1], HIFT_TINY)
    b = HiFTReference(random_hift_state(HIFT_TINY, seed=1, style="weight_g", prefix="generator."), HIFT_TINY)
    mel = smooth_mel(np.random.default_rng(11), 6)
    src = np.random.default_rng(12).uniform(-0.3, 0.3, 6 * HOP).astype(np.float32)
    assert np.array_equal(a.decode(mel, src), b.decode(mel, src))


def test_config_from_flow_yaml_kwargs():
    d = {"input_size": 64, "output_size": 80, "spk_embed_dim": 192, "vocab_size": 6561,
         "encoder": {"input_size": 64, "output_size": 64, "attention_heads": 2, "linear_units": 128,
                     "num_blocks": 2, "num_up_blocks": 2, "pre_lookahead_len": 3, "up_stride": 2,
                     "up_scale_factor": 2.0, "key_bias": True, "input_layer": "linear",
                     "pos_enc_layer_type": "rel_pos_espnet", "selfattention_layer_type": "rel_selfattn",
                     "dropout_rate": 0.1, "normalize_before": True, "activation_type": "swish"},
         "decoder": {"inference_cfg_rate": 0.7,
                     "estimator": {"in_channels": 320, "out_channels": 80, "mlp_ratio": 4.0, "depth": 2,
                                   "num_heads": 2, "head_dim": 32, "hidden_size": 64}}}
    assert FlowConfig.from_yaml_dict(d) == FLOW_TINY
    assert FlowConfig.from_yaml_dict({}) == FlowConfig()


# ------------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tokens, match", [
    ([1, 2, 6561], r"tokens\[2\] = 6561 .* \[0, 6561\)"),
    ([1, 99999], r"tokens\[1\] = 99999"),
    ([-1, 5], r"tokens\[0\] = -1"),
    ([1.5, 2.0], "integer"),
    ([[1, 2]], "1-D"),
])
def test_bad_tokens_are_rejected(flow, cfm_noise, prompt, tokens, match):
    with pytest.raises(ValueError, match=match):
        flow.inference(tokens, *prompt, cfm_noise, N_STEPS)


def test_bad_tokens_in_the_stream_are_rejected(flow, hift, cfm_noise, prompt):
    st = TokenStreamer(make_t2w(flow, hift, cfm_noise, prompt))
    with pytest.raises(ValueError, match="6561"):
        st.push([5, 6561])
    with pytest.raises(ValueError, match=r"prompt_tokens\[0\] = 7000"):
        make_t2w(flow, hift, cfm_noise, (np.array([7000] * 10), prompt[1], prompt[2]))


def test_bad_flow_inputs_are_rejected(flow, hift, cfm_noise, prompt):
    ptok, pmel, xvec = prompt
    with pytest.raises(ValueError, match="at least one speech token"):
        flow.inference([], ptok, pmel, xvec, cfm_noise)
    with pytest.raises(ValueError, match=r"speaker embedding must have shape \(192,\)"):
        flow.inference([1, 2], ptok, pmel, xvec[:100], cfm_noise)
    with pytest.raises(ValueError, match="prompt mel has 19 frames; 10 prompt tokens need exactly 20"):
        flow.inference([1, 2], ptok, pmel[:, :19], xvec, cfm_noise)
    with pytest.raises(ValueError, match=r"CFM noise has 20 frames; frames \[0, 24\)"):
        flow.inference([1, 2], ptok, pmel, xvec, cfm_noise[:, :20])
    with pytest.raises(ValueError, match="n_timesteps must be a positive integer"):
        flow.inference([1, 2], ptok, pmel, xvec, cfm_noise, 0)
    t2w = Token2WavReference(flow, hift, cfm_noise, SourceRandomness(5), n_timesteps=N_STEPS)
    with pytest.raises(RuntimeError, match="set_stream_cache"):
        t2w.stream([1] * 28)
    t2w.set_stream_cache(*prompt)
    with pytest.raises(ValueError, match="non-final window needs 3 look-ahead tokens plus at least 2 fresh"):
        t2w.stream([1, 2, 3, 4])
    st = TokenStreamer(t2w)
    st.finish()
    with pytest.raises(RuntimeError, match="finished"):
        st.push([1])


def test_bad_hift_inputs_are_rejected(hift):
    with pytest.raises(ValueError, match=r"HiFT mel must have shape \(80, T>0\)"):
        hift.f0(np.zeros((60, 5), np.float32))
    bad = np.zeros((80, 5), np.float32)
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        hift.f0(bad)
    with pytest.raises(ValueError, match=r"SineGen noise must have shape \(2400, 9\)"):
        hift.source(np.ones(5, np.float32) * 100, np.zeros(9), np.zeros((100, 9)))


def test_bad_weights_are_rejected(weights):
    sd = dict(weights[0])
    del sd["encoder.encoders.1.self_attn.linear_pos.weight"]
    with pytest.raises(KeyError, match="encoder.encoders.1.self_attn.linear_pos.weight"):
        FlowReference(sd, FLOW_TINY)
    sd = dict(weights[0])
    sd["encoder_proj.weight"] = sd["encoder_proj.weight"][:, :10]
    with pytest.raises(ValueError, match=r"'encoder_proj.weight' has shape \(80, 10\), expected \(80, 64\)"):
        FlowReference(sd, FLOW_TINY)
    with pytest.raises(ValueError, match="unexpected tensors"):   # 3 conformer blocks stored, config says 2
        FlowReference({**weights[0], "encoder.encoders.2.norm_ff.weight": np.ones(64, np.float32)}, FLOW_TINY)
    with pytest.raises(ValueError, match="divisible by attention_heads"):
        FlowReference(weights[0], FlowConfig(input_size=64, encoder_output_size=64, attention_heads=3))
    with pytest.raises(ValueError, match="unsupported encoder keys"):
        FlowConfig.from_yaml_dict({"encoder": {"use_cnn_module": True}})
    hs = dict(weights[1])
    hs["conv_pre.parametrizations.weight.original1"] = np.zeros_like(hs["conv_pre.parametrizations.weight.original1"])
    with pytest.raises(ValueError, match="zero vector"):
        HiFTReference(hs, HIFT_TINY)
