"""The numpy Token2Wav reference (tests/reference/token2wav.py) against the official Python code,
PyPI ``minicpmo-utils==1.0.7`` (package ``stepaudio2``; loaded by tests/stepaudio2_oracle.py), on
the tiny random weights of spec §8 under the real flow.pt / hift.pt names.

Module by module: rel_shift, flow encoder, DiT velocity, CFM mel (injected noise buffer), the whole
``flow.inference``, HiFT F0 / NSF source (injected SineGen phases and noise) / decoder, the HiFT
forward, and the streaming path: ``flow.setup_cache`` + ``flow.inference_chunk`` + Token2wav's
cache trimming (1.0.7 methods, run from the installed file) + HiFTGenerator with the 1.0.1
mel/source/speech caches and Hamming cross-fade (A.4; that driver is re-written here from
minicpmo-utils 1.0.1's token2wav.py because 1.0.7 replaced it with a causal CosyVoice3 vocoder).

Metric: rel = max|reference - official| / max|official|. float32 vs float32 unless stated; the
measured values on this machine are written beside each tolerance.

Why the end-to-end HiFT waveform is compared in float64: the NSF source phase is a running sum of
F0 over the utterance (1e3..1e5 rad here); a 1e-6 relative F0 difference (float32 BLAS order in
the F0 predictor) moves the phase by ~1e-2 rad. So the float32 pipeline agrees to ~1e-3 only,
while each stage fed with the SAME input agrees to ~1e-6 and the whole forward in float64 to ~1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference.token2wav import SILENCE_TOKEN, FlowReference, HiFTReference, Token2WavReference, rel_shift
from stepaudio2_oracle import injected_sinegen_random, official_flow, official_hift, stepaudio2
from token2wav_weights import (FLOW_TINY, HIFT_TINY, SourceRandomness, random_flow_state, random_hift_state,
                               smooth_mel)

pytestmark = pytest.mark.torch

# float32 torch vs float32 numpy through <= 4 conformer / 2 DiT layers of width <= 256 and up to
# 3 Euler steps: rounding and BLAS summation order give ~1e-6 relative. Any formula error (rel_shift
# offset, missing pos bias, wrong CFG sign, t not scaled by 1000, modulate order, conv cache
# misplaced by one frame, HiFT padding) moves outputs by >= 1e-3.
REL_TOL = 1e-5
# float64 reference vs float64 torch (HiFT only): the official float32 constants (Hann window, the
# float32 uv / noise amplitude of SineGen2) are reproduced, so even after the phase amplification
# described above the agreement is ~1e-11 (measured <= 6e-11).
REL_TOL_F64 = 1e-9
# float32 HiFT forward / streamed waveform: F0 rounding x phase amplification (see docstring);
# measured 6.0e-4 (30-frame forward) and 1.3e-3 (streamed windows, 58-frame vocoder calls).
REL_TOL_WAVE_F32 = 2e-2

N_STEPS = 3                  # spec §8: n_timesteps 2-3
PROMPT_TOKENS = 10           # P = 20 mel frames: trimming to P + 100 starts at the 3rd window


def rel(a, ref):
    a = np.asarray(a, np.float64)
    ref = np.asarray(ref, np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def t(x, dtype=torch.float32):
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype)


@pytest.fixture(scope="module", autouse=True)
def torch_settings():
    """Tiny matrices: torch threads only add contention on the 2-core machines. The official
    encoder.forward_chunk is wrapped in torch.compile(backend="eager"): force_eager runs the same
    ops without ~20 s of dynamo tracing. Both restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.compiler.set_stance("force_eager"):
        yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def flow_state():
    return random_flow_state(FLOW_TINY, seed=0)


@pytest.fixture(scope="module")
def hift_state():
    return random_hift_state(HIFT_TINY, seed=1)


@pytest.fixture(scope="module")
def cfm_noise():
    return np.random.default_rng(2).standard_normal((80, 1000)).astype(np.float32)


@pytest.fixture(scope="module")
def official(flow_state, cfm_noise):
    return official_flow(flow_state, FLOW_TINY, cfm_noise)


@pytest.fixture(scope="module")
def ref(flow_state):
    return FlowReference(flow_state, FLOW_TINY)


@pytest.fixture(scope="module")
def prompt():
    rng = np.random.default_rng(3)
    return (rng.integers(0, 6561, PROMPT_TOKENS), smooth_mel(rng, 2 * PROMPT_TOKENS),
            rng.standard_normal(192).astype(np.float32))


