"""numpy reference of the MiniCPM-o 4.5 speech-token decoder (``tts.*``, MiniCPMTTS), written from
MODEL_SPEC.md §5.1, §4.4, §6.1, §6.3, with the facts the spec leaves open read from the official code
(MiniCPM-o-Demo MiniCPMO45/modeling_minicpmo_unified.py: MiniCPMTTS.generate / generate_chunk,
gen_logits, CustomRepetitionPenaltyLogitsProcessorRepeat, _generate_speech_non_streaming,
the simplex ``audio_chunk_generator`` and the duplex unit loop; utils.py: TTSSamplingParams,
TTSStreamingGenerator.generate_with_buffer, ChunkPrefillChunkGenerate).

Precision: float64 by default (weights up-cast once), ``dtype=np.float32`` for a float32 forward.

Model:
    c_t        = emb_text[t] + L2normalize(projector_semantic(h_t))      (eps 1e-12, F.normalize)
                 projector_semantic(h) = linear2(relu(linear1(h)));  h_t = LLM final-norm hidden at the
                 position where t is the INPUT token (official: hidden_states[-1] row of t)
    audio_bos  = emb_text[151687];  text_eos = emb_text[151692];  code s -> emb_code.0[s]
    backbone   = Llama: x += Wo attn(RoPE(q), RoPE(k), v) of RMSNorm(x); x += Wd(silu(Wg h) * Wu h), h = RMSNorm(x)
                 RMSNorm eps 1e-6, RoPE theta 10000 rotate-half, no biases, no q/k norm; final RMSNorm
    logits     = hidden @ W^T, W[i] = g[i] * v[i] / ||v[i]||   (head_code.0 weight norm, dim 0)
    classes    0..6560 speech tokens, 6561 = EOS (num_audio_tokens - 1)

Attention with a KV cache: every new row sees all cached rows plus the earlier rows of its own block
(HF causal mask from the cache length). Positions are only used by RoPE and are given explicitly, so
a position gap (see the streaming max-length quirk below) is representable.

Sampling (one step): ``logits / T`` -> [repetition penalty -> top-p -> top-k] (skipped on the
mode's "first" step) -> [EOS = -inf while masked] -> softmax -> draw. The penalty counts each id in
the last 16 tokens of the mode's history: alpha = 1.05**count, ``x*alpha if x < 0 else x/alpha``.
Top-p / top-k are transformers' TopPLogitsWarper / TopKLogitsWarper with min_tokens_to_keep=3
(top-p first). Duplex applies the penalty only.

Random numbers are injected: ``draws`` is None (greedy: argmax of the processed logits, first index
on ties), a ``numpy.random.Generator`` (``gen.random()``), a callable returning a float in [0, 1), or
a sequence of such floats. **Exactly one draw per sampling step, in step order**, also on the steps
whose sample the official code throws away (chat: the sample at the length limit; duplex: the 26th).
The draw u picks ``min{i : cumsum(p)[i] > u * sum(p)}`` over the class index order 0..6561 (inverse
CDF; masked classes have p = 0 and are never chosen). A runtime that follows the same convention can
be compared token for token.

Usage:
    ref = TTSReference(state_dict, config)      # HF arrays (tts.*) + config.json dict or its tts_config
    res = generate_chat(ref, text_ids, llm_hidden, draws=np.random.default_rng(0))   # res.tokens
    st = StreamingTTS(ref)                      # one per assistant turn
    r = st.feed_text_chunk(ids, hidden, text_finished=False, draws=uniform_callable)  # r.released
    du = DuplexTTS(ref)                         # one per duplex session
    r = du.unit(ids_after_decision_token, hidden, end_of_turn=False, draws=None)     # greedy
    Every result carries ``fed`` (FeedRow(position, kind, value) per forwarded row), ``sampled`` and,
    with keep_logits=True, the raw and processed logits of every step.

Per-mode facts (official code):
* chat (``generate``): rows ``[c_1..c_n, text_eos, audio_bos]`` at positions 0..n+1; step t >= 1 feeds
  ``emb_code[s_{t-1}]`` at position n+2+t-1. Step 0 skips penalty and warpers; EOS is masked (after
  the warpers) while t < 50. The returned tokens exclude EOS; if the 2048-step limit is hit the last
  sampled token is dropped (2047 returned). History for the penalty = this call's tokens.
* streaming simplex (``TTSStreamingGenerator``): per text chunk ``[c..., (text_eos if final), audio_bos]``
  at positions ``start..``; steps t >= 1 feed the previous token at ``start + L + t - 1``; sample
  until EOS (never fed, never kept) or 500 steps; ``start += L + kept``. Penalty history = every
  token of the stream; processors are skipped only while the stream has no token yet and t == 0.
  No EOS masking. Kept tokens are released in blocks of 25 as they come; the rest goes out when the
  final chunk samples EOS (an empty block if nothing is left), otherwise through the caller's flush.
  Quirk kept here: when the 500-step limit is hit the last token is kept and counted in ``start``
  but was never fed, so the next chunk starts one position after the cache end.
* duplex (``generate_chunk``): ``[c..., audio_bos]`` (just ``[audio_bos]`` without speakable tokens);
  c... = every token the unit fed after its first (decision) token, specials such as <|turn_eos|>
  included (the terminators <|listen|>/<|chunk_eos|>/<|chunk_tts_eos|> are never fed);
  the projected hidden is ALWAYS normalised (the duplex path ignores normalize_projected_hidden);
  26 steps at most, EOS masked while t < 26 except at the first unit of a turn (start == 0) and on
  the unit with ``<|turn_eos|>`` (then min 0); the 26th sample is discarded, so 25 tokens per unit.
  Penalty history = this unit's tokens; step 0 unprocessed; no top-p/top-k. Cache + start persist
  across units; the end-of-turn unit resets them afterwards.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

PREFIX = "tts."
AUDIO_BOS_TOKEN_ID = 151687
TEXT_EOS_TOKEN_ID = 151692
TTS_BOS_TOKEN_ID = 151703  # LLM <|tts_bos|>: speech text starts after it (§4.4)
TTS_EOS_TOKEN_ID = 151704  # LLM <|tts_eos|>
NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize default

# official defaults (MiniCPMTTS.generate / TTSStreamingGenerator / duplex unit loop)
CHAT_MIN_NEW_TOKENS = 50
CHAT_MAX_NEW_TOKENS = 2048
STREAMING_MAX_NEW_TOKENS = 500  # generate_with_buffer default, per text chunk
STREAMING_BLOCK = 25  # speech tokens released per block (1 s at 25 Hz)
DUPLEX_TOKENS_PER_UNIT = 25  # max_new_token = min_new_tokens = 25 + 1 mid-turn

FeedRow = namedtuple("FeedRow", "position kind value")
FeedRow.__doc__ = """One row fed to the backbone: ``kind`` in {"text", "text_eos", "audio_bos", "code"};
``value`` = the LLM token id of a text row, the speech token of a code row, None otherwise."""


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TTSConfig:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    llm_dim: int
    num_audio_tokens: int = 6562
    num_text_tokens: int = 152064
    rms_norm_eps: float = 1e-6  # LlamaConfig default (never taken from tts_config)
    rope_theta: float = 10000.0  # LlamaConfig default (never taken from tts_config)
    audio_bos_token_id: int = AUDIO_BOS_TOKEN_ID
    text_eos_token_id: int = TEXT_EOS_TOKEN_ID
    normalize_projected_hidden: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def eos_token_id(self) -> int:
        return self.num_audio_tokens - 1

    @classmethod
    def from_config(cls, config: Mapping) -> "TTSConfig":
        """From a top-level MiniCPM-o config.json dict (uses its ``tts_config``) or a tts_config dict.
        rms_norm_eps / rope_theta / activation are NOT read: the official MiniCPMTTS builds its
        LlamaConfig from hidden/intermediate/heads/kv heads/layers/max positions only, so the Llama
        defaults (1e-6, 10000, silu) apply whatever tts_config says."""
        t = config.get("tts_config", config)
        try:
            heads = int(t["num_attention_heads"])
            c = cls(hidden_size=int(t["hidden_size"]), num_hidden_layers=int(t["num_hidden_layers"]),
                    num_attention_heads=heads, num_key_value_heads=int(t.get("num_key_value_heads") or heads),
                    intermediate_size=int(t["intermediate_size"]), llm_dim=int(t["llm_dim"]),
                    num_audio_tokens=int(t.get("num_audio_tokens", 6562)),
                    num_text_tokens=int(t.get("num_text_tokens", 152064)),
                    audio_bos_token_id=int(t.get("audio_bos_token_id", AUDIO_BOS_TOKEN_ID)),
                    text_eos_token_id=int(t.get("text_eos_token_id", TEXT_EOS_TOKEN_ID)),
                    normalize_projected_hidden=bool(t.get("normalize_projected_hidden", True)))
        except KeyError as e:
            raise ValueError(f"tts config is missing key {e.args[0]!r}") from None
        if c.hidden_size % c.num_attention_heads or c.num_attention_heads % c.num_key_value_heads:
            raise ValueError(f"tts config: hidden_size {c.hidden_size}, heads {c.num_attention_heads}, "
                             f"kv heads {c.num_key_value_heads} do not divide")
        return c


@dataclass(frozen=True)
class TTSSampling:
    """Sampling settings of one mode. ``top_p``/``top_k`` None = that warper is not applied."""
    temperature: float = 0.8
    repetition_penalty: float = 1.05
    penalty_window: int = 16
    top_p: Optional[float] = 0.85
    top_k: Optional[int] = 25
    min_tokens_to_keep: int = 3


CHAT_SAMPLING = TTSSampling()  # TTSSamplingParams: T 0.8, rep 1.05 / 16, top-p 0.85, top-k 25
STREAMING_SAMPLING = TTSSampling()  # streaming_generate passes the same TTSSamplingParams
DUPLEX_SAMPLING = TTSSampling(top_p=None, top_k=None)  # generate_chunk builds warpers but never applies them


# ------------------------------------------------------------------------------------------------
# small numeric helpers
# ------------------------------------------------------------------------------------------------

def l2_normalize(x, eps=NORMALIZE_EPS):
    """torch.nn.functional.normalize(x, p=2, dim=-1): x / max(||x||, eps)."""
    x = np.asarray(x)
    n = np.sqrt(np.sum(x * x, axis=-1, keepdims=True))
    return x / np.maximum(n, eps)


def weight_norm(g, v):
    """torch weight_norm(dim=0): W[i, :] = g[i] * v[i, :] / ||v[i, :]||. g: (rows, 1), v: (rows, cols)."""
    g = np.asarray(g)
    v = np.asarray(v)
    if g.shape != (v.shape[0], 1):
        raise ValueError(f"weight-norm g must have shape ({v.shape[0]}, 1), got {g.shape}")
    return g * (v / np.sqrt(np.sum(v * v, axis=1, keepdims=True)))


def softmax(x):
    x = np.asarray(x)
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=-1, keepdims=True)


def _check_ids(ids, upper, what):
    a = np.asarray(ids)
    if a.ndim != 1:
        raise ValueError(f"{what} must be a 1-D sequence of ids, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise ValueError(f"{what} must be integers")
    a = a.astype(np.int64)
    bad = a[(a < 0) | (a >= upper)]
    if bad.size:
        raise ValueError(f"{what} out of range [0, {upper}): {int(bad[0])}")
    return a


# ------------------------------------------------------------------------------------------------
# logits processors and the draw
# ------------------------------------------------------------------------------------------------

def repetition_penalty(logits, history, penalty=1.05, window=16):
    """CustomRepetitionPenaltyLogitsProcessorRepeat: counts c_i of id i among the last ``window``
    ids of ``history``; alpha_i = penalty**c_i; ``x*alpha if x < 0 else x/alpha`` (0 is divided).
    (Its max_input_ids argument only narrows the batch axis and never has an effect.)"""
    logits = np.asarray(logits)
    h = _check_ids(np.asarray(history, dtype=np.int64).reshape(-1), logits.shape[-1], "penalty history")
    if window <= 0:
        raise ValueError(f"penalty window must be positive, got {window}")
    counts = np.bincount(h[-window:], minlength=logits.shape[-1]).astype(logits.dtype)
    alpha = np.power(logits.dtype.type(penalty), counts)
    return np.where(logits < 0, logits * alpha, logits / alpha)


def top_p_filter(logits, top_p, min_tokens_to_keep=3):
    """transformers TopPLogitsWarper: sort ascending, remove tokens whose cumulative probability is
    <= 1 - top_p, but never the last ``min_tokens_to_keep`` (largest) ones. Removed -> -inf.
    Equal logits are ordered by index (torch.sort is not stable; only matters for exact ties)."""
    logits = np.asarray(logits)
    if not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {top_p}")
    order = np.argsort(logits, kind="stable")
    cum = np.cumsum(softmax(logits[order]))
    remove_sorted = cum <= logits.dtype.type(1.0 - top_p)  # the torch scalar is cast to the logits dtype
    remove_sorted[-min_tokens_to_keep:] = False
    remove = np.empty_like(remove_sorted)
    remove[order] = remove_sorted
    return np.where(remove, -np.inf, logits)


def top_k_filter(logits, top_k, min_tokens_to_keep=3):
    """transformers TopKLogitsWarper: k = max(top_k, min_keep) (capped at the vocab); tokens strictly
    below the k-th largest logit -> -inf (ties with it are kept)."""
    logits = np.asarray(logits)
    if top_k <= 0:
        raise ValueError(f"top_k must be positive, got {top_k}")
    k = min(max(int(top_k), int(min_tokens_to_keep)), logits.shape[-1])
    kth = np.partition(logits, logits.shape[-1] - k)[logits.shape[-1] - k]
    return np.where(logits < kth, -np.inf, logits)


def process_logits(raw_logits, history, sampling: TTSSampling, apply_processors: bool,
                   mask_eos: bool = False, eos_token_id: Optional[int] = None):
    """One step's logits as sampled: /T, then (if apply_processors) penalty over ``history``, top-p,
    top-k, then (if mask_eos) EOS = -inf. Returns a new array."""
    x = np.array(raw_logits, copy=True)
    if x.ndim != 1:
        raise ValueError(f"logits must be 1-D, got shape {x.shape}")
    x = x / x.dtype.type(sampling.temperature)
    if apply_processors:
        if sampling.repetition_penalty is not None and sampling.repetition_penalty != 1:
            x = repetition_penalty(x, history, sampling.repetition_penalty, sampling.penalty_window)
        if sampling.top_p is not None:
            x = top_p_filter(x, sampling.top_p, sampling.min_tokens_to_keep)
        if sampling.top_k is not None:
            x = top_k_filter(x, sampling.top_k, sampling.min_tokens_to_keep)
    if mask_eos:
        x[eos_token_id] = -np.inf
    return x


def sample_from_probs(probs, u):
    """Inverse CDF over the index order: the first i with cumsum(p)[i] > u * sum(p)."""
    p = np.asarray(probs, dtype=np.float64)
    if not (0.0 <= u < 1.0):
        raise ValueError(f"uniform draw must be in [0, 1), got {u!r}")
    c = np.cumsum(p)
    i = int(np.searchsorted(c, u * c[-1], side="right"))
    if i >= p.size or p[i] == 0:  # rounding at the top end: take the last class with p > 0
        i = int(np.flatnonzero(p > 0)[-1])
    return i


def as_draws(draws) -> Optional[Callable[[], float]]:
    """Normalise the ``draws`` argument (None / Generator / callable / sequence) to a callable."""
    if draws is None:
        return None
    if isinstance(draws, np.random.Generator):
        return lambda: float(draws.random())
    if callable(draws):
        return draws
    seq = [float(u) for u in draws]
    it = iter(seq)

    def nxt():
        try:
            return next(it)
        except StopIteration:
            raise ValueError(f"ran out of uniform draws after {len(seq)}") from None

    return nxt


def choose(processed_logits, draw: Optional[Callable[[], float]]):
    """Greedy (draw None: argmax, first index on ties) or one inverse-CDF draw from softmax."""
    if draw is None:
        return int(np.argmax(processed_logits))
    u = draw()
    return sample_from_probs(softmax(processed_logits), float(u))


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------

class TTSCache:
    """Per-layer keys (after RoPE) and values, [n, kv_heads, head_dim]; ``positions`` of the rows."""

    def __init__(self, n_layers: int):
        self.k = [None] * n_layers
        self.v = [None] * n_layers
        self.positions: list[int] = []

    @property
    def n(self) -> int:
        return len(self.positions)

    def copy(self) -> "TTSCache":
        c = TTSCache(len(self.k))
        c.k = [None if a is None else a.copy() for a in self.k]
        c.v = [None if a is None else a.copy() for a in self.v]
        c.positions = list(self.positions)
        return c


class TTSReference:
    def __init__(self, state_dict: Mapping[str, np.ndarray], config, dtype=np.float64):
        self.cfg = config if isinstance(config, TTSConfig) else TTSConfig.from_config(config)
        self.dtype = np.dtype(dtype)
        c = self.cfg
        H, hd = c.hidden_size, c.head_dim

        def W(name, shape):
            key = PREFIX + name
            if key not in state_dict:
                raise KeyError(f"state dict has no {key!r}")
            a = np.asarray(state_dict[key])
            if a.shape != tuple(shape):
                raise ValueError(f"{key}: shape {a.shape}, expected {tuple(shape)}")
            return a.astype(self.dtype)

        self.emb_text = W("emb_text.weight", (c.num_text_tokens, H))
        self.emb_code = W("emb_code.0.weight", (c.num_audio_tokens, H))
        g = W("head_code.0.parametrizations.weight.original0", (c.num_audio_tokens, 1))
        v = W("head_code.0.parametrizations.weight.original1", (c.num_audio_tokens, H))
        self.head = weight_norm(g, v)
        self.norm = W("model.norm.weight", (H,))
        self.proj = {k: W(f"projector_semantic.{k}", s) for k, s in (
            ("linear1.weight", (H, c.llm_dim)), ("linear1.bias", (H,)),
            ("linear2.weight", (H, H)), ("linear2.bias", (H,)))}
        nq, nkv, ff = c.num_attention_heads * hd, c.num_key_value_heads * hd, c.intermediate_size
        self.layers = []
        for i in range(c.num_hidden_layers):
            p = f"model.layers.{i}."
            self.layers.append({
                "in_norm": W(p + "input_layernorm.weight", (H,)),
                "post_norm": W(p + "post_attention_layernorm.weight", (H,)),
                "wq": W(p + "self_attn.q_proj.weight", (nq, H)),
                "wk": W(p + "self_attn.k_proj.weight", (nkv, H)),
                "wv": W(p + "self_attn.v_proj.weight", (nkv, H)),
                "wo": W(p + "self_attn.o_proj.weight", (H, nq)),
                "wg": W(p + "mlp.gate_proj.weight", (ff, H)),
                "wu": W(p + "mlp.up_proj.weight", (ff, H)),
                "wd": W(p + "mlp.down_proj.weight", (H, ff)),
            })
        for tid, what in ((c.audio_bos_token_id, "audio_bos_token_id"), (c.text_eos_token_id, "text_eos_token_id")):
            if not 0 <= tid < c.num_text_tokens:
                raise ValueError(f"{what} {tid} is not a row of emb_text ({c.num_text_tokens} rows)")

    # ------------------------------------------------------------------ input rows
    def project_hidden(self, hidden):
        """projector_semantic: linear2(relu(linear1(h)))."""
        h = np.asarray(hidden, dtype=self.dtype)
        p = self.proj
        a = np.maximum(h @ p["linear1.weight"].T + p["linear1.bias"], 0)
        return a @ p["linear2.weight"].T + p["linear2.bias"]

    def condition_rows(self, text_ids, hidden, normalize: Optional[bool] = None):
        """c_t = emb_text[t] + L2normalize(projector_semantic(h_t)) for each (t, h_t); [n, hidden].
        ``normalize`` None = config ``normalize_projected_hidden`` (duplex passes True)."""
        ids = _check_ids(np.asarray(text_ids).reshape(-1), self.cfg.num_text_tokens, "text token ids")
        h = np.asarray(hidden)
        if h.ndim != 2 or h.shape != (ids.size, self.cfg.llm_dim):
            raise ValueError(f"hidden must have shape ({ids.size}, {self.cfg.llm_dim}) (one LLM final-norm "
                             f"row per text token), got {h.shape}")
        if not np.all(np.isfinite(h)):
            raise ValueError("hidden contains NaN or Inf")
        proj = self.project_hidden(h)
        if self.cfg.normalize_projected_hidden if normalize is None else normalize:
            proj = l2_normalize(proj)
        return self.emb_text[ids] + proj

    def audio_bos_row(self):
        return self.emb_text[self.cfg.audio_bos_token_id][None, :]

    def text_eos_row(self):
        return self.emb_text[self.cfg.text_eos_token_id][None, :]

    def code_rows(self, codes):
        """emb_code.0 rows of speech tokens (0..num_audio_tokens-1; 6561 = EOS is a valid row but the
        official loops never feed it)."""
        ids = _check_ids(np.asarray(codes).reshape(-1), self.cfg.num_audio_tokens, "speech token ids")
        return self.emb_code[ids]

    # ------------------------------------------------------------------ backbone
    def new_cache(self) -> TTSCache:
        return TTSCache(self.cfg.num_hidden_layers)

    def rms_norm(self, x, w):
        return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.cfg.rms_norm_eps))

    def rope(self, x, positions):
        """rotate-half RoPE, x: [n, heads, d]."""
        d = self.cfg.head_dim
        inv = 1.0 / (self.cfg.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
        ang = np.asarray(positions, dtype=np.float64)[:, None] * inv[None, :]
        cos = np.cos(ang).astype(self.dtype)[:, None, :]
        sin = np.sin(ang).astype(self.dtype)[:, None, :]
        x1, x2 = x[..., : d // 2], x[..., d // 2:]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    def forward(self, embeds, positions, cache: Optional[TTSCache] = None):
        """Run input rows [n, hidden] at explicit ``positions`` (n ints); returns the final-norm hidden
        [n, hidden]. With ``cache`` the rows attend to all cached rows and the cache is extended."""
        c = self.cfg
        x = np.asarray(embeds, dtype=self.dtype)
        if x.ndim != 2 or x.shape[1] != c.hidden_size or x.shape[0] == 0:
            raise ValueError(f"embeds must have shape (n >= 1, {c.hidden_size}), got {x.shape}")
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if pos.size != x.shape[0]:
            raise ValueError(f"{pos.size} positions for {x.shape[0]} rows")
        if pos.min() < 0:
            raise ValueError("positions must be >= 0")
        n = x.shape[0]
        Hh, KV, d = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        group = Hh // KV
        scale = 1.0 / np.sqrt(d)
        for li, L in enumerate(self.layers):
            h = self.rms_norm(x, L["in_norm"])
            q = self.rope((h @ L["wq"].T).reshape(n, Hh, d), pos)
            k = self.rope((h @ L["wk"].T).reshape(n, KV, d), pos)
            v = (h @ L["wv"].T).reshape(n, KV, d)
            if cache is not None and cache.k[li] is not None:
                k = np.concatenate([cache.k[li], k], axis=0)
                v = np.concatenate([cache.v[li], v], axis=0)
            if cache is not None:
                cache.k[li], cache.v[li] = k, v
            past = k.shape[0] - n
            mask = np.arange(k.shape[0])[None, :] > (past + np.arange(n))[:, None]
            out = np.empty((n, Hh, d), dtype=self.dtype)
            for hh in range(Hh):
                s = (q[:, hh, :] @ k[:, hh // group, :].T) * scale
                out[:, hh, :] = softmax(np.where(mask, -np.inf, s)) @ v[:, hh // group, :]
            x = x + out.reshape(n, Hh * d) @ L["wo"].T
            h = self.rms_norm(x, L["post_norm"])
            g = h @ L["wg"].T
            x = x + ((g / (1.0 + np.exp(-g))) * (h @ L["wu"].T)) @ L["wd"].T
        if cache is not None:
            cache.positions.extend(int(p) for p in pos)
        return self.rms_norm(x, self.norm)

    def logits(self, hidden):
        """head_code.0 (weight-normed, no bias): [n, num_audio_tokens]."""
        return np.asarray(hidden, dtype=self.dtype) @ self.head.T

    def sequence_logits(self, embeds, positions=None):
        """Logits of every row of a whole sequence in one pass (no cache); positions default 0..n-1."""
        n = np.asarray(embeds).shape[0]
        return self.logits(self.forward(embeds, np.arange(n) if positions is None else positions))

    def rows_for(self, fed: Sequence[FeedRow], text_rows=None):
        """Rebuild the embedding rows of a feed log; ``text_rows`` = the condition rows of its text
        entries in order (they depend on hidden states, not only on ids)."""
        out, ti = [], 0
        for r in fed:
            if r.kind == "text":
                out.append(np.asarray(text_rows)[ti])
                ti += 1
            elif r.kind == "text_eos":
                out.append(self.text_eos_row()[0])
            elif r.kind == "audio_bos":
                out.append(self.audio_bos_row()[0])
            elif r.kind == "code":
                out.append(self.code_rows([r.value])[0])
            else:
                raise ValueError(f"unknown feed row kind {r.kind!r}")
        return np.stack(out)


# ------------------------------------------------------------------------------------------------
# decoding modes
# ------------------------------------------------------------------------------------------------

@dataclass
class TTSResult:
    """``tokens``: speech tokens as the official code returns/keeps them (no EOS);
    ``sampled``: every sample per step (EOS and discarded samples included);
    ``fed``: FeedRow log of the rows forwarded in this call; ``finished``: EOS was sampled;
    ``step_logits`` (keep_logits=True): raw head logits per step; ``processed_logits``: as sampled."""
    tokens: list = field(default_factory=list)
    sampled: list = field(default_factory=list)
    fed: list = field(default_factory=list)
    finished: bool = False
    step_logits: list = field(default_factory=list)
    processed_logits: list = field(default_factory=list)
    released: list = field(default_factory=list)  # streaming only: (block tokens, is_last)
    min_new_tokens: int = 0  # duplex only: the EOS rule used for this unit


def _condition_feed(text_ids, start, extra_kinds):
    rows = [FeedRow(start + i, "text", int(t)) for i, t in enumerate(text_ids)]
    rows += [FeedRow(start + len(rows) + j, k, None) for j, k in enumerate(extra_kinds)]
    return rows


class _Stepper:
    """Shared step semantics: step 0 forwards the condition block, step t >= 1 forwards the previous
    sample's code row at ``start + L + t - 1``; logits of the last row."""

    def __init__(self, ref: TTSReference, cache: TTSCache, keep_logits: bool, result: TTSResult):
        self.ref, self.cache, self.keep, self.res = ref, cache, keep_logits, result

    def forward(self, rows, feed):
        hidden = self.ref.forward(rows, [f.position for f in feed], self.cache)
        self.res.fed.extend(feed)
        return self.ref.logits(hidden[-1:])[0]

    def pick(self, raw, history, sampling, apply_processors, mask_eos, draw):
        x = process_logits(raw, history, sampling, apply_processors, mask_eos, self.ref.cfg.eos_token_id)
        s = choose(x, draw)
        if self.keep:
            self.res.step_logits.append(raw)
            self.res.processed_logits.append(x)
        self.res.sampled.append(s)
        return s


