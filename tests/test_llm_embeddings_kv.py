"""Low-level session KV operations against the float64 numpy reference: injected input embeddings
(``append_embeddings``), prefix reuse across embedding slots, tail truncation and ``remove_range``
(drop KV positions in the middle and RoPE-shift the later keys, as libllama does).

All on the F32 GGUF with an F32 KV cache (``session_f32``). Metric: rel = max|runtime - ref| /
max|ref| (``rel`` of test_llm_logits.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from minicpmo_cpp import MinicpmoError, _testing
from test_llm_logits import F32_REL_TOL, PROMPT_IDS, rel

# Tolerance for every runtime-vs-reference comparison below: F32_REL_TOL = 1e-4 relative. libllama
# computes in float32 (F32 weights, F32 KV cache) and the reference in float64: measured 2e-7..6e-7
# here (embeddings, mixed token/embedding caches, shifted caches alike). A wrong position, a
# missing/extra key, a key not re-rotated after a shift, or an embedding read from the wrong row
# all cost O(1e-2..1) (e.g. 0.14..0.50 for unshifted keys, see test_remove_range_*).

EMBD_SLOT = -1  # kv_tokens marker of a position filled from embeddings (csrc/session/session.cpp)

# token pieces of the ChatML prompt, used as A / B / C / D below
A = PROMPT_IDS[:9]     # <|im_start|>system\nYou are tiny.<|im_end|>\n
B = PROMPT_IDS[9:16]   # <|im_start|>user\nHello, world!
C = PROMPT_IDS[16:21]  #  12<|im_end|>\n
D = PROMPT_IDS[21:]    # <|im_start|>assistant\n<think>\n\n</think>\n\n
assert A[-1] != B[0] and B[0] != C[0]


def embed_rows(tiny_state, ids):
    sd, _ = tiny_state
    return np.asarray(sd["llm.model.embed_tokens.weight"], np.float32)[np.asarray(ids)]


def random_embeddings(tiny_state, n, seed):
    """Random input embeddings with the per-element scale of the embedding table (what a projector
    output would look like to the LLM: same order of magnitude, no relation to any token)."""
    sd, _ = tiny_state
    table = np.asarray(sd["llm.model.embed_tokens.weight"], np.float64)
    std = float(table.std())
    return (np.random.default_rng(seed).standard_normal((n, table.shape[1])) * std).astype(np.float32)


def last_logits(s):
    out = _testing.hooks(s).last_logits()
    assert out.dtype == np.float32 and out.ndim == 2 and out.shape[0] == 1
    return out


def ref_remove_range(ref, cache, p0, p1):
    """What llama_memory_seq_rm(p0, p1) + llama_memory_seq_add(p1, -1, -(p1 - p0)) do to the cache.

    The reference KVCache stores keys AFTER q/k-norm and RoPE (like libllama), so the entries past
    p1, which were rotated for positions p1 + i, are rotated once more by -(p1 - p0): RoPE is a
    rotation by angle pos * freq per pair, and R(a) R(b) = R(a + b), so the result is the key at
    position p0 + i. Values carry no position and are only moved. Queries of later tokens still see
    the hidden states of the kept tokens as computed WITH the removed ones (nothing is recomputed).
    """
    n = p1 - p0
    for li in range(len(cache.k)):
        k, v = cache.k[li], cache.v[li]
        tail = k[p1:]
        if len(tail):
            tail = ref.rope(tail, np.full(len(tail), -n))
        cache.k[li] = np.concatenate([k[:p0], tail], axis=0)
        cache.v[li] = np.concatenate([v[:p0], v[p1:]], axis=0)
    cache.n_past -= n


def ref_remove_range_no_shift(cache, p0, p1):
    """A WRONG variant (keys not re-rotated), only to show the test can tell the difference."""
    n = p1 - p0
    for li in range(len(cache.k)):
        cache.k[li] = np.concatenate([cache.k[li][:p0], cache.k[li][p1:]], axis=0)
        cache.v[li] = np.concatenate([cache.v[li][:p0], cache.v[li][p1:]], axis=0)
    cache.n_past -= n


# ------------------------------------------------------------------------------------------------
# embedding injection
# ------------------------------------------------------------------------------------------------

def test_token_embeddings_equal_tokens(session_f32, tiny_ref, tiny_state):
    """prefill(A) + append_embeddings(embed_table[B]) == the token prompt A+B."""
    s = session_f32
    s.reset()
    assert _testing.hooks(s).prefill(A) == (0, len(A))
    assert _testing.hooks(s).append_embeddings(embed_rows(tiny_state, B)) is None
    assert list(_testing.hooks(s).kv_tokens) == A + [EMBD_SLOT] * len(B)
    assert _testing.hooks(s).n_past == len(A) + len(B)
    got = last_logits(s)
    r_last, _ = tiny_ref.forward(A + B, logits_all=False)
    e_ref = rel(got, r_last)

    # the same positions fed as token ids: prefix reuse must stop at the first embedding slot
    assert _testing.hooks(s).prefill(A + B) == (len(A), len(B))
    assert list(_testing.hooks(s).kv_tokens) == A + B
    tok = last_logits(s)
    e_tok = rel(got, tok.astype(np.float64))
    print(f"A + embed(B) vs reference(A+B): rel {e_ref:.3e}; vs runtime tokens A+B: rel {e_tok:.3e}")
    assert e_ref < F32_REL_TOL  # float32 runtime vs float64 reference (see module comment)
    # identical inputs and float32 kernels on both paths: only batch-shape-dependent summation
    # order may differ (the injected rows are bit-equal to the GGUF's F32 embedding table)
    assert e_tok < 1e-5
    assert rel(tok, r_last) < F32_REL_TOL


def test_random_embeddings_between_tokens(session_f32, tiny_ref, tiny_state):
    """tokens A, random embeddings E1, tokens D, random embeddings E2: each step's last logits equal
    the reference run with a KV cache (forward / forward_embeddings continuing at cache.n_past)."""
    s = session_f32
    s.reset()
    e1 = random_embeddings(tiny_state, 6, seed=1)
    e2 = random_embeddings(tiny_state, 3, seed=2)
    cache = tiny_ref.new_cache()

    _testing.hooks(s).prefill(A)
    tiny_ref.forward(A, cache=cache, logits_all=False)

    _testing.hooks(s).append_embeddings(e1)
    r1, _ = tiny_ref.forward_embeddings(e1, cache=cache, logits_all=False)
    err1 = rel(last_logits(s), r1)

    # tokens after embeddings: append_text/prefill of kv_tokens + D keeps every cached position
    # (the embedding slots compare equal to themselves) and decodes only D
    assert _testing.hooks(s).prefill(list(_testing.hooks(s).kv_tokens) + D) == (len(A) + len(e1), len(D))
    r2, _ = tiny_ref.forward(D, cache=cache, logits_all=False)
    err2 = rel(last_logits(s), r2)

    _testing.hooks(s).append_embeddings(e2.astype(np.float64))  # float64 input is converted
    r3, _ = tiny_ref.forward_embeddings(e2, cache=cache, logits_all=False)
    err3 = rel(last_logits(s), r3)
    assert _testing.hooks(s).n_past == cache.n_past == len(A) + len(e1) + len(D) + len(e2)
    assert list(_testing.hooks(s).kv_tokens) == A + [EMBD_SLOT] * len(e1) + D + [EMBD_SLOT] * len(e2)
    print(f"A|E1|D|E2 last logits rel: {err1:.3e} {err2:.3e} {err3:.3e}")
    for e in (err1, err2, err3):
        assert e < F32_REL_TOL  # float32 vs float64 (see module comment)

    # a single embedding row (n = 1) on its own decode
    e4 = random_embeddings(tiny_state, 1, seed=3)
    _testing.hooks(s).append_embeddings(e4)
    r4, _ = tiny_ref.forward_embeddings(e4, cache=cache, logits_all=False)
    err4 = rel(last_logits(s), r4)
    print(f"single embedding row: rel {err4:.3e}")
    assert err4 < F32_REL_TOL


def test_embeddings_at_start_and_across_ubatch(session_f32, tiny_ref, tiny_state):
    """Embeddings as the very first positions, 530 of them (more than one 512-row micro-batch)."""
    s = session_f32
    s.reset()
    e = random_embeddings(tiny_state, 530, seed=4)
    _testing.hooks(s).append_embeddings(e)
    assert _testing.hooks(s).n_past == 530
    cache = tiny_ref.new_cache()
    r, _ = tiny_ref.forward_embeddings(e, cache=cache, logits_all=False)
    err = rel(last_logits(s), r)
    _testing.hooks(s).prefill(list(_testing.hooks(s).kv_tokens) + C)
    r2, _ = tiny_ref.forward(C, cache=cache, logits_all=False)
    err2 = rel(last_logits(s), r2)
    print(f"530 embeddings from position 0: rel {err:.3e}; then tokens: rel {err2:.3e}")
    assert err < F32_REL_TOL  # float32 vs float64 (see module comment)
    assert err2 < F32_REL_TOL


def test_prefix_reuse_stops_at_embedding_slot(session_f32, tiny_ref, tiny_state):
    """After A + embeddings, a token prompt sharing A (and more) reuses exactly A."""
    s = session_f32
    s.reset()
    _testing.hooks(s).prefill(A)
    _testing.hooks(s).append_embeddings(random_embeddings(tiny_state, 4, seed=5))
    prompt = A + B + C
    assert _testing.hooks(s).prefill(prompt) == (len(A), len(B) + len(C))
    assert s.last_prefill == (len(A), len(B) + len(C))
    assert list(_testing.hooks(s).kv_tokens) == prompt and _testing.hooks(s).n_past == len(prompt)
    r, _ = tiny_ref.forward(prompt, logits_all=False)
    err = rel(last_logits(s), r)
    print(f"token prefill after embeddings (reused {len(A)}): rel {err:.3e}")
    assert err < F32_REL_TOL  # float32 vs float64; stale embedding KV would cost O(1e-1)

    # the whole token prompt again: everything but the last token is reused, result unchanged
    assert _testing.hooks(s).prefill(prompt) == (len(prompt) - 1, 1)
    assert rel(last_logits(s), r) < F32_REL_TOL

    # embeddings right at position 0, then a token prompt: nothing can be reused
    s.reset()
    _testing.hooks(s).append_embeddings(embed_rows(tiny_state, A[:1]))
    assert _testing.hooks(s).prefill(A) == (0, len(A))
    r, _ = tiny_ref.forward(A, logits_all=False)
    assert rel(last_logits(s), r) < F32_REL_TOL


def test_tail_truncation(session_f32, tiny_ref):
    """prefill(A+B) then prefill(A+C): keeps A, drops B's entries, equals a fresh A+C."""
    s = session_f32
    s.reset()
    _testing.hooks(s).prefill(A + B)
    assert _testing.hooks(s).prefill(A + C) == (len(A), len(C))
    assert list(_testing.hooks(s).kv_tokens) == A + C
    r, _ = tiny_ref.forward(A + C, logits_all=False)
    err = rel(last_logits(s), r)
    # shorter prompt that is a prefix of the cache: truncates, re-decodes its last token
    assert _testing.hooks(s).prefill(A) == (len(A) - 1, 1)
    assert _testing.hooks(s).n_past == len(A)
    r2, _ = tiny_ref.forward(A, logits_all=False)
    err2 = rel(last_logits(s), r2)
    print(f"tail truncation: A+B -> A+C rel {err:.3e}; -> A rel {err2:.3e}")
    assert err < F32_REL_TOL  # float32 vs float64 (see module comment)
    assert err2 < F32_REL_TOL


