"""Runtime LLM (libllama on the converted tiny GGUF) against the float64 numpy reference.

Metric everywhere: rel = max|runtime - reference| / max|reference| over the compared array.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TERMINATORS
from backend import tol

# A ChatML prompt as ids (independent of the runtime tokenizer, which test_tokenizer.py checks):
# <|im_start|>system\nYou are tiny.<|im_end|>\n<|im_start|>user\nHello, world! 12<|im_end|>\n
# <|im_start|>assistant\n<think>\n\n</think>\n\n  (ids of the Qwen2 BPE + MiniCPM-o specials)
PROMPT_IDS = [151644, 8948, 198, 2610, 525, 13673, 13, 151645, 198, 151644, 872, 198, 9707, 11,
              1879, 0, 220, 16, 17, 151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271]

# F32 GGUF: libllama computes in float32 -> ~1e-6 relative on this 2-layer model, PROVIDED the KV
# cache is F32 for an F32 model (llama.cpp's default F16 KV cache, which also rounds Q in flash
# attention, costs 4.4e-4 here, emulated in numpy). 1e-4 still catches any formula error (O(1e-2..1)).
# tol(): the test backend's float floor where larger (tests/backend.py; the CPU keeps these)
F32_REL_TOL = tol(1e-4)
# F16 GGUF vs a reference on F16-rounded weights: ggml also rounds activations to F16 in the matmuls
# (and F16 KV), i.e. ~5e-4 per element, amplified a little through 2 layers -> 1e-2 relative.
F16_REL_TOL = tol(1e-2)
# a greedy step may pick another id than the reference argmax only if the two reference logits are
# within this fraction of the logit scale: 2x the F32 logits tolerance (both logits may move by it)
GREEDY_TIE = 2 * F32_REL_TOL


def rel(a, ref):
    a = np.asarray(a, np.float64)
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def test_f32_logits_and_hidden_match_reference(session_f32, tiny_ref):
    logits, hidden = session_f32.forward(PROMPT_IDS)
    assert logits.dtype == np.float32 and hidden.dtype == np.float32
    assert logits.shape == (len(PROMPT_IDS), tiny_ref.vocab_size)
    assert hidden.shape == (len(PROMPT_IDS), tiny_ref.hidden_size)
    r_logits, r_hidden = tiny_ref.forward(PROMPT_IDS)
    el, eh = rel(logits, r_logits), rel(hidden, r_hidden)
    print(f"F32 GGUF vs reference: logits rel {el:.3e}, hidden rel {eh:.3e}, "
          f"logit scale {np.max(np.abs(r_logits)):.3f}")
    assert el < F32_REL_TOL  # float32 libllama vs float64 numpy (see F32_REL_TOL)
    assert eh < F32_REL_TOL  # hidden = final-RMSNorm output, same precision argument
    _assert_argmax_agrees(logits, r_logits)


# Default F16 KV cache on the F32 model: K/V (and Q inside CPU flash attention) are rounded to F16,
# ~5e-4 relative per element; measured 1.1e-3 on this prompt. 5e-3 leaves room, and still fails
# on any formula error (those are O(1e-2..1), see test_reference_vs_transformers.py).
F32_KV16_REL_TOL = tol(5e-3)


def test_f32_model_with_default_f16_kv_cache(session_f32_kv16, tiny_ref):
    logits, hidden = session_f32_kv16.forward(PROMPT_IDS)
    r_logits, r_hidden = tiny_ref.forward(PROMPT_IDS)
    el, eh = rel(logits, r_logits), rel(hidden, r_hidden)
    print(f"F32 GGUF, F16 KV cache vs reference: logits rel {el:.3e}, hidden rel {eh:.3e}")
    assert el < F32_KV16_REL_TOL  # see F32_KV16_REL_TOL
    assert eh < F32_KV16_REL_TOL


def test_f32_forward_is_fresh_and_causal(session_f32):
    """forward() starts from an empty KV cache each call: a prefix run equals the prefix of a run."""
    a_logits, a_hidden = session_f32.forward(PROMPT_IDS)
    b_logits, b_hidden = session_f32.forward(PROMPT_IDS[:11])
    c_logits, _ = session_f32.forward(PROMPT_IDS)
    # same float32 kernels on the same inputs; only batch-size-dependent kernel choice may differ
    assert rel(b_logits, a_logits[:11].astype(np.float64)) < tol(1e-5)
    assert rel(b_hidden, a_hidden[:11].astype(np.float64)) < tol(1e-5)
    assert rel(c_logits, a_logits.astype(np.float64)) < 1e-6  # deterministic repeat


def test_f32_long_prompt_crosses_ubatch_boundary(session_f32, tiny_ref):
    """540 tokens: longer than a default micro-batch (512), so the runtime must split the prompt."""
    ids = np.random.default_rng(1).integers(0, 151643, size=540).tolist()
    logits, hidden = session_f32.forward(ids)
    r_last, r_hidden = tiny_ref.forward(ids, logits_all=False)  # reference: last-position logits
    eh = rel(hidden, r_hidden)
    el = rel(logits[-1:], r_last)
    print(f"540-token prompt: hidden rel {eh:.3e}, last logits rel {el:.3e}")
    assert eh < F32_REL_TOL  # float32 vs float64; 540 positions of attention add little error
    assert el < F32_REL_TOL


def test_f16_logits_match_reference_on_f16_weights(session_f16, tiny_ref_f16, tiny_ref):
    logits, hidden = session_f16.forward(PROMPT_IDS)
    r_logits, r_hidden = tiny_ref_f16.forward(PROMPT_IDS)
    el, eh = rel(logits, r_logits), rel(hidden, r_hidden)
    # for information: distance to the unrounded (f32-weight) reference
    e32 = rel(logits, tiny_ref.forward(PROMPT_IDS)[0])
    print(f"F16 GGUF vs F16-weight reference: logits rel {el:.3e}, hidden rel {eh:.3e} "
          f"(vs f32-weight reference {e32:.3e})")
    assert el < F16_REL_TOL  # F16 activations in ggml matmuls (see F16_REL_TOL)
    assert eh < F16_REL_TOL
    # F16 rounding (~1e-3 of the logit scale) is far below typical top-2 gaps (~4e-2 of the scale
    # for ~150k random logits): at most a few near-tie positions may flip
    _assert_argmax_agrees(logits, r_logits, min_agree=0.75)


def _assert_argmax_agrees(logits, r_logits, min_agree=0.9):
    """argmax must agree at every position whose reference top-2 gap exceeds twice the observed
    max deviation (there a flip would be a real bug, not rounding); print the raw agreement."""
    err = float(np.max(np.abs(np.asarray(logits, np.float64) - r_logits)))
    top2 = np.sort(r_logits, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * err
    got, want = logits.argmax(-1), r_logits.argmax(-1)
    print(f"argmax agreement {np.mean(got == want):.3f} ({clear.sum()}/{len(clear)} positions clear)")
    assert np.array_equal(got[clear], want[clear]), (got, want, clear)
    assert np.mean(got == want) >= min_agree, (got, want)


# ------------------------------------------------------------------------------------------------
# greedy chat, single and multi-turn
# ------------------------------------------------------------------------------------------------

def check_greedy(ref, prompt_ids, got, what):
    """Check the runtime's greedy tokens ``got`` step by step against the reference, teacher-forced
    on the runtime's own choices: at every step the chosen id must be the reference argmax, or tie
    with it within GREEDY_TIE of the logit scale (float32 rounding may pick either of a near-tie;
    the flat logits of a random model make such ties common). Also checks the stopping rule."""
    cache = ref.new_cache()
    logits, _ = ref.forward(prompt_ids, cache=cache, logits_all=False)
    exact = 0
    for i, t in enumerate(got):
        lg = logits[-1]
        best = int(np.argmax(lg))
        scale = float(np.max(np.abs(lg)))
        assert lg[t] >= lg[best] - GREEDY_TIE * scale, (
            f"{what}: step {i} runtime picked {t} (logit {lg[t]:.6f}) but reference argmax is "
            f"{best} (logit {lg[best]:.6f}); runtime {got}")
        exact += t == best
        if t in TERMINATORS:
            assert i == len(got) - 1, f"{what}: generation went on after a terminator: {got}"
            break
        logits, _ = ref.forward([t], cache=cache, logits_all=False)
    print(f"{what}: {len(got)} tokens, {exact} exact reference argmax, rest within near-ties")
    assert exact >= len(got) - 2, f"{what}: too many tie-breaks to be rounding: {got}"


def chat_greedy(s, msgs, n, enable_thinking=False):
    text = s.chat(msgs, max_new_tokens=n, do_sample=False, repetition_penalty=1.0,
                  enable_thinking=enable_thinking)
    assert isinstance(text, str)
    ids = list(s.last_generated_ids)
    assert 1 <= len(ids) <= n
    assert len(ids) == n or ids[-1] in TERMINATORS  # stops only at a terminator or the limit
    # a terminator can only be the last generated id
    assert all(t not in TERMINATORS for t in ids[:-1])
    return text, ids


def prompt_ids(s, msgs, enable_thinking=False):
    text = s.apply_chat_template(msgs, add_generation_prompt=True, enable_thinking=enable_thinking)
    return s.tokenize(text, parse_special=True)


def test_chat_greedy_single_turn(session_f32, tiny_ref):
    s = session_f32
    s.reset()
    msgs = [{"role": "user", "content": "Hello, who are you?"}]
    text, ids = chat_greedy(s, msgs, 10)
    check_greedy(tiny_ref, prompt_ids(s, msgs), ids, "single turn")
    body = ids[:-1] if ids[-1] in TERMINATORS else ids
    # the reply text is the detokenized reply without the terminator
    assert text == s.detokenize(body)


def _lcp(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@pytest.mark.parametrize("enable_thinking", [False, True])
def test_chat_multi_turn_keeps_kv(session_f32, tiny_ref, enable_thinking):
    """Turn 2 reuses turn 1's KV cache and still equals greedy decoding of the full conversation.

    Contract (python/minicpmo_cpp/session.py, csrc/session/session.cpp), like the official
    stateless chat(): chat(msgs) renders the WHOLE conversation with the chat template, tokenizes
    it, keeps the KV entries of the longest common token prefix with what the cache holds, and
    decodes only the rest. After turn 1 the cache holds
        P1 + reply ids without the terminator (a sampled terminator is never fed back; a reply cut
        by max_new_tokens has its last token fed),
    so in turn 2 the common prefix with P2 = tokenize(render(msgs1 + [assistant reply1, user2]))
    ends where the re-rendered history departs from it (the Qwen3 template drops the empty think
    block of past assistant turns; the reply text may also re-tokenize differently). The reply must
    be the reference's greedy continuation of P2 (exactly what a fresh session would produce).
    """
    s = session_f32
    s.reset()
    msgs1 = [{"role": "system", "content": "You are a tiny test model."},
             {"role": "user", "content": "Tell me a story."}]
    p1 = prompt_ids(s, msgs1, enable_thinking)
    reply1, gen1 = chat_greedy(s, msgs1, 8, enable_thinking)
    assert s.last_prefill == (0, len(p1))  # after reset() nothing is reused
    check_greedy(tiny_ref, p1, gen1, "turn 1")
    body1 = gen1[:-1] if gen1[-1] in TERMINATORS else gen1

    msgs2 = msgs1 + [{"role": "assistant", "content": reply1},
                     {"role": "user", "content": "And then?"}]
    p2 = prompt_ids(s, msgs2, enable_thinking)
    reply2, gen2 = chat_greedy(s, msgs2, 8, enable_thinking)
    common = _lcp(p1 + body1, p2)
    print(f"turn 2: prompt {len(p2)} tokens, {common} shared with the cache")
    assert common >= len(s.tokenize("<|im_start|>system\nYou are a tiny test model.<|im_end|>\n"))
    assert s.last_prefill == (common, len(p2) - common)  # the KV prefix really was kept
    check_greedy(tiny_ref, p2, gen2, "turn 2 (KV kept)")

    # turn 3 with the same history again: everything up to turn 2's reply is reused
    msgs3 = msgs2 + [{"role": "assistant", "content": reply2},
                     {"role": "user", "content": "The end."}]
    p3 = prompt_ids(s, msgs3, enable_thinking)
    _, gen3 = chat_greedy(s, msgs3, 4, enable_thinking)
    body2 = gen2[:-1] if gen2[-1] in TERMINATORS else gen2
    assert s.last_prefill[0] == _lcp(p2 + body2, p3)
    check_greedy(tiny_ref, p3, gen3, "turn 3 (KV kept)")


def test_chat_after_reset_renders_full_history(session_f32, tiny_ref):
    """After reset() the same multi-turn messages are rendered by the template from scratch."""
    s = session_f32
    s.reset()
    msgs = [{"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello there."},
            {"role": "user", "content": "Count to three."}]
    _, gen = chat_greedy(s, msgs, 6)
    check_greedy(tiny_ref, prompt_ids(s, msgs), gen, "fresh multi-turn")


def test_chat_stream_equals_non_stream(session_f32):
    s = session_f32
    msgs = [{"role": "user", "content": "Stream this please."}]
    s.reset()
    text = s.chat(msgs, max_new_tokens=12, do_sample=False)
    ids = list(s.last_generated_ids)
    s.reset()
    pieces = list(s.chat(msgs, stream=True, max_new_tokens=12, do_sample=False))
    assert all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == text  # streaming must not lose/duplicate bytes (UTF-8 buffering)
    assert list(s.last_generated_ids) == ids


def test_chat_sampling_is_seeded(session_f32):
    s = session_f32
    msgs = [{"role": "user", "content": "Say something random."}]
    runs = []
    for _ in range(2):
        s.reset()
        s.chat(msgs, max_new_tokens=12, do_sample=True, temperature=0.7, top_p=0.8, top_k=100,
               seed=1234)
        runs.append(list(s.last_generated_ids))
    assert runs[0] == runs[1]  # same seed -> same tokens
