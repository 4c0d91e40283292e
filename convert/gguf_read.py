"""A small, fast GGUF metadata reader (key/values and tensor infos, no tensor data).

Why not gguf.GGUFReader: it builds a numpy view per array element, which takes ~8 s for a
Qwen2 vocabulary (150k tokens + 150k merges). Here string arrays are decoded in one pass.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConversionError

GGUF_MAGIC = b"GGUF"

# GGUF value type -> (struct format, numpy dtype) for fixed-size scalars.
_SCALARS = {
    0: ("<B", np.uint8), 1: ("<b", np.int8), 2: ("<H", np.uint16), 3: ("<h", np.int16),
    4: ("<I", np.uint32), 5: ("<i", np.int32), 6: ("<f", np.float32), 7: ("<?", np.bool_),
    10: ("<Q", np.uint64), 11: ("<q", np.int64), 12: ("<d", np.float64),
}
_STRING, _ARRAY = 8, 9


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order (ne0 first), as stored in the file
    ggml_type: int
    offset: int  # relative to the start of the data section


@dataclass
class GGUFInfo:
    version: int
    kv: dict[str, Any] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    alignment: int = 32
    data_offset: int = 0

    def tensor(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)


class _Cursor:
    def __init__(self, buf: memoryview):
        self.buf = buf
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.unpack("<Q")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype][0])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            sub = self.unpack("<I")
            n = self.unpack("<Q")
            if sub in _SCALARS:
                dt = np.dtype(_SCALARS[sub][1]).newbyteorder("<")
                arr = np.frombuffer(self.buf, dtype=dt, count=n, offset=self.pos)
                self.pos += n * dt.itemsize
                return arr.tolist()
            if sub == _STRING:
                return [self.string() for _ in range(n)]
            return [self.value(sub) for _ in range(n)]
        raise ConversionError(f"unknown GGUF value type {vtype}")


def read_gguf_info(path: str | Path) -> GGUFInfo:
    """Key/values and tensor infos of a GGUF file (arrays come back as Python lists)."""
    path = Path(path)
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            cur = _Cursor(memoryview(mm))
            try:
                return _parse(cur, path)
            finally:
                cur.buf.release()
    except (OSError, ValueError, struct.error) as e:
        if isinstance(e, ConversionError):
            raise
        raise ConversionError(f"{path}: cannot read GGUF file: {e}") from e


def _parse(cur: _Cursor, path: Path) -> GGUFInfo:
    if bytes(cur.buf[:4]) != GGUF_MAGIC:
        raise ConversionError(f"{path}: not a GGUF file")
    cur.pos = 4
    info = GGUFInfo(version=cur.unpack("<I"))
    n_tensors = cur.unpack("<Q")
    n_kv = cur.unpack("<Q")
    for _ in range(n_kv):
        key = cur.string()
        info.kv[key] = cur.value(cur.unpack("<I"))
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("<I")
        shape = tuple(cur.unpack("<Q") for _ in range(n_dims))
        info.tensors.append(TensorInfo(name, shape, cur.unpack("<I"), cur.unpack("<Q")))
    info.alignment = int(info.kv.get("general.alignment", 32))
    info.data_offset = -(-cur.pos // info.alignment) * info.alignment
    return info


def read_tensor_bytes(path: str | Path, info: GGUFInfo, name: str, nbytes: int) -> bytes:
    """Raw bytes of one tensor (for tests and round-trip checks)."""
    t = info.tensor(name)
    with open(path, "rb") as f:
        f.seek(info.data_offset + t.offset)
        return f.read(nbytes)
