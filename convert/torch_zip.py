"""Reading (and, for the tiny generator, writing) PyTorch `torch.save` zip archives without torch.

A `.pt` file is a zip holding `<archive>/data.pkl` (a pickle of the state dict) and one
`<archive>/data/<key>` entry of raw little-endian elements per storage. Unpickling a foreign pickle
can run arbitrary code, so the pickle is read by a restricted Unpickler: it resolves only the few
globals a state dict needs (OrderedDict, torch's tensor/parameter rebuild functions and the storage
type names, all mapped to local stand-ins) and refuses every other global before anything is called.
Storages are memory-mapped when stored uncompressed (as torch writes them), so a big checkpoint is
never read whole.

    src = TorchZipSource.open(path)        # name -> lazily decoded tensor
    src.float32("conv.weight")             # numpy float32, PyTorch order
    write_torch_zip(path, [(name, array), ...])   # float32 tensors, loadable by torch.load
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import ConversionError
from .safetensors_io import bf16_to_f32

# torch storage type name -> (numpy dtype, safetensors-style dtype name)
_STORAGE_TYPES = {
    "FloatStorage": (np.float32, "F32"),
    "DoubleStorage": (np.float64, "F64"),
    "HalfStorage": (np.float16, "F16"),
    "BFloat16Storage": (np.uint16, "BF16"),  # widened on read
    "LongStorage": (np.int64, "I64"),
    "IntStorage": (np.int32, "I32"),
    "ShortStorage": (np.int16, "I16"),
    "CharStorage": (np.int8, "I8"),
    "ByteStorage": (np.uint8, "U8"),
    "BoolStorage": (np.bool_, "BOOL"),
}
_FLOAT_DTYPES = ("F32", "F64", "F16", "BF16")
_MAX_PICKLE_BYTES = 256 * 1024 * 1024  # a state dict's pickle is tiny; this only stops absurd files


class _Refused(pickle.UnpicklingError):
    """The pickle asks for something a state dict never needs (raised before it could run)."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for torch.<X>Storage named by the pickle."""

    name: str


@dataclass(frozen=True)
class _StorageRef:
    """A persistent id ('storage', type, key, location, numel) resolved to an archive entry."""

    dtype: np.dtype
    dtype_name: str
    key: str
    numel: int


class TorchTensor:
    """A tensor of the archive: its storage and the view (offset, size, stride) into it."""

    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage: _StorageRef, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride


def _int_tuple(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, tuple) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise _Refused(f"tensor {what} must be a tuple of integers, got {v!r}")
    return v


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    """Local stand-in for torch._utils._rebuild_tensor_v2: records the view, reads nothing yet."""
    if not isinstance(storage, _StorageRef):
        raise _Refused("tensor storage is not an archive storage")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise _Refused(f"bad storage offset {storage_offset!r}")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride) or any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise _Refused(f"bad tensor view: size {size}, stride {stride}")
    if all(n > 0 for n in size):
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.numel:
            raise _Refused(
                f"tensor view (offset {storage_offset}, size {size}, stride {stride}) reaches past its "
                f"storage of {storage.numel} elements")
    return TorchTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """Stand-in for torch._utils._rebuild_parameter(_with_state): a Parameter is its tensor."""
    if not isinstance(data, TorchTensor):
        raise _Refused("parameter data is not a tensor")
    return data


# (module, name) -> the only objects the pickle may refer to
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_TYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(
                f"refusing to load global '{module}.{name}': only tensors in (Ordered)dicts are allowed "
                "(the pickle may be malicious or not a state dict)") from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)
                or not isinstance(pid[4], int) or pid[4] < 0):
            raise _Refused(f"unsupported persistent id {pid!r}")
        dtype, dtype_name = _STORAGE_TYPES[pid[1].name]
        return _StorageRef(np.dtype(dtype), dtype_name, pid[2], pid[4])


