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


def tts_outtype_for(outtype: str, tts_outtype: str | None) -> str:
    """The type of the TTS decoder's matrices: tts_outtype when given, else Q8_0 for f16 and bf16
    files and the file's own type for f32 (exact) and q8_0. The TTS decodes one speech code per
    step, so its speed is the bytes of its matrices read per code: Q8_0 reads 53% of F16's."""
    if tts_outtype is not None:
        return parse_outtype(tts_outtype)
    outtype = parse_outtype(outtype)
    return "q8_0" if outtype in ("f16", "bf16") else outtype


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


def table_type(outtype: str) -> GGMLQuantizationType:
    """Position tables and learned queries: F32 in an F32 file, else F16, never block-quantized
    (they are added to activations element-wise, where block-quantization error shows directly)."""
    return Q.F32 if parse_outtype(outtype) == "f32" else Q.F16


def encoded_nbytes_shape(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> tuple[tuple[int, ...], np.dtype]:
    """numpy shape and dtype of the encoded array, as GGUFWriter.add_tensor_info wants them."""
    if qtype == Q.F32:
        return shape, np.dtype(np.float32)
    if qtype == Q.F16:
        return shape, np.dtype(np.float16)
    if qtype == Q.I32:
        return shape, np.dtype(np.int32)
    return quant_shape_to_byte_shape(shape, qtype), np.dtype(np.uint8)


def transformed_shape(src_shape: tuple[int, ...], rows: tuple[int, int] | None, transpose: bool) -> tuple[int, ...]:
    """Shape of a checkpoint tensor after taking rows [r0, r1) of it and/or transposing it."""
    shape = tuple(src_shape)
    if rows is not None:
        r0, r1 = rows
        if not shape or not 0 <= r0 < r1 <= shape[0]:
            raise ConversionError(f"row range {rows} does not fit a tensor of shape {shape}")
        shape = (r1 - r0, *shape[1:])
    if transpose:
        if len(shape) != 2:
            raise ConversionError(f"only 2-D tensors can be transposed, got shape {shape}")
        shape = (shape[1], shape[0])
    return shape


def check_reshape(src_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
    """A reshape may only merge trailing axes (e.g. a conv kernel (D, C, P, P) -> (D, C*P*P)), so
    row r of the output is row r of the source and rows can still be encoded a block at a time."""
    if tuple(src_shape) == tuple(out_shape):
        return
    same_rows = len(out_shape) >= 1 and len(src_shape) >= 1 and out_shape[0] == src_shape[0]
    if len(out_shape) == 1 and len(src_shape) == 1:
        same_rows = False
    if not same_rows or np.prod(src_shape, dtype=np.int64) != np.prod(out_shape, dtype=np.int64):
        raise ConversionError(f"cannot reshape {tuple(src_shape)} to {tuple(out_shape)} row by row")


def encode_tensor(
    src: SafetensorsSource,
    name: str,
    qtype: GGMLQuantizationType,
    shape: tuple[int, ...] | None = None,
    rows: tuple[int, int] | None = None,
    transpose: bool = False,
) -> np.ndarray:
    """Decode a checkpoint tensor and encode it as qtype, a block of rows at a time.

    Optional transforms, applied in this order: keep only source rows [r0, r1) (e.g. the q part of
    a fused in_proj), transpose a 2-D tensor, reshape to `shape` merging trailing axes.
    """
    view = transformed_shape(src.shape(name), rows, transpose)
    shape = view if shape is None else tuple(shape)
    check_reshape(view, shape)
    r0 = rows[0] if rows is not None else 0
    out_shape, out_dtype = encoded_nbytes_shape(shape, qtype)
    out = np.empty(out_shape, dtype=out_dtype)
    if len(shape) <= 1:
        values = src.float32(name) if rows is None else src.float32(name, slice(r0, r0 + shape[0]))
        out[...] = quantize(values, qtype)
        return out
    # A transposed output row is a source column: read the tensor whole (only the resampler's
    # square projection is transposed, 4096x4096).
    whole = src.float32(name, None if rows is None else slice(r0, rows[1])).T if transpose else None
    row = int(np.prod(shape[1:], dtype=np.int64))
    step = max(1, _CHUNK_ELEMENTS // max(row, 1))
    for a in range(0, shape[0], step):
        b = min(shape[0], a + step)
        block = whole[a:b] if whole is not None else src.float32(name, slice(r0 + a, r0 + b))
        out[a:b] = quantize(np.ascontiguousarray(block).reshape((b - a, *shape[1:])), qtype)
    return out
