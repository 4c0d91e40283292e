"""Write llama.cpp's own mmproj GGUF (libmtmd / clip, projector "resampler", minicpmv_version
100045 = MiniCPM-o 4.5) from a MiniCPM-o Hugging Face checkpoint, so upstream can encode images with
exactly the weights our converter puts in the omni companion (bench/vision.py compares the two).

    python -m minicpmo_cpp.convert.mtmd_mmproj HF_DIR OUT.gguf [--outtype f16|q8_0|f32]

Format facts (read from tools/mtmd/clip.cpp, clip-impl.h and the tree's legacy MiniCPM-V converter):
arch "clip"; keys clip.projector_type, clip.minicpmv_version, clip.minicpmv_query_num and
clip.vision.*; clip.vision.image_size is the slice size (448), not the SigLIP table size, because
mtmd's llava-uhd slicer reads it as scale_resolution. ViT tensors v.*: patch_embd as a 4-D conv
kernel (it goes through ggml_conv_2d), position_embd, blk.{i}.attn_{q,k,v,out}, ln1/ln2,
ffn_up = mlp.fc1 and ffn_down = mlp.fc2 (clip.cpp recognises that order by shape and does not swap),
post_ln. Resampler tensors: query, kv.weight, attn.{q,k,v} (rows of in_proj), attn.out, ln_{q,kv,post},
proj.weight (= transposed checkpoint proj) and pos_embed_k, which clip.cpp requires to exist although
its graph computes the sin/cos table itself (written as the real 70x70 table).
Storage mirrors our companion's policy: 1-D tensors and resampler.query F32 (clip layer-norms the
query, ggml_norm wants F32), the 4-D patch kernel F16 unless outtype f32, other matrices the outtype
with an F16 fallback when a row does not fill whole quant blocks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gguf
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q
from gguf.quants import quant_shape_to_byte_shape, quantize

from .safetensors_io import SafetensorsSource

MINICPMO_45_VERSION = 100045
RESAMPLER_HEAD_DIM = 128  # clip.cpp's minicpmv graph hard-codes 128-wide resampler heads
POS_TABLE_SIDE = 70  # sin/cos table of the resampler, as in the reference (70 x 70 positions)
OUTTYPES = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0}
FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}


class MmprojError(ValueError):
    """The checkpoint cannot be written in upstream's MiniCPM-o 4.5 mmproj format."""


@dataclass(frozen=True)
class OutTensor:
    name: str
    shape: tuple[int, ...]  # numpy (PyTorch) order
    qtype: Q
    make: Callable[[], np.ndarray]  # float32 data of `shape`


def _matrix_type(outtype: str, shape: tuple[int, ...]) -> Q:
    want = OUTTYPES[outtype]
    if len(shape) <= 1:
        return Q.F32
    block = GGML_QUANT_SIZES[want][0]
    return want if shape[-1] % block == 0 else Q.F16


def sincos_table(embed_dim: int, side: int = POS_TABLE_SIDE) -> np.ndarray:
    """(side*side, embed_dim): first half encodes the column (w), second half the row (h); each
    half is [sin | cos] of position * 10000^(-k/(embed_dim/4))."""
    if embed_dim % 4:
        raise MmprojError(f"resampler width {embed_dim} is not a multiple of 4")
    quarter = embed_dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.divmod(np.arange(side * side), side)

    def half(pos: np.ndarray) -> np.ndarray:
        t = pos[:, None] * omega[None, :]
        return np.concatenate([np.sin(t), np.cos(t)], axis=1)

    return np.concatenate([half(cols.astype(np.float64)), half(rows.astype(np.float64))], axis=1).astype(np.float32)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MmprojError(f"cannot read {path}: {e}") from e


def vision_layers_to_run(cfg: dict, names: list[str]) -> int:
    """Layers present in the checkpoint; a stored 27th layer is dropped when drop_vision_last_layer
    says so (spec gap G1: the reference runs num_hidden_layers - 1)."""
    present = {int(m.group(1)) for n in names if (m := re.match(r"vpm\.encoder\.layers\.(\d+)\.", n))}
    if not present:
        raise MmprojError("checkpoint has no vpm.encoder.layers.* tensors (no vision tower)")
    count = max(present) + 1
    if sorted(present) != list(range(count)):
        raise MmprojError(f"vision layers are not contiguous: {sorted(present)}")
    configured = int(cfg["vision_config"]["num_hidden_layers"])
    if cfg.get("drop_vision_last_layer", True) and count == configured:
        count -= 1
    return count