# ------------------------------------------------------------------------------------------------
# flow
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tq, tk", [(5, 5), (1, 1), (3, 9), (50, 120)])
def test_rel_shift_is_the_official_view_sequence(official, tq, tk):
    """A.1 recipe vs RelPositionMultiHeadedAttention.rel_shift, also for the streaming shapes
    t_q < t_k: pure data movement, so bit-exact."""
    x = np.random.default_rng(tq * 100 + tk).standard_normal((2, tq, 2 * tk - 1)).astype(np.float32)
    attn = official.encoder.encoders[0].self_attn
    assert np.array_equal(rel_shift(x), attn.rel_shift(t(x)[None])[0].numpy())


def test_flow_encoder_matches_official(official, ref):
    """UpsampleConformerEncoderV2.forward (embed, pre-lookahead, 2 blocks, x2 upsample, 2 blocks,
    after_norm) + encoder_proj on 37 tokens. Measured rel 4.9e-7 (encoder), 5.8e-7 (mu)."""
    tok = np.random.default_rng(10).integers(0, 6561, 37)
    x = ref.embed_tokens(tok)
    with torch.inference_mode():
        h, _ = official.encoder(t(x)[None], torch.tensor([37]))
        mu = official.encoder_proj(h)
    h_ref = ref.encode(x)
    assert h_ref.shape == (74, 64)
    assert rel(h_ref, h[0].numpy()) < REL_TOL
    assert rel(ref.project(h_ref), mu[0].numpy().T) < REL_TOL


@pytest.mark.parametrize("tval", [0.0, 0.3, 0.95])
def test_dit_velocity_matches_official(official, ref, tval):
    """DiT.forward (one CFG branch): timestep embedding, adaLN-Zero, q/k LayerNorm, causal conv
    block with Mish, final layer. Measured rel <= 1.8e-6."""
    rng = np.random.default_rng(11)
    T = 40
    x, mu, cond = (rng.standard_normal((80, T)).astype(np.float32) for _ in range(3))
    spk = rng.standard_normal(80).astype(np.float32)
    with torch.inference_mode():
        v = official.decoder.estimator(t(x)[None], torch.ones(1, 1, T), t(mu)[None], torch.tensor([tval]),
                                       t(spk)[None], t(cond)[None])
    v_ref, _, _ = ref.velocity(x, mu, spk, cond, np.float32(tval))
    assert rel(v_ref, v[0].numpy()) < REL_TOL


def test_dit_velocity_chunk_caches_match_official(official, ref):
    """DiT.forward_chunk over two chunks (20 then 7 frames) with the caches of the first: new K/V
    first, then the cache; conv caches = [conv1 | conv2] left contexts. The official chunk path
    only runs with batch 2 (its cache buffers have the CFG batch of 2 built in), so two
    independent items are compared. Measured rel <= 9.7e-7 (velocity and both caches)."""
    rng = np.random.default_rng(12)
    est = official.decoder.estimator
    errs = []
    cnn_o = att_o = None
    cnn_r, att_r = [None, None], [None, None]
    for T in (20, 7):
        x, mu, cond = (rng.standard_normal((2, 80, T)).astype(np.float32) for _ in range(3))
        spk = rng.standard_normal((2, 80)).astype(np.float32)
        with torch.inference_mode():
            v, cnn_o, att_o = est.forward_chunk(t(x), t(mu), torch.tensor([0.4, 0.4]), t(spk), t(cond), cnn_o, att_o)
            v, cnn_o, att_o = v.clone(), cnn_o.clone(), att_o.clone()
        for b in range(2):
            v_r, cnn_r[b], att_r[b] = ref.velocity(x[b], mu[b], spk[b], cond[b], np.float32(0.4), cnn_r[b], att_r[b])
            errs += [rel(v_r, v[b].numpy()), rel(cnn_r[b], cnn_o[:, b].numpy()), rel(att_r[b], att_o[:, b].numpy())]
    assert att_r[0].shape[2] == 27
    assert max(errs) < REL_TOL, errs


def test_cfm_mel_matches_official(official, ref, cfm_noise):
    """CausalConditionalCFM.forward: cosine schedule, Euler, CFG 0.7 with mu/spk/cond zeroed in the
    unconditional branch, noise = the injected buffer. Measured rel 4.5e-7."""
    rng = np.random.default_rng(13)
    T = 40
    mu, cond = (rng.standard_normal((80, T)).astype(np.float32) for _ in range(2))
    spk = rng.standard_normal(80).astype(np.float32)
    with torch.inference_mode():
        mel = official.decoder(t(mu)[None], torch.ones(1, 1, T), t(spk)[None], t(cond)[None], n_timesteps=N_STEPS)
    mel_ref, _, _ = ref.cfm(mu, spk, cond, cfm_noise, N_STEPS)
    assert rel(mel_ref, mel[0].numpy()) < REL_TOL


