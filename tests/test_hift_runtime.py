"""The runtime's HiFT vocoder (csrc/speech/hift_*) against the numpy reference
(tests/reference/token2wav.py: HiFTReference, and Token2WavReference.vocode_chunk for the streaming
protocol of spec §5.2.4 / Appendix A.4), with the same injected SineGen phases and noise.

Two sets of weights, both converted by the project's converter from a checkpoint in the release
layout:
* the tiny checkpoint's own assets/token2wav/hift.pt (make_tiny). Its F0 stays below the 10 Hz
  voiced threshold and its magnitudes saturate (most samples end at the ±0.99 clamp), so
* a copy of that checkpoint whose hift.pt holds the well-scaled random weights of
  tests/token2wav_weights.py (F0 mostly voiced, waveform rarely clipped) covers the voiced sine
  branch and unclipped audio.
"""

from __future__ import annotations

import numpy as np
import pytest

from minicpmo_cpp import MinicpmoError, _testing, build_info

from conftest import _import_convert
from relative_error import rel
from reference.token2wav import FlowConfig, FlowReference, HiFTConfig, HiFTReference, Token2WavReference
from token2wav_weights import SourceRandomness, random_hift_state, smooth_mel
from backend import DEVICE

HOP = 480                # samples per mel frame (prod(upsample_rates) x istft hop; real in the tiny config)
CACHE = 8 * HOP          # the streaming source / speech cache (3840 samples)

# Tolerances, as max |runtime - reference| / max |reference| (measured values in the tests). The
# runtime computes in float32 for F32 and F16 files alike (the F16 file's kernels are widened at
# load), so an F16 file is compared with the float32 reference on the same F16-rounded weights and
# gets the F32 tolerances.
# * Each stage with the same inputs (F0 predictor; source from a given F0; decoder from a given
#   source): summation order of every conv and the float32 iSTFT (the reference's is float64).
#   Measured: F0 <= 1.5e-6, source <= 3.5e-7, decoder <= 5.4e-7 (well-scaled weights). Where
#   magnitudes saturate at 100 (the tiny checkpoint) the iSTFT cancels terms of size 100 into
#   samples below 1: the float32 reference is itself 5e-4 from a float64 run there, the runtime
#   6.7e-4 from the float32 reference.
TOL_F0 = 1e-5
TOL_SOURCE = 1e-5
TOL_DECODER = {"tiny": 2e-3, "voiced": 1e-5}
# * End to end (and streaming): the source phase integrates F0 over the utterance (up to ~1e5 rad
#   for the 9th harmonic after a few seconds), so the 1e-6 relative F0 difference above becomes up
#   to ~1e-3 in the voiced source and waveform (measured <= 8.4e-4). The streaming protocol's own
#   mistakes (a wrong cache, window or offset) would show as differences of order 1.
TOL_END_TO_END = 5e-3


# ------------------------------------------------------------------------------------------------
# weights: state dicts for the reference, GGUF files for the runtime
# ------------------------------------------------------------------------------------------------

def _hift_config(t2w_dir) -> HiFTConfig:
    """The reference's config from the checkpoint's hift.yaml (read by the converter's parser)."""
    c = _import_convert(".token2wav_gguf").read_hift_config(t2w_dir / "hift.yaml")
    return HiFTConfig(in_channels=c.in_channels, base_channels=c.base, nb_harmonics=c.harmonics,
                      sampling_rate=c.sample_rate, nsf_alpha=c.nsf_alpha, nsf_sigma=c.nsf_sigma,
                      nsf_voiced_threshold=c.voiced_threshold, upsample_rates=tuple(c.up_rates),
                      upsample_kernel_sizes=tuple(c.up_kernels), n_fft=c.n_fft, hop_len=c.hop,
                      resblock_kernel_sizes=tuple(c.res_kernels),
                      resblock_dilation_sizes=tuple(tuple(r) for r in c.res_dilations),
                      source_resblock_kernel_sizes=tuple(c.src_kernels),
                      source_resblock_dilation_sizes=tuple(tuple(r) for r in c.src_dilations),
                      lrelu_slope=c.lrelu_slope, audio_limit=c.audio_limit, f0_cond_channels=c.f0_channels)


