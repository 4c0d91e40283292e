"""Random MiniCPMTTS weights under the HF checkpoint names (tts.*) with the spec §8 tiny dims, for the
TTS reference tests. Made with numpy's RNG (not by the converter) so the checks depend on nothing else.
"""

from __future__ import annotations

import numpy as np

# spec §8 tiny TTS: hidden 64, 2 layers, 4 heads (head_dim 16), kv 4, intermediate 128, llm_dim 64;
# interface constants kept real: 6562 speech classes (EOS 6561), 152064 text rows, bos/eos rows.
TINY_TTS_CONFIG = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
    "intermediate_size": 128, "llm_dim": 64, "num_audio_tokens": 6562, "num_text_tokens": 152064,
    "audio_bos_token_id": 151687, "text_eos_token_id": 151692, "normalize_projected_hidden": True,
    "max_position_embeddings": 4096,
}


def random_tts_weights(seed=0, cfg=None):
    """Scales keep every part visible: 1/sqrt(fan_in) matrices, norm gains 1 +- 0.2, text/code
    embeddings small enough that the unit-norm projected hidden matters, weight-norm gains 1..2 so
    logits spread over a few units (top-p/top-k then cut the distribution to tens of tokens)."""
    c = dict(TINY_TTS_CONFIG if cfg is None else cfg)
    rng = np.random.default_rng(seed)
    H, ff, L, d_llm = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["llm_dim"]
    hd = H // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * hd
    V = c["num_audio_tokens"]

    def mat(o, i):
        return (rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32)

    def norm_w(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    def vec(n):
        return (0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {
        "tts.emb_text.weight": (0.3 * rng.standard_normal((c["num_text_tokens"], H), dtype=np.float32)),
        "tts.model.embed_tokens.weight": (0.1 * rng.standard_normal((32000, H), dtype=np.float32)),  # unused
        "tts.model.norm.weight": norm_w(H),
        "tts.emb_code.0.weight": (0.5 * rng.standard_normal((V, H), dtype=np.float32)),
        "tts.head_code.0.parametrizations.weight.original0":
            (1.0 + 0.5 * np.abs(rng.standard_normal((V, 1)))).astype(np.float32),
        "tts.head_code.0.parametrizations.weight.original1": rng.standard_normal((V, H), dtype=np.float32),
    }
    for i in range(L):
        p = f"tts.model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm_w(H)
        w[p + "post_attention_layernorm.weight"] = norm_w(H)
        w[p + "self_attn.q_proj.weight"] = mat(H, H) * 2.0  # sharper attention: position errors show
        w[p + "self_attn.k_proj.weight"] = mat(kv, H)
        w[p + "self_attn.v_proj.weight"] = mat(kv, H)
        w[p + "self_attn.o_proj.weight"] = mat(H, H)
        w[p + "mlp.gate_proj.weight"] = mat(ff, H)
        w[p + "mlp.up_proj.weight"] = mat(ff, H)
        w[p + "mlp.down_proj.weight"] = mat(H, ff)
    for proj in ("projector_semantic", "projector_spk"):
        w[f"tts.{proj}.linear1.weight"] = mat(H, d_llm)
        w[f"tts.{proj}.linear1.bias"] = vec(H)
        w[f"tts.{proj}.linear2.weight"] = mat(H, H)
        w[f"tts.{proj}.linear2.bias"] = vec(H)
    return w, c


def random_llm_hidden(seed, n, llm_dim=64):
    """Stand-in LLM final-norm hidden rows (RMS ~1 per channel, like a norm output)."""
    return np.random.default_rng(seed).standard_normal((n, llm_dim)).astype(np.float32)
