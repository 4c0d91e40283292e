"""Tensor sources besides model.safetensors, and the weight-norm fold.

Every source answers the queries the GGUF writer uses (names, `in`, shape, dtype, float32 with an
optional row range), so a PlannedTensor can name any of them:
- open_tensor_file: a Token2Wav asset (.pt torch zip archive or .safetensors);
- RenamedSource: another source under other names (hift.pt's `generator.` prefix stripped);
- ArraySource: arrays the converter computed (folded weight norms).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import ConversionError
from .safetensors_io import SafetensorsSource
from .torch_zip import TorchZipSource

FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


def open_tensor_file(path: str | os.PathLike) -> Any:
    """A .safetensors file or a torch zip archive (.pt / .pth / .bin), by extension."""
    p = Path(path)
    if p.suffix == ".safetensors":
        return SafetensorsSource.open_file(p)
    return TorchZipSource.open(p)


def float64(src: Any, name: str) -> np.ndarray:
    """A tensor widened exactly to float64 (float32 decoding is exact for F32/F16/BF16)."""
    if src.dtype(name) == "F64" and hasattr(src, "float64"):
        return src.float64(name)
    return src.float32(name).astype(np.float64)


class RenamedSource:
    """`inner` seen under new names: names = {new: old}."""

    def __init__(self, inner: Any, names: Mapping[str, str], label: str):
        self._inner, self._names, self.label = inner, dict(names), label

    def names(self) -> list[str]:
        return list(self._names)

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._inner.shape(self._names[name]))

    def dtype(self, name: str) -> str:
        return self._inner.dtype(self._names[name])

    def float32(self, name: str, rows: slice | None = None) -> np.ndarray:
        return self._inner.float32(self._names[name], rows)

    def float64(self, name: str) -> np.ndarray:
        return float64(self._inner, self._names[name])


class ArraySource:
    """Converter-computed tensors (float64 or float32 arrays), rounded to float32 on read."""

    def __init__(self, arrays: Mapping[str, np.ndarray] | None = None):
        self._arrays: dict[str, np.ndarray] = dict(arrays or {})

    def add(self, name: str, array: np.ndarray) -> None:
        self._arrays[name] = array

    def names(self) -> list[str]:
        return list(self._arrays)

    def __contains__(self, name: str) -> bool:
        return name in self._arrays

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._arrays[name].shape)

    def dtype(self, name: str) -> str:
        return "F32"

    def float32(self, name: str, rows: slice | None = None) -> np.ndarray:
        a = self._arrays[name]
        return np.asarray(a if rows is None else a[rows], dtype=np.float32)


def fold_weight_norm(g: np.ndarray, v: np.ndarray, what: str) -> np.ndarray:
    """torch weight_norm's weight = g * v / ||v||, in float64.

    The norm runs over every axis where g has size 1 (torch keeps g's size along `dim` only: dim=0
    gives g of shape (out, 1, 1) for a Conv1d, (in, 1, 1) for a ConvTranspose1d; dim=None a scalar g).
    An axis of size 1 in v may be counted either way: the result is the same.
    """
    g = np.asarray(g, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if g.ndim == 0 or g.size == 1 and g.ndim != v.ndim:
        axes = tuple(range(v.ndim))
        g = g.reshape((1,) * v.ndim)
    else:
        if g.ndim != v.ndim or any(gs not in (1, vs) for gs, vs in zip(g.shape, v.shape)):
            raise ConversionError(f"{what}: weight-norm gain of shape {g.shape} does not fit direction {v.shape}")
        axes = tuple(a for a in range(v.ndim) if g.shape[a] == 1)
    norm = np.sqrt(np.sum(v * v, axis=axes, keepdims=True))
    if not np.all(np.isfinite(norm)) or np.any(norm == 0):
        raise ConversionError(f"{what}: weight-norm direction has a zero or non-finite norm")
    return g * v / norm


# the two spellings of a weight-normed parameter X.weight: (gain, direction)
WEIGHT_NORM_PAIRS = ((".parametrizations.weight.original0", ".parametrizations.weight.original1"),
                     (".weight_g", ".weight_v"))


def weight_norm_pair(src: Any, module: str, label: Any = None) -> tuple[str, str] | None:
    """(g name, v name) of module's weight norm in src, or None when it has none. label(name)
    words a tensor in messages (default "tensor NAME")."""
    label = label or (lambda n: f"tensor {n}")
    for g_suffix, v_suffix in WEIGHT_NORM_PAIRS:
        g, v = module + g_suffix, module + v_suffix
        if g in src and v in src:
            return g, v
        if (g in src) != (v in src):
            have, lacking = (g, v) if g in src else (v, g)
            raise ConversionError(f"{label(have)} has no weight-norm partner ({label(lacking)} is missing)")
    return None


def folded_weight(src: Any, module: str) -> np.ndarray | None:
    """module.weight with its weight norm folded (float64), or None without weight norm."""
    pair = weight_norm_pair(src, module)
    if pair is None:
        return None
    for n in pair:
        if src.dtype(n) not in FLOAT_DTYPES:
            raise ConversionError(f"tensor {n}: unsupported dtype {src.dtype(n)}")
    return fold_weight_norm(float64(src, pair[0]), float64(src, pair[1]), module + ".weight")
