"""The runtime's sampler against Hugging Face generate() semantics, checked with the float64 numpy
reference of the same tiny model.

Order per step (csrc/sampling/llm_sampler.cpp, spec §4.5): repetition penalty over the ids generated so far
in this reply (divide positive / multiply negative logits; the prompt is NOT penalised) ->
temperature -> top-k (ties at the k-th value kept) -> top-p (shortest head of the sorted
distribution whose cumulative mass reaches top_p, at least one id) -> multinomial.

Every sampled sequence is checked teacher-forced: the reference is fed the runtime's own ids, so
each step's reference logits describe exactly the distribution the runtime sampled from.
The random tiny model has flat logits (max |logit| ~3.6 over 151748 ids: at temperature 1 the top
id has probability ~2e-4), so the statistical test bins ids by reference probability mass instead
of counting single ids only.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TERMINATORS
from minicpmo_cpp import MinicpmoError, _testing
from test_llm_logits import F32_REL_TOL, GREEDY_TIE, PROMPT_IDS

# PROMPT_IDS followed by the first two ids its greedy continuation produces: unpenalised greedy
# decoding of this prompt emits 134917 again 6 steps later, so penalising prompt ids would change
# the reply while penalising only generated ids does not (checked on the reference below)
PROMPT_REPEAT = PROMPT_IDS + [86459, 134917]


@pytest.fixture(scope="module")
def s(session_f32):
    # one thread: the 2-layer model gains nothing from more, and the ~1000 samples below spend their
    # time in the sampler's full-vocabulary sort anyway
    session_f32.set_n_threads(1)
    session_f32.reset()
    return session_f32


def generate(s, prompt, do_sample, temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0,
             seed=0, max_new_tokens=12):
    """Low-level generation from ``prompt`` (prefix reuse keeps this cheap); returns the ids."""
    _testing.hooks(s).prefill(list(prompt))
    _testing.hooks(s).begin_generation(do_sample, temperature, top_p, top_k, repetition_penalty, seed, max_new_tokens)
    while True:
        more, _ = _testing.hooks(s).step()
        if not more:
            break
    ids = list(_testing.hooks(s).last_generated)
    assert 1 <= len(ids) <= max_new_tokens
    assert len(ids) == max_new_tokens or ids[-1] in TERMINATORS
    return ids


def penalise(logits, history, penalty):
    """HF RepetitionPenaltyLogitsProcessor over the unique ids of ``history``."""
    lg = np.array(logits, dtype=np.float64)
    if penalty != 1.0 and len(history):
        u = np.unique(np.asarray(history, dtype=np.int64))
        v = lg[u]
        lg[u] = np.where(v < 0, v * penalty, v / penalty)
    return lg


def reference_steps(ref, prompt, ids):
    """Raw reference logits before each of ``ids`` (teacher-forced on ``ids``)."""
    cache = ref.new_cache()
    logits, _ = ref.forward(prompt, cache=cache, logits_all=False)
    out = []
    for i, t in enumerate(ids):
        out.append(logits[-1].copy())
        if i + 1 < len(ids):
            logits, _ = ref.forward([t], cache=cache, logits_all=False)
    return out


def reference_greedy_penalised(ref, prompt, n, penalty):
    """Free-running reference greedy decoding with HF's penalty over the generated ids."""
    cache = ref.new_cache()
    logits, _ = ref.forward(prompt, cache=cache, logits_all=False)
    out = []
    for _ in range(n):
        t = int(np.argmax(penalise(logits[-1], out, penalty)))
        out.append(t)
        if t in TERMINATORS or len(out) == n:
            break
        logits, _ = ref.forward([t], cache=cache, logits_all=False)
    return out


def tolerance(raw_logits, penalty):
    """How far a runtime logit may be from the reference one: GREEDY_TIE of the logit scale (2x
    the F32 logits tolerance of test_llm_logits), times the penalty factor that scales negative
    logits and so their error."""
    return GREEDY_TIE * float(np.max(np.abs(raw_logits))) * max(1.0, penalty)


