"""The audio component of the companion GGUF: the Whisper encoder (`a.*`), its projector into the
LLM width and the log-mel front end's settings and filter bank (spec §3, §9).

check_audio() validates a checkpoint's apm.* / audio_projection_layer.* tensors, audio_config and the
feature-extractor keys of preprocessor_config.json; Checkpoint.load calls it so a bad checkpoint
fails before any file is written (the plan it returns is kept as Checkpoint.audio). audio_component()
is the omni_gguf hook: from that plan it adds the
`minicpmo.audio.*` keys and returns the tensors to write. Names, transforms and storage types follow
the audio contract (the C++ loader reads exactly these).

A key bias (self_attn.k_proj.bias) in the checkpoint is accepted and not written: Whisper has none,
and one would not change anything, since it adds the same q·b to every score of a query's row and
softmax is invariant to that.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from gguf import GGMLQuantizationType

from .errors import ConversionError
from .gguf_write import PlannedTensor, Writer
from .layout import AUDIO_LAYER_PREFIX, AUDIO_PROJECTOR_PREFIX, AudioDims, Shape, audio_shapes
from .mel_filters import mel_filter_bank
from .outtypes import table_type, tensor_type
from .preprocessor_config import FILE_NAME as PRE_FILE, read_preprocessor_config
from .safetensors_io import SafetensorsSource

KEY = "minicpmo.audio."
# Whisper builds its LayerNorms with torch's default eps in code (no config key).
LAYER_NORM_EPS = 1e-5
# Whisper's feature extractor builds the filter bank up to 8 kHz whatever the sampling rate.
MEL_F_MAX = 8000.0
# WhisperFeatureExtractor / MiniCPMAAudioProcessor defaults, used when preprocessor_config.json
# lacks a key (or the checkpoint has no such file).
DEFAULT_SAMPLE_RATE = 16000
DEFAULT_N_FFT = 400
DEFAULT_HOP = 160
DEFAULT_CHUNK_SECONDS = 30
DEFAULT_DYNAMIC_RANGE_DB = 8.0
# MiniCPMOConfig defaults
DEFAULT_BLOCK_SECONDS = 1.0  # audio_chunk_length
DEFAULT_POOL_STEP = 5  # audio_pool_step

# HF names inside apm.layers.{i}. -> contract names inside a.blk.{i}.; the leaves each one has
_LAYER_MAP = {
    "self_attn.q_proj": ("attn_q", ("weight", "bias")),
    "self_attn.k_proj": ("attn_k", ("weight",)),
    "self_attn.v_proj": ("attn_v", ("weight", "bias")),
    "self_attn.out_proj": ("attn_out", ("weight", "bias")),
    "self_attn_layer_norm": ("ln1", ("weight", "bias")),
    "final_layer_norm": ("ln2", ("weight", "bias")),
    "fc1": ("ffn_up", ("weight", "bias")),
    "fc2": ("ffn_down", ("weight", "bias")),
}
_IGNORED_KEY_BIAS = re.compile(re.escape(AUDIO_LAYER_PREFIX) + r"[0-9]+\.self_attn\.k_proj\.bias$")
_FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


@dataclass(frozen=True)
class AudioPlan:
    """Everything the audio component writes, checked."""

    dims: AudioDims
    sample_rate: int
    n_fft: int
    hop_length: int
    chunk_seconds: int
    dynamic_range_db: float
    block_seconds: float
    pool_step: int
    shapes: dict[str, Shape]  # HF name -> shape of every tensor that is written


def check_audio(config: Mapping[str, Any], weights: SafetensorsSource, ckpt_dir: Path) -> AudioPlan | None:
    """Validate the Whisper encoder + projector of a checkpoint; None when it has none (init_audio false)."""
    init = config.get("init_audio", True)  # MiniCPMOConfig's default
    if not isinstance(init, bool):
        raise ConversionError(f"config.json: 'init_audio' must be true or false, got {init!r}")
    if not init:
        return None
    dims = AudioDims.from_config(config)
    shapes = audio_shapes(config)
    for name, shape in shapes.items():
        if name not in weights:
            raise ConversionError(f"missing tensor {name}")
        got = tuple(weights.shape(name))
        if got != tuple(shape):
            raise ConversionError(f"tensor {name}: expected shape {tuple(shape)}, got {got}")
        if weights.entry(name).dtype not in _FLOAT_DTYPES:
            raise ConversionError(f"tensor {name}: unsupported dtype {weights.entry(name).dtype}")
    for name in weights.names():
        if name.startswith(("apm.", AUDIO_PROJECTOR_PREFIX)) and name not in shapes \
                and not _IGNORED_KEY_BIAS.match(name):
            raise ConversionError(
                f"unexpected tensor {name} (config.json audio_config describes {dims.layers} encoder layers)"
            )
    pre = read_preprocessor_config(ckpt_dir)
    n_mel = _pos_int(pre, "feature_size", dims.n_mel, PRE_FILE)
    if n_mel != dims.n_mel:
        raise ConversionError(
            f"{PRE_FILE}: 'feature_size' {n_mel} differs from config.json audio_config.num_mel_bins {dims.n_mel}"
        )
    sample_rate = _pos_int(pre, "sampling_rate", DEFAULT_SAMPLE_RATE, PRE_FILE)
    if sample_rate != DEFAULT_SAMPLE_RATE:
        raise ConversionError(
            f"{PRE_FILE}: 'sampling_rate' {sample_rate} is not supported (the Whisper encoder takes 16000 Hz audio)"
        )
    n_fft = _pos_int(pre, "n_fft", DEFAULT_N_FFT, PRE_FILE)
    if n_fft % 2:
        raise ConversionError(f"{PRE_FILE}: 'n_fft' must be even, got {n_fft}")
    hop = _pos_int(pre, "hop_length", DEFAULT_HOP, PRE_FILE)
    if hop > n_fft:
        raise ConversionError(f"{PRE_FILE}: 'hop_length' {hop} is larger than 'n_fft' {n_fft}")
    # the runtime pads with zeros and adds no noise, as the reference does by default
    for key in ("padding_value", "dither"):
        v = pre.get(key, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != 0:
            raise ConversionError(f"{PRE_FILE}: '{key}' must be 0.0, got {v!r}")
    return AudioPlan(
        dims=dims,
        sample_rate=sample_rate,
        n_fft=n_fft,
        hop_length=hop,
        chunk_seconds=_pos_int(pre, "chunk_length", DEFAULT_CHUNK_SECONDS, PRE_FILE),
        dynamic_range_db=_pos_float(pre, "dynamic_range_db", DEFAULT_DYNAMIC_RANGE_DB, PRE_FILE),
        block_seconds=_pos_float(config, "audio_chunk_length", DEFAULT_BLOCK_SECONDS, "config.json"),
        pool_step=_pos_int(config, "audio_pool_step", DEFAULT_POOL_STEP, "config.json"),
        shapes=shapes,
    )


def audio_component(plan: AudioPlan | None, w: Writer, outtype: str) -> list[PlannedTensor]:
    """omni_gguf hook: keys + tensor plan of the audio encoder and projector ([] without audio)."""
    if plan is None:
        return []
    _add_keys(w, plan)
    return _tensor_plan(plan, outtype)


def _pos_int(src: Mapping[str, Any], key: str, default: int, where: str) -> int:
    v = src.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConversionError(f"{where}: '{key}' must be a positive integer, got {v!r}")
    return v


def _pos_float(src: Mapping[str, Any], key: str, default: float, where: str) -> float:
    v = src.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ConversionError(f"{where}: '{key}' must be a positive number, got {v!r}")
    return float(v)


def _add_keys(w: Writer, p: AudioPlan) -> None:
    d = p.dims
    w.add_uint32(KEY + "n_embd", d.d_model)
    w.add_uint32(KEY + "n_layer", d.layers)
    w.add_uint32(KEY + "n_head", d.heads)
    w.add_uint32(KEY + "n_ff", d.ffn)
    w.add_uint32(KEY + "n_mel", d.n_mel)
    w.add_uint32(KEY + "n_positions", d.positions)
    w.add_float32(KEY + "layer_norm_eps", LAYER_NORM_EPS)
    w.add_string(KEY + "activation", d.act)
    w.add_uint32(KEY + "sample_rate", p.sample_rate)
    w.add_uint32(KEY + "n_fft", p.n_fft)
    w.add_uint32(KEY + "hop_length", p.hop_length)
    w.add_uint32(KEY + "chunk_seconds", p.chunk_seconds)
    w.add_float32(KEY + "dynamic_range_db", p.dynamic_range_db)
    w.add_float32(KEY + "block_seconds", p.block_seconds)
    w.add_uint32(KEY + "pool_step", p.pool_step)
    w.add_uint32(KEY + "n_embd_out", d.embed)


def _tensor_plan(p: AudioPlan, outtype: str) -> list[PlannedTensor]:
    d, shapes = p.dims, p.shapes
    plan: list[PlannedTensor] = []

    def add(gguf_name: str, hf_name: str, shape: Shape | None = None,
            qtype: GGMLQuantizationType | None = None) -> None:
        shape = tuple(shapes[hf_name] if shape is None else shape)
        plan.append(PlannedTensor(gguf_name, hf_name, qtype or tensor_type(outtype, shape), shape))

    mel = mel_filter_bank(d.n_mel, p.n_fft, p.sample_rate, 0.0, MEL_F_MAX)
    plan.append(PlannedTensor("a.mel_filters", "(mel filter bank)", GGMLQuantizationType.F32, mel.shape,
                              values=mel))
    # Conv1d kernels (out, in, 3) as (out, in*3) matrices: column index = in_channel*3 + tap
    add("a.conv1.weight", "apm.conv1.weight", (d.d_model, d.n_mel * 3))
    add("a.conv1.bias", "apm.conv1.bias")
    add("a.conv2.weight", "apm.conv2.weight", (d.d_model, d.d_model * 3))
    add("a.conv2.bias", "apm.conv2.bias")
    add("a.pos_embd.weight", "apm.embed_positions.weight", qtype=table_type(outtype))
    for i in range(d.layers):
        for hf, (short, leaves) in _LAYER_MAP.items():
            for leaf in leaves:
                add(f"a.blk.{i}.{short}.{leaf}", f"{AUDIO_LAYER_PREFIX}{i}.{hf}.{leaf}")
    add("a.post_ln.weight", "apm.layer_norm.weight")
    add("a.post_ln.bias", "apm.layer_norm.bias")
    for k in (1, 2):
        add(f"a.proj{k}.weight", f"{AUDIO_PROJECTOR_PREFIX}linear{k}.weight")
        add(f"a.proj{k}.bias", f"{AUDIO_PROJECTOR_PREFIX}linear{k}.bias")
    return plan
