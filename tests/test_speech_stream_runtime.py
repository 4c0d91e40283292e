"""The runtime's streaming Token2Wav (csrc/token2wav/speech_stream.cpp through Token2Wav, bound as
``_testing.SpeechSynthesizer``) against the numpy reference (tests/reference/token2wav.py:
Token2WavReference + TokenStreamer, spec §5.2.4) on the tiny model's own weights, with the CFM noise
and the HiFT source randomness injected on both sides.

Checked: the 28/25 window protocol chunk by chunk (F32 and F16 files), restarts from the primed voice
snapshot (same output as the first utterance, voice setup once per voice), two voices, the duplex
unit rule of the official demo (forced flush down to 8-token windows, left padding to one unit,
reset to the voice's base caches at turn end; restated below as an independent numpy driver of the
reference), and bad input.
"""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest

from conftest import _import_convert
from minicpmo_cpp import MinicpmoError, _testing

from reference.token2wav import (SILENCE_TOKEN, FlowConfig, FlowReference, HiFTReference, Token2WavReference,
                                  TokenStreamer)
from relative_error import rel
from test_hift_runtime import _f16_rounded, _hift_config, _read_pt
from token2wav_weights import SourceRandomness
from backend import DEVICE

N_STEPS = 3        # the tiny model's n_timesteps key
UNIT = 24000       # 25 tokens x 2 mel frames x 480 samples
CACHE = 8 * 480    # HiFT's streaming cross-fade / source cache (the first chunk starts with these zeros)

# Tolerances per chunk (measured values beside them). The flow alone agrees with the reference to
# ~2e-6 (F32) and ~7e-4 (F16: F16 matrices and F16-rounded activations against the reference's
# unrounded weights), HiFT alone to <= 8.4e-4 (tests/test_flow_runtime.py, tests/test_hift_runtime.py).
# * F32, max |runtime - reference| / max |reference|: <= 1.2e-3 measured for the 28/25 stream,
#   <= 2.4e-3 for the duplex units (the tiny HiFT's iSTFT cancels magnitudes of 100 into samples
#   below 1); 5e-3 as in test_hift_runtime.
# * F16: the tiny HiFT amplifies the flow's 7e-4 mel difference ~400x on single samples (0.3 max
#   measured, where saturated samples flip near the clamp), so F16 is checked two ways: sample for
#   sample (bit-exact) against the runtime's flow and HiFT pieces, each validated against the
#   reference in those test files, driven by this file's own window protocol; and against the
#   reference by the relative RMS error, ||runtime - reference|| / ||reference|| (<= 1.73e-2 measured).
#   A wrong window, cache, offset or cross-fade gives RMS errors of order 1 (checked below).
TOL_MAX_F32 = 5e-3
TOL_RMS_F16 = 5e-2


def rms_rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def error(got, want, kind) -> float:
    return rel(got, want) if kind == "f32" else rms_rel(got, want)


TOL = {"f32": TOL_MAX_F32, "f16": TOL_RMS_F16}


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def assets(tiny_hf):
    return tiny_hf / "assets" / "token2wav"


@pytest.fixture(scope="module")
def flow_ref(assets):
    """float64 reference of the tiny flow (as in test_flow_runtime)."""
    yaml = _import_convert(".asset_yaml").load_plain_yaml(assets / "flow.yaml")
    return FlowReference(_read_pt(assets / "flow.pt"), FlowConfig.from_yaml_dict(yaml["flow"]), dtype=np.float64)


@pytest.fixture(scope="module")
def hift_refs(assets):
    """float32 HiFT references on the weights each file stores (F16: kernels rounded to float16)."""
    cfg = _hift_config(assets)
    state = _read_pt(assets / "hift.pt")
    return {"f32": HiFTReference(state, cfg), "f16": HiFTReference(_f16_rounded(state), cfg)}


@pytest.fixture(scope="module")
def default_voice(assets):
    """(tokens, mel (80, 2n), xvec) of the stored default voice, read from the npz the converter stored."""
    z = np.load(assets / "default_voice.npz")
    return z["tokens"], z["mel"].T.astype(np.float32), z["spk"].astype(np.float32)