def softmax(z):
    e = np.exp(z - np.max(z))
    return e / e.sum()


def check_allowed(lg, t, temperature, top_k, top_p, tol):
    """Assert that id ``t`` lies in the HF candidate set of penalised logits ``lg`` (float64),
    allowing ``tol`` of logit error at the top-k boundary and in the top-p ranking, and 1e-4 of
    probability mass (the runtime sums float32-derived probabilities) at the top-p boundary.
    Returns (rank of t, reference mass ranked strictly above t within the top-k set)."""
    z = lg / temperature
    tz = tol / temperature
    keep = np.ones(z.shape, dtype=bool)
    if top_k > 0:
        kth = np.partition(z, -top_k)[-top_k]
        assert z[t] >= kth - tz, f"id {t} (logit {z[t]:.6f}) is outside the top-{top_k} (k-th {kth:.6f})"
        keep = z >= kth
    p = np.zeros_like(z)
    p[keep] = softmax(z[keep])
    above = float(p[z > z[t] + tz].sum())
    assert above < top_p + 1e-4, f"id {t} is outside the top-p {top_p} set: mass above it {above:.5f}"
    return int(np.sum(z > z[t])), float(p[z > z[t]].sum())


# ------------------------------------------------------------------------------------------------
# greedy with repetition penalty
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt_name", ["plain", "repeat_in_prompt"])
def test_greedy_repetition_penalty_over_generated_ids(s, tiny_ref, prompt_name):
    prompt = PROMPT_IDS if prompt_name == "plain" else PROMPT_REPEAT
    pen = 1.3
    ids = generate(s, prompt, False, repetition_penalty=pen, max_new_tokens=12)
    raws = reference_steps(tiny_ref, prompt, ids)
    exact = 0
    changed_by_penalty = changed_by_prompt_penalty = 0
    for i, (t, raw) in enumerate(zip(ids, raws)):
        lg = penalise(raw, ids[:i], pen)
        tol = tolerance(raw, pen)
        best = int(np.argmax(lg))
        assert lg[t] >= lg[best] - tol, (
            f"step {i}: runtime picked {t} (penalised logit {lg[t]:.6f}) but the reference picks "
            f"{best} ({lg[best]:.6f}); runtime {ids}")
        exact += t == best
        # test power: steps where the other readings of the penalty would have picked another id
        # by a clear margin (more than the tolerance)
        unpen, wide = raw, penalise(raw, list(prompt) + ids[:i], pen)
        changed_by_penalty += unpen[t] < unpen.max() - tol
        changed_by_prompt_penalty += wide[t] < wide.max() - tol
        if t in TERMINATORS:
            break
    free = reference_greedy_penalised(tiny_ref, prompt, len(ids), pen)
    print(f"{prompt_name}: {ids} (free-running reference {'equal' if free == ids else free}); "
          f"{exact}/{len(ids)} exact reference argmax; penalty changed "
          f"{changed_by_penalty} step(s); penalising the prompt would change {changed_by_prompt_penalty}")
    assert exact >= len(ids) - 2, f"too many tie-breaks to be rounding: {ids}"
    if prompt_name == "plain":
        assert changed_by_penalty >= 1  # a repeat was really suppressed
    else:
        assert changed_by_prompt_penalty >= 1  # the prompt's 134917 was really not penalised


def test_greedy_repetition_penalty_via_chat(s, tiny_ref):
    msgs = [{"role": "user", "content": "Repeat after me: la la la la."}]
    s.reset()
    s.chat(msgs, max_new_tokens=12, do_sample=False, repetition_penalty=1.3)
    ids = list(s.last_generated_ids)
    prompt = s.tokenize(s.apply_chat_template(msgs, add_generation_prompt=True), parse_special=True)
    for i, (t, raw) in enumerate(zip(ids, reference_steps(tiny_ref, prompt, ids))):
        lg = penalise(raw, ids[:i], 1.3)
        assert lg[t] >= lg.max() - tolerance(raw, 1.3), (i, t, ids)
    # the same through the low-level API
    assert generate(s, prompt, False, repetition_penalty=1.3, max_new_tokens=12) == ids


