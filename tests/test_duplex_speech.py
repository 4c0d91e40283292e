"""Duplex speech (spec §6.3) on the tiny model: each speaking unit's tokens and LLM hidden rows go
through the speech decoder's duplex layout and streaming Token2Wav on the session's speech thread.

References:
- speech tokens: the numpy DuplexTTS (tests/reference/tts.py) on the unit's returned speakable
  ids and hidden rows, with the same uniform draws (a Python mt19937_64 with the duplex seed,
  u = (x >> 11) * 2^-53, as the runtime draws them);
- audio: streaming Token2Wav of a standalone synthesizer seeded with the duplex seed (a duplex
  conversation reseeds the session's vocoder with it, whatever the session did before) over those
  tokens, one duplex unit at a time (that component is checked sample for sample against the
  numpy TokenStreamer in test_speech_stream_runtime.py); a listening unit is 1 s of silence.
Also: audio handed over without waiting (synthesized while the next unit is prefilled) equals the
waited-for audio; an interrupt closes the turn and restarts speech; two duplex sessions run at
once in two threads give what each gives alone."""

from __future__ import annotations

import collections
import os
import threading

import numpy as np
import pytest

from minicpmo_cpp import MinicpmoError, OmniSession, _testing

from reference.tts import DuplexTTS, TTSReference
from tts_choices import follow_runtime
from backend import DEVICE

SR = 16000
UNIT = 24000  # output samples per unit (25 speech tokens)
LISTEN, SPEAK = 151705, 151706
TURN_EOS, CHUNK_EOS = 151717, 151718
PREFIX = "<|im_start|>system\nStreaming Omni Conversation.\n<|audio_start|>"
SUFFIX = "<|audio_end|><|im_end|>"
SEED = 11
# F32 model: the TTS picks equal tokens (argmax / inverse CDF of nearly equal logits); audio from the
# same code path over the same tokens in a different process object: float32 rounding only
AUDIO_ATOL = 1e-5
# speech tokens: the F32 runtime's logits vs the float64 reference agree to 1e-4 of the logit scale
# (test_tts_runtime.py); a token may differ from the reference's own choice only by a near tie within
# that tolerance (tests/tts_choices.py), at most once per test
TTS_REL_TOL = 1e-4


class Mt19937_64:
    """std::mt19937_64 (the generator the runtime seeds for duplex speech sampling)."""

    def __init__(self, seed: int):
        self.mt = [0] * 312
        self.mt[0] = seed & 0xFFFFFFFFFFFFFFFF
        for i in range(1, 312):
            prev = self.mt[i - 1]
            self.mt[i] = (6364136223846793005 * (prev ^ (prev >> 62)) + i) & 0xFFFFFFFFFFFFFFFF
        self.i = 312

    def _twist(self):
        for k in range(312):
            y = (self.mt[k] & 0xFFFFFFFF80000000) | (self.mt[(k + 1) % 312] & 0x7FFFFFFF)
            v = self.mt[(k + 156) % 312] ^ (y >> 1)
            if y & 1:
                v ^= 0xB5026F5AA96619E9
            self.mt[k] = v
        self.i = 0

    def __call__(self) -> int:
        if self.i >= 312:
            self._twist()
        y = self.mt[self.i]
        self.i += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & 0xFFFFFFFFFFFFFFFF

    def uniform(self) -> float:
        return (self() >> 11) * 2.0 ** -53


def test_mt19937_64_matches_the_standard():
    g = Mt19937_64(5489)  # the C++ standard: the 10000th value of a default-seeded mt19937_64
    for _ in range(9999):
        g()
    assert g() == 9981545732273789042