def _read_pt(path) -> dict:
    src = _import_convert(".torch_zip").TorchZipSource.open(path)
    return {n: src.float32(n) for n in src.names()}


def _f16_rounded(state: dict) -> dict:
    """What an F16 file stores: weight norms folded in float64, and every tensor of >= 2 dims
    rounded to float16 (HiFT tensors are "table" typed); vectors stay float32. The converter rounds
    the folded float64 values to float32 first and then to float16 (checked: a few kernel values
    differ by one F16 ulp from a single rounding), so this does the same."""
    out = {}
    for name, a in state.items():
        if name.endswith("parametrizations.weight.original1"):
            continue
        if name.endswith("parametrizations.weight.original0"):
            p = name[: -len(".parametrizations.weight.original0")]
            g = a.astype(np.float64)
            v = state[p + ".parametrizations.weight.original1"].astype(np.float64)
            w = g * v / np.sqrt(np.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))
            out[p + ".weight"] = w.astype(np.float32).astype(np.float16).astype(np.float32)
        elif a.ndim >= 2:
            out[name] = a.astype(np.float16).astype(np.float32)
        else:
            out[name] = a
    return out


def _checkpoint_with_hift(tiny_hf, dst, hift_pt_tensors):
    """A copy of the tiny checkpoint (files linked, not copied) with another assets/token2wav/hift.pt."""
    write_torch_zip = _import_convert(".torch_zip").write_torch_zip
    for p in tiny_hf.iterdir():
        if p.name != "assets":
            (dst / p.name).symlink_to(p)
    t2w = dst / "assets" / "token2wav"
    t2w.mkdir(parents=True)
    for p in (tiny_hf / "assets" / "token2wav").iterdir():
        if p.name != "hift.pt":
            (t2w / p.name).symlink_to(p)
    write_torch_zip(t2w / "hift.pt", hift_pt_tensors, archive_name="hift")
    return dst


@pytest.fixture(scope="module")
def models(tiny_hf, tiny_f32, tiny_f16, tmp_path_factory):
    """{(name, kind): (runtime vocoder, float32 reference on the weights that file stores)}."""
    convert_checkpoint = _import_convert("").convert_checkpoint
    t2w_dir = tiny_hf / "assets" / "token2wav"
    cfg = _hift_config(t2w_dir)
    tiny_state = _read_pt(t2w_dir / "hift.pt")
    voiced_state = random_hift_state(cfg, seed=1)        # the converter reads hift.pt names without
    voiced_hf = _checkpoint_with_hift(tiny_hf, tmp_path_factory.mktemp("voiced_hf"),   # `generator.`
                                      [("generator." + k, v) for k, v in voiced_state.items()])
    omni = {("tiny", "f32"): tiny_f32[1], ("tiny", "f16"): tiny_f16[1]}
    for kind in ("f32", "f16"):
        out = tmp_path_factory.mktemp(f"voiced_{kind}")
        omni[("voiced", kind)] = convert_checkpoint(voiced_hf, out, outtype=kind, name="MiniCPM-o-4_5")[1]
    states = {"tiny": tiny_state, "voiced": voiced_state}
    out = {}
    for (name, kind), path in omni.items():
        sd = states[name] if kind == "f32" else _f16_rounded(states[name])
        # one thread: these machines are shared, and a busy spinning thread pool is slower than one
        out[(name, kind)] = (_testing.HiftVocoder(str(path), n_threads=1, seed=7, device=DEVICE), HiFTReference(sd, cfg))
        if kind == "f32" and ONEDNN:  # a BF16 session's vocoder: its products through oneDNN's F32 kernels
            voc = _testing.HiftVocoder(str(path), n_threads=1, seed=7, device=DEVICE, compute_type="bf16")
            out[(name, "f32-onednn")] = (voc, out[(name, kind)][1])
    return out


