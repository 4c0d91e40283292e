"""Full-duplex session, LLM side (spec §6.2-6.5, §3.4) on the tiny model.

- The KV layout after a scripted conversation is predicted by `SpecDuplexModel`, a small model of
  the §6.2/§6.3 state machine written from the spec (not from the C++), and compared token for
  token with the session's cache (embedding positions are -1).
- The two-stage decision (StreamDecoder.decode) is compared with `np_duplex_decode`, a numpy
  version of the spec's processors, on given logits and uniform draws.
- Greedy units decide what numpy decides from the pending logits; runs are deterministic.
- The speakable hidden rows are the LLM's final-norm output at those positions (fresh forward).
- The sliding window keeps the last logits of a fresh prefill of the kept tokens.
- Bad inputs give clear errors and leave the cache untouched.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from minicpmo_cpp import MinicpmoError, OmniSession, _testing

from audio_inputs import chat_audio_token_count, speechlike, tiny_mel_filters
from backend import SESSION, tol

# special ids from the spec's table (§4.2)
IM_END = 151645
IMAGE, IMAGE_END, SLICE, SLICE_END = 151669, 151670, 151679, 151680
UNIT, UNIT_END = 151683, 151684
TTS_BOS = 151703
LISTEN, SPEAK = 151705, 151706
TURN_EOS, CHUNK_EOS, CHUNK_TTS_EOS = 151717, 151718, 151721
TTS_PAD = 151722
PREFIX = "<|im_start|>system\nStreaming Omni Conversation.\n<|audio_start|>"
SUFFIX = "<|audio_end|><|im_end|>"


# ---------------------------------------------------------------------------------------------
# the state machine of §6.3, written from the spec


class SpecDuplexModel:
    """Predicts the KV layout and the per-unit results of the duplex protocol."""

    def __init__(self, system_layout: list[int]):
        self.kv = list(system_layout)
        self.turn_ended = True  # a conversation starts outside a turn
        self.units: list[list[int]] = []
        self._unit: list[int] = []

    def prefill(self, n_audio: int = 0, image_blocks: tuple[int, ...] = (), n_query: int = 64,
                text_ids: tuple[int, ...] = ()):
        u = [UNIT]
        for blocks in image_blocks:
            for b in range(blocks):  # the overview image, then its slices
                u += [IMAGE if b == 0 else SLICE] + [-1] * n_query + [IMAGE_END if b == 0 else SLICE_END]
        u += [-1] * n_audio
        u += list(text_ids)
        self._unit = u

    def generate(self, decisions, max_tokens: int = 20, force_listen: bool = False) -> dict:
        decisions = iter(decisions)
        u = self._unit
        out = {"is_listen": False, "end_of_turn": False, "speak": []}
        for j in range(max_tokens):
            if j == max_tokens - 1:
                u.append(CHUNK_EOS)
                break
            if force_listen:
                tok = LISTEN
            else:
                tok = next(decisions)
                if tok == LISTEN and not self.turn_ended:
                    tok = TTS_BOS
            u.append(tok)
            out["is_listen"] = tok == LISTEN
            if tok in (LISTEN, CHUNK_EOS, CHUNK_TTS_EOS):
                break
            self.turn_ended = False
            out["end_of_turn"] = tok == TURN_EOS
            if tok == TURN_EOS:
                self.turn_ended = True
            if j != 0:
                out["speak"].append(tok)
        u.append(UNIT_END)
        self.kv += u
        self.units.append(u)
        if out["is_listen"]:
            out["end_of_turn"] = False
        return out


# ---------------------------------------------------------------------------------------------
# the decision of §6.3 in numpy


def _draw(x: np.ndarray, u: float) -> int:
    finite = np.isfinite(x)
    p = np.zeros(x.size, np.float64)
    p[finite] = np.exp(x[finite].astype(np.float64) - x[finite].max())
    cum = np.cumsum(p)
    i = int(np.searchsorted(cum, u * cum[-1], side="right"))
    i = min(i, x.size - 1)
    while i > 0 and not finite[i]:
        i -= 1
    return i


def np_duplex_decode(logits, history, forbidden, greedy=False, temperature=0.7, top_k=20, top_p=0.8,
                     repetition_penalty=1.05, repetition_window=512, length_penalty=1.1, listen_prob_scale=1.0,
                     uniforms=(), listen_top_k=0):
    x = np.asarray(logits, np.float32).copy()
    u = iter(uniforms)
    first = int(np.argmax(x)) if greedy else _draw(x, next(u))
    if first == CHUNK_EOS:
        return CHUNK_EOS, 1
    x[list(forbidden) + [CHUNK_EOS]] = -np.inf
    if repetition_penalty != 1.0 and history:
        for t in set(history[-repetition_window:]):
            x[t] = np.float32(x[t]) / np.float32(repetition_penalty)  # divided whatever the sign
    if length_penalty != 1.0:
        lp = np.float32(length_penalty)
        x[TURN_EOS] = x[TURN_EOS] / lp if x[TURN_EOS] > 0 else x[TURN_EOS] * lp
    if listen_prob_scale != 1.0:
        x[IM_END] = x[IM_END] * np.float32(listen_prob_scale)
    if listen_top_k and int(np.sum(x > x[LISTEN])) < listen_top_k:
        return LISTEN, 3  # the listen_top_k shortcut: <|listen|> ranks within the top k
    if greedy:
        return int(np.argmax(x)), 2
    x = x / np.float32(temperature)
    if 0 < top_k < x.size:
        kth = np.sort(x)[-top_k]
        x[x < kth] = -np.inf
    if top_p < 1.0:
        order = np.array([i for i in np.argsort(-x, kind="stable") if np.isfinite(x[i])])
        p = np.exp(x[order].astype(np.float64) - x[order[0]])
        cum = np.cumsum(p / p.sum())
        remove = np.zeros(order.size, bool)
        remove[1:] = cum[:-1] > top_p  # the first token past the threshold stays
        x[order[remove]] = -np.inf
    return _draw(x, next(u)), 2


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def omni(tiny_f32):
    # F32 KV cache: logits compared with fresh prefills at 1e-4-level tolerances
    return OmniSession(str(tiny_f32[0]), n_threads=2, **SESSION, n_ctx=4096, seed=0, kv_cache_type="f32")


@pytest.fixture(scope="module")
def fresh(tiny_f32):
    """A second session for reference forwards (forward() clears its cache)."""
    return OmniSession(str(tiny_f32[0]), n_threads=2, **SESSION, n_ctx=4096, seed=0, kv_cache_type="f32")


@pytest.fixture(scope="module")
def n_query(tiny_hf):
    return int(json.loads((tiny_hf / "config.json").read_text())["query_num"])


def _words(omni, n: int) -> list[int]:
    """Ordinary text ids (not forbidden) to script speech with."""
    ids = omni.tokenize(" the quick brown fox jumps over a lazy dog and runs away", False)
    return ids[:n]


def test_scripted_conversation_layout_matches_spec_model(omni, n_query):
    d = omni.as_duplex(generate_audio=False, seed=1)
    ref_pcm = speechlike(1.0, 3)
    d.prepare(PREFIX, SUFFIX, ref_audio=ref_pcm, frame_size=(320, 224))  # readies the tower for `frame`
    system = omni.tokenize(PREFIX) + [-1] * chat_audio_token_count(ref_pcm.size) + omni.tokenize(SUFFIX)
    assert d.kv_tokens == system and d.system_length == len(system)
    model = SpecDuplexModel(system)
    a, b, c, e, f = _words(omni, 5)
    assert not set([a, b, c, e, f]) & set(d.forbidden_ids)
    pcm = speechlike(8.0, 5)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(224, 320, 3), dtype=np.uint8)
    stacked = rng.integers(0, 256, size=(200, 200, 3), dtype=np.uint8)

    # (audio samples, frames, text, script, max tokens, force_listen)
    plan = [
        (pcm[:16560], [], "", [], 20, True),                       # first unit: 1.035 s, forced listen
        (pcm[16560:32560], [frame, stacked], "", [LISTEN], 20, False),  # listens (turn has ended)
        (pcm[32560:48560], [], "", [SPEAK, a, b, c, CHUNK_EOS], 20, False),
        (pcm[48560:64560], [], "", [LISTEN, a, b, c, e, f], 5, False),  # <|listen|> mid-turn -> <|tts_bos|>; forced chunk_eos
        (pcm[64560:80560], [], "", [SPEAK, e, TURN_EOS, f, TURN_EOS, CHUNK_EOS], 20, False),  # turn_eos does not stop
        (pcm[80560:96560], [], "hi", [LISTEN], 20, False),         # turn ended: listening is allowed
        (None, [], "ok", [SPEAK, a, CHUNK_TTS_EOS], 20, False),    # text-only unit
    ]
    for i, (audio, frames, text, script, max_tokens, force) in enumerate(plan):
        d.streaming_prefill(audio, frame_list=frames or None, text_list=[text] if text else None)
        model.prefill(n_audio=10 if audio is not None else 0, image_blocks=tuple(1 for _ in frames),
                      n_query=n_query, text_ids=tuple(omni.tokenize(text)) if text else ())
        got = d.streaming_generate(decode_mode="greedy", max_new_speak_tokens_per_chunk=max_tokens,
                                   force_listen=force, _scripted=script)
        want = model.generate(script, max_tokens, force)
        assert d.kv_tokens == model.kv, f"unit {i}"
        assert got["is_listen"] == want["is_listen"], f"unit {i}"
        assert got["end_of_turn"] == want["end_of_turn"], f"unit {i}"
        assert got["speak_token_ids"] == want["speak"], f"unit {i}"
        assert got["speak_hidden"].shape == (len(want["speak"]), 64)
        want_text = "" if want["is_listen"] else omni.detokenize([t for t in want["speak"] if t < 151643])
        assert got["text"] == want_text, f"unit {i}"
        # current_time counts units that heard audio or saw frames (spec §6.3)
        assert got["current_time"] == min(i + 1, 6)
    assert d.unit_lengths == [len(u) for u in model.units]


def test_speak_hidden_rows_are_final_norm_states(omni, fresh):
    """(token, hidden) pairs for the TTS: the hidden row of a fed token is the final-norm output at
    its position; checked against a fresh forward of the whole cache (text-only, so every position
    is a token)."""
    d = omni.as_duplex(generate_audio=False, seed=2)
    d.prepare(PREFIX, SUFFIX)
    a, b, c, e, f = _words(omni, 5)
    d.streaming_prefill(text_list=["hello"])
    d.streaming_generate(decode_mode="greedy", _scripted=[SPEAK, a, b, TURN_EOS, c, CHUNK_EOS])
    kv = d.kv_tokens
    r = None
    d.streaming_prefill(text_list=["more"])
    r = d.streaming_generate(decode_mode="greedy", _scripted=[SPEAK, e, f, CHUNK_EOS])
    kv = d.kv_tokens
    _, hidden = fresh.forward(kv)
    # the speak tokens of the last unit sit right before <|chunk_eos|></unit>
    pos = [len(kv) - 4, len(kv) - 3]
    assert [kv[p] for p in pos] == r["speak_token_ids"] == [e, f]
    err = np.max(np.abs(r["speak_hidden"] - hidden[pos])) / np.max(np.abs(hidden[pos]))
    assert err < tol(1e-4), err  # F32 weights and KV cache: the same math up to summation order


@pytest.mark.parametrize("case", range(40))
def test_decode_matches_numpy(case):
    rng = np.random.default_rng(100 + case)
    n_vocab = 151748
    logits = (rng.standard_normal(n_vocab) * 2.0).astype(np.float32)
    hot = rng.choice(n_vocab, size=30, replace=False)
    logits[hot] += rng.uniform(4, 9, size=30).astype(np.float32)  # a peaked distribution, like an LLM's
    logits[TURN_EOS] = np.float32(rng.uniform(-6, 9))
    logits[IM_END] = np.float32(rng.uniform(-3, 9))
    if case % 5 == 0:
        logits[CHUNK_EOS] = 30.0  # stage 1 picks <|chunk_eos|>
    history = [int(t) for t in rng.choice(hot, size=int(rng.integers(0, 700)))]
    history += [int(t) for t in rng.integers(0, n_vocab, size=10)]
    forbidden = [TTS_PAD] + [int(t) for t in rng.choice(n_vocab, size=50, replace=False)]
    kw = dict(greedy=case % 4 == 3, temperature=float(rng.choice([0.7, 1.0, 0.3])),
              top_k=int(rng.choice([20, 1, 0, 200])), top_p=float(rng.choice([0.8, 1.0, 0.3])),
              repetition_penalty=float(rng.choice([1.05, 1.0, 0.9])), repetition_window=int(rng.choice([512, 16])),
              length_penalty=float(rng.choice([1.1, 1.0])), listen_prob_scale=float(rng.choice([1.0, 0.5, 2.0])))
    uniforms = [float(x) for x in rng.random(2)]
    want = np_duplex_decode(logits, history, forbidden, uniforms=uniforms, **kw)
    got = _testing.duplex_decode(logits, history, forbidden, CHUNK_EOS, TURN_EOS, IM_END, uniforms=uniforms, **kw)
    # exact: np_duplex_decode repeats the runtime's float32 operations one by one on the same float32
    # logits (the same computation by design); only the float64 exp / sums of the sampling step may
    # differ by an ulp (1e-16 relative), far below any gap these fixed-seed draws and logits leave
    assert tuple(got) == want


@pytest.mark.parametrize("case", range(12))
def test_decode_listen_top_k_matches_numpy(case):
    """The listen_top_k shortcut (after the penalties, <|listen|> is decided at once when fewer than
    k tokens score above it) on random logits whose <|listen|> rank varies around k."""
    rng = np.random.default_rng(500 + case)
    n_vocab = 151748
    logits = rng.normal(0, 2, n_vocab).astype(np.float32)
    order = np.argsort(-logits, kind="stable")
    rank = int(rng.integers(0, 8))
    logits[LISTEN] = np.float32(logits[order[rank]] + 1e-3)  # about `rank` tokens above it
    history = [int(t) for t in rng.integers(0, n_vocab, size=30)]
    kw = dict(greedy=case % 3 == 0, listen_prob_scale=float(rng.choice([1.0, 0.5])),
              repetition_penalty=float(rng.choice([1.05, 1.0])))
    uniforms = [float(x) for x in rng.random(2)]
    for k in (1, 3, 6):
        want = np_duplex_decode(logits, history, [TTS_PAD], uniforms=uniforms, listen_top_k=k, **kw)
        got = _testing.duplex_decode(logits, history, [TTS_PAD], CHUNK_EOS, TURN_EOS, IM_END, uniforms=uniforms,
                                  listen=LISTEN, listen_top_k=k, **kw)
        assert tuple(got) == want
    # off (0) is the plain decision
    assert tuple(_testing.duplex_decode(logits, history, [TTS_PAD], CHUNK_EOS, TURN_EOS, IM_END, uniforms=uniforms,
                                     listen=LISTEN, listen_top_k=0, **kw)) == \
        np_duplex_decode(logits, history, [TTS_PAD], uniforms=uniforms, **kw)


def test_decode_processor_quirks():
    """Single processors on hand-made logits: the repetition penalty divides negative logits too
    (they move up), the length penalty acts on <|turn_eos|>, listen_prob_scale on <|im_end|>."""
    n = 151748
    base = np.full(n, -20.0, np.float32)
    # greedy: the penalised negative logit -1.0 / 1.05 beats -0.99
    x = base.copy()
    x[10], x[11] = -1.0, -0.99
    assert _testing.duplex_decode(x, [10], [], CHUNK_EOS, TURN_EOS, IM_END, greedy=True,
                               length_penalty=1.0)[0] == 10
    # positive logits are divided: 2.0 / 1.05 loses to 1.95
    x = base.copy()
    x[10], x[11] = 2.0, 1.95
    assert _testing.duplex_decode(x, [10], [], CHUNK_EOS, TURN_EOS, IM_END, greedy=True)[0] == 11
    # length penalty 1.1 on a positive <|turn_eos|>: 2.0 / 1.1 < 1.9
    x = base.copy()
    x[TURN_EOS], x[11] = 2.0, 1.9
    assert _testing.duplex_decode(x, [], [], CHUNK_EOS, TURN_EOS, IM_END, greedy=True)[0] == 11
    # listen_prob_scale scales <|im_end|>, not <|listen|>
    x = base.copy()
    x[IM_END], x[LISTEN], x[11] = 1.0, 1.5, 1.8
    assert _testing.duplex_decode(x, [], [], CHUNK_EOS, TURN_EOS, IM_END, greedy=True,
                                  listen_prob_scale=2.0)[0] == IM_END
    # stage 1 keeps <|chunk_eos|> only from the raw argmax; otherwise it is masked in stage 2
    x = base.copy()
    x[CHUNK_EOS], x[11] = 1.0, 0.5
    assert tuple(_testing.duplex_decode(x, [], [], CHUNK_EOS, TURN_EOS, IM_END, greedy=True)) == (CHUNK_EOS, 1)
    x[11], x[12], x[CHUNK_EOS] = 1.5, 1.45, 1.4  # raw argmax 11; penalised 11 (1.43) loses to 12
    assert tuple(_testing.duplex_decode(x, [11], [], CHUNK_EOS, TURN_EOS, IM_END, greedy=True)) == (12, 2)


def _greedy_run(omni, seed):
    d = omni.as_duplex(generate_audio=False, seed=seed)
    d.prepare(PREFIX, SUFFIX, ref_audio=speechlike(1.0, 3))
    pcm = speechlike(4.0, 9)
    pieces = [pcm[:16000], pcm[16000:32000], pcm[32000:48000], pcm[48000:64000]]
    results, decisions = [], []
    for p in pieces:
        d.streaming_prefill(p)
        logits = d.pending_logits
        history = d.decode_history
        r = d.streaming_generate(decode_mode="greedy", max_new_speak_tokens_per_chunk=6)
        # the unit's first decision is what numpy decides from the pending logits
        want, _ = np_duplex_decode(logits, history, d.forbidden_ids, greedy=True)
        if want == LISTEN and not _turn_ended_after(results):
            want = TTS_BOS
        decisions.append((r["decided_token_ids"][0], want))
        results.append(r)
    return d.kv_tokens, results, decisions


def _turn_ended_after(results) -> bool:
    """Whether the turn had ended before the next unit, from the previous results (spec §6.3)."""
    ended = True
    for r in results:
        for t in r["decided_token_ids"]:
            if t in (LISTEN, CHUNK_EOS, CHUNK_TTS_EOS):
                break
            ended = t == TURN_EOS
    return ended


def test_greedy_runs_are_deterministic_and_decide_like_numpy(omni):
    kv1, r1, dec1 = _greedy_run(omni, seed=5)
    kv2, r2, _ = _greedy_run(omni, seed=6)  # greedy ignores the seed
    assert kv1 == kv2
    assert [r["decided_token_ids"] for r in r1] == [r["decided_token_ids"] for r in r2]
    for r_a, r_b in zip(r1, r2):
        np.testing.assert_array_equal(r_a["speak_hidden"], r_b["speak_hidden"])
    for got, want in dec1:
        assert got == want


def test_sampling_is_reproducible_with_a_seed(omni):
    def run(seed):
        d = omni.as_duplex(generate_audio=False, seed=seed)
        d.prepare(PREFIX, SUFFIX)
        out = []
        for k in range(3):
            d.streaming_prefill(text_list=[f"unit {k}"])
            out.append(d.streaming_generate(max_new_speak_tokens_per_chunk=8)["decided_token_ids"])
        return out

    assert run(11) == run(11)


def test_sliding_window_drops_oldest_units_and_shifts_keys(omni, tiny_ref):
    """Basic window (§6.5): whole oldest units after the system prompt go, the rest moves left with
    its keys re-rotated. The next unit's logits are compared with the numpy reference replaying the
    same cache edits (ref_remove_range: drop the K/V, rotate later keys by -n). A fresh prefill of
    the kept tokens is NOT the target: the kept units' K/V were computed while the dropped units
    were still there, and nothing is recomputed (the reference does the same); the distance to it
    is printed for information."""
    from test_llm_embeddings_kv import ref_remove_range

    d = omni.as_duplex(generate_audio=False, sliding_window=True, window_high=70, window_low=45, seed=3)
    d.prepare(PREFIX, SUFFIX)
    system = d.kv_tokens
    a, b, c, e, f = _words(omni, 5)
    model = SpecDuplexModel(system)
    cache = tiny_ref.new_cache()
    tiny_ref.forward(system, cache=cache, logits_all=False)
    in_ref: list[list[int]] = []
    scripts = [[SPEAK, a, b, c, CHUNK_EOS], [SPEAK, e, f, TURN_EOS, CHUNK_EOS], [LISTEN], [SPEAK, a, a, a, a, a, a],
               [SPEAK, b, CHUNK_EOS], [LISTEN, c, TURN_EOS, CHUNK_EOS], [LISTEN], [SPEAK, c, e, f, CHUNK_EOS]]
    dropped = 0
    for k, script in enumerate(scripts):
        text = f"user says {k}"
        d.streaming_prefill(text_list=[text])
        model.prefill(text_ids=tuple(omni.tokenize(text)))
        r = d.streaming_generate(decode_mode="greedy", max_new_speak_tokens_per_chunk=7, _scripted=script)
        model.generate(script, 7)
        tiny_ref.forward(model.units[-1], cache=cache, logits_all=False)
        in_ref.append(model.units[-1])
        dropped += r["n_dropped"]
        # what the model predicts stays: the system prompt, then the newest whole units
        n_units = len(d.unit_lengths)
        while len(in_ref) > n_units:
            gone = in_ref.pop(0)
            ref_remove_range(tiny_ref, cache, len(system), len(system) + len(gone))
        kept = system + [t for u in in_ref for t in u]
        assert d.kv_tokens == kept, f"unit {k}"
        assert len(kept) <= 70
        if r["n_dropped"]:
            assert len(kept) <= 45
    assert dropped > 0  # the window did slide
    d.streaming_prefill(text_list=["and now"])
    got = d.pending_logits
    want, _ = tiny_ref.forward([UNIT] + omni.tokenize("and now"), cache=cache, logits_all=False)
    want = np.asarray(want, np.float64).reshape(-1)
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    fresh, _ = tiny_ref.forward(d.kv_tokens, logits_all=False)
    fresh = np.asarray(fresh, np.float64).reshape(-1)
    print(f"window: rel {err:.2e} vs the shifted reference, {np.max(np.abs(got - fresh)) / np.max(np.abs(fresh)):.2e} "
          "vs a fresh prefill of the kept tokens")
    assert err < tol(1e-4), err  # F32 weights and cache vs float64 (test_llm_embeddings_kv measures ~5e-7)


def test_window_marks_are_checked(omni):
    with pytest.raises(MinicpmoError, match="low <= high"):
        omni.as_duplex(generate_audio=False, sliding_window=True, window_high=100, window_low=200)
    with pytest.raises(MinicpmoError, match="below the context size"):
        omni.as_duplex(generate_audio=False, sliding_window=True, window_high=omni.n_ctx, window_low=10)


def test_window_off_by_default(omni):
    d = omni.as_duplex(generate_audio=False, seed=0)
    d.prepare(PREFIX, SUFFIX)
    for k in range(3):
        d.streaming_prefill(text_list=["x" * 40])
        assert d.streaming_generate(decode_mode="greedy", force_listen=True)["n_dropped"] == 0
    assert len(d.unit_lengths) == 3


def test_bad_inputs_give_clear_errors(omni):
    d = omni.as_duplex(generate_audio=False, seed=0)
    with pytest.raises(MinicpmoError, match="prepare"):
        d.streaming_prefill(speechlike(1.0, 1))
    d.prepare(PREFIX, SUFFIX)
    n0 = omni.n_past
    # a bad frame size is refused before anything changes: the conversation stays prepared
    with pytest.raises(MinicpmoError, match=r"frame_size must be \(width, height\)"):
        d.prepare(PREFIX, SUFFIX, frame_size=(32,))
    with pytest.raises(MinicpmoError, match="must be >= 1, got 0x32"):
        d.prepare(PREFIX, SUFFIX, frame_size=(0, 32))
    with pytest.raises(MinicpmoError, match="prefill_unit first"):
        d.streaming_generate()
    with pytest.raises(MinicpmoError, match="16000 to 16560 samples"):
        d.streaming_prefill(speechlike(0.5, 1))
    with pytest.raises(MinicpmoError, match="16000 to 16560 samples"):
        d.streaming_prefill(np.zeros(17000, np.float32))
    with pytest.raises(MinicpmoError, match=r"shape \(H, W, 3\)|channels|shape"):
        d.streaming_prefill(frame_list=[np.zeros((32, 32, 5), np.uint8)])
    with pytest.raises(MinicpmoError, match="uint8|dtype|float"):
        d.streaming_prefill(frame_list=[np.zeros((32, 32, 3), np.float32)])
    with pytest.raises(MinicpmoError, match="audio, frames or text"):
        d.streaming_prefill()
    with pytest.raises(MinicpmoError, match="max_slice_nums"):
        d.streaming_prefill(frame_list=[np.zeros((32, 32, 3), np.uint8)], max_slice_nums=0)
    assert omni.n_past == n0  # nothing of a refused unit entered the cache
    d.streaming_prefill(speechlike(1.0, 1))
    with pytest.raises(MinicpmoError, match="not generated yet"):
        d.streaming_prefill(speechlike(1.0, 2))
    with pytest.raises(MinicpmoError, match="decode_mode"):
        d.streaming_generate(decode_mode="beam")
    with pytest.raises(MinicpmoError, match="max_new_speak_tokens_per_chunk"):
        d.streaming_generate(max_new_speak_tokens_per_chunk=0)
    with pytest.raises(MinicpmoError, match="temperature"):
        d.streaming_generate(temperature=0.0)
    d.streaming_generate(force_listen=True)
    n1 = omni.n_past
    with pytest.raises(MinicpmoError, match="16000 samples, got 16001"):
        d.streaming_prefill(np.zeros(16001, np.float32))
    assert omni.n_past == n1
    assert d.as_simplex() is omni and omni.n_past == 0
    with pytest.raises(MinicpmoError, match="changed outside the duplex conversation"):
        d.streaming_prefill(np.zeros(16000, np.float32))


@pytest.fixture(scope="module")
def aref(tiny_state):
    from reference.audio import AudioReference

    sd, cfg = tiny_state
    return AudioReference(sd, cfg["audio_config"]["encoder_attention_heads"])


def test_audio_units_match_numpy_reference_across_whisper_reset(omni, tiny_ref, aref, tiny_f32):
    """32 one-second audio units against the numpy references of every stage: the reference voice
    on the chat path (§6.2), each unit's 10 embeddings from the duplex streaming mel (front-padded
    first chunk, 2 redundancy frames) and the Whisper K/V cache (§3.4), the LLM. The encoder cache
    restarts when it would pass its 1500 positions (unit 30 here); logits of every unit within 1e-4
    (F32 model and cache vs float64/float32 numpy). A second prepare() starts the Whisper context
    afresh, so the same audio gives the same logits again."""
    from reference.audio_frontend import StreamingMelReference, batch_log_mel
    from reference.audio import StreamingWhisperReference

    filters = tiny_mel_filters(tiny_f32)
    ref_pcm = speechlike(1.3, 21)
    mel, counts = batch_log_mel(ref_pcm, filters.astype(np.float64))
    ref_rows = aref.chat_embedding(np.split(mel.astype(np.float32), np.cumsum(counts)[:-1], axis=1))
    cache = tiny_ref.new_cache()
    tiny_ref.forward(omni.tokenize(PREFIX), cache=cache, logits_all=False)
    tiny_ref.forward_embeddings(ref_rows, cache=cache, logits_all=False)
    tiny_ref.forward(omni.tokenize(SUFFIX), cache=cache, logits_all=False)
    mel_ref = StreamingMelReference(filters.astype(np.float64), feed="duplex", redundancy_frames=2)
    enc_ref = StreamingWhisperReference(aref)

    pcm = speechlike(33.0, 22)
    pieces = [pcm[:16000]] + [pcm[16000 * k:16000 * (k + 1)] for k in range(1, 32)]
    d = omni.as_duplex(generate_audio=False, seed=0)
    first_run = []
    for run in range(2):
        d.prepare(PREFIX, SUFFIX, ref_audio=ref_pcm)
        assert d.kv_tokens == (omni.tokenize(PREFIX) + [-1] * ref_rows.shape[0] + omni.tokenize(SUFFIX))
        cache_lens = []
        for k, piece in enumerate(pieces if run == 0 else pieces[:3]):
            d.streaming_prefill(piece)
            got = d.pending_logits
            cache_lens.append(_testing.hooks(omni).audio_stream_cache_len)
            if run == 0:
                mel_ref.push(piece.astype(np.float64))
                c = mel_ref.chunks[k]
                rows = aref.project_and_pool(enc_ref.push(c.mel.astype(np.float32), c.prefix_frames, c.suffix_frames))
                assert rows.shape[0] == 10
                tiny_ref.forward([UNIT], cache=cache, logits_all=False)
                want, _ = tiny_ref.forward_embeddings(rows, cache=cache, logits_all=False)
                want = np.asarray(want, np.float64).reshape(-1)
                err = np.max(np.abs(got - want)) / np.max(np.abs(want))
                assert err < tol(1e-4), (k, err)
                tiny_ref.forward([LISTEN, UNIT_END], cache=cache, logits_all=False)
                first_run.append(got)
            else:
                np.testing.assert_array_equal(got, first_run[k])  # same input, fresh Whisper context
            d.streaming_generate(force_listen=True)
        if run == 0:
            # 50 encoder frames per unit; restarted before the unit whose stem (52 frames with its
            # context) would reach 1500: 29 * 50 + 52 >= 1500
            want_lens = [50 * (k + 1) if k < 29 else 50 * (k - 28) for k in range(32)]
            assert cache_lens == want_lens


def test_vision_unit_with_slices_decides_after_the_last_vision_token(omni, tiny_ref, n_query):
    """A frame with max_slice_nums 3 (a wide image is cut into slices) and no audio: the unit holds
    <image>⟨rows⟩</image> then <slice>⟨rows⟩</slice> per slice (§6.3), and the decision comes from
    the logits at the last vision token (VISION mode). The rows are the session's image encoder
    output (checked against numpy in test_vision_encoder); the LLM side is checked against the
    numpy Qwen3 reference within 1e-4 (F32)."""
    rng = np.random.default_rng(4)
    frame = rng.integers(0, 256, size=(448, 1344, 3), dtype=np.uint8)
    rows = omni.encode_image(frame, max_slice_nums=3)
    blocks = rows.shape[0] // n_query
    assert blocks > 1 and rows.shape[0] == blocks * n_query
    d = omni.as_duplex(generate_audio=False, seed=0)
    d.prepare(PREFIX, SUFFIX)
    model = SpecDuplexModel(d.kv_tokens)
    d.streaming_prefill(frame_list=[frame], max_slice_nums=3)
    model.prefill(image_blocks=(blocks,), n_query=n_query)
    assert d.kv_tokens == model.kv + model._unit
    cache = tiny_ref.new_cache()
    tiny_ref.forward(omni.tokenize(PREFIX) + omni.tokenize(SUFFIX) + [UNIT], cache=cache, logits_all=False)
    for b in range(blocks):
        tiny_ref.forward([IMAGE if b == 0 else SLICE], cache=cache, logits_all=False)
        tiny_ref.forward_embeddings(rows[b * n_query:(b + 1) * n_query], cache=cache, logits_all=False)
        want, _ = tiny_ref.forward([IMAGE_END if b == 0 else SLICE_END], cache=cache, logits_all=False)
    want = np.asarray(want, np.float64).reshape(-1)
    got = d.pending_logits
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-4
    r = d.streaming_generate(force_listen=True)
    assert r["current_time"] == 1  # a vision unit counts as a second (reference audio_chunk_idx)