def test_flow_inference_matches_official(official, ref, cfm_noise, prompt):
    """CausalMaskedDiffWithXvec.inference (prompt tokens + mel as condition, L2-normalised x-vector
    through the speaker affine): the whole-utterance mel. Measured rel 7.9e-7."""
    ptok, pmel, xvec = prompt
    tok = np.random.default_rng(14).integers(0, 6561, 37)
    with torch.inference_mode():
        mel = official.inference(torch.from_numpy(tok)[None], torch.tensor([37]), torch.from_numpy(ptok)[None],
                                 torch.tensor([len(ptok)]), t(pmel.T)[None], torch.tensor([pmel.shape[1]]),
                                 t(xvec)[None], N_STEPS)
    mel_ref = ref.inference(tok, ptok, pmel, xvec, cfm_noise, N_STEPS)
    assert mel_ref.shape == (80, 74)
    assert rel(mel_ref, mel[0].numpy()) < REL_TOL


# ------------------------------------------------------------------------------------------------
# HiFT
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hift_pair(hift_state):
    return official_hift(hift_state, HIFT_TINY), HiFTReference(hift_state, HIFT_TINY)


def test_hift_stages_match_official(hift_pair):
    """Each stage fed with the official stage input: F0 predictor (measured 1.2e-6), NSF source
    from the official F0 with the same injected phases/noise (torch's FMA interpolation arithmetic
    is reproduced, so the 1e3 rad phases agree; measured 1.8e-7), decoder from the official source
    (measured 7.8e-7)."""
    oh, rh = hift_pair
    mel = smooth_mel(np.random.default_rng(15), 30)
    with torch.inference_mode():
        f0 = oh.f0_predictor(t(mel)[None])
        with injected_sinegen_random(SourceRandomness(16)):
            src, _, _ = oh.m_source(oh.f0_upsamp(f0[:, None]).transpose(1, 2))
        src = src.transpose(1, 2)
        wav = oh.decode(t(mel)[None], src)
    f0_ref = rh.f0(mel)
    assert 0.5 < np.mean(f0_ref > 10) < 1.0         # both voiced and unvoiced frames are exercised
    assert rel(f0_ref, f0[0].numpy()) < REL_TOL
    src_ref, _ = rh.source(f0[0].numpy(), *SourceRandomness(16)(30 * 480))
    assert rel(src_ref, src[0, 0].numpy()) < REL_TOL
    wav_ref = rh.decode(mel, src[0, 0].numpy())
    assert wav_ref.shape == (30 * 480,)
    assert rel(wav_ref, wav[0].numpy()) < REL_TOL


def _official_hift64(hift_state, conv_post_gain=1.0):
    sd = dict(hift_state)
    sd["conv_post.parametrizations.weight.original0"] = sd["conv_post.parametrizations.weight.original0"] * conv_post_gain
    oh = official_hift(sd, HIFT_TINY).double()
    oh.stft_window = oh.stft_window.double()    # a plain attribute that .double() leaves in float32
    return oh, HiFTReference(sd, HIFT_TINY, np.float64)


@pytest.mark.parametrize("conv_post_gain", [1.0, 6.0])
def test_hift_forward_float64_matches_official(hift_state, conv_post_gain):
    """Whole HiFTGenerator.forward in float64 (injected SineGen randomness, a 12-frame source
    cache overwriting the start). conv_post x6 drives log-magnitudes past ln(100) and the output
    into the ±0.99 clamp, so both clips are compared too. Measured rel <= 1.3e-12 (source),
    <= 6e-11 (waveform)."""
    oh, rh = _official_hift64(hift_state, conv_post_gain)
    rng = np.random.default_rng(17)
    mel = smooth_mel(rng, 30).astype(np.float64)
    cache = rng.uniform(-0.5, 0.5, 12 * 480)
    with torch.inference_mode(), injected_sinegen_random(SourceRandomness(18)):
        wav, src = oh(t(mel, torch.float64)[None], t(cache, torch.float64)[None, None])
    wav_ref, src_ref = rh(mel, *SourceRandomness(18)(30 * 480), cache_source=cache)
    assert np.array_equal(src_ref[: len(cache)], cache)
    assert rel(src_ref, src[0, 0].numpy()) < REL_TOL_F64
    assert rel(wav_ref, wav[0].numpy()) < REL_TOL_F64
    if conv_post_gain > 1:
        assert np.mean(np.abs(wav_ref) >= 0.99) > 0.01