@pytest.fixture(scope="module")
def bob_voice():
    """A second voice of 37 tokens (P = 74 prompt frames: not a multiple of the window)."""
    rng = np.random.default_rng(12)
    tokens = rng.integers(0, 6561, 37)
    mel = (-5 + 2 * rng.standard_normal((80, 74))).astype(np.float32)
    return tokens, mel, rng.standard_normal(192).astype(np.float32)


@pytest.fixture(scope="module")
def two_voice_omni(tiny_f32, bob_voice, tmp_path_factory):
    """The tiny F32 omni file with a second voice 'bob' added by the converter."""
    add_voices = _import_convert(".voice_gguf").add_voices
    d = tmp_path_factory.mktemp("two_voices")
    omni = d / "omni.gguf"
    shutil.copy(tiny_f32[1], omni)
    tokens, mel, xvec = bob_voice
    np.savez(d / "bob.npz", tokens=tokens.astype(np.int32), spk=xvec, mel=mel.T)
    add_voices(omni, [("bob", d / "bob.npz")], None, quiet=True)
    return omni


@pytest.fixture(scope="module")
def synths(tiny_f32, tiny_f16):
    # one thread: the tiny graphs are many small ops, and a spinning thread pool on a shared
    # machine costs more than the work
    return {"f32": _testing.SpeechSynthesizer(str(tiny_f32[1]), n_threads=1, seed=3, device=DEVICE),
            "f16": _testing.SpeechSynthesizer(str(tiny_f16[1]), n_threads=1, seed=3, device=DEVICE)}


@pytest.fixture(scope="module")
def noise():
    return np.random.default_rng(11).standard_normal((80, 1500)).astype(np.float32)


SPEECH = np.random.default_rng(7).integers(0, 6561, 140)
PUSHES = [SPEECH[:7], SPEECH[7:37], SPEECH[37:38], SPEECH[38:90], SPEECH[90:]]  # uneven arrivals


def reference_stream(flow_ref, hift_ref, noise, seed, voice, pushes):
    """TokenStreamer over Token2WavReference: (chunks released per push, final samples)."""
    t2w = Token2WavReference(flow_ref, hift_ref, noise, SourceRandomness(seed), n_timesteps=N_STEPS)
    t2w.set_stream_cache(*voice)
    ts = TokenStreamer(t2w)
    return [ts.push(p) for p in pushes], ts.finish()


def runtime_stream(s, noise, seed, voice_name, pushes):
    s.set_cfm_noise(noise)
    s.set_source_random(SourceRandomness(seed))
    s.stream_begin(voice_name)
    assert s.stream_active
    got = [s.stream_push(p) for p in pushes]
    final = s.stream_finish()
    assert not s.stream_active
    return got, final


def assert_same_stream(got, want, kind):
    got_chunks, got_final = got
    want_chunks, want_final = want
    assert [len(c) for c in got_chunks] == [len(c) for c in want_chunks]
    worst = 0.0
    for g_push, w_push in zip(got_chunks, want_chunks):
        for g, w in zip(g_push, w_push):
            assert g.shape == w.shape == (UNIT,)   # every non-final chunk is one unit
            worst = max(worst, error(g, w, kind))
    assert got_final.shape == want_final.shape
    worst = max(worst, error(got_final, want_final, kind))
    assert worst < TOL[kind], worst
    return worst


# ------------------------------------------------------------------------------------------------
# the 28 / 25 protocol
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_stream_matches_reference(synths, flow_ref, hift_refs, noise, default_voice, kind):
    """140 tokens in five uneven pushes: chunks released at the same pushes as the reference's
    TokenStreamer (5 windows, trimming active from the third), each 24000 samples and equal to the
    reference's within TOL; the final window (18 tokens + HiFT tail) too."""
    got = runtime_stream(synths[kind], noise, 21, "", PUSHES)
    want = reference_stream(flow_ref, hift_refs[kind], noise, 21, default_voice, PUSHES)
    assert [len(c) for c in want[0]] == [0, 1, 0, 2, 2]
    assert want[1].shape == ((2 * 18 + 8) * 480,)   # the last 18 tokens' frames + the 8 cached ones
    assert_same_stream(got, want, kind)
    assert np.all(got[0][1][0][:CACHE] == 0)