# ------------------------------------------------------------------------------------------------
# degenerate sampling settings are greedy
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pen", [1.0, 1.3])
def test_degenerate_sampling_equals_greedy(s, pen):
    greedy = generate(s, PROMPT_IDS, False, repetition_penalty=pen, max_new_tokens=12)
    for seed in (1, 2, 3):
        assert generate(s, PROMPT_IDS, True, 0.7, 1.0, 1, pen, seed) == greedy, "top_k=1"
        assert generate(s, PROMPT_IDS, True, 0.7, 1e-6, 0, pen, seed) == greedy, "top_p=1e-6"
        assert generate(s, PROMPT_IDS, True, 0.0, 1.0, 0, pen, seed) == greedy, "temperature 0"
        assert generate(s, PROMPT_IDS, True, 1.5, 1e-6, 100, pen, seed) == greedy, "top_p=1e-6, top_k 100"


def test_temperature_zero_via_chat_is_greedy(s):
    msgs = [{"role": "user", "content": "Hello!"}]
    s.reset()
    a = s.chat(msgs, max_new_tokens=10, do_sample=False, repetition_penalty=1.0)
    ids = list(s.last_generated_ids)
    s.reset()
    b = s.chat(msgs, max_new_tokens=10, do_sample=True, temperature=0.0, repetition_penalty=1.0, seed=99)
    assert (b, list(s.last_generated_ids)) == (a, ids)


# ------------------------------------------------------------------------------------------------
# top-k / top-p candidate sets
# ------------------------------------------------------------------------------------------------

def _sample_and_check(s, ref, temperature, top_k, top_p, pen, seeds, n):
    """Sample with each seed and check every id against the reference candidate set.
    Returns per-step (rank, mass above, reference probabilities within the set)."""
    steps = []
    for seed in seeds:
        ids = generate(s, PROMPT_IDS, True, temperature, top_p, top_k, pen, seed, n)
        for i, (t, raw) in enumerate(zip(ids, reference_steps(ref, PROMPT_IDS, ids))):
            lg = penalise(raw, ids[:i], pen)
            rank, above = check_allowed(lg, t, temperature, top_k, top_p, tolerance(raw, pen))
            steps.append((rank, above, lg))
    return steps


def test_top_k_samples_within_reference_top_k(s, tiny_ref):
    steps = _sample_and_check(s, tiny_ref, temperature=1.0, top_k=3, top_p=1.0, pen=1.1,
                              seeds=(11, 12, 13), n=16)
    # the picks must also spread over the 3 ids as the renormalised probabilities say: the number
    # of non-argmax picks is a sum of Bernoullis with q = 1 - p1 / (p1 + p2 + p3); 5-sigma bound
    q = []
    for _, _, lg in steps:
        top = np.sort(lg)[-3:]
        pr = softmax(top)
        q.append(1.0 - pr[-1])
    q = np.array(q)
    got = sum(rank > 0 for rank, _, _ in steps)
    mean, sd = q.sum(), np.sqrt(np.sum(q * (1 - q)))
    print(f"top-k 3: {got}/{len(steps)} non-argmax picks, expected {mean:.1f} +- {sd:.1f}; "
          f"ranks {sorted(set(r for r, _, _ in steps))}")
    assert abs(got - mean) <= 5 * sd