# ------------------------------------------------------------------------------------------------
# remove_range
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["middle", "start", "tail", "embeddings"])
def test_remove_range_matches_shifted_reference(session_f32, tiny_ref, tiny_state, where):
    """Cache X + Y + Z, remove Y, then decode D: equals the reference with Y's K/V dropped and Z's
    keys re-rotated by -|Y| (ref_remove_range), D at positions |X| + |Z| ..."""
    s = session_f32
    s.reset()
    cache = tiny_ref.new_cache()
    if where == "embeddings":  # Y are injected embeddings
        x, z = A, C
        y = random_embeddings(tiny_state, 5, seed=6)
        _testing.hooks(s).prefill(x)
        _testing.hooks(s).append_embeddings(y)
        _testing.hooks(s).prefill(list(_testing.hooks(s).kv_tokens) + z)
        tiny_ref.forward(x, cache=cache, logits_all=False)
        tiny_ref.forward_embeddings(y, cache=cache, logits_all=False)
        tiny_ref.forward(z, cache=cache, logits_all=False)
    else:
        x, y, z = {"middle": (A, B, C), "start": ([], A, B + C), "tail": (A + B, C, [])}[where]
        _testing.hooks(s).prefill(x + y + z)
        tiny_ref.forward(x + y + z, cache=cache, logits_all=False)
    p0, p1 = len(x), len(x) + len(y)
    assert _testing.hooks(s).n_past == p1 + len(z)

    _testing.hooks(s).remove_range(p0, p1)
    assert list(_testing.hooks(s).kv_tokens) == x + z
    assert _testing.hooks(s).n_past == len(x) + len(z)
    with pytest.raises(MinicpmoError):
        _testing.hooks(s).last_logits()  # the old last position's logits no longer describe the cache
    wrong = cache.copy()
    ref_remove_range(tiny_ref, cache, p0, p1)
    ref_remove_range_no_shift(wrong, p0, p1)

    # prefill of the remaining tokens + D reuses the whole cache and decodes only D
    assert _testing.hooks(s).prefill(x + z + D) == (len(x) + len(z), len(D))
    r, _ = tiny_ref.forward(D, cache=cache, logits_all=False)
    got = last_logits(s)
    err = rel(got, r)
    err_wrong = rel(got, tiny_ref.forward(D, cache=wrong, logits_all=False)[0])
    err_fresh = rel(got, tiny_ref.forward(x + z + D, logits_all=False)[0])
    print(f"remove_range {where} [{p0},{p1}) then D: rel {err:.3e} "
          f"(vs keys not re-rotated {err_wrong:.3e}, vs fresh x+z+D {err_fresh:.3e})")
    assert err < F32_REL_TOL  # float32 vs float64 (see module comment); measured 3e-7..5e-7
    if len(z):  # shifted keys exist: skipping the re-rotation must be detectable
        assert err_wrong > 10 * F32_REL_TOL