def pieces_stream(omni, noise, seed, pushes):
    """The protocol driven here over the runtime's separately tested pieces (_testing.Flow windows,
    _testing.HiftVocoder.stream): TokenStreamer's buffer rule restated, same injected randomness."""
    flow = _testing.Flow(str(omni), n_threads=1, device=DEVICE)
    hift = _testing.HiftVocoder(str(omni), n_threads=1, device=DEVICE)
    rnd = SourceRandomness(seed)
    flow.set_noise(noise)
    flow.stream_start()
    hift.reset_stream()

    def window(tokens, last):
        mel = flow.stream_chunk(tokens, last_chunk=last)
        phases, nz = rnd(hift.stream_pass_samples(mel.shape[1]))
        return hift.stream(mel, last, phases, nz)

    buf, out = [SILENCE_TOKEN] * 3, []
    for p in pushes:
        buf += [int(t) for t in p]
        out.append([])
        while len(buf) >= 28:
            out[-1].append(window(buf[:28], False))
            buf = buf[25:]
    return out, window(buf, True)


def test_f16_stream_is_its_pieces_and_near_the_reference(synths, tiny_f16, flow_ref, hift_refs, noise, default_voice):
    got = runtime_stream(synths["f16"], noise, 21, "", PUSHES)
    pieces = pieces_stream(tiny_f16[1], noise, 21, PUSHES)
    for g_push, p_push in zip(got[0], pieces[0]):
        assert len(g_push) == len(p_push)
        for g, p in zip(g_push, p_push):
            assert np.array_equal(g, p)
    assert np.array_equal(got[1], pieces[1])
    # the RMS bound used for F16 still tells a misplaced window apart: neighbouring chunks differ
    # by an RMS error of order 1
    chunks = [c for p in got[0] for c in p]
    assert min(rms_rel(a, b) for a, b in zip(chunks[1:], chunks[:-1])) > 0.5


def test_restart_repeats_the_first_utterance(tiny_f32, noise):
    """After finish, begin() restores the voice's primed caches instead of running the prompt again:
    with the same noise and source randomness the second utterance equals the first sample for
    sample, and the voice was set up once."""
    s = _testing.SpeechSynthesizer(str(tiny_f32[1]), n_threads=1, seed=3, device=DEVICE)
    assert s.voice_setups == 0
    first = runtime_stream(s, noise, 5, "", PUSHES)      # primed by running the prompt
    assert s.voice_setups == 1
    second = runtime_stream(s, noise, 5, "", PUSHES)     # primed from the snapshot
    assert s.voice_setups == 1
    for a, b in zip(first[0], second[0]):
        for x, y in zip(a, b):
            assert np.array_equal(x, y)
    assert np.array_equal(first[1], second[1])


def test_restart_mid_utterance_and_new_noise(tiny_f32, flow_ref, hift_refs, noise, default_voice):
    """begin() during an utterance abandons it; the next utterance still matches the reference. A new
    noise buffer invalidates the primed caches (they hold the prompt's CFM pass): the voice is set
    up again and the stream follows the reference with the new noise."""
    s = _testing.SpeechSynthesizer(str(tiny_f32[1]), n_threads=1, seed=3, device=DEVICE)
    s.set_cfm_noise(noise)
    s.set_source_random(SourceRandomness(99))
    s.stream_begin()
    s.stream_push(SPEECH[:60])           # two windows into the caches, then abandoned
    assert s.voice_setups == 1
    got = runtime_stream(s, noise, 8, "", PUSHES)
    assert s.voice_setups == 1
    assert_same_stream(got, reference_stream(flow_ref, hift_refs["f32"], noise, 8, default_voice, PUSHES), "f32")
    noise2 = np.random.default_rng(12).standard_normal((80, 1500)).astype(np.float32)
    got = runtime_stream(s, noise2, 8, "", PUSHES)
    assert s.voice_setups == 2
    assert_same_stream(got, reference_stream(flow_ref, hift_refs["f32"], noise2, 8, default_voice, PUSHES),
                       "f32")