def _check_sampling_limits(min_new, max_new):
    if int(max_new) < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new}")
    if int(min_new) < 0:
        raise ValueError(f"min_new_tokens must be >= 0, got {min_new}")


def generate_chat(ref: TTSReference, text_ids, hidden, draws=None, sampling: TTSSampling = CHAT_SAMPLING,
                  min_new_tokens=CHAT_MIN_NEW_TOKENS, max_new_tokens=CHAT_MAX_NEW_TOKENS,
                  keep_logits=False) -> TTSResult:
    """Non-streaming chat (MiniCPMTTS.generate): rows [c_1..c_n, text_eos, audio_bos] at 0..n+1."""
    ids = _check_ids(np.asarray(text_ids).reshape(-1), ref.cfg.num_text_tokens, "text token ids")
    if ids.size == 0:
        raise ValueError("chat TTS needs at least one text token to speak (empty text)")
    _check_sampling_limits(min_new_tokens, max_new_tokens)
    draw = as_draws(draws)
    cond = np.concatenate([ref.condition_rows(ids, hidden), ref.text_eos_row(), ref.audio_bos_row()])
    feed = _condition_feed(ids, 0, ("text_eos", "audio_bos"))
    res = TTSResult()
    st = _Stepper(ref, ref.new_cache(), keep_logits, res)
    L = cond.shape[0]
    eos = ref.cfg.eos_token_id
    for t in range(int(max_new_tokens)):
        if t == 0:
            raw = st.forward(cond, feed)
        else:
            prev = res.sampled[-1]
            raw = st.forward(ref.code_rows([prev]), [FeedRow(L + t - 1, "code", prev)])
        s = st.pick(raw, res.sampled[:t], sampling, t > 0, t < min_new_tokens, draw)
        if s == eos:
            res.finished = True
            break
    # official: new_tokens[:, 0:t] -> EOS excluded; at the limit the last sample is dropped too
    res.tokens = list(res.sampled[:-1])
    return res


