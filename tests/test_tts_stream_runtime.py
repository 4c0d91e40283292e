"""The runtime's streaming-simplex and duplex speech-token layouts (csrc/tts/tts_stream.h) against
the numpy reference classes StreamingTTS / DuplexTTS (tests/reference/tts.py) on the tiny model's own
weights: released blocks, kept tokens, every sample, the next chunk's/unit's position and the raw logits
of every step, greedy and with injected uniform draws (one per step, also on discarded samples).

F32: token for token with the reference driven by the runtime's samples, each of which must be the
reference's own choice or a near tie within the F32 tolerance (tests/tts_choices.py: at most one
such tie per test, measured none). F16: the matrices are rounded, so a near tie
may pick another token; there the reference is driven with the runtime's samples (its `choose` is
replaced) and the logits of every step must agree within the F16 tolerance, the greedy picks must be
maxima of the reference's processed logits within that tolerance, and blocks/positions must match."""

from __future__ import annotations

import numpy as np
import pytest

import reference.tts as tts_ref
from minicpmo_cpp import MinicpmoError
from minicpmo_cpp._testing import TtsDuplexStream, TtsSimplexStream

from reference.tts import DuplexTTS, StreamingTTS, TTSSampling
from relative_error import rel
from tts_choices import follow_runtime
from tts_inputs import text_chunk
from backend import tol

# F32 model vs float64 numpy: summation order and float32 rounding (~1e-6 measured); 1e-4 relative
# leaves room for the longer sums. F16 matrices round every weight to 11 bits: 2e-2 relative.
# tol(): the test backend's float floor where larger (tests/backend.py; the CPU keeps these)
TOL = {"f32": tol(1e-4), "f16": tol(2e-2)}
EOS = 6561
# a draw this close to 1 picks the last class with p > 0, i.e. EOS (index 6561) wherever EOS is neither
# masked nor cut by top-p/top-k: p(EOS) on the tiny model is far above 1e-12 of the total
U_EOS = 1.0 - 1e-12
NO_WARPERS = TTSSampling(top_p=None, top_k=None)  # = runtime top_p 1.0 / top_k 0


def _released(res):
    return [(list(toks), bool(last)) for toks, last in res.released]


def _check_simplex_call(st, ref, blocks, res, kind):
    """One feed_text call of runtime stream `st` vs the reference stream `ref` and its result `res`."""
    assert blocks == _released(res)
    logits, sampled = st.last_steps
    assert sampled == res.sampled
    assert rel(logits, np.stack(res.step_logits)) < TOL[kind]
    assert st.generated == ref.all_generated
    assert st.next_position == ref.text_start_pos
    assert st.text_finished == ref.text_finished


# ------------------------------------------------------------------------------------------------
# streaming simplex
# ------------------------------------------------------------------------------------------------

def test_simplex_greedy_matches_reference(tiny_sessions, tiny_tts_ref, monkeypatch):
    """Four chunks (the last one final and shorter); every chunk reaches the per-chunk limit of 30,
    so each leaves a one-position gap (the last sample is kept but never fed), blocks of 25 go out
    as they fill, and the final chunk's rest stays for flush()."""
    s = tiny_sessions["f32"]
    st = TtsSimplexStream(s, max_new_per_chunk=30, keep_steps=True)
    ref = StreamingTTS(tiny_tts_ref, max_new_tokens_per_chunk=30, keep_logits=True)
    ties = []
    for k, n in enumerate((10, 10, 10, 4)):
        ids, hidden = text_chunk(n, 10 + k)
        final = k == 3
        blocks = st.feed_text(ids.tolist(), hidden, final)
        ties.append(follow_runtime(monkeypatch, st.last_steps[1], TOL["f32"]))
        res = ref.feed_text_chunk(ids, hidden.astype(np.float64), final)
        _check_simplex_call(st, ref, blocks, res, "f32")
    assert sum(t.not_own for t in ties) <= 1  # F32 near ties are rare (tests/tts_choices.py)
    # the scenario: every chunk at its limit, one never-fed sample (a position gap) per chunk
    assert len(ref.all_generated) == 120 and ref.cache.n == ref.text_start_pos - 4
    rest = st.flush()  # the final chunk ended at the limit, not with EOS: its rest waits for flush
    assert rest == ref.flush() and len(rest) == 120 % 25
    assert st.flush() == []  # flushed once


