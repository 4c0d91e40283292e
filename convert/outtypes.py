"""Output types (--outtype) and how each tensor is encoded for them."""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType
from gguf.quants import quant_shape_to_byte_shape, quantize

from .errors import ConversionError
from .safetensors_io import SafetensorsSource

Q = GGMLQuantizationType

OUTTYPES: dict[str, tuple[GGMLQuantizationType, LlamaFileType]] = {
    "f32": (Q.F32, LlamaFileType.ALL_F32),
    "f16": (Q.F16, LlamaFileType.MOSTLY_F16),
    "bf16": (Q.BF16, LlamaFileType.MOSTLY_BF16),
    "q8_0": (Q.Q8_0, LlamaFileType.MOSTLY_Q8_0),
}

# Decode/encode at most this many elements at a time, so a 151748x4096 embedding never needs
# a full float32 copy next to its encoded form.
_CHUNK_ELEMENTS = 1 << 24


def parse_outtype(outtype: str) -> str:
    key = str(outtype).lower()
    if key not in OUTTYPES:
        raise ConversionError(f"unknown outtype {outtype!r}: choose one of {', '.join(OUTTYPES)}")
    return key


def file_label(outtype: str) -> str:
    """The QTYPE part of output file names: F32, F16, BF16, Q8_0."""
    return OUTTYPES[parse_outtype(outtype)][0].name


def tensor_type(outtype: str, shape: tuple[int, ...]) -> GGMLQuantizationType:
    """Per-tensor type: 1-D tensors (norms, biases) stay F32, as llama.cpp's converters do;
    block-quantized types fall back to F16 when a row does not fill whole blocks."""
    want = OUTTYPES[parse_outtype(outtype)][0]
    if len(shape) <= 1:
        return Q.F32
    block = GGML_QUANT_SIZES[want][0]
    if shape[-1] % block:
        return Q.F16
    return want


def encoded_nbytes_shape(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> tuple[tuple[int, ...], np.dtype]:
    """numpy shape and dtype of the encoded array, as GGUFWriter.add_tensor_info wants them."""
    if qtype == Q.F32:
        return shape, np.dtype(np.float32)
    if qtype == Q.F16:
        return shape, np.dtype(np.float16)
    return quant_shape_to_byte_shape(shape, qtype), np.dtype(np.uint8)


def encode_tensor(src: SafetensorsSource, name: str, qtype: GGMLQuantizationType) -> np.ndarray:
    """Decode a checkpoint tensor and encode it as qtype, a block of rows at a time."""
    shape = tuple(src.shape(name))
    out_shape, out_dtype = encoded_nbytes_shape(shape, qtype)
    out = np.empty(out_shape, dtype=out_dtype)
    if len(shape) <= 1:
        out[...] = quantize(src.float32(name), qtype)
        return out
    row = int(np.prod(shape[1:], dtype=np.int64))
    step = max(1, _CHUNK_ELEMENTS // max(row, 1))
    for r0 in range(0, shape[0], step):
        r1 = min(shape[0], r0 + step)
        out[r0:r1] = quantize(src.float32(name, slice(r0, r1)), qtype)
    return out
