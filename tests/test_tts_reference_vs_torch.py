"""The numpy TTS reference (tests/reference/tts.py) against PyTorch on random weights with the HF names
(tts.*), spec §8 tiny dims:

* backbone: ``transformers.LlamaModel`` (LlamaConfig hidden 64, 2 layers, 4 heads, kv 4, intermediate
  128, rope 10000, rms 1e-6, eager attention) fed ``inputs_embeds`` with explicit ``position_ids`` and a
  DynamicCache: a condition block, single code rows, a second block and a position gap, as the
  streaming/duplex loops feed it;
* head: ``nn.Linear(64, 6562, bias=False)`` under ``torch.nn.utils.parametrizations.weight_norm``;
* condition rows: nn.Embedding + the projector's nn.Linear/ReLU + ``F.normalize``;
* sampling: transformers' TopPLogitsWarper / TopKLogitsWarper (min_tokens_to_keep 3) and
  RepetitionPenaltyLogitsProcessor (where the count-based penalty equals it: each id once in the
  window), a torch one_hot/pow formulation of the count penalty, and a greedy chat run replayed with
  these torch pieces.

float64 runs torch in double with its RoPE angles computed in float64: transformers computes the RoPE
angles in float32 whatever the model dtype, which alone costs 1.3e-5 relative at positions ~2040
(measured); replaced, the torch double model still runs LlamaRMSNorm and the eager softmax in float32,
so float64 agreement is ~4e-7 (measured) rather than ~1e-15. float32 runs the unmodified float32
module against the float32 reference.
Metric: rel = max|torch - reference| / max|reference|.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaModel
from transformers.cache_utils import DynamicCache
from transformers.generation.logits_process import (RepetitionPenaltyLogitsProcessor, TopKLogitsWarper,
                                                    TopPLogitsWarper)

from reference.tts import (CHAT_SAMPLING, TTSReference, generate_chat, l2_normalize, process_logits,
                           repetition_penalty, softmax, top_k_filter, top_p_filter)
from tts_weights import TINY_TTS_CONFIG, random_llm_hidden, random_tts_weights

pytestmark = pytest.mark.torch

# float64 numpy vs torch double (RoPE angles float64; LlamaRMSNorm and the eager softmax still in
# float32 inside transformers): measured max 3.8e-7 relative (hidden) / 3.2e-7 (logits).
REL_TOL_F64 = 1e-6
# float32 torch vs float32 numpy through 2 layers of width <= 128 + a 6562-row head, positions < 64:
# float32 rounding, measured max 1.5e-6 (hidden) / 8.3e-7 (logits); 1e-5 leaves room for BLAS order.
# A wrong RoPE convention, norm placement, position or mask moves the outputs by >= 1e-2 relative.
REL_TOL_F32 = 1e-5
EOS = 6561


def rel(a, ref):
    a = np.asarray(a, np.float64)
    ref = np.asarray(ref, np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


@pytest.fixture(scope="module")
def weights():
    return random_tts_weights(1)


def llama_config():
    c = TINY_TTS_CONFIG
    return LlamaConfig(hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                       num_attention_heads=c["num_attention_heads"], num_key_value_heads=c["num_key_value_heads"],
                       num_hidden_layers=c["num_hidden_layers"], max_position_embeddings=4096,
                       rms_norm_eps=1e-6, rope_theta=10000.0, attn_implementation="eager")


def _rope_float64(rotary, head_dim, theta=10000.0):
    """Replacement forward of LlamaRotaryEmbedding computing the angles in float64."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))

    def forward(x, position_ids):
        f = position_ids[..., None].to(torch.float64) * inv
        emb = torch.cat([f, f], dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    rotary.forward = forward


def torch_tts(w, dtype):
    """(LlamaModel, weight-normed head, emb_text, projector) holding the same weights."""
    cfg = llama_config()
    model = LlamaModel(cfg).eval()
    sd = {k[len("tts.model."):]: torch.from_numpy(np.asarray(v)) for k, v in w.items() if k.startswith("tts.model.")}
    model.load_state_dict(sd, strict=True)
    head = nn.utils.parametrizations.weight_norm(nn.Linear(64, 6562, bias=False), name="weight", dim=0)
    head.load_state_dict({
        "parametrizations.weight.original0": torch.from_numpy(w["tts.head_code.0.parametrizations.weight.original0"]),
        "parametrizations.weight.original1": torch.from_numpy(w["tts.head_code.0.parametrizations.weight.original1"]),
    }, strict=True)
    proj = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
    proj.load_state_dict({
        "0.weight": torch.from_numpy(w["tts.projector_semantic.linear1.weight"]),
        "0.bias": torch.from_numpy(w["tts.projector_semantic.linear1.bias"]),
        "2.weight": torch.from_numpy(w["tts.projector_semantic.linear2.weight"]),
        "2.bias": torch.from_numpy(w["tts.projector_semantic.linear2.bias"]),
    })
    emb_text = nn.Embedding.from_pretrained(torch.from_numpy(w["tts.emb_text.weight"]))
    emb_code = nn.Embedding.from_pretrained(torch.from_numpy(w["tts.emb_code.0.weight"]))
    mods = [m.to(dtype) for m in (model, head, proj, emb_text, emb_code)]
    if dtype == torch.float64:
        _rope_float64(model.rotary_emb, 64 // 4)
    return mods


def new_cache(cfg):
    try:
        return DynamicCache(config=cfg)
    except TypeError:  # older transformers
        return DynamicCache()


_CACHE_KW = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


def torch_step(model, cache, rows, positions):
    """One forward of rows [n, 64] at positions through the cache (mutated in place)."""
    with torch.no_grad():
        out = model(inputs_embeds=rows[None], position_ids=torch.as_tensor(positions)[None],
                    use_cache=True, **{_CACHE_KW: cache})
    return out.last_hidden_state[0]


def torch_condition(emb_text, proj, ids, hidden, dtype):
    with torch.no_grad():
        p = F.normalize(proj(torch.from_numpy(hidden).to(dtype)), p=2, dim=-1)
        return emb_text(torch.as_tensor(ids)) + p


# the fed schedule: (row source, positions) — condition block, 5 code rows, a second condition
# block (streaming chunk), 3 code rows, then one code row after a 4-position gap
SCHEDULE = [("cond0", list(range(0, 9))), ("code", [9]), ("code", [10]), ("code", [11]), ("code", [12]),
            ("code", [13]), ("cond1", list(range(14, 19))), ("code", [19]), ("code", [20]), ("code", [21]),
            ("code", [26])]


@pytest.mark.parametrize("np_dtype,t_dtype,tol", [(np.float64, torch.float64, REL_TOL_F64),
                                                  (np.float32, torch.float32, REL_TOL_F32)])
def test_backbone_and_head_with_cache(weights, np_dtype, t_dtype, tol):
    w, c = weights
    ref = TTSReference(w, c, np_dtype)
    model, head, proj, emb_text, emb_code = torch_tts(w, t_dtype)
    rng = np.random.default_rng(5)
    conds = {}
    for name, n in (("cond0", 7), ("cond1", 3)):
        ids = rng.integers(0, 151643, n)
        h = random_llm_hidden(int(rng.integers(1 << 30)), n)
        np_rows = np.concatenate([ref.condition_rows(ids, h), ref.text_eos_row(), ref.audio_bos_row()])
        t_rows = torch.cat([torch_condition(emb_text, proj, ids, h, t_dtype),
                            emb_text(torch.tensor([151692, 151687]))])
        assert rel(t_rows.numpy(), np_rows) <= tol  # emb_text + F.normalize(projector) rows
        conds[name] = (np_rows, t_rows)
    codes = rng.integers(0, 6562, 20)
    cache_np, cache_t = ref.new_cache(), new_cache(llama_config())
    worst_h = worst_l = 0.0
    k = 0
    for src, pos in SCHEDULE:
        if src == "code":
            np_rows, t_rows = ref.code_rows([codes[k]]), emb_code(torch.tensor([int(codes[k])]))
            k += 1
        else:
            np_rows, t_rows = conds[src]
        hid_np = ref.forward(np_rows, pos, cache_np)
        hid_t = torch_step(model, cache_t, t_rows, pos)
        with torch.no_grad():
            lg_t = head(hid_t).numpy()
        worst_h = max(worst_h, rel(hid_t.numpy(), hid_np))
        worst_l = max(worst_l, rel(lg_t, ref.logits(hid_np)))
    assert worst_h <= tol and worst_l <= tol, (worst_h, worst_l)


def test_high_positions_float64(weights):
    """Chat runs reach position ~2050: the same agreement holds there (float64 angles)."""
    w, c = weights
    ref = TTSReference(w, c)
    model, head, *_ = torch_tts(w, torch.float64)
    rows = 0.5 * np.random.default_rng(6).standard_normal((6, 64))
    pos = [2040, 2041, 2042, 2043, 2044, 2047]
    cache_t = new_cache(llama_config())
    hid_t = torch.cat([torch_step(model, cache_t, torch.from_numpy(rows[:4]), pos[:4]),
                       torch_step(model, cache_t, torch.from_numpy(rows[4:5]), pos[4:5]),
                       torch_step(model, cache_t, torch.from_numpy(rows[5:]), pos[5:])])
    hid_np = ref.forward(rows, pos)
    with torch.no_grad():
        assert rel(head(hid_t).numpy(), ref.logits(hid_np)) <= REL_TOL_F64


def test_head_weight_norm_matrix(weights):
    w, c = weights
    head = torch_tts(w, torch.float64)[1]
    with torch.no_grad():
        assert rel(head.weight.numpy(), TTSReference(w, c).head) <= 1e-14  # pure float64 formula on both sides


def test_normalize_zero_and_tiny_rows():
    x = np.array([[0.0, 0.0, 0.0], [1e-14, -2e-14, 0.0], [3.0, -4.0, 12.0]])
    # zero row stays zero, a tiny row is divided by eps 1e-12 (not by its norm); float64 formula on both sides
    assert rel(F.normalize(torch.from_numpy(x), p=2, dim=-1).numpy(), l2_normalize(x)) <= 1e-15


# ------------------------------------------------------------------------------------------------
# warpers and penalty
# ------------------------------------------------------------------------------------------------

def _random_logits(rng, dtype):
    scale = rng.choice([0.3, 1.0, 3.0, 10.0, 30.0])  # from flat (top-k bites) to peaked (min_keep bites)
    return (scale * rng.standard_normal(6562)).astype(dtype)


# Top-p cuts where the ascending cumulative probability passes 1 - top_p: a token whose cumulative
# probability lies within rounding of that threshold may be kept by one float path and cut by the other.
# Bounds: float32 softmax + a 6562-term cumsum: measured differences < 1e-6 -> 1e-4 (the worst case,
# n * 2^-24 = 4e-4, needs every rounding to go the same way); float64 -> 1e-12.
TOP_P_BOUNDARY = {np.float64: 1e-12, np.float32: 1e-4}


def assert_same_cut_but_at_the_top_p_boundary(got, want, x, top_p, eps):
    """Filtered logits `got` (numpy reference) and `want` (transformers): the same kept values, and the
    same kept set except at most one token whose float64 cumulative probability (ascending order) is
    within `eps` of 1 - top_p, where rounding decides."""
    gk, wk = np.isfinite(got), np.isfinite(want)
    assert np.array_equal(got[gk & wk], want[gk & wk])  # no arithmetic on kept entries: exact
    differ = np.flatnonzero(gk != wk)
    if differ.size:
        x64 = np.asarray(x, np.float64)
        order = np.argsort(x64, kind="stable")
        cum = np.empty(x64.size)
        cum[order] = np.cumsum(softmax(x64[order]))
        assert differ.size == 1 and abs(cum[differ[0]] - (1.0 - top_p)) <= eps, (differ, cum[differ] - (1 - top_p))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_top_p_top_k_match_transformers(dtype):
    rng = np.random.default_rng(7)
    top_p, top_k = TopPLogitsWarper(0.85, min_tokens_to_keep=3), TopKLogitsWarper(25, min_tokens_to_keep=3)
    kept_p, kept_k = [], []
    for _ in range(100):
        x = _random_logits(rng, dtype)
        xt = torch.from_numpy(x)[None]
        want_p = top_p(None, xt)[0].numpy()
        want_k = top_k(None, xt)[0].numpy()
        # identical masks (but for a top-p boundary token, see TOP_P_BOUNDARY) and untouched kept values
        eps = TOP_P_BOUNDARY[dtype]
        assert_same_cut_but_at_the_top_p_boundary(top_p_filter(x, 0.85, 3), want_p, x, 0.85, eps)
        # top-k is a pure selection by value (no float arithmetic): exact by design
        assert np.array_equal(top_k_filter(x, 25, 3), want_k)
        both = top_k(None, top_p(None, xt))[0].numpy()
        assert_same_cut_but_at_the_top_p_boundary(top_k_filter(top_p_filter(x, 0.85, 3), 25, 3), both, x, 0.85, eps)
        kept_p.append(np.isfinite(want_p).sum())
        kept_k.append(np.isfinite(both).sum())
    # the draws cover both regimes: min_keep = 3 reached and top-p keeping hundreds of tokens
    assert min(kept_p) == 3 and max(kept_p) > 100 and min(kept_k) == 3 and max(kept_k) == 25


def torch_count_penalty(history, scores, penalty=1.05, window=16):
    """Count-based penalty written with torch ops: alpha = penalty ** one_hot counts of the window."""
    ids = torch.as_tensor(history[-window:], dtype=torch.long)[None]
    freq = F.one_hot(ids, scores.size(1)).sum(1)
    alpha = torch.pow(torch.tensor(penalty, dtype=scores.dtype), freq.to(scores.dtype))
    return torch.where(scores < 0, scores * alpha, scores / alpha)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_repetition_penalty_matches_torch(dtype):
    rng = np.random.default_rng(8)
    for _ in range(50):
        x = _random_logits(rng, dtype)
        hist = rng.integers(0, 6561, int(rng.integers(1, 40))).tolist()
        hist[-3:] = [hist[-1]] * 3  # make sure counts > 1 occur inside the window
        got = repetition_penalty(x, hist, 1.05, 16)
        want = torch_count_penalty(hist, torch.from_numpy(x)[None])[0].numpy()
        assert rel(got, want) <= (1e-15 if dtype == np.float64 else 1e-7)
        # with each id at most once in the window it is transformers' RepetitionPenaltyLogitsProcessor
        uniq = list(dict.fromkeys(hist[-16:]))[:16]
        got1 = repetition_penalty(x, uniq, 1.05, 16)
        want1 = RepetitionPenaltyLogitsProcessor(1.05)(torch.tensor([uniq]), torch.from_numpy(x)[None].clone())
        assert rel(got1, want1[0].numpy()) <= (1e-15 if dtype == np.float64 else 1e-7)


def test_greedy_chat_replayed_with_torch_pieces(weights):
    """A greedy chat run: every step's processed logits and choice equal torch's LlamaModel + cache +
    weight-normed head + /T + count penalty + TopP + TopK + EOS mask on the same fed rows."""
    w, c = weights
    ref = TTSReference(w, c)
    model, head, proj, emb_text, emb_code = torch_tts(w, torch.float64)
    ids = np.random.default_rng(9).integers(0, 151643, 6)
    h = random_llm_hidden(9, 6)
    res = generate_chat(ref, ids, h, draws=None, min_new_tokens=50, max_new_tokens=58, keep_logits=True)
    cache = new_cache(llama_config())
    cond = torch.cat([torch_condition(emb_text, proj, ids, h, torch.float64),
                      emb_text(torch.tensor([151692, 151687]))])
    top_p, top_k = TopPLogitsWarper(0.85, min_tokens_to_keep=3), TopKLogitsWarper(25, min_tokens_to_keep=3)
    worst = 0.0
    for t in range(58):
        if t == 0:
            hid = torch_step(model, cache, cond, list(range(8)))
        else:
            hid = torch_step(model, cache, emb_code(torch.tensor([res.sampled[t - 1]])), [8 + t - 1])
        with torch.no_grad():
            x = head(hid[-1:]) / 0.8
        if t > 0:
            x = torch_count_penalty(res.sampled[:t], x)
            before_warpers = x[0].numpy().copy()
            x = top_k(None, top_p(None, x))
        if t < 50:
            x[:, EOS] = -torch.inf
        x = x[0].numpy()
        # logits agreeing to REL_TOL_F64 of the scale (delta): the kept sets agree but for a top-p boundary
        # token (cumulative probabilities move by at most expm1(2 delta) ~ 2 delta), and the reference's
        # choice is torch's maximum or within 2 delta of it
        y = res.processed_logits[t]
        scale = float(np.max(np.abs(y[np.isfinite(y)])))
        f = np.isfinite(x) & np.isfinite(y)
        if t > 0:  # the kept sets (the kept values differ by rounding: compared below)
            kept_by = [np.where(np.isfinite(z), 0.0, -np.inf) for z in (y, x)]
            assert_same_cut_but_at_the_top_p_boundary(*kept_by, before_warpers, 0.85, 2 * REL_TOL_F64 * scale)
        else:
            assert np.array_equal(np.isfinite(x), np.isfinite(y))  # step 0: no warpers, only the EOS mask
        worst = max(worst, rel(x[f], y[f]))
        assert x[res.sampled[t]] >= np.max(x) - 2 * REL_TOL_F64 * scale
    assert worst <= REL_TOL_F64
    # and the reference's processing equals its own step definition on these logits
    assert np.array_equal(res.processed_logits[5], process_logits(res.step_logits[5], res.sampled[:5],
                                                                  CHAT_SAMPLING, True, True, EOS))
    assert softmax(res.processed_logits[0]).sum() == pytest.approx(1.0)
