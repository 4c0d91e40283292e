"""Lazy safetensors reading (single file or sharded) and a small writer.

Own code instead of the `safetensors` package because numpy has no bfloat16: the package's numpy
loader refuses BF16 tensors, which is how the release stores its weights. Tensors are memory-mapped
and decoded one at a time, so a 16 GB checkpoint is never held in RAM.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .errors import ConversionError

# safetensors dtype -> numpy storage dtype (BF16 is stored as uint16 and widened on read)
_STORAGE = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bit patterns -> float32 (exact)."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> uint16 bfloat16 bit patterns, round-to-nearest-even (as torch does)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


@dataclass(frozen=True)
class TensorEntry:
    file: Path
    dtype: str  # safetensors dtype string
    shape: tuple[int, ...]
    begin: int  # absolute byte offsets in the file
    end: int


class SafetensorsSource:
    """Name -> lazily decoded tensor, over one or more .safetensors files."""

    def __init__(self, entries: Mapping[str, TensorEntry]):
        self._entries = dict(entries)

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def open_dir(cls, model_dir: str | os.PathLike) -> "SafetensorsSource":
        """model.safetensors, or the shards named by model.safetensors.index.json."""
        d = Path(model_dir)
        index = d / "model.safetensors.index.json"
        single = d / "model.safetensors"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (ValueError, KeyError) as e:
                raise ConversionError(f"{index}: not a valid safetensors index ({e})") from e
            files = sorted(set(weight_map.values()))
            entries: dict[str, TensorEntry] = {}
            for fname in files:
                shard = d / fname
                if not shard.is_file():
                    raise ConversionError(f"missing weight shard {shard} (named in {index.name})")
                entries.update(_read_header(shard))
            missing = sorted(set(weight_map) - set(entries))
            if missing:
                raise ConversionError(f"{index.name} lists tensor {missing[0]} but no shard holds it")
            return cls(entries)
        if single.is_file():
            return cls(_read_header(single))
        raise ConversionError(
            f"no weights in {d}: expected model.safetensors or model.safetensors.index.json"
        )

    # --- queries ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def entry(self, name: str) -> TensorEntry:
        return self._entries[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name].shape

    def dtype(self, name: str) -> str:
        """The safetensors dtype name (F32, BF16, I64, ...)."""
        return self._entries[name].dtype

    @classmethod
    def open_file(cls, path: str | os.PathLike) -> "SafetensorsSource":
        """One .safetensors file (e.g. a Token2Wav asset)."""
        p = Path(path)
        if not p.is_file():
            raise ConversionError(f"missing file {p}")
        return cls(_read_header(p))

    def raw(self, name: str) -> np.ndarray:
        """Memory-mapped storage view (uint16 for BF16); nothing is read until touched."""
        e = self._entries[name]
        dt = np.dtype(_STORAGE[e.dtype]).newbyteorder("<")
        count = int(np.prod(e.shape, dtype=np.int64)) if e.shape else 1
        if count * dt.itemsize != e.end - e.begin:
            raise ConversionError(f"{e.file.name}: tensor {name} has a bad byte range")
        mm = np.memmap(e.file, dtype=dt, mode="r", offset=e.begin, shape=(count,))
        return mm.reshape(e.shape)

    def float32(self, name: str, rows: slice | None = None) -> np.ndarray:
        """The tensor (or a row range of it) decoded to float32."""
        e = self._entries[name]
        if e.dtype not in _FLOAT_DTYPES:
            raise ConversionError(f"tensor {name} has dtype {e.dtype}, expected a float type")
        raw = self.raw(name)
        if rows is not None:
            raw = raw[rows]
        if e.dtype == "BF16":
            return bf16_to_f32(np.asarray(raw))
        return np.asarray(raw, dtype=np.float32)


def _read_header(path: Path) -> dict[str, TensorEntry]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ConversionError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100 * 1024 * 1024:
            raise ConversionError(f"{path}: not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except ValueError as e:
            raise ConversionError(f"{path}: corrupt safetensors header ({e})") from e
    base = 8 + n
    out: dict[str, TensorEntry] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (b, e) = meta["dtype"], tuple(int(s) for s in meta["shape"]), meta["data_offsets"]
        except (KeyError, TypeError, ValueError) as ex:
            raise ConversionError(f"{path}: bad header entry for {name}") from ex
        if dtype not in _STORAGE:
            raise ConversionError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        if not (0 <= b <= e <= size - base):
            raise ConversionError(f"{path}: tensor {name} lies outside the file")
        out[name] = TensorEntry(path, dtype, shape, base + b, base + e)
    return out


def write_safetensors(
    path: str | os.PathLike,
    tensors: Iterable[tuple[str, np.ndarray]],
    dtype: str = "F32",
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write float tensors as F32, F16 or BF16 (one file, header padded to 8 bytes)."""
    if dtype not in ("F32", "F16", "BF16"):
        raise ValueError(f"unsupported dtype {dtype}")
    items = list(tensors)
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    encoded = []
    for name, arr in items:
        if dtype == "BF16":
            data = f32_to_bf16(arr)
        else:
            data = np.ascontiguousarray(arr, dtype=np.float32 if dtype == "F32" else np.float16)
        nbytes = data.nbytes
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + nbytes]}
        encoded.append(data)
        offset += nbytes
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for data in encoded:
            data.astype(data.dtype.newbyteorder("<"), copy=False).tofile(f)
