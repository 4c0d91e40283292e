"""numpy reference of the MiniCPM-o 4.5 LLM (Qwen3 decoder), written from MODEL_SPEC.md §4.1.

Precision: everything is computed in **float64** by default (weights are up-cast once at load time),
so the reference is a precise oracle for both the float32 PyTorch model and the ggml runtime.
Pass ``dtype=np.float32`` to get a float32 forward instead.

Model (per spec §4.1):
    x = embed_tokens[ids]                                  (no embedding scale)
    for each layer:
        h = RMSNorm(x; input_layernorm)
        q = h Wq^T -> [n, H, d];  k = h Wk^T -> [n, KV, d];  v = h Wv^T -> [n, KV, d]
        q = RMSNorm_per_head(q; q_norm);  k = RMSNorm_per_head(k; k_norm)       (before RoPE)
        q, k = RoPE_neox(q, k, positions, theta)
        a = causal softmax(q k^T / sqrt(d)) v, head h reads kv head h // (H/KV)   (GQA)
        x = x + a Wo^T
        h = RMSNorm(x; post_attention_layernorm)
        x = x + (silu(h Wg^T) * (h Wu^T)) Wd^T
    hidden = RMSNorm(x; norm)          <- "LLM hidden state" used by the TTS
    logits = hidden Wlm^T
RMSNorm(x; w) = w * x / sqrt(mean(x^2) + eps).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

PREFIX = "llm."


def _key(name: str) -> str:
    return PREFIX + name


def load_hf_checkpoint(path):
    """Read ``config.json`` and ``model.safetensors`` (or an index of shards) from a HF-layout dir.

    Returns ``(state_dict, config)``: a dict name -> numpy array (original dtype; bf16 is widened to
    float32 because numpy has no bfloat16) and the parsed top-level config dict.
    """
    from safetensors.numpy import load_file

    path = Path(path)
    with open(path / "config.json", encoding="utf-8") as f:
        config = json.load(f)
    files = []
    if (path / "model.safetensors").exists():
        files = [path / "model.safetensors"]
    elif (path / "model.safetensors.index.json").exists():
        with open(path / "model.safetensors.index.json", encoding="utf-8") as f:
            index = json.load(f)
        files = [path / s for s in sorted(set(index["weight_map"].values()))]
    else:
        raise FileNotFoundError(f"no model.safetensors in {path}")
    state = {}
    for fn in files:
        try:
            state.update(load_file(str(fn)))
        except (TypeError, ValueError):
            # bf16 tensors: safetensors.numpy cannot represent them; go through raw bytes.
            state.update(_load_safetensors_raw(fn))
    return state, config


def _load_safetensors_raw(fn):
    """Minimal safetensors reader (header + raw little-endian data), widening BF16 to float32."""
    data = Path(fn).read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    base = 8 + n
    dtypes = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[base + a: base + b]
        if info["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(dtypes[info["dtype"]]).newbyteorder("<"))
        out[name] = arr.reshape(info["shape"]).copy()
    return out


def round_weights(state_dict, outtype):
    """Return a copy of ``state_dict`` whose matrices (ndim >= 2) are rounded to ``outtype``.

    ``outtype`` in {"f32", "f16", "bf16"}. 1-D tensors (norm weights) are kept as they are, following
    the usual GGUF convention that norms stay F32. Used to build the reference for F16/BF16 GGUFs.
    """
    out = {}
    for k, v in state_dict.items():
        v = np.asarray(v)
        if v.ndim < 2 or outtype == "f32":
            out[k] = v.astype(np.float32)
        elif outtype == "f16":
            out[k] = v.astype(np.float32).astype(np.float16).astype(np.float32)
        elif outtype == "bf16":
            u = v.astype(np.float32).view(np.uint32).astype(np.uint64)
            # round-to-nearest-even on the 16 dropped bits (no NaNs in test weights)
            u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
            out[k] = (u.astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"unsupported outtype {outtype!r}")
    return out


class KVCache:
    """Per-layer keys (after q/k-norm and RoPE) and values, [n_past, n_kv_heads, head_dim] each."""

    def __init__(self, n_layers: int):
        self.k = [None] * n_layers
        self.v = [None] * n_layers
        self.n_past = 0

    def copy(self) -> "KVCache":
        c = KVCache(len(self.k))
        c.k = [None if a is None else a.copy() for a in self.k]
        c.v = [None if a is None else a.copy() for a in self.v]
        c.n_past = self.n_past
        return c

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` positions (like llama_memory_seq_rm(p0=n))."""
        self.k = [None if a is None else a[:n] for a in self.k]
        self.v = [None if a is None else a[:n] for a in self.v]
        self.n_past = min(self.n_past, n)