def test_top_p_samples_within_reference_top_p_set(s, tiny_ref):
    steps = _sample_and_check(s, tiny_ref, temperature=0.7, top_k=0, top_p=0.5, pen=1.0,
                              seeds=(21, 22, 23), n=16)
    # inside the set the mass ranked above a pick is ~uniform on [0, 0.5) (single-id masses are
    # ~1e-3 at T=0.7): mean 0.25, sd 0.5/sqrt(12) per pick; 5-sigma bound on the mean
    u = np.array([above for _, above, _ in steps])
    bound = 5 * 0.5 / np.sqrt(12) / np.sqrt(len(u))
    print(f"top-p 0.5: mass above picks mean {u.mean():.3f} (expected 0.25 +- {bound / 5:.3f}), "
          f"max {u.max():.3f}, max rank {max(r for r, _, _ in steps)}")
    assert abs(u.mean() - 0.25) <= bound


def test_official_defaults_apply_top_k_before_top_p(s, tiny_ref):
    """T 0.7, top-k 100, top-p 0.8, penalty 1.02 (chat() defaults). HF renormalises the top 100
    before top-p, so only ~73 of the 100 survive here; applying top-p first would keep all 100
    (the flat 151748-id distribution needs ~55000 ids to reach 0.8)."""
    steps = _sample_and_check(s, tiny_ref, temperature=0.7, top_k=100, top_p=0.8, pen=1.02,
                              seeds=(31, 32, 33), n=16)
    ranks = [r for r, _, _ in steps]
    # test power: chance that a top-p-first sampler (drawing from the renormalised top 100) would
    # have kept every pick inside the HF sets, i.e. product of the HF sets' top-100 masses
    p_miss = 1.0
    for _, _, lg in steps:
        pr = softmax(np.sort(lg)[-100:][::-1] / 0.7)
        p_miss *= np.cumsum(pr)[np.searchsorted(np.cumsum(pr), 0.8)]
    print(f"defaults: ranks of picks max {max(ranks)}, median {int(np.median(ranks))}; "
          f"a top-p-first sampler would pass with probability {p_miss:.1e}")
    assert p_miss < 1e-3


# ------------------------------------------------------------------------------------------------
# seeds and the sampled distribution
# ------------------------------------------------------------------------------------------------

def test_seeds(s):
    runs = {seed: generate(s, PROMPT_IDS, True, 1.5, 1.0, 0, 1.0, seed, 20) for seed in (7, 8, 9)}
    assert generate(s, PROMPT_IDS, True, 1.5, 1.0, 0, 1.0, 7, 20) == runs[7]  # same seed, same ids
    # at T 1.5 the top id has probability < 1e-4: equal 20-id replies from different seeds would
    # mean the seed is ignored
    assert runs[7] != runs[8] and runs[8] != runs[9] and runs[7] != runs[9]
    assert len(set(runs[7])) > 15  # and a sample is not one id repeated