def test_remove_range_then_redecode_last_and_generate(session_f32, tiny_ref):
    """After remove_range, prefill(kv_tokens) (same tokens) re-decodes only the last kept token at
    its shifted position, and greedy generation continues from there."""
    s = session_f32
    s.reset()
    _testing.hooks(s).prefill(A + B + C)
    cache = tiny_ref.new_cache()
    tiny_ref.forward(A + B + C, cache=cache, logits_all=False)
    _testing.hooks(s).remove_range(len(A), len(A) + len(B))
    ref_remove_range(tiny_ref, cache, len(A), len(A) + len(B))

    assert _testing.hooks(s).prefill(A + C) == (len(A + C) - 1, 1)
    cache.truncate(len(A + C) - 1)
    r, _ = tiny_ref.forward(C[-1:], cache=cache, logits_all=False)
    err = rel(last_logits(s), r)
    print(f"remove_range then re-decode of the last token: rel {err:.3e}")
    assert err < F32_REL_TOL  # float32 vs float64 (see module comment)

    # two removals in a row, then D
    _testing.hooks(s).remove_range(1, 3)
    ref_remove_range(tiny_ref, cache, 1, 3)
    _testing.hooks(s).remove_range(len(A) - 2, len(A))
    ref_remove_range(tiny_ref, cache, len(A) - 2, len(A))
    kept = list(_testing.hooks(s).kv_tokens)
    mirror = A + C
    del mirror[1:3]
    del mirror[len(A) - 2:len(A)]
    assert kept == mirror and _testing.hooks(s).n_past == len(A + C) - 4
    assert _testing.hooks(s).prefill(kept + D) == (len(kept), len(D))
    r2, _ = tiny_ref.forward(D, cache=cache, logits_all=False)
    err2 = rel(last_logits(s), r2)
    print(f"two removals then D: rel {err2:.3e}")
    assert err2 < F32_REL_TOL


