"""The TTS component of the companion GGUF: MiniCPMTTS, the autoregressive Llama that turns LLM text
tokens + hidden states into 25 Hz speech tokens (spec §5.1, §9; the speech contract §1).

check_tts() validates tts_config and the checkpoint's tts.* tensors (Checkpoint.load calls it, so a
bad checkpoint fails before any file is written); tts_component() is the omni_gguf hook that adds
the `minicpmo.tts.*` keys and returns the tensors to write.

Not written, because inference never uses them: `tts.model.embed_tokens` (LlamaModel's own token
table; the TTS is always driven with inputs_embeds) and `tts.projector_spk.*` (the speaker projector;
4.5 feeds no speaker embedding). The output head's weight norm is folded here (W = g·v/||v|| per
row, in float64) so the runtime sees a plain Linear.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from gguf import GGMLQuantizationType

from .errors import ConversionError
from .gguf_write import PlannedTensor, Writer
from .layout import Shape
from .outtypes import table_type, tensor_type
from .safetensors_io import SafetensorsSource
from .tensor_sources import FLOAT_DTYPES, ArraySource, folded_weight

KEY = "minicpmo.tts."
PREFIX = "tts."
# written as the contract says; the names of the checkpoint tensors inside tts.model.layers.{i}.
_LAYER_MAP = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_out",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
# present in the release, unused by inference (module docstring)
_UNUSED = re.compile(r"tts\.(model\.embed_tokens\.weight|projector_spk\.linear[12]\.(weight|bias))$")
_HEAD = "tts.head_code.0"
# F.normalize's default eps (the projected hidden state is L2-normalized with it)
NORMALIZE_EPS = 1e-12
# spec §5.1: sampling settings the reference hard-codes (temperature, window, min_keep, token limits)
TEMPERATURE = 0.8
REPETITION_WINDOW = 16
MIN_KEEP = 3
CHAT_MIN_NEW, CHAT_MAX_NEW = 50, 2048
STREAM_MAX_NEW_PER_CHUNK = 500  # TTSStreamingGenerator.generate_with_buffer's default
STREAM_TEXT_CHUNK = 10  # LLM tokens per streaming condition chunk
DUPLEX_UNIT_TOKENS = 25  # speech tokens per 1-s duplex unit


def _pos_int(src: Mapping[str, Any], key: str, default: int | None = None) -> int:
    v = src.get(key, default)
    if v is None:
        raise ConversionError(f"config.json tts_config: missing required key '{key}'")
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConversionError(f"config.json tts_config: '{key}' must be a positive integer, got {v!r}")
    return v


def _pos_float(src: Mapping[str, Any], key: str, default: float) -> float:
    v = src.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ConversionError(f"config.json tts_config: '{key}' must be a positive number, got {v!r}")
    return float(v)


def _str(src: Mapping[str, Any], key: str, default: str, allowed: tuple[str, ...] | None = None) -> str:
    v = src.get(key, default)
    if not isinstance(v, str) or not v:
        raise ConversionError(f"config.json tts_config: '{key}' must be a non-empty string, got {v!r}")
    if allowed is not None and v not in allowed:
        raise ConversionError(f"config.json tts_config: '{key}' {v!r} is not supported (only {', '.join(map(repr, allowed))})")
    return v


@dataclass(frozen=True)
class TtsPlan:
    """Everything the TTS component writes, checked."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    ctx: int
    rms_eps: float
    rope_theta: float
    llm_dim: int
    n_text: int
    n_audio: int
    audio_bos: int
    text_eos: int
    normalize: bool
    condition_type: str
    attention_type: str
    stream_chunk: int
    top_p: float
    top_k: int
    repetition_penalty: float
    shapes: dict[str, Shape]  # HF name -> shape of every checkpoint tensor written as is
    head: ArraySource  # the folded output head