def test_two_voices(two_voice_omni, flow_ref, hift_refs, noise, default_voice, bob_voice):
    """Each voice streams with its own prompt caches; switching back and forth sets each up once."""
    s = _testing.SpeechSynthesizer(str(two_voice_omni), n_threads=1, seed=3, device=DEVICE)
    assert s.voice_names == ["default", "bob"]
    ref = hift_refs["f32"]
    for name, voice in (("bob", bob_voice), ("default", default_voice), ("bob", bob_voice)):
        got = runtime_stream(s, noise, 4, name, PUSHES)
        assert_same_stream(got, reference_stream(flow_ref, ref, noise, 4, voice, PUSHES), "f32")
    assert s.voice_setups == 2
    # the voices really differ: bob's stream is not the default's
    a = runtime_stream(s, noise, 4, "bob", PUSHES)[0][1][0]
    b = runtime_stream(s, noise, 4, "default", PUSHES)[0][1][0]
    assert rel(a, b) > 0.1


# ------------------------------------------------------------------------------------------------
# duplex units (spec §6.3; rule of the official demo, see csrc/token2wav/speech_stream.cpp)
# ------------------------------------------------------------------------------------------------

class DuplexReference:
    """The demo's per-unit Token2Wav driver over the reference: a base copy of the primed caches,
    forced-flush windows of min(28, len) tokens while >= 3 + 5 are buffered (stride min(25, len - 3)),
    the rest with last_chunk at turn end followed by a reset to the base and [4218] x 3; a non-final
    unit shorter than one unit is left-padded with zeros (no chunk at all: one unit of silence)."""

    def __init__(self, t2w, voice):
        self.t2w = t2w
        t2w.set_stream_cache(*voice)
        self.base = copy.deepcopy((t2w.cache, t2w.hift_cache))
        self.buffer = [SILENCE_TOKEN] * 3

    def unit(self, tokens, turn_end):
        self.buffer += [int(t) for t in tokens]
        chunks = []
        while len(self.buffer) >= 8:
            k = min(28, len(self.buffer))
            chunks.append(self.t2w.stream(self.buffer[:k]))
            self.buffer = self.buffer[min(25, k - 3):]
        if turn_end and self.buffer:
            chunks.append(self.t2w.stream(self.buffer, last_chunk=True))
            self.buffer = []
        wave = np.concatenate(chunks) if chunks else np.zeros(UNIT, np.float32)
        if not turn_end and wave.size < UNIT:
            wave = np.concatenate([np.zeros(UNIT - wave.size, wave.dtype), wave])
        if turn_end:
            self.t2w.cache, self.t2w.hift_cache = copy.deepcopy(self.base)
            self.buffer = [SILENCE_TOKEN] * 3
        return wave


# (tokens in the unit, turn end): a short turn start (a 10-token window), full units, a unit
# releasing two windows (28 + 11 tokens: longer than one unit), a turn end, and a second turn
# starting from the reset caches
DUPLEX_UNITS = [(7, False), (25, False), (33, False), (26, False), (10, True), (25, False), (3, True)]


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_duplex_units_match_reference(synths, flow_ref, hift_refs, noise, default_voice, kind):
    s = synths[kind]
    s.set_cfm_noise(noise)
    s.set_source_random(SourceRandomness(17))
    s.stream_begin("")
    t2w = Token2WavReference(flow_ref, hift_refs[kind], noise, SourceRandomness(17), n_timesteps=N_STEPS)
    ref = DuplexReference(t2w, default_voice)
    rng = np.random.default_rng(23)
    lengths = []
    worst = 0.0
    for n, turn_end in DUPLEX_UNITS:
        tokens = rng.integers(0, 6561, n)
        want = ref.unit(tokens, turn_end)
        got = s.stream_push_duplex(tokens, turn_end=turn_end)
        assert got.shape == want.shape
        worst = max(worst, error(got, want, kind))
        lengths.append(got.size)
        assert s.stream_active                     # a turn end resets, it does not end the session
    assert worst < TOL[kind], worst
    # 10-token window (14 frames) padded to a unit; 28 + 11 tokens -> 50 + 16 frames; turn end:
    # 14-token window (22 frames) + final 3 tokens (6 frames + 8 cached); second turn: a full
    # window, then the final 6 tokens (12 frames + 8 cached)
    assert lengths == [UNIT, UNIT, UNIT + 16 * 480, UNIT, (22 + 14) * 480, UNIT, (12 + 8) * 480]
    assert s.buffered_tokens == 3
    s.stream_finish()