def plan_tensors(src: SafetensorsSource, cfg: dict, outtype: str) -> tuple[list[OutTensor], int]:
    f32 = src.float32
    n_layer = vision_layers_to_run(cfg, src.names())
    embed = int(cfg["hidden_size"])
    plain = OUTTYPES[outtype] if outtype == "f32" else Q.F16  # non-quantizable tables

    def direct(name: str, hf: str, qtype: Q | None = None) -> OutTensor:
        shape = tuple(src.shape(hf))
        if qtype is None:  # (GGMLQuantizationType.F32 is 0, so no `or` here)
            qtype = _matrix_type(outtype, shape)
        return OutTensor(name, shape, qtype, lambda: f32(hf))

    out: list[OutTensor] = []
    out.append(direct("v.patch_embd.weight", "vpm.embeddings.patch_embedding.weight", plain))
    out.append(direct("v.patch_embd.bias", "vpm.embeddings.patch_embedding.bias"))
    out.append(direct("v.position_embd.weight", "vpm.embeddings.position_embedding.weight", plain))
    for i in range(n_layer):
        hf = f"vpm.encoder.layers.{i}."
        for ours, theirs in (("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"),
                             ("attn_v", "self_attn.v_proj"), ("attn_out", "self_attn.out_proj"),
                             ("ln1", "layer_norm1"), ("ln2", "layer_norm2"),
                             ("ffn_up", "mlp.fc1"), ("ffn_down", "mlp.fc2")):
            for leaf in ("weight", "bias"):
                out.append(direct(f"v.blk.{i}.{ours}.{leaf}", f"{hf}{theirs}.{leaf}"))
    for leaf in ("weight", "bias"):
        out.append(direct(f"v.post_ln.{leaf}", f"vpm.post_layernorm.{leaf}"))

    out.append(direct("resampler.query", "resampler.query", Q.F32))
    out.append(direct("resampler.kv.weight", "resampler.kv_proj.weight"))
    in_w, in_b = "resampler.attn.in_proj_weight", "resampler.attn.in_proj_bias"
    if tuple(src.shape(in_w)) != (3 * embed, embed):
        raise MmprojError(f"{in_w} has shape {src.shape(in_w)}, expected {(3 * embed, embed)}")
    for k, part in enumerate("qkv"):
        rows = slice(k * embed, (k + 1) * embed)
        out.append(OutTensor(f"resampler.attn.{part}.weight", (embed, embed),
                             _matrix_type(outtype, (embed, embed)), lambda r=rows: f32(in_w, r)))
        out.append(OutTensor(f"resampler.attn.{part}.bias", (embed,), Q.F32, lambda r=rows: f32(in_b)[r]))
    for leaf in ("weight", "bias"):
        out.append(direct(f"resampler.attn.out.{leaf}", f"resampler.attn.out_proj.{leaf}"))
    for ln in ("q", "kv", "post"):
        for leaf in ("weight", "bias"):
            out.append(direct(f"resampler.ln_{ln}.{leaf}", f"resampler.ln_{ln}.{leaf}"))
    # the checkpoint's proj is used as x @ proj; ggml's mul_mat wants the Linear layout (W x)
    out.append(OutTensor("resampler.proj.weight", (embed, embed), _matrix_type(outtype, (embed, embed)),
                         lambda: np.ascontiguousarray(f32("resampler.proj").T)))
    out.append(OutTensor("resampler.pos_embed_k", (POS_TABLE_SIDE ** 2, embed), plain,
                         lambda: sincos_table(embed)))
    return out, n_layer


def _encode(data: np.ndarray, qtype: Q) -> np.ndarray:
    if qtype == Q.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if qtype == Q.F16:
        return np.ascontiguousarray(data, dtype=np.float16)
    return quantize(np.ascontiguousarray(data, dtype=np.float32), qtype)