# the BF16 sessions' HiFT (oneDNN F32 products) exists where the build has oneDNN, on the CPU
ONEDNN = build_info.MINICPMO_ONEDNN and DEVICE == "cpu"
MODELS = [("tiny", "f32"), ("tiny", "f16"), ("voiced", "f32"), ("voiced", "f16")]
MODELS += [("tiny", "f32-onednn"), ("voiced", "f32-onednn")] if ONEDNN else []


# ------------------------------------------------------------------------------------------------
# one HiFT pass
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kind", MODELS)
def test_f0_matches_reference(models, name, kind):
    voc, ref = models[(name, kind)]
    mel = smooth_mel(np.random.default_rng(11), 37)
    assert rel(voc.f0(mel), ref.f0(mel)) < TOL_F0


def test_voiced_weights_exercise_both_source_branches(models):
    """Precondition of the comparisons below: the well-scaled weights give voiced (F0 > 10 Hz) and
    unvoiced frames on the test mel, the tiny checkpoint's weights only unvoiced ones."""
    mel = smooth_mel(np.random.default_rng(12), 60)
    f0 = models[("voiced", "f32")][1].f0(mel)
    assert 0.5 < np.mean(f0 > 10) < 1.0
    assert np.all(models[("tiny", "f32")][1].f0(mel) <= 10)


@pytest.mark.parametrize("name,kind", MODELS)
def test_source_matches_reference_for_the_same_f0(models, name, kind):
    voc, ref = models[(name, kind)]
    T = 60
    mel = smooth_mel(np.random.default_rng(12), T)
    phases, noise = SourceRandomness(21)(T * HOP)
    f0 = ref.f0(mel)
    want, _ = ref.source(f0, phases, noise)
    _, got = voc.forward(mel, phases, noise, f0=f0)
    assert rel(got, want) < TOL_SOURCE


@pytest.mark.parametrize("name,kind", MODELS)
def test_decoder_matches_reference_for_the_same_source(models, name, kind):
    """A source cache as long as the whole source replaces it entirely: the decoder alone."""
    voc, ref = models[(name, kind)]
    T = 60
    mel = smooth_mel(np.random.default_rng(12), T)
    phases, noise = SourceRandomness(21)(T * HOP)
    source, _ = ref.source(ref.f0(mel), phases, noise)
    audio, used = voc.forward(mel, cache_source=source)
    assert np.array_equal(used, source)
    assert rel(audio, ref.decode(mel, source)) < TOL_DECODER[name]


@pytest.mark.parametrize("name,kind", MODELS)
def test_whole_utterance_matches_reference(models, name, kind):
    voc, ref = models[(name, kind)]
    T = 60
    mel = smooth_mel(np.random.default_rng(12), T)
    phases, noise = SourceRandomness(21)(T * HOP)
    want_audio, want_source = ref(mel, phases, noise)
    audio, source = voc.forward(mel, phases, noise)
    assert audio.shape == (T * HOP,) and source.shape == (T * HOP,)
    assert rel(source, want_source) < TOL_END_TO_END
    assert rel(audio, want_audio) < TOL_END_TO_END
    assert np.array_equal(voc.synthesize(mel, phases, noise), audio)   # same pass, audio only


def test_bf16_session_products_run_in_onednn_f32(models, tiny_f32):
    """The BF16 session's vocoder and the exact one differ only in the products' summation order:
    not bit for bit equal (the oneDNN products ran), within F32 rounding of each other (measured
    ~5e-7 on the decoder). A CPU build without oneDNN refuses compute_type bf16."""
    if not ONEDNN:
        if DEVICE == "cpu":
            with pytest.raises(MinicpmoError, match="oneDNN"):
                _testing.HiftVocoder(str(tiny_f32[1]), compute_type="bf16")
        return
    (exact, ref), (onednn, _) = models[("voiced", "f32")], models[("voiced", "f32-onednn")]
    T = 60
    mel = smooth_mel(np.random.default_rng(12), T)
    source, _ = ref.source(ref.f0(mel), *SourceRandomness(21)(T * HOP))
    a, b = exact.forward(mel, cache_source=source)[0], onednn.forward(mel, cache_source=source)[0]
    print(f"oneDNN F32 vs ggml F32 products: rel {rel(b, a):.1e}")
    assert not np.array_equal(a, b)
    assert rel(b, a) < TOL_DECODER["voiced"]