def test_simplex_sampled_matches_reference(tiny_sessions, tiny_tts_ref, monkeypatch):
    """The model's stream sampling (penalty over the whole turn, top-p then top-k, the very first
    sample plain) with injected draws: samples, blocks and positions token for token."""
    s = tiny_sessions["f32"]
    st = TtsSimplexStream(s, max_new_per_chunk=40, keep_steps=True)
    ref = StreamingTTS(tiny_tts_ref, max_new_tokens_per_chunk=40, keep_logits=True)
    rng = np.random.default_rng(20)
    ties = []
    for k, n in enumerate((10, 10, 7)):
        ids, hidden = text_chunk(n, 30 + k)
        draws = rng.random(40).tolist()
        final = k == 2
        blocks = st.feed_text(ids.tolist(), hidden, final, draws=draws)
        ties.append(follow_runtime(monkeypatch, st.last_steps[1], TOL["f32"]))
        res = ref.feed_text_chunk(ids, hidden.astype(np.float64), final, draws=draws)
        _check_simplex_call(st, ref, blocks, res, "f32")
    assert sum(t.not_own for t in ties) <= 1  # F32 near ties are rare (tests/tts_choices.py)
    assert len(set(ref.all_generated)) > 10  # sampling, not a constant
    assert st.flush() == ref.flush()
    assert all(0 <= t < EOS for t in st.generated)


def test_simplex_eos_paths_match_reference(tiny_sessions, tiny_tts_ref, monkeypatch):
    """EOS placed by the draws (warpers off so that EOS stays drawable): a first chunk whose plain
    first sample is EOS (nothing kept, the next chunk follows its audio_bos directly), a chunk ending
    with 5 unreleased tokens, a chunk whose EOS comes right after a full block (empty buffer: nothing
    released), a final chunk releasing the rest; then a stream whose final chunk ends on a block
    boundary releases an empty last block."""
    s = tiny_sessions["f32"]
    rng = np.random.default_rng(40)

    def draws(n_before_eos):
        # ordinary draws kept below 0.99 so that they do not reach EOS by themselves
        return (0.99 * rng.random(n_before_eos)).tolist() + [U_EOS]

    st = TtsSimplexStream(s, max_new_per_chunk=60, top_p=1.0, top_k=0, keep_steps=True)
    ref = StreamingTTS(tiny_tts_ref, sampling=NO_WARPERS, max_new_tokens_per_chunk=60, keep_logits=True)
    plan = [(10, 0, False), (10, 30, False), (10, 20, False), (6, 7, True)]
    ties = []
    for k, (n, before, final) in enumerate(plan):
        ids, hidden = text_chunk(n, 50 + k)
        d = draws(before)
        blocks = st.feed_text(ids.tolist(), hidden, final, draws=d)
        ties.append(follow_runtime(monkeypatch, st.last_steps[1], TOL["f32"]))
        res = ref.feed_text_chunk(ids, hidden.astype(np.float64), final, draws=d)
        _check_simplex_call(st, ref, blocks, res, "f32")
        assert res.finished and len(res.tokens) == before  # the scenario as planned
    assert [len(b) for b, _ in _released(res)] == [7] and _released(res)[0][1]
    assert len(st.generated) == 57 and st.flush() == []
    with pytest.raises(MinicpmoError, match="final text chunk"):
        st.feed_text([1, 2], np.zeros((2, 64), np.float32), True)

    st = TtsSimplexStream(s, top_p=1.0, top_k=0, keep_steps=True)
    ref = StreamingTTS(tiny_tts_ref, sampling=NO_WARPERS, keep_logits=True)
    ids, hidden = text_chunk(5, 60)
    d = draws(25)
    blocks = st.feed_text(ids.tolist(), hidden, True, draws=d)
    ties.append(follow_runtime(monkeypatch, st.last_steps[1], TOL["f32"]))
    res = ref.feed_text_chunk(ids, hidden.astype(np.float64), True, draws=d)
    _check_simplex_call(st, ref, blocks, res, "f32")
    assert [(len(b), last) for b, last in blocks] == [(25, False), (0, True)]
    assert sum(t.not_own for t in ties) <= 1  # F32 near ties are rare (tests/tts_choices.py)


def _forced_choices(monkeypatch, samples, tol, greedy):
    """Make the reference pick the runtime's samples in order; with `greedy`, each must be a maximum
    of the reference's processed logits within the tolerance (F16 rounding may break near ties)."""
    it = iter(samples)

    def choose(x, draw):
        s = next(it)
        if greedy:
            finite = x[np.isfinite(x)]
            assert x[s] >= np.max(x) - tol * np.max(np.abs(finite)), s
        else:
            assert np.isfinite(x[s])  # never a token the reference cut or masked
        return s

    monkeypatch.setattr(tts_ref, "choose", choose)


