"""The numpy TTS reference (tests/reference/tts.py) on its own: condition rows, the three sequence
layouts with their exact positions and row order, cache vs whole-sequence consistency, the EOS
rules, the repetition-penalty window, the warpers' keep rules, the draw convention and bad inputs.
(The backbone/head/warpers against torch + transformers are in test_tts_reference_vs_torch.py.)

EOS is steered through the head output: the tests wrap ``ref.logits`` and add a large bias to the
EOS logit on chosen steps (+1e3 forces EOS unless it is masked, -1e3 forbids it), so every layout
is checked on short, fully determined runs.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import _import_convert
from reference.tts import (CHAT_SAMPLING, DUPLEX_SAMPLING, STREAMING_SAMPLING, DuplexTTS, FeedRow,
                           StreamingTTS, TTSConfig, TTSReference, TTSSampling, chat_condition_span,
                           generate_chat, l2_normalize, process_logits, repetition_penalty,
                           sample_from_probs, softmax, top_k_filter, top_p_filter)
from tts_weights import TINY_TTS_CONFIG, random_llm_hidden, random_tts_weights

EOS = 6561
# float64 throughout; a cached step and the same rows run as one sequence differ only by summation
# order (~1e-15 relative). 1e-10 is far below any layout error (a row at a wrong position or a wrong
# row moves logits by O(1e-1) relative with these weights).
SAME_TOL = 1e-10


@pytest.fixture(scope="module")
def weights():
    return random_tts_weights(0)


@pytest.fixture()
def ref(weights):
    w, c = weights
    return TTSReference(w, c)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


class EosSchedule:
    """Wraps ref.logits: call k (one per decoding step) gets ``bias[k]`` added to the EOS logit."""

    def __init__(self, ref, biases):
        self.orig, self.biases, self.calls = ref.logits, list(biases), 0
        ref.logits = self

    def __call__(self, hidden):
        out = self.orig(hidden).copy()
        b = self.biases[self.calls] if self.calls < len(self.biases) else self.biases[-1]
        out[..., EOS] += b
        self.calls += 1
        return out


def eos_at(*steps, n=4000):
    """biases for n calls: +1e3 at the given call indices, -1e3 elsewhere."""
    b = np.full(n, -1e3)
    b[list(steps)] = 1e3
    return b


class CountingDraws:
    def __init__(self, seed):
        self.rng, self.n = np.random.default_rng(seed), 0

    def __call__(self):
        self.n += 1
        return float(self.rng.random())


def text(n, seed):
    ids = np.random.default_rng(seed).integers(0, 151643, size=n)
    return ids, random_llm_hidden(seed, n)


def check_steps_match_one_pass(ref, res_fed, text_rows, step_logits, step_row_index, orig_logits=None):
    """Every cached step's logits == the whole fed sequence run in one pass at the fed positions.
    With an EosSchedule (``orig_logits`` given) the EOS column carries the bias and is left out."""
    rows = ref.rows_for(res_fed, text_rows)
    full = ref.forward(rows, [r.position for r in res_fed])
    lg = (orig_logits or ref.logits)(full)
    cols = slice(0, EOS) if orig_logits is not None else slice(None)
    for raw, i in zip(step_logits, step_row_index):
        assert rel(raw[cols], lg[i][cols]) <= SAME_TOL


# ------------------------------------------------------------------------------------------------
# condition rows, head, backbone cache
# ------------------------------------------------------------------------------------------------

def test_condition_rows_by_hand(weights, ref):
    w, _ = weights
    ids, h = text(5, 1)
    got = ref.condition_rows(ids, h)
    for i, t in enumerate(ids):
        a = np.maximum(w["tts.projector_semantic.linear1.weight"].astype(np.float64) @ h[i]
                       + w["tts.projector_semantic.linear1.bias"], 0)
        p = w["tts.projector_semantic.linear2.weight"].astype(np.float64) @ a + w["tts.projector_semantic.linear2.bias"]
        want = w["tts.emb_text.weight"][t].astype(np.float64) + p / np.linalg.norm(p)
        assert rel(got[i], want) <= 1e-12
        unnorm = w["tts.emb_text.weight"][t].astype(np.float64) + p
        assert rel(ref.condition_rows(ids, h, normalize=False)[i], unnorm) <= 1e-12
    # normalize_projected_hidden = false in the config -> no normalisation by default
    ref_off = TTSReference(w, dict(TINY_TTS_CONFIG, normalize_projected_hidden=False))
    assert rel(ref_off.condition_rows(ids, h), ref.condition_rows(ids, h, normalize=False)) <= 1e-15
    assert np.array_equal(ref.audio_bos_row()[0], w["tts.emb_text.weight"][151687].astype(np.float64))
    assert np.array_equal(ref.text_eos_row()[0], w["tts.emb_text.weight"][151692].astype(np.float64))


def test_l2_normalize_eps():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-13, 0.0]])
    # F.normalize: x / max(||x||, 1e-12): zero rows stay zero, tiny rows are divided by 1e-12
    assert np.allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0], [0.1, 0.0]], rtol=1e-15, atol=0)


def test_head_rows_have_norm_g(weights, ref):
    w, _ = weights
    g = w["tts.head_code.0.parametrizations.weight.original0"][:, 0].astype(np.float64)
    v = w["tts.head_code.0.parametrizations.weight.original1"].astype(np.float64)
    assert np.max(np.abs(np.linalg.norm(ref.head, axis=1) - g)) <= 1e-13 * g.max()
    cos = np.sum(ref.head * v, axis=1) / (np.linalg.norm(ref.head, axis=1) * np.linalg.norm(v, axis=1))
    assert np.min(cos) >= 1 - 1e-13


def test_cache_with_gaps_equals_one_pass(ref):
    """Blocks + single rows through the cache (with a position gap) == one pass at the same positions."""
    rng = np.random.default_rng(3)
    rows = 0.5 * rng.standard_normal((12, 64))
    pos = [0, 1, 2, 3, 4, 6, 7, 8, 9, 20, 21, 22]
    cache = ref.new_cache()
    pieces = [ref.forward(rows[a:b], pos[a:b], cache) for a, b in ((0, 5), (5, 6), (6, 9), (9, 10), (10, 12))]
    assert cache.n == 12 and cache.positions == pos
    assert rel(np.concatenate(pieces), ref.forward(rows, pos)) <= SAME_TOL
    # positions matter (RoPE): shifting the gap changes the result visibly
    assert rel(ref.forward(rows, list(range(12))), ref.forward(rows, pos)) > 1e-3


# ------------------------------------------------------------------------------------------------
# chat
# ------------------------------------------------------------------------------------------------

def test_chat_layout_and_steps(ref):
    ids, h = text(7, 2)
    res = generate_chat(ref, ids, h, draws=np.random.default_rng(0), max_new_tokens=55, keep_logits=True)
    n = len(ids)
    want = [FeedRow(i, "text", int(t)) for i, t in enumerate(ids)]
    want += [FeedRow(n, "text_eos", None), FeedRow(n + 1, "audio_bos", None)]
    want += [FeedRow(n + 2 + k, "code", s) for k, s in enumerate(res.sampled[:-1])]
    assert res.fed == want
    assert len(res.sampled) == 55 and res.tokens == res.sampled[:54]  # the 55th sample is dropped
    # step 0 reads the audio_bos row, step t the row of the code fed at that step
    check_steps_match_one_pass(ref, res.fed, ref.condition_rows(ids, h), res.step_logits,
                               [n + 1] + [n + 1 + t for t in range(1, 55)])


def test_chat_processing_per_step(ref):
    ids, h = text(4, 5)
    res = generate_chat(ref, ids, h, draws=np.random.default_rng(1), min_new_tokens=50, max_new_tokens=53,
                        keep_logits=True)
    s = CHAT_SAMPLING
    # step 0: only temperature + EOS mask (no penalty, no warpers)
    x0 = res.step_logits[0] / 0.8
    x0[EOS] = -np.inf
    assert np.array_equal(res.processed_logits[0], x0)
    for t in range(1, 53):
        want = process_logits(res.step_logits[t], res.sampled[:t], s, True, t < 50, EOS)
        assert np.array_equal(res.processed_logits[t], want, equal_nan=False)
        finite = np.isfinite(res.processed_logits[t]).sum()
        assert 3 <= finite <= 25 + 1  # top-k 25 (a tie at the 25th may keep one more)
        if t < 50:
            assert res.processed_logits[t][EOS] == -np.inf


def test_chat_eos_is_masked_for_the_first_50_steps(ref):
    EosSchedule(ref, np.full(100, 1e3))  # EOS would win every step
    draws = CountingDraws(0)
    res = generate_chat(ref, *text(3, 6), draws=draws)
    assert EOS not in res.sampled[:50] and res.sampled[50] == EOS and res.finished
    assert res.tokens == res.sampled[:50] and draws.n == 51


def test_chat_length_limit_drops_the_last_sample(ref):
    EosSchedule(ref, np.full(100, -1e3))
    draws = CountingDraws(1)
    res = generate_chat(ref, *text(3, 7), draws=draws, min_new_tokens=0, max_new_tokens=6)
    assert len(res.sampled) == 6 and draws.n == 6 and not res.finished
    assert res.tokens == res.sampled[:5]
    assert [r.value for r in res.fed if r.kind == "code"] == res.sampled[:5]  # the 6th is never fed


def test_chat_greedy_is_argmax_and_repeatable(ref):
    ids, h = text(6, 8)
    a = generate_chat(ref, ids, h, draws=None, max_new_tokens=60, keep_logits=True)
    b = generate_chat(ref, ids, h, draws=None, max_new_tokens=60)
    assert a.sampled == b.sampled
    assert all(s == int(np.argmax(x)) for s, x in zip(a.sampled, a.processed_logits))
    # the penalty acts in greedy mode: without it the argmax sequence differs
    c = generate_chat(ref, ids, h, draws=None, max_new_tokens=60,
                      sampling=TTSSampling(repetition_penalty=1.0))
    assert c.sampled != a.sampled


# ------------------------------------------------------------------------------------------------
# streaming simplex
# ------------------------------------------------------------------------------------------------

def test_streaming_layout_eos_and_blocks(ref):
    orig = ref.logits
    # chunk 0: EOS at its step 30 (call 30); chunk 1: EOS at step 0 (call 31); chunk 2 (final): at step 23
    EosSchedule(ref, eos_at(30, 31, 32 + 23))
    tts = StreamingTTS(ref, keep_logits=True)
    chunks = [text(10, 10), text(10, 11), text(4, 12)]
    r0 = tts.feed_text_chunk(*chunks[0], text_finished=False, draws=np.random.default_rng(0))
    assert len(r0.tokens) == 30 and r0.finished and r0.sampled[-1] == EOS
    assert r0.released == [(r0.tokens[:25], False)] and tts.buffer == r0.tokens[25:]
    assert tts.text_start_pos == 11 + 30
    r1 = tts.feed_text_chunk(*chunks[1], text_finished=False, draws=np.random.default_rng(1))
    assert r1.tokens == [] and r1.sampled == [EOS] and r1.released == [] and tts.text_start_pos == 41 + 11
    r2 = tts.feed_text_chunk(*chunks[2], text_finished=True, draws=np.random.default_rng(2))
    assert len(r2.tokens) == 23
    rest = r0.tokens[25:] + r2.tokens
    assert r2.released == [(rest[:25], False), (rest[25:], True)]

    def cond(ids, start, final):
        rows = [FeedRow(start + i, "text", int(t)) for i, t in enumerate(ids)]
        if final:
            rows.append(FeedRow(start + len(ids), "text_eos", None))
        return rows + [FeedRow(rows[-1].position + 1, "audio_bos", None)]

    want = cond(chunks[0][0], 0, False) + [FeedRow(11 + k, "code", s) for k, s in enumerate(r0.tokens)]
    want += cond(chunks[1][0], 41, False)
    want += cond(chunks[2][0], 52, True) + [FeedRow(58 + k, "code", s) for k, s in enumerate(r2.tokens)]
    assert tts.fed == want
    # every step's logits == the whole turn run in one pass (cache persists across chunks)
    text_rows = np.concatenate([ref.condition_rows(*c) for c in chunks])
    rows_of_steps = [10] + list(range(11, 41)) + [51] + [57] + list(range(58, 81))
    check_steps_match_one_pass(ref, tts.fed, text_rows, r0.step_logits + r1.step_logits + r2.step_logits,
                               rows_of_steps, orig_logits=orig)
    # processors are skipped only on the very first step of the stream
    assert np.array_equal(r0.processed_logits[0], r0.step_logits[0] / 0.8)
    want1 = process_logits(r1.step_logits[0], r0.tokens, STREAMING_SAMPLING, True)
    assert np.array_equal(r1.processed_logits[0], want1)
    # penalty history = the whole stream (window 16): chunk 2 step 5 sees r0's tail + r2's first 5
    assert np.array_equal(r2.processed_logits[5],
                          process_logits(r2.step_logits[5], r0.tokens + r2.tokens[:5], STREAMING_SAMPLING, True))


def test_streaming_no_token_yet_keeps_skipping_processors(ref):
    EosSchedule(ref, eos_at(0, 5))  # chunk 0 ends at once; chunk 1 step 0 is still the stream's first token
    tts = StreamingTTS(ref, keep_logits=True)
    r0 = tts.feed_text_chunk(*text(10, 13), text_finished=False, draws=np.random.default_rng(0))
    r1 = tts.feed_text_chunk(*text(10, 14), text_finished=False, draws=np.random.default_rng(1))
    assert r0.tokens == [] and r0.released == [] and len(r1.tokens) == 4
    assert tts.text_start_pos == 11 + 11 + 4
    assert np.array_equal(r1.processed_logits[0], r1.step_logits[0] / 0.8)
    assert np.isfinite(r1.processed_logits[1]).sum() <= 26  # step 1: warpers on


def test_streaming_final_chunk_with_empty_buffer(ref):
    EosSchedule(ref, eos_at(0))
    tts = StreamingTTS(ref)
    r = tts.feed_text_chunk(*text(3, 15), text_finished=True, draws=np.random.default_rng(0))
    assert r.tokens == [] and r.released == [([], True)]
    with pytest.raises(ValueError, match="final text chunk"):
        tts.feed_text_chunk(*text(3, 16), text_finished=True)


def test_streaming_step_limit_leaves_a_position_gap(ref):
    """Official quirk: at the per-chunk limit the last sample is kept and counted but never fed."""
    EosSchedule(ref, np.full(100, -1e3))
    tts = StreamingTTS(ref, max_new_tokens_per_chunk=5)
    ids, h = text(10, 17)
    r0 = tts.feed_text_chunk(ids, h, text_finished=False, draws=np.random.default_rng(0))
    assert len(r0.tokens) == 5 and [f.value for f in r0.fed if f.kind == "code"] == r0.tokens[:4]
    assert tts.cache.n == 11 + 4 and tts.text_start_pos == 11 + 5
    r1 = tts.feed_text_chunk(*text(2, 18), text_finished=True, draws=np.random.default_rng(1))
    assert r1.fed[0].position == 16 and tts.all_generated[:5] == r0.tokens
    # no EOS -> nothing released inside the loop; the caller's end-of-turn flush gives the 10 tokens
    assert r1.released == [] and tts.flush() == r0.tokens + r1.tokens and tts.buffer == []


# ------------------------------------------------------------------------------------------------
# duplex
# ------------------------------------------------------------------------------------------------

def test_duplex_units_layout_and_eos_rules(ref):
    orig = ref.logits
    # unit 0 (turn start): EOS forbidden -> 26 steps; unit 1: EOS pushed at its step 0 but masked;
    # unit 2 (turn end): EOS at its step 3; unit 3 (new turn): EOS at step 0
    EosSchedule(ref, eos_at(26, 26 + 26 + 3, 26 + 26 + 4))
    tts = DuplexTTS(ref, keep_logits=True)
    ids0, h0 = text(3, 20)
    draws = CountingDraws(0)
    u0 = tts.unit(ids0, h0, end_of_turn=False, draws=draws)
    assert u0.min_new_tokens == 0 and len(u0.sampled) == 26 and u0.tokens == u0.sampled[:25]
    assert draws.n == 26 and tts.text_start_pos == 4 + 25
    want0 = [FeedRow(i, "text", int(t)) for i, t in enumerate(ids0)] + [FeedRow(3, "audio_bos", None)]
    want0 += [FeedRow(4 + k, "code", s) for k, s in enumerate(u0.tokens)]
    assert u0.fed == want0
    u1 = tts.unit([], None, end_of_turn=False, draws=draws)  # no speakable tokens: [audio_bos] only
    assert u1.min_new_tokens == 26 and EOS not in u1.sampled and len(u1.tokens) == 25
    assert u1.fed[0] == FeedRow(29, "audio_bos", None) and u1.fed[-1] == FeedRow(29 + 25, "code", u1.tokens[-1])
    assert tts.text_start_pos == 29 + 1 + 25
    ids2, h2 = text(5, 21)
    u2 = tts.unit(ids2, h2, end_of_turn=True, draws=draws)
    assert u2.min_new_tokens == 0 and u2.sampled[-1] == EOS and len(u2.tokens) == 3
    assert u2.fed[0].position == 55 and u2.fed[5] == FeedRow(60, "audio_bos", None)
    assert tts.cache.n == 0 and tts.text_start_pos == 0  # reset after the turn-end unit
    u3 = tts.unit(*text(2, 22), end_of_turn=False, draws=draws)
    assert u3.min_new_tokens == 0 and u3.tokens == [] and u3.fed[0].position == 0
    assert tts.text_start_pos == 3  # the EOS at step 0 still moves the start past the condition
    # steps of units 0-2 == the turn run in one pass (duplex always normalises the projection)
    fed = u0.fed + u1.fed + u2.fed
    text_rows = np.concatenate([ref.condition_rows(ids0, h0, normalize=True), ref.condition_rows(ids2, h2, True)])
    rows = [3] + list(range(4, 29)) + [29] + list(range(30, 55)) + [60] + [61, 62, 63]
    check_steps_match_one_pass(ref, fed, text_rows, u0.step_logits + u1.step_logits + u2.step_logits, rows,
                               orig_logits=orig)
    # per-unit penalty history, no warpers, step 0 unprocessed
    x = u1.step_logits[0] / 0.8
    x[EOS] = -np.inf
    assert np.array_equal(u1.processed_logits[0], x)
    assert np.array_equal(u1.processed_logits[7],
                          process_logits(u1.step_logits[7], u1.sampled[:7], DUPLEX_SAMPLING, True, True, EOS))
    assert np.isfinite(u1.processed_logits[7]).sum() == 6561  # no top-p/top-k


def test_duplex_ignores_normalize_flag(weights):
    w, _ = weights
    ref_off = TTSReference(w, dict(TINY_TTS_CONFIG, normalize_projected_hidden=False))
    ids, h = text(4, 23)
    EosSchedule(ref_off, eos_at(0))
    u = DuplexTTS(ref_off, keep_logits=True).unit(ids, h, end_of_turn=True, draws=np.random.default_rng(0))
    rows = np.concatenate([ref_off.condition_rows(ids, h, normalize=True), ref_off.audio_bos_row()])
    raw = TTSReference.logits(ref_off, ref_off.forward(rows, range(5)))[-1]
    assert rel(u.step_logits[0][:EOS], raw[:EOS]) <= SAME_TOL  # EOS column carries the schedule bias


def test_duplex_mid_turn_always_25(ref):
    EosSchedule(ref, np.full(200, 1e3))  # EOS wins whenever allowed
    tts = DuplexTTS(ref)
    first = tts.unit(*text(2, 24), end_of_turn=False, draws=np.random.default_rng(0))
    assert first.tokens == [] and first.sampled == [EOS]  # turn start: EOS allowed
    mid = tts.unit(*text(2, 25), end_of_turn=False, draws=np.random.default_rng(1))
    assert len(mid.tokens) == 25 and len(mid.sampled) == 26 and mid.sampled[-1] != EOS


# ------------------------------------------------------------------------------------------------
# processors, warpers, draws
# ------------------------------------------------------------------------------------------------

def test_repetition_penalty_window_and_signs():
    logits = np.array([2.0, -2.0, 0.0, 1.0, -1.0, 3.0])
    history = [5] * 3 + [0, 0, 1, 2, 4] + [3] * 12  # 20 ids; window 16 drops the first four
    got = repetition_penalty(logits, history, 1.05, 16)
    # last 16 = [0, 1, 2, 4] + [3]*12 (and one 0 dropped with the 5s)
    want = np.array([2.0 / 1.05, -2.0 * 1.05, 0.0, 1.0 / 1.05 ** 12, -1.0 * 1.05, 3.0])
    assert np.allclose(got, want, rtol=1e-15, atol=0)
    assert np.array_equal(repetition_penalty(logits, [], 1.05, 16), logits)
    assert np.allclose(repetition_penalty(logits, [1, 1, 1], 1.05, 16)[1], -2.0 * 1.05 ** 3, rtol=1e-15)


def test_top_p_is_the_nucleus(ref):
    rng = np.random.default_rng(4)
    for trial in range(200):
        x = rng.standard_normal(300) * rng.uniform(0.5, 6)
        p_top = rng.uniform(0.05, 0.99)
        got = np.isfinite(top_p_filter(x, p_top, 1))
        # brute force: walk from the largest; keep until the kept mass reaches top_p
        p = softmax(x)
        keep = np.zeros(300, bool)
        mass = 0.0
        for i in np.argsort(-x, kind="stable"):
            keep[i] = True
            mass += p[i]
            if mass >= p_top:
                break
        assert np.array_equal(got, keep), trial
    x = np.linspace(0, 10, 50)
    assert np.isfinite(top_p_filter(x, 0.0, 3)).sum() == 3  # min_keep 3 even for top_p 0
    assert np.isfinite(top_p_filter(x, 1.0, 3)).sum() == 50


def test_top_k_keeps_ties_and_min_keep():
    x = np.array([1.0, 5.0, 3.0, 5.0, 2.0, 3.0])
    assert np.isfinite(top_k_filter(x, 1, 3)).tolist() == [False, True, True, True, False, True]
    assert np.isfinite(top_k_filter(x, 2, 1)).tolist() == [False, True, False, True, False, False]
    assert np.isfinite(top_k_filter(x, 100, 3)).all()


def test_draw_convention():
    p = np.array([0.2, 0.0, 0.5, 0.3])
    assert [sample_from_probs(p, u) for u in (0.0, 0.1999, 0.2, 0.69, 0.75, 0.999999)] == [0, 0, 2, 2, 3, 3]
    assert sample_from_probs(np.array([0.0, 1.0, 0.0]), 0.0) == 1
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        sample_from_probs(p, 1.0)


def test_draws_from_sequence_and_exhaustion(ref):
    ids, h = text(3, 26)
    u = np.random.default_rng(7).random(60)
    a = generate_chat(ref, ids, h, draws=list(u), max_new_tokens=60)
    b = generate_chat(ref, ids, h, draws=np.random.default_rng(7), max_new_tokens=60)
    assert a.sampled == b.sampled  # a Generator supplies gen.random() in step order
    with pytest.raises(ValueError, match="ran out of uniform draws after 10"):
        generate_chat(ref, ids, h, draws=list(u[:10]), max_new_tokens=60)


def test_float32_reference_close_to_float64(weights):
    w, c = weights
    r64, r32 = TTSReference(w, c), TTSReference(w, c, np.float32)
    ids, h = text(8, 27)
    rows64 = np.concatenate([r64.condition_rows(ids, h), r64.text_eos_row(), r64.audio_bos_row()])
    rows32 = np.concatenate([r32.condition_rows(ids, h), r32.text_eos_row(), r32.audio_bos_row()])
    assert rows32.dtype == np.float32
    # float32 rounding through 2 layers of width <= 128: ~1e-6 relative
    assert rel(r32.sequence_logits(rows32), r64.sequence_logits(rows64)) <= 1e-5


# ------------------------------------------------------------------------------------------------
# names, spans, bad inputs
# ------------------------------------------------------------------------------------------------

def test_reads_the_converter_tiny_layout(weights):
    """The names/shapes the reference reads are those of the project's tiny checkpoint layout."""
    tiny_cfg = _import_convert(".tiny_config").tiny_config()
    shapes = _import_convert(".layout").tts_shapes(tiny_cfg)
    w, _ = weights
    assert set(w) == set(shapes) and all(tuple(w[k].shape) == tuple(shapes[k]) for k in w)
    cfg = TTSConfig.from_config(tiny_cfg)  # top-level config.json dict -> its tts_config
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.eos_token_id, cfg.llm_dim) == (64, 4, 6561, 64)
    # like the official LlamaConfig construction, rope/eps keys of tts_config are not used
    odd = TTSConfig.from_config(dict(tiny_cfg["tts_config"], rope_theta=1e6, rms_norm_eps=1e-5))
    assert (odd.rope_theta, odd.rms_norm_eps) == (10000.0, 1e-6)
    TTSReference(w, tiny_cfg)


