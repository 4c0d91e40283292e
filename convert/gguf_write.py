"""Streaming GGUF writing: tensor infos first, then each tensor encoded and written on its own.

GGUFWriter needs every tensor's size up front but not its data, so the data of one tensor at a
time is produced from the memory-mapped checkpoint and released after writing. Output goes to
NAME.part and is renamed at the end, so an interrupted run never leaves a valid-looking file.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType
from gguf.quants import quantize

from .outtypes import check_reshape, encode_tensor, encoded_nbytes_shape, transformed_shape
from .safetensors_io import SafetensorsSource


class Writer(gguf.GGUFWriter):
    """GGUFWriter that can also store empty typed arrays (e.g. a component list with nothing yet).

    The gguf package refuses empty arrays, but the format and llama.cpp's reader allow them.
    """

    def add_typed_array(self, key: str, val: list[Any], sub_type: GGUFValueType) -> None:
        self.add_key_value(key, list(val), GGUFValueType.ARRAY, sub_type=sub_type)

    def _pack_val(self, val: Any, vtype: GGUFValueType, add_vtype: bool,
                  sub_type: GGUFValueType | None = None) -> bytes:
        if vtype == GGUFValueType.ARRAY and sub_type is not None and len(val) == 0:
            head = self._pack("I", vtype) if add_vtype else b""
            return bytes(head + self._pack("I", sub_type) + self._pack("Q", 0))
        return super()._pack_val(val, vtype, add_vtype, sub_type=sub_type)


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor: checkpoint tensor hf_name, optionally transformed (see encode_tensor), or
    values computed by the converter (e.g. the mel filter bank), hf_name then only a description."""

    gguf_name: str
    hf_name: str
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]  # PyTorch order, as written (after the transforms below)
    rows: tuple[int, int] | None = None  # only source rows [r0, r1), e.g. one third of a fused in_proj
    transpose: bool = False  # write the 2-D source transposed
    values: np.ndarray | None = field(default=None, compare=False, repr=False)
    # where hf_name is read from when not the checkpoint's model.safetensors (e.g. a Token2Wav .pt
    # archive, or converter-computed tensors such as folded weight norms); anything with the
    # SafetensorsSource queries shape(name) / float32(name, rows)
    source: Any = field(default=None, compare=False, repr=False)

    def encoded(self, source: SafetensorsSource | None) -> np.ndarray:
        if self.values is not None:
            if self.qtype == GGMLQuantizationType.I32:
                return np.ascontiguousarray(self.values, dtype=np.int32)
            return quantize(np.ascontiguousarray(self.values, dtype=np.float32), self.qtype)
        src = self.source if self.source is not None else source
        assert src is not None
        return encode_tensor(src, self.hf_name, self.qtype, self.shape, self.rows, self.transpose)


def _ggml_dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in reversed(shape))  # ggml order, as llama.cpp prints it


def write_gguf(
    writer: Writer,
    path: Path,
    plan: list[PlannedTensor],
    source: SafetensorsSource | None,
    quiet: bool = False,
) -> Path:
    for t in plan:
        # a bad transform fails here, before any byte is written
        if t.values is not None:
            if tuple(t.values.shape) != tuple(t.shape):
                raise ValueError(f"{t.gguf_name}: computed values of shape {t.values.shape}, planned {t.shape}")
        elif (t.source or source) is not None:
            src = t.source if t.source is not None else source
            check_reshape(transformed_shape(src.shape(t.hf_name), t.rows, t.transpose), t.shape)
        shape, dtype = encoded_nbytes_shape(t.shape, t.qtype)
        nbytes = int(dtype.itemsize) * math.prod(shape)
        raw = None if t.qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16,
                                  GGMLQuantizationType.I32) else t.qtype
        writer.add_tensor_info(t.gguf_name, shape, dtype, nbytes, raw_dtype=raw)
    tmp = path.with_name(path.name + ".part")
    try:
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for k, t in enumerate(plan, start=1):
            writer.write_tensor_data(t.encoded(source))
            if not quiet:
                print(f"[{k}/{len(plan)}] {t.gguf_name} {_ggml_dims(t.shape)} {t.qtype.name}",
                      file=sys.stderr, flush=True)
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return path