def tts_dims(config: Mapping[str, Any], llm_hidden: int) -> dict[str, Any]:
    """tts_config checked -> plain values (no tensors looked at)."""
    t = config.get("tts_config")
    if not isinstance(t, dict):
        raise ConversionError("config.json: 'tts_config' must be a JSON object (init_tts is true)")
    hidden, heads = _pos_int(t, "hidden_size"), _pos_int(t, "num_attention_heads")
    kv_heads = _pos_int(t, "num_key_value_heads", heads)
    if hidden % heads or heads % kv_heads:
        raise ConversionError(
            f"config.json tts_config: hidden_size {hidden}, num_attention_heads {heads} and "
            f"num_key_value_heads {kv_heads} do not divide evenly")
    head_dim = _pos_int(t, "head_dim", hidden // heads)
    llm_dim = _pos_int(t, "llm_dim")
    if llm_dim != llm_hidden:
        raise ConversionError(
            f"config.json tts_config: llm_dim {llm_dim} differs from the LLM hidden_size {llm_hidden}")
    n_text, n_audio = _pos_int(t, "num_text_tokens"), _pos_int(t, "num_audio_tokens")
    if n_audio < 2:
        raise ConversionError("config.json tts_config: num_audio_tokens must be at least 2 (codes + EOS)")
    bos, eos = _pos_int(t, "audio_bos_token_id"), _pos_int(t, "text_eos_token_id")
    for key, v in (("audio_bos_token_id", bos), ("text_eos_token_id", eos)):
        if v >= n_text:
            raise ConversionError(
                f"config.json tts_config: '{key}' {v} is not a row of emb_text (num_text_tokens {n_text})")
    if _pos_int(t, "num_vq", 1) != 1:
        raise ConversionError(f"config.json tts_config: num_vq {t['num_vq']} is not supported (only 1)")
    _str(t, "hidden_act", "silu", ("silu",))
    _str(t, "projector_type", "mlp", ("mlp",))
    _str(t, "backbone_model", "llama", ("llama",))
    normalize = t.get("normalize_projected_hidden", True)  # spec G2: on in 4.5
    if not isinstance(normalize, bool):
        raise ConversionError(
            f"config.json tts_config: 'normalize_projected_hidden' must be true or false, got {normalize!r}")
    top_k = t.get("top_k", 25)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ConversionError(f"config.json tts_config: 'top_k' must be a non-negative integer, got {top_k!r}")
    top_p = _pos_float(t, "top_p", 0.85)
    if top_p > 1:
        raise ConversionError(f"config.json tts_config: 'top_p' must be in (0, 1], got {top_p!r}")
    return dict(
        hidden=hidden, layers=_pos_int(t, "num_hidden_layers"), heads=heads, kv_heads=kv_heads,
        head_dim=head_dim, ffn=_pos_int(t, "intermediate_size"),
        ctx=_pos_int(t, "max_position_embeddings", 4096),
        rms_eps=_pos_float(t, "rms_norm_eps", 1e-6), rope_theta=_pos_float(t, "rope_theta", 10000.0),
        llm_dim=llm_dim, n_text=n_text, n_audio=n_audio, audio_bos=bos, text_eos=eos, normalize=normalize,
        condition_type=_str(t, "condition_type", "hidden_text_merge", ("hidden_text_merge",)),
        attention_type=_str(t, "attention_type", "full_attention"),
        stream_chunk=_pos_int(t, "s3_stream_chunk_size", 25),
        top_p=top_p, top_k=top_k, repetition_penalty=_pos_float(t, "repetition_penalty", 1.05),
    )


def tts_tensor_shapes(d: Mapping[str, Any]) -> dict[str, Shape]:
    """HF name -> shape of every tts.* tensor that is written unchanged."""
    h, q, kv = d["hidden"], d["heads"] * d["head_dim"], d["kv_heads"] * d["head_dim"]
    s: dict[str, Shape] = {"tts.emb_text.weight": (d["n_text"], h)}
    for i in range(d["layers"]):
        p = f"tts.model.layers.{i}."
        s[p + "input_layernorm.weight"] = (h,)
        s[p + "self_attn.q_proj.weight"] = (q, h)
        s[p + "self_attn.k_proj.weight"] = (kv, h)
        s[p + "self_attn.v_proj.weight"] = (kv, h)
        s[p + "self_attn.o_proj.weight"] = (h, q)
        s[p + "post_attention_layernorm.weight"] = (h,)
        s[p + "mlp.gate_proj.weight"] = (d["ffn"], h)
        s[p + "mlp.up_proj.weight"] = (d["ffn"], h)
        s[p + "mlp.down_proj.weight"] = (h, d["ffn"])
    s["tts.model.norm.weight"] = (h,)
    s["tts.projector_semantic.linear1.weight"] = (h, d["llm_dim"])
    s["tts.projector_semantic.linear1.bias"] = (h,)
    s["tts.projector_semantic.linear2.weight"] = (h, h)
    s["tts.projector_semantic.linear2.bias"] = (h,)
    s["tts.emb_code.0.weight"] = (d["n_audio"], h)
    return s


def _check(weights: SafetensorsSource, name: str, shape: Shape) -> None:
    if name not in weights:
        raise ConversionError(f"missing tensor {name}")
    got = tuple(weights.shape(name))
    if got != tuple(shape):
        raise ConversionError(f"tensor {name}: expected shape {tuple(shape)}, got {got}")
    if weights.dtype(name) not in FLOAT_DTYPES:
        raise ConversionError(f"tensor {name}: unsupported dtype {weights.dtype(name)}")


def check_tts(config: Mapping[str, Any], weights: SafetensorsSource, llm_hidden: int) -> TtsPlan | None:
    """Validate the TTS of a checkpoint; None when it has none (init_tts false)."""
    init = config.get("init_tts", True)  # MiniCPMOConfig's default
    if not isinstance(init, bool):
        raise ConversionError(f"config.json: 'init_tts' must be true or false, got {init!r}")
    if not init:
        return None
    d = tts_dims(config, llm_hidden)
    shapes = tts_tensor_shapes(d)
    for name, shape in shapes.items():
        _check(weights, name, shape)
    head = ArraySource()
    head_shape = (d["n_audio"], d["hidden"])
    plain = _HEAD + ".weight"
    folded = folded_weight(weights, _HEAD)
    if folded is None:
        # already a plain Linear (a re-exported checkpoint): taken as it is
        _check(weights, plain, head_shape)
        folded = weights.float32(plain)
    elif plain in weights:
        raise ConversionError(f"tensor {plain} is stored both plain and weight-normed")
    elif folded.shape != head_shape:
        raise ConversionError(f"tensor {plain} (weight norm): expected shape {head_shape}, got {folded.shape}")
    head.add(plain, folded)
    known_head = {_HEAD + s for s in (".weight", ".parametrizations.weight.original0",
                                      ".parametrizations.weight.original1", ".weight_g", ".weight_v")}
    for name in weights.names():
        if name.startswith(PREFIX) and name not in shapes and name not in known_head and not _UNUSED.match(name):
            raise ConversionError(
                f"unexpected tensor {name} (config.json tts_config describes {d['layers']} layers, num_vq 1)")
    return TtsPlan(shapes=shapes, head=head, **d)


def tts_component(plan: TtsPlan | None, w: Writer, outtype: str) -> list[PlannedTensor]:
    """omni_gguf hook: keys + tensor plan of the TTS ([] without one), checked by Checkpoint.load."""
    if plan is None:
        return []
    _add_keys(w, plan)
    return _tensor_plan(plan, outtype)


def _add_keys(w: Writer, p: TtsPlan) -> None:
    u, f = (lambda k, v: w.add_uint32(KEY + k, v)), (lambda k, v: w.add_float32(KEY + k, v))
    u("n_embd", p.hidden)
    u("n_layer", p.layers)
    u("n_head", p.heads)
    u("n_head_kv", p.kv_heads)
    u("head_dim", p.head_dim)
    u("n_ff", p.ffn)
    u("n_ctx_train", p.ctx)
    f("rms_norm_eps", p.rms_eps)
    f("rope_theta", p.rope_theta)
    w.add_string(KEY + "rope_type", "neox")
    w.add_string(KEY + "hidden_act", "silu")
    u("n_embd_llm", p.llm_dim)
    u("n_vocab_text", p.n_text)
    u("n_vocab_audio", p.n_audio)
    u("audio_eos_id", p.n_audio - 1)
    u("audio_bos_token_id", p.audio_bos)
    u("text_eos_token_id", p.text_eos)
    w.add_string(KEY + "projector_act", "relu")
    w.add_bool(KEY + "normalize_projected_hidden", p.normalize)
    f("normalize_eps", NORMALIZE_EPS)
    w.add_string(KEY + "condition_type", p.condition_type)
    w.add_string(KEY + "attention_type", p.attention_type)
    u("stream.text_chunk_tokens", STREAM_TEXT_CHUNK)
    u("stream.audio_chunk_tokens", p.stream_chunk)
    u("duplex.tokens_per_unit", DUPLEX_UNIT_TOKENS)
    # spec §5.1 sampling table: (top_p, top_k, min_keep, min_new, max_new, repetition scope,
    # where the first sample skips penalty/warpers); duplex builds warpers but never applies them
    modes = {
        "chat": (p.top_p, p.top_k, MIN_KEEP, CHAT_MIN_NEW, CHAT_MAX_NEW, "call", "call"),
        "stream": (p.top_p, p.top_k, MIN_KEEP, 0, STREAM_MAX_NEW_PER_CHUNK, "turn", "stream"),
        "duplex": (1.0, 0, 1, DUPLEX_UNIT_TOKENS, DUPLEX_UNIT_TOKENS, "call", "call"),
    }
    for m, (top_p, top_k, min_keep, min_new, max_new, scope, plain) in modes.items():
        f(f"{m}.temperature", TEMPERATURE)
        f(f"{m}.repetition_penalty", p.repetition_penalty)
        u(f"{m}.repetition_window", REPETITION_WINDOW)
        w.add_string(f"{KEY}{m}.repetition_scope", scope)
        f(f"{m}.top_p", top_p)
        u(f"{m}.top_k", top_k)
        u(f"{m}.min_keep", min_keep)
        u(f"{m}.min_new_tokens", min_new)
        u(f"{m}.max_new_tokens", max_new)
        w.add_string(f"{KEY}{m}.plain_first_sample", plain)


def _tensor_plan(p: TtsPlan, outtype: str) -> list[PlannedTensor]:
    plan: list[PlannedTensor] = []

    def add(gguf_name: str, hf_name: str, qtype: GGMLQuantizationType | None = None, source: Any = None) -> None:
        shape = tuple(p.shapes[hf_name]) if source is None else tuple(source.shape(hf_name))
        plan.append(PlannedTensor(gguf_name, hf_name, qtype or tensor_type(outtype, shape), shape, source=source))

    # looked-up rows added to activations: never block-quantized (the "table" policy)
    add("tts.emb_text.weight", "tts.emb_text.weight", table_type(outtype))
    for i in range(p.layers):
        for hf, short in _LAYER_MAP.items():
            add(f"tts.blk.{i}.{short}.weight", f"tts.model.layers.{i}.{hf}.weight")
    add("tts.output_norm.weight", "tts.model.norm.weight")
    for k in (1, 2):
        add(f"tts.proj{k}.weight", f"tts.projector_semantic.linear{k}.weight")
        add(f"tts.proj{k}.bias", f"tts.projector_semantic.linear{k}.bias")
    add("tts.emb_code.weight", "tts.emb_code.0.weight", table_type(outtype))
    add("tts.head_code.weight", _HEAD + ".weight", source=p.head)
    return plan