def test_chat_condition_span():
    seq = [1, 151703, 10, 11, 151703, 20, 21, 22, 151704, 151645]
    assert chat_condition_span(seq, n_hidden_rows=len(seq) - 1) == (5, 8)
    with pytest.raises(ValueError, match="no <\\|tts_bos\\|>"):
        chat_condition_span([1, 2, 3])
    with pytest.raises(ValueError, match="no <\\|tts_eos\\|>"):
        chat_condition_span([151703, 5, 6, 151645])
    with pytest.raises(ValueError, match="empty spoken span"):
        chat_condition_span([151703, 151704, 151645])


def test_bad_inputs_raise_clear_errors(weights, ref):
    w, c = weights
    ids, h = text(3, 28)
    with pytest.raises(ValueError, match=r"speech token ids out of range \[0, 6562\): 6562"):
        ref.code_rows([5, 6562])
    with pytest.raises(ValueError, match="speech token ids out of range.*-1"):
        ref.code_rows([-1])
    with pytest.raises(ValueError, match="penalty history out of range"):
        repetition_penalty(np.zeros(6562), [7000])
    with pytest.raises(ValueError, match="empty text"):
        generate_chat(ref, [], np.zeros((0, 64)))
    with pytest.raises(ValueError, match="empty chunk"):
        StreamingTTS(ref).feed_text_chunk([], np.zeros((0, 64)), text_finished=True)
    with pytest.raises(ValueError, match=r"text token ids out of range \[0, 152064\): 152064"):
        generate_chat(ref, [1, 152064], np.zeros((2, 64)))
    with pytest.raises(ValueError, match=r"hidden must have shape \(3, 64\)"):
        generate_chat(ref, ids, h[:2])
    with pytest.raises(ValueError, match="NaN or Inf"):
        generate_chat(ref, ids, np.full((3, 64), np.nan))
    with pytest.raises(ValueError, match="hidden rows given for a unit without text tokens"):
        DuplexTTS(ref).unit([], h, end_of_turn=False)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        generate_chat(ref, ids, h, max_new_tokens=0)
    with pytest.raises(ValueError, match="uniform draw must be in"):
        generate_chat(ref, ids, h, draws=lambda: 1.5)
    with pytest.raises(ValueError, match="positions for"):
        ref.forward(np.zeros((2, 64)), [0])
    with pytest.raises(ValueError, match=r"embeds must have shape \(n >= 1, 64\)"):
        ref.forward(np.zeros((0, 64)), [])
    missing = dict(w)
    del missing["tts.model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(KeyError, match="tts.model.layers.1.mlp.up_proj.weight"):
        TTSReference(missing, c)
    bad = dict(w, **{"tts.emb_code.0.weight": np.zeros((6561, 64), np.float32)})
    with pytest.raises(ValueError, match=r"tts.emb_code.0.weight: shape \(6561, 64\), expected \(6562, 64\)"):
        TTSReference(bad, c)
    with pytest.raises(ValueError, match="missing key 'llm_dim'"):
        TTSConfig.from_config({k: v for k, v in c.items() if k != "llm_dim"})