def test_cache_source_replaces_the_first_source_samples(models):
    voc, ref = models[("voiced", "f32")]
    T = 12
    mel = smooth_mel(np.random.default_rng(13), T)
    phases, noise = SourceRandomness(22)(T * HOP)
    cache = (0.3 * np.sin(np.arange(CACHE) / 7.0)).astype(np.float32)
    want_audio, want_source = ref(mel, phases, noise, cache_source=cache)
    audio, source = voc.forward(mel, phases, noise, cache_source=cache)
    assert np.array_equal(source[:CACHE], cache)           # copied, not recomputed
    assert rel(source, want_source) < TOL_END_TO_END
    assert rel(audio, want_audio) < TOL_END_TO_END


# ------------------------------------------------------------------------------------------------
# streaming (minicpmo-utils 1.0.1 protocol)
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stream_reference_flow(tiny_hf):
    """The tiny flow and default voice: Token2WavReference.set_stream_cache runs them to reset its
    HiFT caches, the way a stream starts."""
    t2w_dir = tiny_hf / "assets" / "token2wav"
    load_plain_yaml = _import_convert(".asset_yaml").load_plain_yaml
    flow = FlowReference(_read_pt(t2w_dir / "flow.pt"), FlowConfig.from_yaml_dict(load_plain_yaml(t2w_dir / "flow.yaml")["flow"]))
    voice = np.load(t2w_dir / "default_voice.npz")
    cfm_noise = np.random.default_rng(3).standard_normal((80, 400)).astype(np.float32)
    return flow, (voice["tokens"], voice["mel"].T, voice["spk"]), cfm_noise


class _Recorder:
    """source_random for the reference that keeps what it handed out, to inject the same numbers."""

    def __init__(self, seed):
        self.rand = SourceRandomness(seed)
        self.calls = []

    def __call__(self, n):
        ph, nz = self.rand(n)
        self.calls.append((ph, nz))
        return ph, nz


def _stream_both(voc, ref_hift, flow_parts, chunks):
    flow, prompt, cfm_noise = flow_parts
    rec = _Recorder(31)
    t2w = Token2WavReference(flow, ref_hift, cfm_noise, rec, n_timesteps=2)
    t2w.set_stream_cache(*prompt)
    voc.reset_stream()
    got, want = [], []
    for mel, last in chunks:
        want.append(t2w.vocode_chunk(mel, last_chunk=last))
        ph, nz = rec.calls[-1]
        assert voc.stream_pass_samples(mel.shape[1]) == nz.shape[0]
        got.append(voc.stream(mel, last, ph, nz))
    return got, want


@pytest.mark.parametrize("name,kind", MODELS)
def test_streaming_windows_match_reference(models, stream_reference_flow, name, kind):
    """Three 50-frame chunks (one 25-token window each) and a 20-frame last chunk: every non-final
    window is exactly 50 x 480 = 24000 samples (the first starts with 3840 zeros), the last one
    holds its frames plus the cached tail; each window matches the reference's vocode_chunk."""
    voc, ref = models[(name, kind)]
    mel = smooth_mel(np.random.default_rng(14), 170)
    chunks = [(mel[:, 0:50], False), (mel[:, 50:100], False), (mel[:, 100:150], False), (mel[:, 150:], True)]
    got, want = _stream_both(voc, ref, stream_reference_flow, chunks)
    assert [w.shape[0] for w in want] == [24000, 24000, 24000, (20 + 8) * HOP]
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert rel(g, w) < TOL_END_TO_END
    assert np.all(got[0][:CACHE] == 0)


