"""State-dict layout of a MiniCPM-o 4.5 checkpoint: tensor names and shapes derived from config.json.

One place that knows spec §9, used both to generate tiny checkpoints and to validate real ones.
Shapes are in PyTorch order (Linear weight = (out_features, in_features)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ConversionError

Shape = tuple[int, ...]

TTS_BACKBONE_VOCAB = 32000  # tts.model.embed_tokens rows (LlamaConfig default; never used)


def _req(cfg: Mapping[str, Any], key: str, where: str = "config.json") -> Any:
    if key not in cfg or cfg[key] is None:
        raise ConversionError(f"{where}: missing required key '{key}'")
    return cfg[key]


def _pos_int(cfg: Mapping[str, Any], key: str, where: str = "config.json") -> int:
    v = _req(cfg, key, where)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConversionError(f"{where}: '{key}' must be a positive integer, got {v!r}")
    return v


@dataclass(frozen=True)
class LlmDims:
    """The Qwen3 decoder's hyper-parameters (top level of config.json)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    rms_eps: float
    rope_theta: float
    context: int
    tie_embeddings: bool

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "LlmDims":
        hidden = _pos_int(cfg, "hidden_size")
        heads = _pos_int(cfg, "num_attention_heads")
        kv_heads = _pos_int(cfg, "num_key_value_heads") if cfg.get("num_key_value_heads") else heads
        head_dim = _pos_int(cfg, "head_dim") if cfg.get("head_dim") else hidden // heads
        if heads % kv_heads:
            raise ConversionError(
                f"config.json: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            )
        # transformers >= 5 moves rope settings into rope_parameters
        rope = cfg.get("rope_parameters") or {}
        theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))  # Qwen3Config default
        scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        if scaling and scaling.get("rope_type", scaling.get("type", "default")) != "default":
            raise ConversionError(f"config.json: rope_scaling {scaling!r} is not supported")
        return cls(
            hidden=hidden,
            layers=_pos_int(cfg, "num_hidden_layers"),
            heads=heads,
            kv_heads=kv_heads,
            head_dim=head_dim,
            ffn=_pos_int(cfg, "intermediate_size"),
            vocab=_pos_int(cfg, "vocab_size"),
            rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            context=int(cfg.get("max_position_embeddings", 40960)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )


LLM_PREFIX = "llm."
# Buffers some exporters save; harmless and not needed by llama.cpp.
LLM_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def llm_shapes(d: LlmDims) -> dict[str, Shape]:
    q, kv = d.heads * d.head_dim, d.kv_heads * d.head_dim
    s: dict[str, Shape] = {"llm.model.embed_tokens.weight": (d.vocab, d.hidden)}
    for i in range(d.layers):
        p = f"llm.model.layers.{i}."
        s[p + "input_layernorm.weight"] = (d.hidden,)
        s[p + "self_attn.q_proj.weight"] = (q, d.hidden)
        s[p + "self_attn.k_proj.weight"] = (kv, d.hidden)
        s[p + "self_attn.v_proj.weight"] = (kv, d.hidden)
        s[p + "self_attn.o_proj.weight"] = (d.hidden, q)
        s[p + "self_attn.q_norm.weight"] = (d.head_dim,)
        s[p + "self_attn.k_norm.weight"] = (d.head_dim,)
        s[p + "post_attention_layernorm.weight"] = (d.hidden,)
        s[p + "mlp.gate_proj.weight"] = (d.ffn, d.hidden)
        s[p + "mlp.up_proj.weight"] = (d.ffn, d.hidden)
        s[p + "mlp.down_proj.weight"] = (d.hidden, d.ffn)
    s["llm.model.norm.weight"] = (d.hidden,)
    if not d.tie_embeddings:
        s["llm.lm_head.weight"] = (d.vocab, d.hidden)
    return s


def _linear(s: dict[str, Shape], name: str, out_f: int, in_f: int, bias: bool = True) -> None:
    s[name + ".weight"] = (out_f, in_f)
    if bias:
        s[name + ".bias"] = (out_f,)


def _norm(s: dict[str, Shape], name: str, n: int) -> None:
    s[name + ".weight"] = (n,)
    s[name + ".bias"] = (n,)


def vision_layers_stored(cfg: Mapping[str, Any]) -> int:
    """SigLIP layers present in the state dict: the last one is dropped at init when asked (G1)."""
    v = cfg["vision_config"]
    n = _pos_int(v, "num_hidden_layers", "vision_config")
    return n - 1 if cfg.get("drop_vision_last_layer", True) else n


def vision_shapes(cfg: Mapping[str, Any]) -> dict[str, Shape]:
    v = cfg["vision_config"]
    d, ff, p = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    side = v["image_size"] // p
    s: dict[str, Shape] = {
        "vpm.embeddings.patch_embedding.weight": (d, v.get("num_channels", 3), p, p),
        "vpm.embeddings.patch_embedding.bias": (d,),
        "vpm.embeddings.position_embedding.weight": (side * side, d),
    }
    for i in range(vision_layers_stored(cfg)):
        pre = f"vpm.encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _linear(s, pre + "self_attn." + proj, d, d)
        _norm(s, pre + "layer_norm1", d)
        _norm(s, pre + "layer_norm2", d)
        _linear(s, pre + "mlp.fc1", ff, d)
        _linear(s, pre + "mlp.fc2", d, ff)
    _norm(s, "vpm.post_layernorm", d)
    return s


def resampler_shapes(cfg: Mapping[str, Any]) -> dict[str, Shape]:
    e, kv_dim, nq = cfg["hidden_size"], cfg["vision_config"]["hidden_size"], cfg.get("query_num", 64)
    s: dict[str, Shape] = {
        "resampler.query": (nq, e),
        "resampler.proj": (e, e),  # raw Parameter used as x @ proj
        "resampler.kv_proj.weight": (e, kv_dim),  # no bias
        "resampler.attn.in_proj_weight": (3 * e, e),
        "resampler.attn.in_proj_bias": (3 * e,),
    }
    _linear(s, "resampler.attn.out_proj", e, e)
    for ln in ("ln_q", "ln_kv", "ln_post"):
        _norm(s, "resampler." + ln, e)
    return s


def resampler_heads(cfg: Mapping[str, Any]) -> int:
    """Reference code hard-codes embed_dim // 128; tiny configs (hidden < 128) name it explicitly
    with the non-standard key `resampler_num_heads`."""
    return int(cfg.get("resampler_num_heads") or cfg["hidden_size"] // 128)


def audio_shapes(cfg: Mapping[str, Any]) -> dict[str, Shape]:
    a = cfg["audio_config"]
    d, ff, mel = a["d_model"], a["encoder_ffn_dim"], a.get("num_mel_bins", 80)
    s: dict[str, Shape] = {
        "apm.conv1.weight": (d, mel, 3), "apm.conv1.bias": (d,),
        "apm.conv2.weight": (d, d, 3), "apm.conv2.bias": (d,),
        "apm.embed_positions.weight": (a.get("max_source_positions", 1500), d),
    }
    for i in range(a["encoder_layers"]):
        pre = f"apm.layers.{i}."
        _linear(s, pre + "self_attn.q_proj", d, d)
        _linear(s, pre + "self_attn.k_proj", d, d, bias=False)  # Whisper: no key bias
        _linear(s, pre + "self_attn.v_proj", d, d)
        _linear(s, pre + "self_attn.out_proj", d, d)
        _norm(s, pre + "self_attn_layer_norm", d)
        _norm(s, pre + "final_layer_norm", d)
        _linear(s, pre + "fc1", ff, d)
        _linear(s, pre + "fc2", d, ff)
    _norm(s, "apm.layer_norm", d)
    # projector input is encoder_ffn_dim // 4 (= d_model for Whisper), output the LLM width
    e = cfg["hidden_size"]
    _linear(s, "audio_projection_layer.linear1", e, ff // 4)
    _linear(s, "audio_projection_layer.linear2", e, e)
    return s


def tts_shapes(cfg: Mapping[str, Any]) -> dict[str, Shape]:
    t = cfg["tts_config"]
    h, ff, nh = t["hidden_size"], t["intermediate_size"], t["num_attention_heads"]
    hd = h // nh
    kv = t.get("num_key_value_heads", nh) * hd
    s: dict[str, Shape] = {
        "tts.emb_text.weight": (t["num_text_tokens"], h),
        "tts.model.embed_tokens.weight": (TTS_BACKBONE_VOCAB, h),
    }
    for i in range(t["num_hidden_layers"]):
        pre = f"tts.model.layers.{i}."
        s[pre + "self_attn.q_proj.weight"] = (nh * hd, h)
        s[pre + "self_attn.k_proj.weight"] = (kv, h)
        s[pre + "self_attn.v_proj.weight"] = (kv, h)
        s[pre + "self_attn.o_proj.weight"] = (h, nh * hd)
        s[pre + "mlp.gate_proj.weight"] = (ff, h)
        s[pre + "mlp.up_proj.weight"] = (ff, h)
        s[pre + "mlp.down_proj.weight"] = (h, ff)
        s[pre + "input_layernorm.weight"] = (h,)
        s[pre + "post_attention_layernorm.weight"] = (h,)
    s["tts.model.norm.weight"] = (h,)
    for proj in ("projector_semantic", "projector_spk"):
        _linear(s, f"tts.{proj}.linear1", h, t["llm_dim"])
        _linear(s, f"tts.{proj}.linear2", h, h)
    for q in range(t.get("num_vq", 1)):
        s[f"tts.emb_code.{q}.weight"] = (t["num_audio_tokens"], h)
        pre = f"tts.head_code.{q}.parametrizations.weight."
        s[pre + "original0"] = (t["num_audio_tokens"], 1)  # weight-norm g
        s[pre + "original1"] = (t["num_audio_tokens"], h)  # weight-norm v
    return s


def checkpoint_shapes(cfg: Mapping[str, Any]) -> dict[str, Shape]:
    """Every tensor of a complete checkpoint (LLM + vision + resampler + audio + TTS)."""
    s = llm_shapes(LlmDims.from_config(cfg))
    if cfg.get("init_vision", True):
        s.update(vision_shapes(cfg))
        s.update(resampler_shapes(cfg))
    if cfg.get("init_audio", True):
        s.update(audio_shapes(cfg))
    if cfg.get("init_tts", True):
        s.update(tts_shapes(cfg))
    return s