def test_hift_forward_float32_matches_official(hift_pair):
    """float32 end to end: only the F0 -> phase amplification separates them (measured 6.0e-4)."""
    oh, rh = hift_pair
    mel = smooth_mel(np.random.default_rng(19), 30)
    with torch.inference_mode(), injected_sinegen_random(SourceRandomness(20)):
        wav, _ = oh(t(mel)[None])
    wav_ref, _ = rh(mel, *SourceRandomness(20)(30 * 480))
    assert rel(wav_ref, wav[0].numpy()) < REL_TOL_WAVE_F32


# ------------------------------------------------------------------------------------------------
# streaming (spec §5.2.4, A.4)
# ------------------------------------------------------------------------------------------------

def stream_windows(speech):
    """The caller protocol: [4218]*3 + tokens, 28-token windows with stride 25, then the rest."""
    buf = [SILENCE_TOKEN] * 3 + [int(x) for x in speech]
    out = []
    while len(buf) >= 28:
        out.append((buf[:28], False))
        buf = buf[25:]
    out.append((buf, True))
    return out


class OfficialStream:
    """Token2wav's streaming sequence on the official modules: set_stream_cache (setup_cache over
    prompt ++ look-ahead), then per window flow.inference_chunk + the 1.0.7 trimming methods, and
    the 1.0.1 HiFT caches (8 mel frames, 3840 source and speech samples, np.hamming(7680) fade)."""

    def __init__(self, flow, hift, prompt, lookahead, dtype=torch.float32):
        ptok, pmel, xvec = prompt
        self.flow, self.hift, self.dtype = flow, hift, dtype
        self.spk = t(xvec, dtype)[None]
        self.P = pmel.shape[1]
        self.trim = stepaudio2().Token2wavCacheTrim()
        self.trim.flow = flow
        with torch.inference_mode():
            self.trim.stream_cache = flow.setup_cache(torch.tensor([list(ptok) + list(lookahead)]),
                                                      t(pmel.T, dtype)[None], self.spk, n_timesteps=N_STEPS)
        self.n = 8 * 480
        self.window = torch.from_numpy(np.hamming(2 * self.n))
        self.hc = dict(mel=torch.zeros(1, 80, 0, dtype=dtype), source=torch.zeros(1, 1, 0, dtype=dtype),
                       speech=torch.zeros(1, 0, dtype=dtype))

    def flow_chunk(self, tokens, last):
        with torch.inference_mode():
            mel, self.trim.stream_cache = self.flow.inference_chunk(
                torch.tensor([tokens]), self.spk, self.trim.stream_cache, last_chunk=last, n_timesteps=N_STEPS)
            self.trim._trim_estimator_cache(self.P)
            self.trim._trim_conformer_cache(self.P)
            # the caches may be views of the CFM's buffers, which the next call overwrites
            return mel.clone(), {k: v.clone() for k, v in self.trim.stream_cache.items()}

    def vocode(self, chunk_mel, last, randomness):
        n, hc = self.n, self.hc
        with torch.inference_mode():
            mel = torch.cat([hc["mel"], chunk_mel], 2)
            with injected_sinegen_random(randomness):
                speech, source = self.hift(mel, hc["source"])
            first = hc["speech"].shape[-1] == 0
            if not first:
                speech = speech.clone()
                speech[..., :n] = speech[..., :n] * self.window[:n] + hc["speech"][..., -n:] * self.window[n:]
            self.hc = dict(mel=mel[..., -8:], source=source[:, :, -n:], speech=speech[:, -n:])
            if not last:
                speech = torch.cat([torch.zeros(1, n, dtype=self.dtype), speech[:, :-n]], 1) if first else speech[:, :-n]
        return speech[0].numpy()


@pytest.fixture(scope="module")
def hift32(hift_state):
    return official_hift(hift_state, HIFT_TINY)


