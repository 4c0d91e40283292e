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


def _pos_float(cfg: Mapping[str, Any], key: str, default: float, where: str) -> float:
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ConversionError(f"{where}: '{key}' must be a positive number, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class VisionDims:
    """The SigLIP NaViT tower (vision_config) and the resampler that maps it to the LLM width."""

    hidden: int
    ffn: int
    heads: int
    config_layers: int  # vision_config.num_hidden_layers
    layers_run: int  # minus the last one when drop_vision_last_layer (spec G1)
    patch: int
    image_size: int
    channels: int
    eps: float
    act: str
    query_num: int
    embed: int  # resampler width = LLM hidden_size
    resampler_heads: int

    @property
    def side(self) -> int:
        """Side of the learned position table (image_size // patch_size patches)."""
        return self.image_size // self.patch

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "VisionDims":
        v = _req(cfg, "vision_config")
        if not isinstance(v, dict):
            raise ConversionError("config.json: 'vision_config' must be a JSON object")
        w = "vision_config"
        hidden, heads = _pos_int(v, "hidden_size", w), _pos_int(v, "num_attention_heads", w)
        if hidden % heads:
            raise ConversionError(f"{w}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
        layers = _pos_int(v, "num_hidden_layers", w)
        drop = cfg.get("drop_vision_last_layer", True)  # MiniCPMOConfig's default
        if not isinstance(drop, bool):
            raise ConversionError(f"config.json: 'drop_vision_last_layer' must be true or false, got {drop!r}")
        if drop and layers < 2:
            raise ConversionError(f"{w}: num_hidden_layers {layers} leaves no layer after drop_vision_last_layer")
        patch, image = _pos_int(v, "patch_size", w), _pos_int(v, "image_size", w)
        if image < patch:
            raise ConversionError(f"{w}: image_size {image} is smaller than patch_size {patch}")
        act = v.get("hidden_act", "gelu_pytorch_tanh")
        if not isinstance(act, str) or not act:
            raise ConversionError(f"{w}: 'hidden_act' must be a non-empty string, got {act!r}")
        embed = _pos_int(cfg, "hidden_size")
        r_heads = resampler_heads(cfg)
        if r_heads <= 0 or embed % r_heads:
            raise ConversionError(
                f"config.json: resampler heads {r_heads} must be positive and divide hidden_size {embed} "
                "(set 'resampler_num_heads' when hidden_size < 128)"
            )
        return cls(
            hidden=hidden, ffn=_pos_int(v, "intermediate_size", w), heads=heads,
            config_layers=layers, layers_run=layers - 1 if drop else layers,
            patch=patch, image_size=image,
            channels=_pos_int(v, "num_channels", w) if "num_channels" in v else 3,
            eps=_pos_float(v, "layer_norm_eps", 1e-6, w), act=act,
            query_num=_pos_int(cfg, "query_num") if "query_num" in cfg else 64,
            embed=embed, resampler_heads=r_heads,
        )


VISION_LAYER_PREFIX = "vpm.encoder.layers."


def vision_layers_stored(cfg: Mapping[str, Any]) -> int:
    """SigLIP layers a generated checkpoint stores: those that run (the last one is dropped at
    init when asked, G1). Real checkpoints may hold one more; the converter counts them."""
    return VisionDims.from_config(cfg).layers_run


def vision_shapes(cfg: Mapping[str, Any], layers: int | None = None) -> dict[str, Shape]:
    """vpm.* tensors with `layers` encoder layers (default: vision_layers_stored)."""
    d = VisionDims.from_config(cfg)
    n_layers = d.layers_run if layers is None else layers
    s: dict[str, Shape] = {
        "vpm.embeddings.patch_embedding.weight": (d.hidden, d.channels, d.patch, d.patch),
        "vpm.embeddings.patch_embedding.bias": (d.hidden,),
        "vpm.embeddings.position_embedding.weight": (d.side * d.side, d.hidden),
    }
    for i in range(n_layers):
        s.update(vision_layer_shapes(d, i))
    _norm(s, "vpm.post_layernorm", d.hidden)
    return s


def vision_layer_shapes(d: VisionDims, i: int) -> dict[str, Shape]:
    """The tensors of encoder layer i."""
    s: dict[str, Shape] = {}
    pre = f"{VISION_LAYER_PREFIX}{i}."
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        _linear(s, pre + "self_attn." + proj, d.hidden, d.hidden)
    _norm(s, pre + "layer_norm1", d.hidden)
    _norm(s, pre + "layer_norm2", d.hidden)
    _linear(s, pre + "mlp.fc1", d.ffn, d.hidden)
    _linear(s, pre + "mlp.fc2", d.hidden, d.ffn)
    return s


def resampler_shapes(cfg: Mapping[str, Any]) -> dict[str, Shape]:
    d = VisionDims.from_config(cfg)
    e = d.embed
    s: dict[str, Shape] = {
        "resampler.query": (d.query_num, e),
        "resampler.proj": (e, e),  # raw Parameter used as x @ proj
        "resampler.kv_proj.weight": (e, d.hidden),  # no bias
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
    v = cfg.get("resampler_num_heads")
    if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
        raise ConversionError(f"config.json: 'resampler_num_heads' must be an integer, got {v!r}")
    return int(v or cfg["hidden_size"] // 128)


@dataclass(frozen=True)
class AudioDims:
    """The Whisper encoder (audio_config) and the projector that maps it to the LLM width."""

    d_model: int
    layers: int
    heads: int
    ffn: int
    n_mel: int
    positions: int  # max_source_positions: rows of the learned position table
    act: str
    embed: int  # projector output = LLM hidden_size

    @property
    def proj_in(self) -> int:
        """The projector's input width: the reference sizes it encoder_ffn_dim // 4."""
        return self.ffn // 4

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "AudioDims":
        a = _req(cfg, "audio_config")
        if not isinstance(a, dict):
            raise ConversionError("config.json: 'audio_config' must be a JSON object")
        w = "config.json audio_config"
        d, heads, ffn = _pos_int(a, "d_model", w), _pos_int(a, "encoder_attention_heads", w), _pos_int(
            a, "encoder_ffn_dim", w)
        if d % heads:
            raise ConversionError(f"{w}: d_model {d} is not a multiple of encoder_attention_heads {heads}")
        # the projector is built for encoder_ffn_dim // 4 inputs but fed the d_model-wide encoder output
        if ffn != 4 * d:
            raise ConversionError(
                f"{w}: encoder_ffn_dim {ffn} must be 4 * d_model = {4 * d} (the audio projector's input "
                "width is encoder_ffn_dim // 4 and it is fed the d_model-wide encoder output)"
            )
        act = a.get("activation_function", "gelu")  # WhisperConfig's default
        if act != "gelu":
            raise ConversionError(
                f"{w}: activation_function {act!r} is not supported (only 'gelu', the exact erf GELU of Whisper)"
            )
        return cls(
            d_model=d, layers=_pos_int(a, "encoder_layers", w), heads=heads, ffn=ffn,
            n_mel=_pos_int(a, "num_mel_bins", w) if "num_mel_bins" in a else 80,
            positions=_pos_int(a, "max_source_positions", w) if "max_source_positions" in a else 1500,
            act=act, embed=_pos_int(cfg, "hidden_size"),
        )


AUDIO_LAYER_PREFIX = "apm.layers."
AUDIO_PROJECTOR_PREFIX = "audio_projection_layer."


def audio_shapes(cfg: Mapping[str, Any]) -> dict[str, Shape]:
    """apm.* (Whisper encoder) and audio_projection_layer.* tensors."""
    a = AudioDims.from_config(cfg)
    d = a.d_model
    s: dict[str, Shape] = {
        "apm.conv1.weight": (d, a.n_mel, 3), "apm.conv1.bias": (d,),
        "apm.conv2.weight": (d, d, 3), "apm.conv2.bias": (d,),
        "apm.embed_positions.weight": (a.positions, d),
    }
    for i in range(a.layers):
        pre = f"{AUDIO_LAYER_PREFIX}{i}."
        _linear(s, pre + "self_attn.q_proj", d, d)
        _linear(s, pre + "self_attn.k_proj", d, d, bias=False)  # Whisper: no key bias
        _linear(s, pre + "self_attn.v_proj", d, d)
        _linear(s, pre + "self_attn.out_proj", d, d)
        _norm(s, pre + "self_attn_layer_norm", d)
        _norm(s, pre + "final_layer_norm", d)
        _linear(s, pre + "fc1", a.ffn, d)
        _linear(s, pre + "fc2", d, a.ffn)
    _norm(s, "apm.layer_norm", d)
    _linear(s, AUDIO_PROJECTOR_PREFIX + "linear1", a.embed, a.proj_in)
    _linear(s, AUDIO_PROJECTOR_PREFIX + "linear2", a.embed, a.embed)
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