def _flatten(obj: Any, prefix: str, out: dict[str, TorchTensor], path: str) -> None:
    """Nested dicts of tensors -> 'a.b.c' names (a checkpoint may wrap its state dict, e.g.
    {'state_dict': {...}}; other values such as version numbers are skipped)."""
    if isinstance(obj, TorchTensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ConversionError(f"{path}: state dict key {k!r} is not a string")
            _flatten(v, f"{prefix}.{k}" if prefix else k, out, path)


class TorchZipSource:
    """Name -> tensor of a torch zip archive, decoded on demand (same queries as SafetensorsSource)."""

    def __init__(self, path: Path, tensors: dict[str, TorchTensor], entries: dict[str, zipfile.ZipInfo],
                 prefix: str, big_endian: bool):
        self.path = path
        self._tensors = tensors
        self._entries = entries
        self._prefix = prefix
        self._big_endian = big_endian

    @classmethod
    def open(cls, path: str | os.PathLike) -> "TorchZipSource":
        p = Path(path)
        if not p.is_file():
            raise ConversionError(f"missing file {p}")
        if not zipfile.is_zipfile(p):
            raise ConversionError(
                f"{p}: not a torch zip archive (the legacy pre-1.6 torch format is not supported: re-save it "
                "with a current torch.save, or convert it to safetensors)")
        try:
            with zipfile.ZipFile(p) as z:
                infos = {i.filename: i for i in z.infolist()}
                pkl = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
                if len(pkl) != 1:
                    raise ConversionError(f"{p}: not a torch archive (expected one <name>/data.pkl entry)")
                prefix = pkl[0][: -len("data.pkl")]
                if infos[pkl[0]].file_size > _MAX_PICKLE_BYTES:
                    raise ConversionError(f"{p}: data.pkl is implausibly large")
                raw = z.read(pkl[0])
                order = z.read(prefix + "byteorder").decode("ascii", "replace").strip() \
                    if prefix + "byteorder" in infos else "little"
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ConversionError(f"{p}: cannot read the zip archive: {e}") from e
        if order not in ("little", "big"):
            raise ConversionError(f"{p}: unknown byteorder {order!r}")
        try:
            obj = _RestrictedUnpickler(io.BytesIO(raw)).load()
        except _Refused as e:
            raise ConversionError(f"{p}: {e}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                struct.error, RecursionError, MemoryError) as e:
            raise ConversionError(f"{p}: corrupt or unsupported pickle ({type(e).__name__}: {e})") from None
        if not isinstance(obj, dict):
            raise ConversionError(f"{p}: expected a state dict (a mapping of names to tensors), got "
                                  f"{type(obj).__name__}")
        tensors: dict[str, TorchTensor] = {}
        _flatten(obj, "", tensors, str(p))
        for name, t in tensors.items():
            entry = infos.get(f"{prefix}data/{t.storage.key}")
            if entry is None:
                raise ConversionError(f"{p}: tensor {name} names storage {t.storage.key!r}, which the archive lacks")
            if entry.file_size != t.storage.numel * t.storage.dtype.itemsize:
                raise ConversionError(
                    f"{p}: storage {t.storage.key} of tensor {name} holds {entry.file_size} bytes, expected "
                    f"{t.storage.numel} x {t.storage.dtype.itemsize}")
        return cls(p, tensors, infos, prefix, order == "big")

    # --- queries (as SafetensorsSource) -------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def shape(self, name: str) -> tuple[int, ...]:
        return self._tensors[name].shape

    def dtype(self, name: str) -> str:
        return self._tensors[name].storage.dtype_name

    def _storage(self, ref: _StorageRef) -> np.ndarray:
        info = self._entries[f"{self._prefix}data/{ref.key}"]
        dt = ref.dtype.newbyteorder(">" if self._big_endian else "<")
        if ref.numel == 0:
            return np.zeros(0, dt)
        if info.compress_type == zipfile.ZIP_STORED:
            # the entry's bytes follow its local header: 30 fixed bytes + name + extra field
            with open(self.path, "rb") as f:
                f.seek(info.header_offset)
                head = f.read(30)
                if len(head) != 30 or head[:4] != b"PK\x03\x04":
                    raise ConversionError(f"{self.path}: corrupt zip entry {info.filename}")
                n_name, n_extra = struct.unpack("<HH", head[26:30])
            start = info.header_offset + 30 + n_name + n_extra
            if start + info.file_size > self.path.stat().st_size:
                raise ConversionError(f"{self.path}: zip entry {info.filename} is truncated")
            return np.memmap(self.path, dtype=dt, mode="r", offset=start, shape=(ref.numel,))
        with zipfile.ZipFile(self.path) as z:
            return np.frombuffer(z.read(info.filename), dtype=dt, count=ref.numel)

    def array(self, name: str) -> np.ndarray:
        """The tensor in its stored dtype (BF16 as uint16 bit patterns), native byte order."""
        t = self._tensors[name]
        flat = self._storage(t.storage)
        if any(n == 0 for n in t.shape):
            return np.zeros(t.shape, t.storage.dtype)
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(flat[t.offset:], shape=t.shape,
                                               strides=tuple(s * item for s in t.stride), writeable=False)
        return np.array(view, dtype=t.storage.dtype)  # copy: contiguous, native order

    def float32(self, name: str, rows: slice | None = None) -> np.ndarray:
        d = self.dtype(name)
        if d not in _FLOAT_DTYPES:
            raise ConversionError(f"{self.path}: tensor {name} has dtype {d}, expected a float type")
        a = self.array(name)
        if rows is not None:
            a = a[rows]
        return bf16_to_f32(a) if d == "BF16" else a.astype(np.float32)

    def float64(self, name: str) -> np.ndarray:
        """Exact widening (F64 stays as stored)."""
        a = self.array(name)
        return bf16_to_f32(a).astype(np.float64) if self.dtype(name) == "BF16" else a.astype(np.float64)


# --- writing ------------------------------------------------------------------------------------

def _p_str(s: str) -> bytes:
    b = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def _p_int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)  # BININT


def _p_tuple(items: Iterable[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _p_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode("ascii")


def write_torch_zip(path: str | os.PathLike, tensors: Iterable[tuple[str, np.ndarray]],
                    archive_name: str | None = None) -> None:
    """Write float32 tensors as a state dict in torch.save's zip format (protocol-2 pickle of an
    OrderedDict of _rebuild_tensor_v2 calls, one stored storage per tensor), loadable by torch.load.
    Used by the tiny generator, which must not need torch."""
    p = Path(path)
    arch = archive_name or p.stem or "archive"
    items = [(n, np.array(a, dtype="<f4", order="C")) for n, a in tensors]  # keeps 0-d shapes
    pkl = [b"\x80\x02", _p_global("collections", "OrderedDict"), b")R", b"("]
    for key, (name, a) in enumerate(items):
        stride, acc = [], 1
        for n in reversed(a.shape):
            stride.append(acc)
            acc *= n
        pid = _p_tuple([_p_str("storage"), _p_global("torch", "FloatStorage"), _p_str(str(key)), _p_str("cpu"),
                        _p_int(a.size)])
        args = _p_tuple([pid + b"Q", _p_int(0), _p_tuple(_p_int(n) for n in a.shape),
                         _p_tuple(_p_int(s) for s in reversed(stride)), b"\x89",
                         _p_global("collections", "OrderedDict") + b")R"])
        pkl += [_p_str(name), _p_global("torch._utils", "_rebuild_tensor_v2"), args, b"R"]
    pkl += [b"u", b"."]
    tmp = p.with_name(p.name + ".part")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr(f"{arch}/data.pkl", b"".join(pkl))
            z.writestr(f"{arch}/byteorder", b"little")
            for key, (_, a) in enumerate(items):
                z.writestr(f"{arch}/data/{key}", a.tobytes())
            z.writestr(f"{arch}/version", b"3\n")
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