def test_chat_seed_equals_low_level_seed(s):
    msgs = [{"role": "user", "content": "Pick a word."}]
    s.reset()
    s.chat(msgs, max_new_tokens=8, do_sample=True, temperature=0.9, top_p=0.9, top_k=50,
           repetition_penalty=1.05, seed=4242)
    ids = list(s.last_generated_ids)
    prompt = s.tokenize(s.apply_chat_template(msgs, add_generation_prompt=True), parse_special=True)
    assert generate(s, prompt, True, 0.9, 0.9, 50, 1.05, 4242, 8) == ids


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_sampled_frequencies_match_reference_softmax(s, tiny_ref, temperature):
    """400 single-token samples (400 seeds) at one prompt, top-k 0, top-p 1."""
    n = 400
    _testing.hooks(s).prefill(PROMPT_IDS)
    got_logits = np.asarray(_testing.hooks(s).last_logits(), np.float64)[0]
    raw = tiny_ref.forward(PROMPT_IDS, logits_all=False)[0][-1]
    # the distribution the runtime samples from is the reference's (see test_llm_logits)
    assert np.max(np.abs(got_logits - raw)) / np.max(np.abs(raw)) < F32_REL_TOL
    p = softmax(raw / temperature)
    order = np.argsort(-p, kind="stable")
    rank_of = np.empty_like(order)
    rank_of[order] = np.arange(len(order))

    counts = {}
    # the sampler inverts the CDF with one uniform draw per step: other seeds for each temperature
    # so the two cases are independent draws
    base = 1000 if temperature == 1.0 else 5000
    for seed in range(base, base + n):
        (t,) = generate(s, PROMPT_IDS, True, temperature, 1.0, 0, 1.0, seed, 1)
        counts[t] = counts.get(t, 0) + 1

    # (a) the 5 most likely ids, one by one: |count - n p| <= 5 sigma (binomial)
    for t in order[:5]:
        c, mu = counts.get(int(t), 0), n * p[t]
        assert abs(c - mu) <= 5 * np.sqrt(mu * (1 - p[t])) + 1, (int(t), c, mu)
    # (b) all ids: 10 bins of ~equal reference mass along the sorted distribution (an id belongs to
    # the bin holding the midpoint of its mass interval); Pearson chi-square, 9 dof, must stay
    # below 46.1 = the 5-sigma (two-sided p 5.7e-7) critical value
    cum = np.cumsum(p[order])
    mid = cum - p[order] / 2
    bin_of_rank = np.minimum((mid * 10).astype(int), 9)
    expected = np.bincount(bin_of_rank, weights=p[order], minlength=10) * n
    observed = np.zeros(10)
    for t, c in counts.items():
        observed[bin_of_rank[rank_of[t]]] += c
    chi2 = float(np.sum((observed - expected) ** 2 / expected))
    top = [(int(t), counts.get(int(t), 0), round(n * float(p[t]), 2)) for t in order[:3]]
    print(f"T={temperature}: top ids (id, count, expected) {top}; bins observed {observed.astype(int).tolist()} "
          f"expected {np.round(expected, 1).tolist()}; chi2 {chi2:.1f} (9 dof)")
    assert chi2 < 46.1


# ------------------------------------------------------------------------------------------------
# parameter validation
# ------------------------------------------------------------------------------------------------

BAD_PARAMS = [
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_p=float("nan")), "top_p"),
    (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("inf")), "temperature"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(repetition_penalty=-1.0), "repetition_penalty"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
]


@pytest.mark.parametrize("bad,word", BAD_PARAMS, ids=[f"{next(iter(b))}={next(iter(b.values()))}" for b, _ in BAD_PARAMS])
def test_invalid_sampling_params(s, bad, word):
    params = dict(do_sample=True, temperature=0.7, top_p=0.8, top_k=100, repetition_penalty=1.02,
                  seed=1, max_new_tokens=4)
    params.update(bad)
    msgs = [{"role": "user", "content": "hi"}]
    s.reset()
    with pytest.raises(MinicpmoError, match=word):
        s.chat(msgs, **params)
    _testing.hooks(s).prefill(PROMPT_IDS)
    with pytest.raises(MinicpmoError, match=word):
        _testing.hooks(s).begin_generation(params["do_sample"], params["temperature"], params["top_p"],
                                    params["top_k"], params["repetition_penalty"], params["seed"],
                                    params["max_new_tokens"])
    # the session stays usable
    greedy = generate(s, PROMPT_IDS, False, max_new_tokens=4)
    assert len(greedy) == 4


def test_boundary_params_are_accepted(s):
    msgs = [{"role": "user", "content": "hi"}]
    s.reset()
    assert s.chat(msgs, max_new_tokens=0) == "" and s.last_generated_ids == []
    s.chat(msgs, max_new_tokens=2, top_p=1.0, temperature=0.0, repetition_penalty=1.0, top_k=0, seed=0)
    s.chat(msgs, max_new_tokens=2, top_p=1e-9, temperature=1e-3, repetition_penalty=1e-3, top_k=-1, seed=0)
    assert len(s.last_generated_ids) >= 1