def test_streaming_empty_last_chunk_flushes_the_tail(models, stream_reference_flow):
    voc, ref = models[("voiced", "f32")]
    mel = smooth_mel(np.random.default_rng(15), 60)
    empty = np.zeros((80, 0), np.float32)
    chunks = [(mel[:, :30], False), (mel[:, 30:], False), (empty, True)]
    got, want = _stream_both(voc, ref, stream_reference_flow, chunks)
    assert [w.shape[0] for w in want] == [30 * HOP, 30 * HOP, 8 * HOP]
    for g, w in zip(got, want):
        assert rel(g, w) < TOL_END_TO_END
    # the stream ended: the next chunk starts a new one (zeros first again)
    phases, noise = SourceRandomness(1)(10 * HOP)
    again = voc.stream(mel[:, :10], False, phases, noise)
    assert again.shape == (10 * HOP,) and np.all(again[:CACHE] == 0)
    voc.reset_stream()


# ------------------------------------------------------------------------------------------------
# randomness, bad input
# ------------------------------------------------------------------------------------------------

def test_drawn_randomness_is_seeded_per_vocoder(tiny_f32):
    mel = smooth_mel(np.random.default_rng(16), 10)
    a = _testing.HiftVocoder(str(tiny_f32[1]), n_threads=1, seed=5, device=DEVICE)
    b = _testing.HiftVocoder(str(tiny_f32[1]), n_threads=1, seed=5, device=DEVICE)
    c = _testing.HiftVocoder(str(tiny_f32[1]), n_threads=1, seed=6, device=DEVICE)
    _, sa = a.forward(mel)
    _, sb = b.forward(mel)
    _, sc = c.forward(mel)
    assert np.array_equal(sa, sb) and not np.array_equal(sa, sc)
    _, sa2 = a.forward(mel)                   # the generator advances between calls
    assert not np.array_equal(sa, sa2)
    a.reseed(5)
    assert np.array_equal(a.forward(mel)[1], sa)


def test_bad_inputs_are_rejected(models, tiny_f32):
    voc, _ = models[("tiny", "f32")]
    mel = smooth_mel(np.random.default_rng(17), 10)
    phases, noise = SourceRandomness(2)(10 * HOP)
    with pytest.raises(MinicpmoError, match=r"mel must have shape \(80, T\) with T > 0"):
        voc.synthesize(np.zeros((80, 0), np.float32))
    with pytest.raises(MinicpmoError, match=r"mel must have shape \(80, T\)"):
        voc.synthesize(mel[:79])
    with pytest.raises(MinicpmoError, match="2 dimensions"):
        voc.synthesize(mel[0])
    with pytest.raises(MinicpmoError, match="float32"):
        voc.synthesize(mel.astype(np.float64))
    bad = mel.copy()
    bad[3, 4] = np.nan
    with pytest.raises(MinicpmoError, match="non-finite"):
        voc.synthesize(bad)
    with pytest.raises(MinicpmoError, match=r"noise must have shape \(4800, 9\)"):
        voc.synthesize(mel, phases, noise[:-1])
    with pytest.raises(MinicpmoError, match="both phases and noise"):
        voc.synthesize(mel, phases)
    with pytest.raises(MinicpmoError, match=r"phases must have shape \(9,\)"):
        voc.synthesize(mel, phases[:8], noise)
    with pytest.raises(MinicpmoError, match="does not fit"):
        voc.forward(mel, cache_source=np.zeros(10 * HOP + 1, np.float32))
    with pytest.raises(MinicpmoError, match="at least 8 mel frames"):
        voc.stream(mel[:, :5])
    with pytest.raises(MinicpmoError, match="exceeds"):
        voc.f0(np.zeros((80, 9000), np.float32))
    with pytest.raises(MinicpmoError, match="no token2wav component"):
        _testing.HiftVocoder(str(tiny_f32[0]), device=DEVICE)   # the LLM file, not the omni companion
    # the vocoder still works after every refusal
    assert voc.synthesize(mel, phases, noise).shape == (10 * HOP,)