class StreamingTTS:
    """Simplex streaming (TTSStreamingGenerator, full attention): one instance per assistant turn."""

    def __init__(self, ref: TTSReference, sampling: TTSSampling = STREAMING_SAMPLING,
                 block_size=STREAMING_BLOCK, max_new_tokens_per_chunk=STREAMING_MAX_NEW_TOKENS,
                 keep_logits=False):
        _check_sampling_limits(0, max_new_tokens_per_chunk)
        if int(block_size) < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.ref, self.sampling, self.block = ref, sampling, int(block_size)
        self.max_new = int(max_new_tokens_per_chunk)
        self.keep = keep_logits
        self.cache = ref.new_cache()
        self.text_start_pos = 0
        self.all_generated: list[int] = []
        self.buffer: list[int] = []
        self.text_finished = False
        self.fed: list[FeedRow] = []

    def feed_text_chunk(self, text_ids, hidden, text_finished: bool, draws=None) -> TTSResult:
        """One LLM text chunk (official: 10 tokens, the final one 1..10) -> speech tokens until EOS.
        ``released`` = the 25-token blocks (and on the final chunk the rest) given out by this call."""
        if self.text_finished:
            raise ValueError("the stream already received its final text chunk")
        ids = _check_ids(np.asarray(text_ids).reshape(-1), self.ref.cfg.num_text_tokens, "text token ids")
        if ids.size == 0:
            raise ValueError("a streaming text chunk needs at least one text token (empty chunk)")
        ref, eos = self.ref, self.ref.cfg.eos_token_id
        draw = as_draws(draws)
        extra = ("text_eos", "audio_bos") if text_finished else ("audio_bos",)
        rows = [ref.condition_rows(ids, hidden)]
        rows += [ref.text_eos_row()] if text_finished else []
        cond = np.concatenate(rows + [ref.audio_bos_row()])
        L, start = cond.shape[0], self.text_start_pos
        res = TTSResult()
        st = _Stepper(ref, self.cache, self.keep, res)
        kept = []
        for t in range(self.max_new):
            if t == 0:
                raw = st.forward(cond, _condition_feed(ids, start, extra))
            else:
                prev = self.all_generated[-1]
                raw = st.forward(ref.code_rows([prev]), [FeedRow(start + L + t - 1, "code", prev)])
            first_of_stream = not self.all_generated and t == 0
            s = st.pick(raw, self.all_generated, self.sampling, not first_of_stream, False, draw)
            if s == eos:
                res.finished = True
            else:
                self.all_generated.append(s)
                kept.append(s)
                self.buffer.append(s)
            # buffer release, as generate_with_buffer
            if not self.buffer:
                if text_finished:
                    res.released.append(([], True))
                break
            if len(self.buffer) >= self.block:
                res.released.append((self.buffer[:self.block], False))
                self.buffer = self.buffer[self.block:]
            elif res.finished:
                if text_finished:
                    res.released.append((list(self.buffer), True))
                    self.buffer = []
                break
        self.text_start_pos += L + len(kept)  # counts a token sampled at the step limit that was never fed
        self.text_finished = bool(text_finished)
        res.tokens = kept
        self.fed.extend(res.fed)
        return res

    def flush(self) -> list:
        """LLM ended without a final chunk (length limit): the official loop releases the buffer."""
        out, self.buffer = list(self.buffer), []
        return out