def _pcm(seed: int, n: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def tref(tiny_state):
    sd, cfg = tiny_state
    return TTSReference(sd, cfg)


def _omni(tiny_f32) -> OmniSession:
    return OmniSession(str(tiny_f32[0]), n_threads=2, n_ctx=4096, seed=0, kv_cache_type="f32")


def _script(ids):
    """A conversation of 6 units: listen, a turn start, a unit without text, a mid-turn unit, the
    turn's end (the unit's last fed token is <|turn_eos|>: the reference's end_of_turn), listen."""
    a, b, c, d = ids
    return [
        (True, None),
        (False, [SPEAK, a, b, c, CHUNK_EOS]),
        (False, [SPEAK, CHUNK_EOS]),
        (False, [SPEAK, d, a, CHUNK_EOS]),
        (False, [SPEAK, b, c, TURN_EOS, CHUNK_EOS]),
        (True, None),
    ]


def _run(omni, ids, wait_audio=True):
    dx = omni.as_duplex(seed=SEED)
    assert dx.generate_audio
    dx.prepare(PREFIX, SUFFIX)
    out = []
    pending = None
    for k, (listen, script) in enumerate(_script(ids)):
        n = 16560 if k == 0 else SR
        dx.streaming_prefill(audio_waveform=_pcm(k, n))
        if pending is not None:
            # the previous unit's speech was made while this unit was prefilled
            unit, audio, tokens = dx.take_audio()
            assert unit == pending["unit"]
            pending["audio_waveform"], pending["speech_token_ids"] = audio, tokens
            pending = None
        r = dx.streaming_generate(decode_mode="greedy", force_listen=listen, _scripted=script, wait_audio=wait_audio)
        if not wait_audio:
            assert r["audio_waveform"] is None
            pending = r
        out.append(r)
    if pending is not None:
        unit, audio, tokens = dx.take_audio()
        pending["audio_waveform"], pending["speech_token_ids"] = audio, tokens
    return dx, out


def test_duplex_units_speak_as_the_references(tiny_f32, tref, monkeypatch):
    omni = _omni(tiny_f32)
    ids = omni.tokenize("hello there friend now")[:4]
    _, units = _run(omni, ids)

    tts = DuplexTTS(tref)
    rng = Mt19937_64(SEED)
    synth = _testing.SpeechSynthesizer(str(tiny_f32[1]), n_threads=2, device=DEVICE, seed=SEED)
    synth.stream_begin("")
    ties = []
    for r, (listen, _) in zip(units, _script(ids)):
        audio = r["audio_waveform"]
        assert audio.dtype == np.float32
        if r["is_listen"]:
            assert listen
            np.testing.assert_array_equal(audio, np.zeros(UNIT, np.float32))
            assert r["speech_token_ids"] == []
            continue
        ties.append(follow_runtime(monkeypatch, r["speech_token_ids"], TTS_REL_TOL))
        want = tts.unit(r["speak_token_ids"], r["speak_hidden"].astype(np.float64), r["end_of_turn"],
                        draws=rng.uniform)
        assert r["speech_token_ids"] == want.tokens
        want_audio = synth.stream_push_duplex(want.tokens, turn_end=r["end_of_turn"])
        assert audio.shape == want_audio.shape
        if not r["end_of_turn"]:
            assert audio.size >= UNIT  # left-padded to one unit, longer when several windows came out
        np.testing.assert_allclose(audio, want_audio, rtol=0, atol=AUDIO_ATOL)
    ends = [r["end_of_turn"] for r in units]
    assert ends == [False, False, False, False, True, False]
    assert sum(t.not_own for t in ties) <= 1  # see TTS_REL_TOL


def test_audio_made_while_the_next_unit_is_prefilled_is_the_same(tiny_f32):
    omni = _omni(tiny_f32)
    ids = omni.tokenize("hello there friend now")[:4]
    _, waited = _run(omni, ids, wait_audio=True)
    _, overlapped = _run(_omni(tiny_f32), ids, wait_audio=False)
    for a, b in zip(waited, overlapped):
        assert a["text"] == b["text"] and a["speech_token_ids"] == b["speech_token_ids"]
        np.testing.assert_array_equal(a["audio_waveform"], b["audio_waveform"])


def test_interrupt_closes_the_turn_and_restarts_speech(tiny_f32, tref, monkeypatch):
    omni = _omni(tiny_f32)
    a, b, c, d = omni.tokenize("hello there friend now")[:4]
    dx = omni.as_duplex(seed=SEED)
    dx.prepare(PREFIX, SUFFIX)
    dx.streaming_prefill(audio_waveform=_pcm(0, 16560))
    # unit 1's speech is waited for, so what it drew from the generators is fixed (an interrupt
    # while a unit is still queued drops it unsynthesized: what is drawn then depends on timing)
    r1 = dx.streaming_generate(decode_mode="greedy", _scripted=[SPEAK, a, b, CHUNK_EOS])
    dx.interrupt()  # barge-in mid-turn
    assert dx.take_audio(wait=False) is None
    assert dx.kv_tokens[-1] == TURN_EOS  # the speaking turn is closed in the cache
    dx.streaming_prefill(audio_waveform=_pcm(1, SR))
    r2 = dx.streaming_generate(decode_mode="greedy", _scripted=[SPEAK, c, d, CHUNK_EOS])
    # unit 2 starts a new turn: the speech decoder starts empty (EOS allowed) and Token2Wav restarts
    # from the voice's primed state; the draws continue where unit 1's speech left them
    rng = Mt19937_64(SEED)
    tts = DuplexTTS(tref)
    tts.unit(r1["speak_token_ids"], r1["speak_hidden"].astype(np.float64), False, draws=rng.uniform)
    tts.reset_turn()
    tie = follow_runtime(monkeypatch, r2["speech_token_ids"], TTS_REL_TOL)
    want = tts.unit(r2["speak_token_ids"], r2["speak_hidden"].astype(np.float64), False, draws=rng.uniform)
    assert r2["speech_token_ids"] == want.tokens and tie.not_own <= 1  # see TTS_REL_TOL
    monkeypatch.undo()  # unit 1's tokens below are the reference's own choices
    synth = _testing.SpeechSynthesizer(str(tiny_f32[1]), n_threads=2, device=DEVICE, seed=SEED)
    synth.stream_begin("")
    # unit 1 drew its HiFT source noise from the shared generator
    synth.stream_push_duplex(_unit1_tokens(tref, r1), turn_end=False)
    synth.stream_begin("")
    np.testing.assert_allclose(r2["audio_waveform"], synth.stream_push_duplex(want.tokens, turn_end=False),
                               rtol=0, atol=AUDIO_ATOL)


def test_interrupt_drops_queued_speech(tiny_f32):
    omni = _omni(tiny_f32)
    a, b = omni.tokenize("hello there")[:2]
    dx = omni.as_duplex(seed=SEED)
    dx.prepare(PREFIX, SUFFIX)
    dx.streaming_prefill(audio_waveform=_pcm(0, 16560))
    dx.streaming_generate(decode_mode="greedy", _scripted=[SPEAK, a, b, CHUNK_EOS], wait_audio=False)
    dx.interrupt()  # the unit may be queued or in the making: either way nothing comes out
    assert dx.take_audio(wait=False) is None
    dx.streaming_prefill(audio_waveform=_pcm(1, SR))
    r = dx.streaming_generate(decode_mode="greedy", _scripted=[SPEAK, b, a, CHUNK_EOS])
    assert r["unit"] == 2 and r["audio_waveform"].size >= UNIT
    assert np.all(np.isfinite(r["audio_waveform"]))


def _thread_name(tid) -> str | None:
    try:
        with open(f"/proc/self/task/{tid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None  # it ended meanwhile


def _thread_names() -> collections.Counter:
    return collections.Counter(n for n in map(_thread_name, os.listdir("/proc/self/task")) if n is not None)


def test_a_unit_leaves_no_idle_openmp_workers_behind(tiny_f32):
    """Each stage of a unit (LLM, speech decoder, vocoder) runs on its own thread with an OpenMP team;
    a stage gives its team's workers back when its part is done (core/openmp_workers.h), so a
    waited-for unit leaves the two speech threads alone. libgomp counts idle workers too: with more
    than the CPUs it stops spinning at barriers, and every stage ran ~1.5x slower on 2 cores.
    The speech threads are named; the workers they start inherit the name (Linux)."""
    omni = _omni(tiny_f32)
    ids = omni.tokenize("hello there friend now")[:4]
    main_name = _thread_name(threading.get_native_id())
    before = _thread_names()
    dx = omni.as_duplex(seed=SEED)
    dx.prepare(PREFIX, SUFFIX)
    spoke = 0
    for k, (listen, script) in enumerate(_script(ids)):
        dx.streaming_prefill(audio_waveform=_pcm(k, 16560 if k == 0 else SR))
        r = dx.streaming_generate(decode_mode="greedy", force_listen=listen, _scripted=script, wait_audio=True)
        spoke += r["audio_waveform"] is not None and not r["is_listen"]
        names = _thread_names()
        # the threads themselves, without the worker each started for its 2-thread team
        assert names["minicpmo-tts"] == 1 and names["minicpmo-voc"] == 1, (k, names)
        # the LLM's thread handed its worker back before the speech threads started
        assert names[main_name] <= before[main_name], (k, names, before)
    assert spoke == 4
    dx.close()
    assert _thread_names()["minicpmo-voc"] == 0


@pytest.mark.parametrize("team", ["all cores", "one thread"])
def test_stages_compute_in_turns_when_the_cores_cannot_hold_their_teams(tiny_f32, team):
    """Overlapped units (wait_audio=False) let the vocoder of unit k run while unit k+1 prefills. The
    LLM stage (each prefill and each decision loop), the speech decoder and the vocoder (each speaking
    unit) compute in turns (session/stage_turns.h): as many at once as the cores hold teams of
    n_threads, so with teams of all cores one stage at a time (stages that share the cores only slow
    each other down), with 1-thread teams up to one per core. The audio is the waited-for run's."""
    cores = os.cpu_count()
    n_threads = cores if team == "all cores" else 1
    omni = OmniSession(str(tiny_f32[0]), n_threads=n_threads, n_ctx=4096, seed=0, kv_cache_type="f32")
    ids = omni.tokenize("hello there friend now")[:4]
    dx, overlapped = _run(omni, ids, wait_audio=False)
    turns = _testing.hooks(dx).stage_turns
    assert turns["at_once"] == max(1, cores // n_threads)
    # 6 prefills + 6 decision loops on the caller's thread, 4 speaking units in each speech thread
    assert turns["taken"] == 6 + 6 + 4 + 4
    assert 1 <= turns["most_at_once"] <= turns["at_once"]
    same = OmniSession(str(tiny_f32[0]), n_threads=n_threads, n_ctx=4096, seed=0, kv_cache_type="f32")
    _, waited = _run(same, ids, wait_audio=True)
    for a, b in zip(waited, overlapped):
        assert a["speech_token_ids"] == b["speech_token_ids"]
        np.testing.assert_array_equal(a["audio_waveform"], b["audio_waveform"])


def test_audio_not_waited_for_stays_for_take_audio(tiny_f32):
    """A unit generated without waiting keeps its audio for take_audio() when a later unit waits."""
    omni = _omni(tiny_f32)
    a, b = omni.tokenize("hello there")[:2]
    dx = omni.as_duplex(seed=SEED)
    dx.prepare(PREFIX, SUFFIX)
    dx.streaming_prefill(audio_waveform=_pcm(0, 16560))
    r1 = dx.streaming_generate(decode_mode="greedy", _scripted=[SPEAK, a, b, CHUNK_EOS], wait_audio=False)
    dx.streaming_prefill(audio_waveform=_pcm(1, SR))
    r2 = dx.streaming_generate(decode_mode="greedy", force_listen=True)
    np.testing.assert_array_equal(r2["audio_waveform"], np.zeros(UNIT, np.float32))
    unit, audio, tokens = dx.take_audio()
    assert unit == r1["unit"] and audio.size >= UNIT and 1 <= len(tokens) <= 25
    assert dx.take_audio(wait=False) is None


def _unit1_tokens(tref, r1):
    rng = Mt19937_64(SEED)
    return DuplexTTS(tref).unit(r1["speak_token_ids"], r1["speak_hidden"].astype(np.float64), False,
                                draws=rng.uniform).tokens


def test_two_duplex_sessions_in_two_threads(tiny_f32):
    ids = _omni(tiny_f32).tokenize("hello there friend now")[:4]
    alone = [_run(_omni(tiny_f32), ids)[1] for _ in range(2)]
    results = [None, None]

    def work(i):
        results[i] = _run(_omni(tiny_f32), ids)[1]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    for got, want in zip(results, alone):
        assert got is not None
        for a, b in zip(got, want):
            assert a["decided_token_ids"] == b["decided_token_ids"]
            np.testing.assert_array_equal(a["audio_waveform"], b["audio_waveform"])


def test_speech_settings_and_bad_calls(tiny_f32):
    omni = _omni(tiny_f32)
    with pytest.raises(MinicpmoError, match="nobody"):
        omni.as_duplex(voice="nobody")
    dx = omni.as_duplex(generate_audio=False)
    dx.prepare(PREFIX, SUFFIX)
    with pytest.raises(MinicpmoError, match="speech is off"):
        dx.take_audio()
    dx.streaming_prefill(audio_waveform=_pcm(0, 16560))
    r = dx.streaming_generate(force_listen=True)
    assert r["audio_waveform"] is None
    with pytest.raises(MinicpmoError, match="generate it first"):
        dx.streaming_prefill(audio_waveform=_pcm(1, SR))
        dx.interrupt()
    # a session dropped with speech still in the making joins its thread
    dx2 = _omni(tiny_f32).as_duplex(seed=1)
    dx2.prepare(PREFIX, SUFFIX)
    dx2.streaming_prefill(audio_waveform=_pcm(0, 16560))
    dx2.streaming_generate(_scripted=[SPEAK, 100, 101, CHUNK_EOS], wait_audio=False)
    del dx2


def test_a_conversation_speaks_the_same_whatever_the_session_did_before(tiny_f32):
    """The duplex seed fixes the vocoder's noise too: a second conversation with the same seed on a
    session that already spoke gives the first one's audio sample for sample."""
    omni = _omni(tiny_f32)
    ids = omni.tokenize("hello there friend now")[:4]
    dx, first = _run(omni, ids)
    dx.close()  # its speech threads end; the session goes on
    _, again = _run(omni, ids)
    assert any(not r["is_listen"] for r in first)
    for a, b in zip(first, again):
        assert a["speech_token_ids"] == b["speech_token_ids"]
        np.testing.assert_array_equal(a["audio_waveform"], b["audio_waveform"])