@pytest.mark.parametrize("lookahead", ["silence", "prompt_head"])
def test_streaming_matches_official(official, flow_state, hift_state, hift32, cfm_noise, prompt, lookahead):
    """110 speech tokens in 5 windows (4 x 28 tokens + a final 13), float32. Per window: chunk mel
    (measured rel <= 8.7e-7) and all four caches after trimming (conformer cnn 6.2e-7, att 7.5e-7;
    estimator cnn 1.2e-6, att 1.0e-6), cache lengths (trimming from the 3rd window on), 24000
    samples per non-final window, waveform within the phase-amplified float32 tolerance (measured
    <= 1.3e-3). look-ahead of set_stream_cache: [4218]*3 (1.0.1, spec) and the prompt's first 3
    tokens (1.0.7)."""
    ptok = prompt[0]
    la = [SILENCE_TOKEN] * 3 if lookahead == "silence" else list(ptok[:3])
    ref = Token2WavReference(FlowReference(flow_state, FLOW_TINY), HiFTReference(hift_state, HIFT_TINY), cfm_noise,
                             SourceRandomness(21), N_STEPS, setup_lookahead=la)
    ref.set_stream_cache(*prompt)
    off = OfficialStream(official, hift32, prompt, la)
    rnd = SourceRandomness(21)
    windows = stream_windows(np.random.default_rng(22).integers(0, 6561, 110))
    assert [len(w) for w, _ in windows] == [28, 28, 28, 28, 13]
    P = 2 * PROMPT_TOKENS
    worst = {}
    for i, (tokens, last) in enumerate(windows):
        mel_o, cache_o = off.flow_chunk(tokens, last)
        mel_r = ref.flow_chunk(tokens, last)
        assert mel_r.shape == (80, 2 * len(tokens) if last else 50)
        worst[f"mel{i}"] = rel(mel_r, mel_o[0].numpy())
        T = min(P + 50 * (i + 1), P + 100)
        assert cache_o["estimator_att_cache"].shape[4] == ref.cache["estimator_att_cache"].shape[4] == T
        assert cache_o["conformer_att_cache"].shape[3] == ref.cache["conformer_att_cache"].shape[2] == T
        worst[f"ccnn{i}"] = rel(ref.cache["conformer_cnn_cache"], cache_o["conformer_cnn_cache"][0].numpy())
        worst[f"catt{i}"] = rel(ref.cache["conformer_att_cache"], cache_o["conformer_att_cache"][:, 0].numpy())
        worst[f"ecnn{i}"] = rel(ref.cache["estimator_cnn_cache"], cache_o["estimator_cnn_cache"][:N_STEPS].numpy())
        worst[f"eatt{i}"] = rel(ref.cache["estimator_att_cache"], cache_o["estimator_att_cache"][:N_STEPS].numpy())
        wav_o = off.vocode(mel_o, last, rnd)
        wav_r = ref.vocode_chunk(mel_r, last)
        assert wav_r.shape == wav_o.shape
        if not last:
            assert wav_r.shape == (24000,)
        assert rel(wav_r, wav_o) < REL_TOL_WAVE_F32, i
    assert max(worst.values()) < REL_TOL, worst


def test_streaming_vocoder_float64_matches_official(hift_state, cfm_noise, flow_state, prompt):
    """The 1.0.1 HiFT streaming caches and cross-fade alone, in float64 and fed the same chunk mels
    (4 x 50 frames + a final 26): measured rel <= 3.4e-12 per window."""
    oh, rh = _official_hift64(hift_state)
    t2w = Token2WavReference(FlowReference(flow_state, FLOW_TINY), rh, cfm_noise, SourceRandomness(23), N_STEPS)
    t2w.hift_cache = dict(mel=np.zeros((80, 0)), source=np.zeros(0), speech=np.zeros(0))
    off = OfficialStream.__new__(OfficialStream)          # only the vocoder half is used
    off.hift, off.dtype, off.n = oh, torch.float64, 8 * 480
    off.window = torch.from_numpy(np.hamming(2 * off.n))
    off.hc = dict(mel=torch.zeros(1, 80, 0, dtype=torch.float64), source=torch.zeros(1, 1, 0, dtype=torch.float64),
                  speech=torch.zeros(1, 0, dtype=torch.float64))
    rnd = SourceRandomness(23)
    rng = np.random.default_rng(24)
    errs = []
    for i, frames in enumerate([50, 50, 50, 50, 26]):
        last = i == 4
        mel = smooth_mel(rng, frames).astype(np.float64)
        wav_o = off.vocode(t(mel, torch.float64)[None], last, rnd)
        wav_r = t2w.vocode_chunk(mel, last)
        assert wav_r.shape == wav_o.shape == (((8 + 26) * 480,) if last else (24000,))
        errs.append(rel(wav_r, wav_o))
    assert max(errs) < REL_TOL_F64, errs