class DuplexTTS:
    """Duplex speech per 1-s unit (MiniCPMTTS.generate_chunk + the unit loop's TTS state)."""

    def __init__(self, ref: TTSReference, sampling: TTSSampling = DUPLEX_SAMPLING,
                 tokens_per_unit=DUPLEX_TOKENS_PER_UNIT, keep_logits=False):
        if int(tokens_per_unit) < 1:
            raise ValueError(f"tokens_per_unit must be >= 1, got {tokens_per_unit}")
        self.ref, self.sampling, self.per_unit, self.keep = ref, sampling, int(tokens_per_unit), keep_logits
        self.cache = ref.new_cache()
        self.text_start_pos = 0

    def reset_turn(self):
        self.cache = self.ref.new_cache()
        self.text_start_pos = 0

    def unit(self, text_ids, hidden, end_of_turn: bool, draws=None) -> TTSResult:
        """One speaking unit: ``text_ids``/``hidden`` = the unit's tokens after its first (decision)
        token, possibly none. Returns up to 25 tokens (fewer only when EOS is allowed and sampled)."""
        ref, eos = self.ref, self.ref.cfg.eos_token_id
        ids = _check_ids(np.asarray([] if text_ids is None else text_ids).reshape(-1), ref.cfg.num_text_tokens,
                         "text token ids")
        draw = as_draws(draws)
        if ids.size:
            cond = np.concatenate([ref.condition_rows(ids, hidden, normalize=True), ref.audio_bos_row()])
        else:
            if hidden is not None and np.asarray(hidden).size:
                raise ValueError("hidden rows given for a unit without text tokens")
            cond = ref.audio_bos_row()
        max_new = self.per_unit + 1
        min_new = 0 if (end_of_turn or self.text_start_pos == 0) else max_new
        L, start = cond.shape[0], self.text_start_pos
        res = TTSResult(min_new_tokens=min_new)
        st = _Stepper(ref, self.cache, self.keep, res)
        for t in range(max_new):
            if t == 0:
                raw = st.forward(cond, _condition_feed(ids, start, ("audio_bos",)))
            else:
                prev = res.sampled[-1]
                raw = st.forward(ref.code_rows([prev]), [FeedRow(start + L + t - 1, "code", prev)])
            s = st.pick(raw, res.sampled[:t], self.sampling, t > 0, t < min_new, draw)
            if s == eos:
                res.finished = True
                break
        res.tokens = list(res.sampled[:-1])  # EOS excluded, or the (per_unit+1)-th sample discarded
        if end_of_turn:
            self.reset_turn()
        else:
            self.text_start_pos += L + len(res.tokens)
        return res