class Qwen3Reference:
    def __init__(self, state_dict, config, dtype=np.float64):
        self.dtype = np.dtype(dtype)
        c = config
        self.hidden_size = int(c["hidden_size"])
        self.n_layers = int(c["num_hidden_layers"])
        self.n_heads = int(c["num_attention_heads"])
        self.n_kv = int(c.get("num_key_value_heads") or self.n_heads)
        self.head_dim = int(c.get("head_dim") or self.hidden_size // self.n_heads)
        self.eps = float(c.get("rms_norm_eps", 1e-6))
        theta = c.get("rope_theta")
        if theta is None:  # newer HF configs nest it
            theta = (c.get("rope_parameters") or {}).get("rope_theta", 1e6)
        self.rope_theta = float(theta)
        assert self.n_heads % self.n_kv == 0

        def W(name):
            return np.asarray(state_dict[_key(name)], dtype=self.dtype)

        self.embed = W("model.embed_tokens.weight")
        self.vocab_size = self.embed.shape[0]
        if _key("lm_head.weight") in state_dict:
            self.lm_head = W("lm_head.weight")
        else:  # tied embeddings
            self.lm_head = self.embed
        self.norm = W("model.norm.weight")
        self.layers = []
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            self.layers.append({
                "in_norm": W(p + "input_layernorm.weight"),
                "post_norm": W(p + "post_attention_layernorm.weight"),
                "wq": W(p + "self_attn.q_proj.weight"),
                "wk": W(p + "self_attn.k_proj.weight"),
                "wv": W(p + "self_attn.v_proj.weight"),
                "wo": W(p + "self_attn.o_proj.weight"),
                "q_norm": W(p + "self_attn.q_norm.weight"),
                "k_norm": W(p + "self_attn.k_norm.weight"),
                "wg": W(p + "mlp.gate_proj.weight"),
                "wu": W(p + "mlp.up_proj.weight"),
                "wd": W(p + "mlp.down_proj.weight"),
            })
        assert self.layers[0]["wq"].shape == (self.n_heads * self.head_dim, self.hidden_size)
        assert self.layers[0]["wk"].shape == (self.n_kv * self.head_dim, self.hidden_size)

    # ------------------------------------------------------------------ building blocks
    def rms_norm(self, x, w):
        ms = np.mean(x * x, axis=-1, keepdims=True)
        return w * (x / np.sqrt(ms + self.eps))

    def rope(self, x, positions):
        """NEOX / rotate-half RoPE. x: [n, heads, d]; positions: [n]."""
        d = self.head_dim
        inv_freq = 1.0 / (self.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
        ang = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]  # [n, d/2]
        cos = np.cos(ang).astype(self.dtype)[:, None, :]
        sin = np.sin(ang).astype(self.dtype)[:, None, :]
        x1, x2 = x[..., : d // 2], x[..., d // 2:]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    @staticmethod
    def softmax(x):
        x = x - np.max(x, axis=-1, keepdims=True)
        e = np.exp(x)
        return e / np.sum(e, axis=-1, keepdims=True)

    def new_cache(self) -> KVCache:
        return KVCache(self.n_layers)

    # ------------------------------------------------------------------ forward
    def forward(self, token_ids, cache: KVCache | None = None, logits_all: bool = True):
        """Run token ids. Returns (logits [n, vocab], hidden [n, hidden]).

        With ``cache`` the tokens continue at position ``cache.n_past`` and the cache is extended in
        place. ``logits_all=False`` only computes the logits of the last position (shape [1, vocab]).
        """
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("empty token list")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError("token id out of range")
        return self.forward_embeddings(self.embed[ids], cache=cache, logits_all=logits_all)

    def forward_embeddings(self, embd, start_pos: int = 0, cache: KVCache | None = None,
                           logits_all: bool = True):
        """Run input embeddings [n, hidden] at positions start_pos.. (or cache.n_past.. with a cache)."""
        x = np.asarray(embd, dtype=self.dtype).reshape(-1, self.hidden_size)
        n = x.shape[0]
        if cache is not None:
            start_pos = cache.n_past
        pos = np.arange(start_pos, start_pos + n)
        H, KV, d = self.n_heads, self.n_kv, self.head_dim
        group = H // KV
        scale = 1.0 / np.sqrt(d)
        for li, L in enumerate(self.layers):
            h = self.rms_norm(x, L["in_norm"])
            q = (h @ L["wq"].T).reshape(n, H, d)
            k = (h @ L["wk"].T).reshape(n, KV, d)
            v = (h @ L["wv"].T).reshape(n, KV, d)
            q = self.rope(self.rms_norm(q, L["q_norm"]), pos)
            k = self.rope(self.rms_norm(k, L["k_norm"]), pos)
            if cache is not None:
                if cache.k[li] is not None:
                    k = np.concatenate([cache.k[li], k], axis=0)
                    v = np.concatenate([cache.v[li], v], axis=0)
                cache.k[li], cache.v[li] = k, v
            n_all = k.shape[0]
            past = n_all - n
            # causal mask: query i (absolute past+i) sees keys 0..past+i
            mask = np.arange(n_all)[None, :] > (past + np.arange(n))[:, None]
            out = np.empty((n, H, d), dtype=self.dtype)
            for hh in range(H):
                kh = k[:, hh // group, :]
                vh = v[:, hh // group, :]
                s = (q[:, hh, :] @ kh.T) * scale
                s = np.where(mask, -np.inf, s)
                out[:, hh, :] = self.softmax(s) @ vh
            x = x + out.reshape(n, H * d) @ L["wo"].T
            h = self.rms_norm(x, L["post_norm"])
            g = h @ L["wg"].T
            u = h @ L["wu"].T
            x = x + ((g / (1.0 + np.exp(-g))) * u) @ L["wd"].T
        if cache is not None:
            cache.n_past += n
        hidden = self.rms_norm(x, self.norm)
        if logits_all:
            logits = hidden @ self.lm_head.T
        else:
            logits = hidden[-1:] @ self.lm_head.T
        return logits, hidden

    # ------------------------------------------------------------------ greedy decoding
    def greedy(self, prompt_ids, max_new_tokens: int, stop_ids=(), cache: KVCache | None = None):
        """Greedy decoding (argmax, first index on ties) with a KV cache.

        Returns the generated ids, including the stop token if one was produced.
        If ``cache`` is given, ``prompt_ids`` continue it.
        """
        if cache is None:
            cache = self.new_cache()
        stop_ids = set(int(t) for t in stop_ids)
        logits, _ = self.forward(prompt_ids, cache=cache, logits_all=False)
        out = []
        for _ in range(max_new_tokens):
            t = int(np.argmax(logits[-1]))
            out.append(t)
            if t in stop_ids or len(out) == max_new_tokens:
                break
            logits, _ = self.forward([t], cache=cache, logits_all=False)
        return out


def _main(argv=None):  # pragma: no cover - small CLI for manual inspection
    import argparse

    ap = argparse.ArgumentParser(description="run the numpy Qwen3 reference on token ids")
    ap.add_argument("hf_dir")
    ap.add_argument("ids", nargs="+", type=int)
    a = ap.parse_args(argv)
    sd, cfg = load_hf_checkpoint(a.hf_dir)
    ref = Qwen3Reference(sd, cfg)
    logits, hidden = ref.forward(a.ids)
    np.set_printoptions(precision=5, suppress=True, linewidth=os.get_terminal_size().columns)
    print("argmax:", logits.argmax(-1).tolist())
    print("hidden[-1][:8]:", hidden[-1][:8])


if __name__ == "__main__":  # pragma: no cover
    _main()