@pytest.mark.parametrize("draw_seed", [None, 70])
def test_simplex_f16_within_tolerance(tiny_sessions, tiny_tts_ref, monkeypatch, draw_seed):
    s = tiny_sessions["f16"]
    st = TtsSimplexStream(s, max_new_per_chunk=30, keep_steps=True)
    ref = StreamingTTS(tiny_tts_ref, max_new_tokens_per_chunk=30, keep_logits=True)
    rng = np.random.default_rng(draw_seed)
    for k, n in enumerate((10, 10, 5)):
        ids, hidden = text_chunk(n, 80 + k)
        d = None if draw_seed is None else rng.random(30).tolist()
        blocks = st.feed_text(ids.tolist(), hidden, k == 2, draws=d)
        _forced_choices(monkeypatch, st.last_steps[1], TOL["f16"], draw_seed is None)
        res = ref.feed_text_chunk(ids, hidden.astype(np.float64), k == 2)
        _check_simplex_call(st, ref, blocks, res, "f16")
    assert st.flush() == ref.flush()


# ------------------------------------------------------------------------------------------------
# duplex
# ------------------------------------------------------------------------------------------------

def _check_unit(du, ref, got, res, kind):
    tokens, finished = got
    assert tokens == res.tokens and finished == res.finished
    logits, sampled = du.last_steps
    assert sampled == res.sampled
    assert rel(logits, np.stack(res.step_logits)) < TOL[kind]
    assert du.next_position == ref.text_start_pos


# (text tokens, end_of_turn): a turn's first unit, a unit without speakable tokens, a mid-turn unit,
# the end-of-turn unit, then a new turn starting with an empty unit
DUPLEX_UNITS = [(5, False), (0, False), (8, False), (3, True), (0, False), (4, False)]


def _unit_text(n, seed):
    if n == 0:
        return [], None, None
    ids, hidden = text_chunk(n, seed)
    return ids.tolist(), hidden, hidden.astype(np.float64)


@pytest.mark.parametrize("sampled", [False, True])
def test_duplex_matches_reference(tiny_sessions, tiny_tts_ref, sampled, monkeypatch):
    s = tiny_sessions["f32"]
    du = TtsDuplexStream(s, keep_steps=True)
    ref = DuplexTTS(tiny_tts_ref, keep_logits=True)
    rng = np.random.default_rng(90)
    ties = []
    for k, (n, eot) in enumerate(DUPLEX_UNITS):
        ids, hidden, hidden64 = _unit_text(n, 100 + k)
        d = rng.random(26).tolist() if sampled else None
        got = du.unit(ids, hidden, eot, draws=d)
        ties.append(follow_runtime(monkeypatch, du.last_steps[1], TOL["f32"]))
        res = ref.unit(ids, hidden64, eot, draws=d)
        _check_unit(du, ref, got, res, "f32")
        assert len(res.tokens) == 25 and len(res.sampled) == 26  # no EOS here: the 26th sample discarded
    assert sum(t.not_own for t in ties) <= 1  # F32 near ties are rare (tests/tts_choices.py)
    assert du.next_position == ref.text_start_pos > 0


def test_duplex_eos_rules_match_reference(tiny_sessions, tiny_tts_ref, monkeypatch):
    """EOS drawn where allowed (a turn's first unit, the end-of-turn unit: fewer tokens, finished) and
    masked mid-turn (the same near-1 draw then gives a full unit); the turn end resets position 0."""
    s = tiny_sessions["f32"]
    du = TtsDuplexStream(s, keep_steps=True)
    ref = DuplexTTS(tiny_tts_ref, keep_logits=True)
    rng = np.random.default_rng(110)
    plan = [(4, False, 3, (3, True)), (6, False, 2, (25, False)), (0, True, 10, (10, True)), (2, False, 0, (0, True))]
    ties = []
    for k, (n, eot, eos_at, (n_tokens, finished)) in enumerate(plan):
        ids, hidden, hidden64 = _unit_text(n, 120 + k)
        d = (0.99 * rng.random(eos_at)).tolist() + [U_EOS] + (0.99 * rng.random(26)).tolist()
        got = du.unit(ids, hidden, eot, draws=d)
        ties.append(follow_runtime(monkeypatch, du.last_steps[1], TOL["f32"]))
        res = ref.unit(ids, hidden64, eot, draws=d)
        _check_unit(du, ref, got, res, "f32")
        assert (len(res.tokens), res.finished) == (n_tokens, finished)  # the scenario as planned
    assert sum(t.not_own for t in ties) <= 1  # F32 near ties are rare (tests/tts_choices.py)
    assert du.next_position == 3  # the new turn's first unit: [c c audio_bos] and an immediate EOS