# ------------------------------------------------------------------------------------------------
# which LLM tokens/rows feed the chat condition
# ------------------------------------------------------------------------------------------------

def chat_condition_span(sequence_ids, n_hidden_rows=None, tts_bos=TTS_BOS_TOKEN_ID, tts_eos=TTS_EOS_TOKEN_ID):
    """[start, end) of the spoken tokens in prompt + generated ids (official chat): start = last
    <|tts_bos|> + 1, end = last <|tts_eos|> (excluded). The hidden row of token j is the LLM final-norm
    output at position j (j as input), so rows exist for all but the last generated token; a span
    without <|tts_eos|> would run into that row and the official code fails there -> ValueError."""
    seq = [int(t) for t in sequence_ids]
    bos = [i for i, t in enumerate(seq) if t == tts_bos]
    eos = [i for i, t in enumerate(seq) if t == tts_eos]
    if not bos:
        raise ValueError("no <|tts_bos|> in the sequence: nothing is marked for speech")
    start = bos[-1] + 1
    if not eos or eos[-1] < start:
        raise ValueError("no <|tts_eos|> after the last <|tts_bos|>: the spoken span has no end")
    end = eos[-1]
    if end == start:
        raise ValueError("empty spoken span between <|tts_bos|> and <|tts_eos|>")
    if n_hidden_rows is not None and end > n_hidden_rows:
        raise ValueError(f"span ends at {end} but only {n_hidden_rows} hidden rows exist")
    return start, end
