"""The vision component of the companion GGUF: the SigLIP NaViT tower (`v.*`) and the resampler
(`resampler.*`), spec §1.1, §2, §9 and gap G1.

check_vision() validates a checkpoint's vpm.* / resampler.* tensors and the preprocessing settings
against config.json; Checkpoint.load calls it so a bad checkpoint fails before any file is written,
and keeps the plan it returns as Checkpoint.vision. vision_component() is the omni_gguf hook: from
that plan it adds the `minicpmo.vision.*` / `minicpmo.resampler.*`
keys and returns the tensors to write. Names, transforms and storage types follow the companion
contract (the C++ loader reads exactly these).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from gguf import GGMLQuantizationType, GGUFValueType

from .errors import ConversionError
from .gguf_write import PlannedTensor, Writer
from .layout import VISION_LAYER_PREFIX, Shape, VisionDims, resampler_shapes, vision_shapes
from .outtypes import table_type, tensor_type
from .preprocessor_config import read_preprocessor_config
from .safetensors_io import SafetensorsSource

KEY = "minicpmo."
# The reference builds the resampler's LayerNorms with eps 1e-6 in code (no config key).
RESAMPLER_LN_EPS = 1e-6
# MiniCPMVImageProcessor defaults, used when neither preprocessor_config.json nor config.json says.
DEFAULT_NORM = 0.5
DEFAULT_SCALE_RESOLUTION = 448
DEFAULT_MAX_SLICE_NUMS = 9
DEFAULT_BATCH_SIZE = 16

# HF names inside vpm.encoder.layers.{i}. -> contract names inside v.blk.{i}. (+ .weight / .bias)
_LAYER_MAP = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.out_proj": "attn_out",
    "layer_norm1": "ln1",
    "layer_norm2": "ln2",
    "mlp.fc1": "ffn_up",
    "mlp.fc2": "ffn_down",
}
_LAYER_INDEX = re.compile(re.escape(VISION_LAYER_PREFIX) + r"([0-9]+)\.")
_FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


@dataclass(frozen=True)
class VisionPlan:
    """Everything the vision component writes, checked."""

    dims: VisionDims
    layers_stored: int  # encoder layers in the checkpoint (>= dims.layers_run; extras not written)
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    scale_resolution: int
    max_slice_nums: int
    use_image_id: bool
    batch_size: int
    shapes: dict[str, Shape]  # HF name -> shape of every tensor that is written


def check_vision(config: Mapping[str, Any], weights: SafetensorsSource, ckpt_dir: Path) -> VisionPlan | None:
    """Validate the vision tower + resampler of a checkpoint; None when it has none (init_vision false)."""
    if not config.get("init_vision", True):
        return None
    dims = VisionDims.from_config(config)
    stored = _count_layers(weights, dims)
    shapes = {**vision_shapes(config, dims.layers_run), **resampler_shapes(config)}
    for name, shape in shapes.items():
        if name not in weights:
            raise ConversionError(f"missing tensor {name}")
        got = tuple(weights.shape(name))
        if got != tuple(shape):
            raise ConversionError(f"tensor {name}: expected shape {tuple(shape)}, got {got}")
        if weights.entry(name).dtype not in _FLOAT_DTYPES:
            raise ConversionError(f"tensor {name}: unsupported dtype {weights.entry(name).dtype}")
    pre = read_preprocessor_config(ckpt_dir)
    slice_cfg = config.get("slice_config") or {}
    if not isinstance(slice_cfg, dict):
        raise ConversionError("config.json: 'slice_config' must be a JSON object")
    # The image processor reads preprocessor_config.json; config.json's slice_config is the fallback.
    for where, src in (("preprocessor_config.json", pre), ("config.json slice_config", slice_cfg)):
        if "patch_size" in src and src["patch_size"] != dims.patch:
            raise ConversionError(
                f"{where}: patch_size {src['patch_size']!r} differs from vision_config.patch_size {dims.patch}"
            )
    return VisionPlan(
        dims=dims,
        layers_stored=stored,
        image_mean=_norm_values(pre, "norm_mean", dims.channels, positive=False),
        image_std=_norm_values(pre, "norm_std", dims.channels, positive=True),
        scale_resolution=_first_pos_int("scale_resolution", DEFAULT_SCALE_RESOLUTION,
                                        ("preprocessor_config.json", pre), ("config.json slice_config", slice_cfg)),
        max_slice_nums=_first_pos_int("max_slice_nums", DEFAULT_MAX_SLICE_NUMS,
                                      ("preprocessor_config.json", pre), ("config.json slice_config", slice_cfg)),
        use_image_id=_first_bool("use_image_id", True, ("preprocessor_config.json", pre), ("config.json", config)),
        batch_size=_first_pos_int("vision_batch_size", DEFAULT_BATCH_SIZE, ("config.json", config)),
        shapes=shapes,
    )


def vision_component(plan: VisionPlan | None, w: Writer, outtype: str) -> list[PlannedTensor]:
    """omni_gguf hook: keys + tensor plan of the vision tower and resampler ([] without vision)."""
    if plan is None:
        return []
    _add_keys(w, plan)
    return _tensor_plan(plan, outtype)


def _count_layers(weights: SafetensorsSource, d: VisionDims) -> int:
    """Encoder layers the checkpoint stores (highest index + 1; gaps show up as missing tensors).

    G1: the release most likely says 27 layers + drop_vision_last_layer and may or may not store the
    27th; either way d.layers_run layers run and only those are written.
    """
    first_of: dict[int, str] = {}
    for name in weights.names():
        m = _LAYER_INDEX.match(name)
        if m:
            first_of.setdefault(int(m.group(1)), name)
    stored = max(first_of) + 1 if first_of else 0
    if stored > d.config_layers:
        raise ConversionError(
            f"unexpected tensor {first_of[stored - 1]} (vision_config.num_hidden_layers is {d.config_layers})"
        )
    if stored < d.layers_run:
        drop = d.layers_run < d.config_layers
        raise ConversionError(
            f"missing tensor {VISION_LAYER_PREFIX}{stored}.self_attn.q_proj.weight: the checkpoint stores "
            f"{stored} vision encoder layers, {d.layers_run} are needed (vision_config.num_hidden_layers "
            f"{d.config_layers}, drop_vision_last_layer {str(drop).lower()})"
        )
    return stored


def _norm_values(pre: Mapping[str, Any], key: str, channels: int, positive: bool) -> tuple[float, ...]:
    v = pre.get(key, [DEFAULT_NORM] * channels)
    ok = isinstance(v, list) and len(v) == channels and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and (x > 0 or not positive)
        for x in v
    )
    if not ok:
        what = "positive numbers" if positive else "finite numbers"
        raise ConversionError(f"preprocessor_config.json: '{key}' must be a list of {channels} {what}, got {v!r}")
    return tuple(float(x) for x in v)


def _first_pos_int(key: str, default: int, *sources: tuple[str, Mapping[str, Any]]) -> int:
    for where, src in sources:
        if key in src and src[key] is not None:
            v = src[key]
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConversionError(f"{where}: '{key}' must be a positive integer, got {v!r}")
            return v
    return default


def _first_bool(key: str, default: bool, *sources: tuple[str, Mapping[str, Any]]) -> bool:
    for where, src in sources:
        if key in src and src[key] is not None:
            if not isinstance(src[key], bool):
                raise ConversionError(f"{where}: '{key}' must be true or false, got {src[key]!r}")
            return src[key]
    return default


def _add_keys(w: Writer, p: VisionPlan) -> None:
    d = p.dims
    v, r = KEY + "vision.", KEY + "resampler."
    w.add_uint32(v + "block_count", d.layers_run)
    w.add_uint32(v + "embedding_length", d.hidden)
    w.add_uint32(v + "feed_forward_length", d.ffn)
    w.add_uint32(v + "attention.head_count", d.heads)
    w.add_float32(v + "attention.layer_norm_epsilon", d.eps)
    w.add_uint32(v + "patch_size", d.patch)
    w.add_uint32(v + "image_size", d.image_size)
    w.add_uint32(v + "num_channels", d.channels)
    w.add_string(v + "hidden_act", d.act)
    w.add_typed_array(v + "image_mean", list(p.image_mean), GGUFValueType.FLOAT32)
    w.add_typed_array(v + "image_std", list(p.image_std), GGUFValueType.FLOAT32)
    w.add_uint32(v + "scale_resolution", p.scale_resolution)
    w.add_uint32(v + "max_slice_nums", p.max_slice_nums)
    w.add_uint32(v + "query_num", d.query_num)
    w.add_bool(v + "use_image_id", p.use_image_id)
    w.add_uint32(v + "batch_size", p.batch_size)
    w.add_uint32(r + "embedding_length", d.embed)
    w.add_uint32(r + "attention.head_count", d.resampler_heads)
    w.add_float32(r + "layer_norm_epsilon", RESAMPLER_LN_EPS)


def _tensor_plan(p: VisionPlan, outtype: str) -> list[PlannedTensor]:
    d, shapes = p.dims, p.shapes
    plan: list[PlannedTensor] = []

    def add(gguf_name: str, hf_name: str, shape: Shape | None = None, qtype: GGMLQuantizationType | None = None,
            rows: tuple[int, int] | None = None, transpose: bool = False) -> None:
        shape = tuple(shapes[hf_name] if shape is None else shape)
        plan.append(PlannedTensor(gguf_name, hf_name, qtype or tensor_type(outtype, shape), shape, rows, transpose))

    # the (D, C, P, P) conv kernel as a (D, C*P*P) matrix, columns in (c, ky, kx) order
    add("v.patch_embd.weight", "vpm.embeddings.patch_embedding.weight", (d.hidden, d.channels * d.patch * d.patch))
    add("v.patch_embd.bias", "vpm.embeddings.patch_embedding.bias")
    add("v.pos_embd.weight", "vpm.embeddings.position_embedding.weight", qtype=table_type(outtype))
    for i in range(d.layers_run):
        for hf, short in _LAYER_MAP.items():
            for leaf in ("weight", "bias"):
                add(f"v.blk.{i}.{short}.{leaf}", f"{VISION_LAYER_PREFIX}{i}.{hf}.{leaf}")
    add("v.post_ln.weight", "vpm.post_layernorm.weight")
    add("v.post_ln.bias", "vpm.post_layernorm.bias")

    e = d.embed
    add("resampler.query", "resampler.query", qtype=table_type(outtype))
    add("resampler.kv_proj.weight", "resampler.kv_proj.weight")
    # nn.MultiheadAttention packs [Wq; Wk; Wv] (and their biases) row-wise into in_proj_*
    for k, part in enumerate(("attn_q", "attn_k", "attn_v")):
        rows = (k * e, (k + 1) * e)
        add(f"resampler.{part}.weight", "resampler.attn.in_proj_weight", (e, e), rows=rows)
        add(f"resampler.{part}.bias", "resampler.attn.in_proj_bias", (e,), rows=rows)
    add("resampler.attn_out.weight", "resampler.attn.out_proj.weight")
    add("resampler.attn_out.bias", "resampler.attn.out_proj.bias")
    for ln in ("ln_q", "ln_kv", "ln_post"):
        add(f"resampler.{ln}.weight", f"resampler.{ln}.weight")
        add(f"resampler.{ln}.bias", f"resampler.{ln}.bias")
    # the reference computes x @ proj; stored transposed it is an ordinary Linear weight (y = W x)
    add("resampler.proj.weight", "resampler.proj", transpose=True)
    return plan