def write_mmproj(hf_dir: str | os.PathLike, out_path: str | os.PathLike, outtype: str = "f16",
                 quiet: bool = True) -> Path:
    """Write the mmproj for hf_dir's vision tower + resampler; returns out_path."""
    if outtype not in OUTTYPES:
        raise MmprojError(f"unknown outtype {outtype!r}: choose one of {', '.join(OUTTYPES)}")
    hf = Path(hf_dir)
    cfg = _read_json(hf / "config.json")
    pre_path = hf / "preprocessor_config.json"
    pre = _read_json(pre_path) if pre_path.exists() else {}
    v = cfg.get("vision_config")
    if not isinstance(v, dict):
        raise MmprojError(f"{hf / 'config.json'} has no vision_config")
    embed = int(cfg["hidden_size"])
    heads = int(cfg.get("resampler_num_heads") or embed // RESAMPLER_HEAD_DIM)
    if embed % RESAMPLER_HEAD_DIM or heads * RESAMPLER_HEAD_DIM != embed:
        raise MmprojError(f"upstream's resampler needs {RESAMPLER_HEAD_DIM}-wide heads; this checkpoint has "
                          f"width {embed} with {heads} heads")
    src = SafetensorsSource.open_dir(hf)
    plan, n_layer = plan_tensors(src, cfg, outtype)
    slice_cfg = cfg.get("slice_config") or {}

    w = gguf.GGUFWriter(None, "clip")
    w.add_name("MiniCPM-o 4.5 vision (minicpmo_cpp.convert.mtmd_mmproj)")
    w.add_description("image encoder for MiniCPM-o 4.5")
    w.add_file_type(int(FILE_TYPES[outtype]))
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_minicpmv_projector", True)
    w.add_string("clip.projector_type", "resampler")
    w.add_int32("clip.minicpmv_version", MINICPMO_45_VERSION)
    w.add_uint32("clip.minicpmv_query_num", int(cfg.get("query_num", 64)))
    w.add_uint32("clip.vision.image_size", int(slice_cfg.get("scale_resolution", cfg.get("image_size", 448))))
    w.add_uint32("clip.vision.patch_size", int(v["patch_size"]))
    w.add_uint32("clip.vision.embedding_length", int(v["hidden_size"]))
    w.add_uint32("clip.vision.feed_forward_length", int(v["intermediate_size"]))
    w.add_uint32("clip.vision.projection_dim", 0)
    w.add_uint32("clip.vision.attention.head_count", int(v["num_attention_heads"]))
    w.add_float32("clip.vision.attention.layer_norm_epsilon", float(v.get("layer_norm_eps", 1e-6)))
    w.add_uint32("clip.vision.block_count", n_layer)
    w.add_array("clip.vision.image_mean", [float(x) for x in pre.get("norm_mean", [0.5, 0.5, 0.5])])
    w.add_array("clip.vision.image_std", [float(x) for x in pre.get("norm_std", [0.5, 0.5, 0.5])])
    if v.get("hidden_act", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        raise MmprojError(f"vision hidden_act {v.get('hidden_act')!r}: upstream's use_gelu is the tanh GELU")
    w.add_bool("clip.use_gelu", True)

    for t in plan:
        if t.qtype in (Q.F32, Q.F16):
            shape, dtype = t.shape, np.dtype(np.float32 if t.qtype == Q.F32 else np.float16)
            raw = None
        else:
            shape, dtype, raw = quant_shape_to_byte_shape(t.shape, t.qtype), np.dtype(np.uint8), t.qtype
        w.add_tensor_info(t.name, shape, dtype, int(dtype.itemsize) * math.prod(shape), raw_dtype=raw)

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")  # a killed run never leaves a valid-looking file
    try:
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for k, t in enumerate(plan, 1):
            data = t.make()
            if tuple(data.shape) != t.shape:
                raise MmprojError(f"{t.name}: made shape {data.shape}, planned {t.shape}")
            w.write_tensor_data(_encode(data, t.qtype))
            if not quiet:
                print(f"[{k}/{len(plan)}] {t.name} {t.qtype.name}", file=sys.stderr, flush=True)
        w.close()
        os.replace(tmp, out)
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("hf_dir")
    ap.add_argument("out")
    ap.add_argument("--outtype", default="f16", choices=sorted(OUTTYPES))
    args = ap.parse_args(argv)
    try:
        print(write_mmproj(args.hf_dir, args.out, args.outtype, quiet=False))
    except MmprojError as e:
        print(f"mtmd_mmproj: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