# ------------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------------

def test_bad_embeddings_and_ranges(session_f32, tiny_ref, tiny_state):
    s = session_f32
    ss = _testing.hooks(s)
    n_embd = tiny_ref.hidden_size
    s.reset()
    ss.prefill(A)
    before = last_logits(s).copy()

    bad_arrays = [
        np.zeros((2, n_embd + 1), np.float32),  # wrong width
        np.zeros((2, n_embd - 1), np.float32),
        np.zeros(n_embd, np.float32),           # 1-D
        np.zeros((1, 2, n_embd), np.float32),   # 3-D
        np.zeros((0, n_embd), np.float32),      # no rows
    ]
    for arr in bad_arrays:
        with pytest.raises(MinicpmoError):
            ss.append_embeddings(arr)
        # a rejected call leaves the cache and its logits untouched
        assert list(ss.kv_tokens) == A and ss.n_past == len(A)
    assert rel(last_logits(s), before.astype(np.float64)) == 0.0

    n = ss.n_past
    for p0, p1 in [(-1, 2), (0, n + 1), (3, 3), (5, 2), (n, n + 1)]:
        with pytest.raises(MinicpmoError):
            ss.remove_range(p0, p1)
        assert list(ss.kv_tokens) == A and ss.n_past == n
    with pytest.raises(MinicpmoError):  # empty cache
        s.reset()
        ss.remove_range(0, 1)

    ss.prefill(A + B)
    ss.remove_range(len(A), len(A) + len(B))
    with pytest.raises(MinicpmoError):
        ss.last_logits()
    with pytest.raises(MinicpmoError):  # nothing to generate from
        ss.begin_generation(do_sample=False, temperature=1.0, top_p=1.0, top_k=0,
                            repetition_penalty=1.0, seed=0, max_new_tokens=4)

    # the session still works: token prefill, embeddings and a fresh forward agree with the reference
    assert ss.prefill(A + C) == (len(A), len(C))
    r, _ = tiny_ref.forward(A + C, logits_all=False)
    assert rel(last_logits(s), r) < F32_REL_TOL  # float32 vs float64 (see module comment)
    e = random_embeddings(tiny_state, 2, seed=7)
    ss.append_embeddings(e)
    cache = tiny_ref.new_cache()
    tiny_ref.forward(A + C, cache=cache, logits_all=False)
    r, _ = tiny_ref.forward_embeddings(e, cache=cache, logits_all=False)
    assert rel(last_logits(s), r) < F32_REL_TOL
    text = s.chat([{"role": "user", "content": "Still alive?"}], max_new_tokens=3, do_sample=False)
    assert isinstance(text, str) and 1 <= len(s.last_generated_ids) <= 3