def test_flush_turn_start_and_regular_duplex_rule(synths, flow_ref, hift_refs, noise, default_voice):
    """stream_flush_turn_start streams what is buffered in windows down to 8 tokens; with
    force_flush=False a duplex unit follows the regular 28/25 rule (nothing below 28 tokens: one
    unit of silence)."""
    s = synths["f32"]
    s.set_cfm_noise(noise)
    s.set_source_random(SourceRandomness(31))
    s.stream_begin("")
    t2w = Token2WavReference(flow_ref, hift_refs["f32"], noise, SourceRandomness(31), n_timesteps=N_STEPS)
    t2w.set_stream_cache(*default_voice)
    tok = [int(t) for t in SPEECH[:20]]
    assert s.stream_push(tok) == []              # 23 buffered < 28
    got = s.stream_flush_turn_start()
    buf = [SILENCE_TOKEN] * 3 + tok
    want = t2w.stream(buf[:23])
    assert len(got) == 1 and got[0].shape == want.shape == (40 * 480,)
    assert rel(got[0], want) < TOL_MAX_F32
    assert s.buffered_tokens == 3 and s.stream_flush_turn_start() == []
    buf = buf[20:]
    silence = s.stream_push_duplex(SPEECH[20:30], force_flush=False)   # 13 buffered: no window
    assert np.array_equal(silence, np.zeros(UNIT, np.float32))
    got = s.stream_push_duplex(SPEECH[30:50], force_flush=False)      # 33 buffered: one window
    buf += [int(t) for t in SPEECH[20:50]]
    assert rel(got, t2w.stream(buf[:28])) < TOL_MAX_F32
    assert s.buffered_tokens == 8
    s.stream_finish()


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------

def test_bad_inputs(synths, noise):
    s = synths["f32"]
    s.set_cfm_noise(noise)
    s.set_source_random(None)
    if s.stream_active:
        s.stream_finish()
    for call in (lambda: s.stream_push([1, 2]), lambda: s.stream_finish(), lambda: s.stream_flush_turn_start(),
                 lambda: s.stream_push_duplex([1, 2])):
        with pytest.raises(MinicpmoError, match="no speech stream is active"):
            call()
    with pytest.raises(MinicpmoError, match="no voice named 'nobody'"):
        s.stream_begin("nobody")
    assert not s.stream_active
    s.stream_begin()
    for bad in ([0, 6561, 5], [-1], [2 ** 32 + 5]):
        with pytest.raises(MinicpmoError, match="not a speech token"):
            s.stream_push(bad)
        with pytest.raises(MinicpmoError, match="not a speech token"):
            s.stream_push_duplex(bad)
    # the refused pushes left the stream as it was
    assert s.stream_active and s.buffered_tokens == 3
    assert len(s.stream_push(list(range(25)))) == 1
    s.stream_finish()
    with pytest.raises(MinicpmoError, match="no speech stream is active"):
        s.stream_push([1])
    # injected randomness of the wrong shape: refused, and the half-done window ends the utterance
    with pytest.raises(MinicpmoError, match="callable"):
        s.set_source_random(3)
    s.set_source_random(lambda n: (np.zeros(9, np.float32), np.zeros((n - 1, 9), np.float32)))
    s.stream_begin()
    with pytest.raises(MinicpmoError, match=r"noise must have shape \(24000, 9\)"):
        s.stream_push(list(range(25)))
    assert not s.stream_active
    with pytest.raises(MinicpmoError, match="float32"):
        s.set_cfm_noise(noise.astype(np.float64))
    with pytest.raises(MinicpmoError, match=r"noise must have shape \(80, N\)"):
        s.set_cfm_noise(noise[:79])
    # still usable
    s.set_source_random(None)
    s.stream_begin()
    assert [c.shape for c in s.stream_push(list(range(30)))] == [(UNIT,)]
    assert s.stream_finish().size > 0