@pytest.mark.parametrize("draw_seed", [None, 130])
def test_duplex_f16_within_tolerance(tiny_sessions, tiny_tts_ref, monkeypatch, draw_seed):
    s = tiny_sessions["f16"]
    du = TtsDuplexStream(s, keep_steps=True)
    ref = DuplexTTS(tiny_tts_ref, keep_logits=True)
    rng = np.random.default_rng(draw_seed)
    for k, (n, eot) in enumerate(DUPLEX_UNITS[:4]):
        ids, hidden, hidden64 = _unit_text(n, 140 + k)
        d = None if draw_seed is None else rng.random(26).tolist()
        got = du.unit(ids, hidden, eot, draws=d)
        _forced_choices(monkeypatch, du.last_steps[1], TOL["f16"], draw_seed is None)
        res = ref.unit(ids, hidden64, eot)
        _check_unit(du, ref, got, res, "f16")


# ------------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------------

def test_stream_bad_inputs(tiny_sessions):
    s = tiny_sessions["f32"]
    ids, hidden = text_chunk(3, 150)
    st = TtsSimplexStream(s, max_new_per_chunk=5)
    with pytest.raises(MinicpmoError, match="empty chunk"):
        st.feed_text([], np.zeros((0, 64), np.float32))
    with pytest.raises(MinicpmoError, match="outside"):
        st.feed_text([152064], hidden[:1])
    with pytest.raises(MinicpmoError, match="shape"):
        st.feed_text(ids.tolist(), np.zeros((3, 7), np.float32))
    with pytest.raises(MinicpmoError, match="float32"):
        st.feed_text(ids.tolist(), hidden.astype(np.float64))
    with pytest.raises(MinicpmoError, match="draws"):
        st.feed_text(ids.tolist(), hidden, draws=[0.5])
    with pytest.raises(MinicpmoError, match="failed earlier"):  # the cache holds a half-fed chunk now
        st.feed_text(ids.tolist(), hidden)
    st = TtsSimplexStream(s, max_new_per_chunk=5)
    with pytest.raises(MinicpmoError, match=r"\[0, 1\)"):
        st.feed_text(ids.tolist(), hidden, draws=[1.5] * 5)
    with pytest.raises(MinicpmoError, match="block"):
        TtsSimplexStream(s, block=0)
    with pytest.raises(MinicpmoError, match="tokens_per_unit"):
        TtsDuplexStream(s, tokens_per_unit=0)
    du = TtsDuplexStream(s)
    with pytest.raises(MinicpmoError, match="outside"):
        du.unit([-1], hidden[:1])
    with pytest.raises(MinicpmoError, match="shape"):
        du.unit([], hidden[:1])  # hidden rows without text ids
    with pytest.raises(MinicpmoError, match="hidden"):
        du.unit(ids.tolist(), None)


def test_stream_refuses_a_decoder_used_elsewhere(tiny_sessions):
    """The streams drive the session's own decoder: when something else resets or feeds it between two
    calls (another stream, the chat layout), the stream says so instead of decoding garbage."""
    s = tiny_sessions["f32"]
    ids, hidden = text_chunk(3, 170)
    st = TtsSimplexStream(s, max_new_per_chunk=3)
    st.feed_text(ids.tolist(), hidden)
    s.tts_reset()
    with pytest.raises(MinicpmoError, match="something else"):
        st.feed_text(ids.tolist(), hidden)
    du = TtsDuplexStream(s, tokens_per_unit=2)
    assert len(du.unit(ids.tolist(), hidden)[0]) <= 2
    TtsSimplexStream(s)  # a new stream starts from an empty cache
    with pytest.raises(MinicpmoError, match="something else"):
        du.unit([], None)
    du.reset_turn()  # a new turn owns the decoder again
    assert len(du.unit([], None)[0]) <= 2 and du.next_position > 0


def test_stream_context_capacity(tiny_sessions):
    """The decoder holds n_ctx_train (4096) rows: a chunk whose condition rows do not fit is refused
    before anything is fed; one that fits but leaves too little room fails at the first sample that
    does not fit, with the context named, and the stream refuses further chunks."""
    s = tiny_sessions["f32"]
    rng = np.random.default_rng(160)
    big = 4097
    st = TtsSimplexStream(s, max_new_per_chunk=20)
    with pytest.raises(MinicpmoError, match="context"):
        st.feed_text(rng.integers(0, 1000, big).tolist(), np.zeros((big, 64), np.float32))
    n = 4090  # + audio_bos = 4091 rows, room for 5 codes
    st = TtsSimplexStream(s, max_new_per_chunk=20)
    with pytest.raises(MinicpmoError, match="context.*full"):
        st.feed_text(rng.integers(0, 1000, n).tolist(), rng.standard_normal((n, 64)).astype(np.float32))
    with pytest.raises(MinicpmoError, match="failed earlier"):
        st.feed_text([1], np.zeros((1, 64), np.float32))
    du = TtsDuplexStream(s)
    with pytest.raises(MinicpmoError, match="context"):
        du.unit(rng.integers(0, 1000, big).tolist(), np.zeros((big, 64), np.float32))
