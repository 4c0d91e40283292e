"""The official llama.cpp-omni files' tensors seen under the Hugging Face checkpoint's names.

OfficialSource answers the queries the converter's checks and writers make of a checkpoint
(names, shape, dtype, float32 rows) for the tensors of the official GGUF set, so the component plans
(vision_gguf, audio_gguf, tts_gguf, token2wav_gguf) check and lay them out exactly as they do a
checkpoint's. Each HF name is one official tensor, possibly re-shaped back (the official
converters squeeze biases, store some matrices transposed, split a fused in_proj and permute the
TTS's q/k rows for llama.cpp's `llama` rope); stored_type() tells the writer the type the
official file holds, so values are carried over exactly.

The official names come from llama.cpp-omni's converters (tools/omni/convert/convert_vpm.py,
convert_apm.py, its convert_hf_to_gguf.py's llama/TTS path, convert_projector.py) and from its
Token2Wav loader (tools/omni/token2wav/token2wav-impl.cpp) for token2wav-gguf/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from gguf import GGMLQuantizationType

from .errors import ConversionError
from .omni_set import GGUFTensors

Transform = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class _Ref:
    file: GGUFTensors
    names: tuple[str, ...]  # official tensor(s); several are concatenated along rows
    shape: tuple[int, ...]  # HF (PyTorch) shape served
    transform: Transform | None = None  # applied to the float32 official tensor (PyTorch order)


def unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo convert_hf_to_gguf's llama q/k permutation (HF's rotate-half row order -> interleaved
    pairs): rows (head, pair, half) back to (head, half, pair)."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise ConversionError(f"cannot undo the rope permutation of a {w.shape} matrix with {n_head} heads")
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class OfficialSource:
    """HF-named view of official tensors; the SafetensorsSource queries the converter makes."""

    def __init__(self) -> None:
        self._refs: dict[str, _Ref] = {}

    def add(self, hf_name: str, file: GGUFTensors, names: str | tuple[str, ...], shape: tuple[int, ...] | None = None,
            transform: Transform | None = None) -> None:
        names = (names,) if isinstance(names, str) else tuple(names)
        for n in names:
            if n not in file:
                raise ConversionError(f"{file.path}: missing tensor {n} (for {hf_name})")
        if shape is None:  # a transform that changes the shape must name the shape served
            shapes = [file.shape(n) for n in names]
            shape = (sum(s[0] for s in shapes), *shapes[0][1:]) if len(names) > 1 else shapes[0]
        self._refs[hf_name] = _Ref(file, names, tuple(int(x) for x in shape), transform)

    def names(self) -> list[str]:
        return list(self._refs)

    def __contains__(self, name: str) -> bool:
        return name in self._refs

    def shape(self, name: str) -> tuple[int, ...]:
        return self._refs[name].shape

    def dtype(self, name: str) -> str:
        return "F32" if self.stored_type(name) != GGMLQuantizationType.F16 else "F16"

    def entry(self, name: str) -> "OfficialSource._Entry":
        return OfficialSource._Entry(self.dtype(name))

    @dataclass(frozen=True)
    class _Entry:
        dtype: str

    def stored_type(self, name: str) -> GGMLQuantizationType:
        """F16 when every official tensor behind name is F16, else F32 (F32 holds either exactly;
        a block-quantized official tensor is decoded to F32)."""
        r = self._refs[name]
        types = {r.file.qtype(n) for n in r.names}
        return GGMLQuantizationType.F16 if types == {GGMLQuantizationType.F16} else GGMLQuantizationType.F32

    def origin(self, name: str) -> str:
        r = self._refs[name]
        return f"{r.file.path.name}: {' + '.join(r.names)}"

    def float32(self, name: str, rows: slice | None = None) -> np.ndarray:
        r = self._refs[name]
        parts = [r.file.float32(n) for n in r.names]
        a = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        if r.transform is not None:
            a = r.transform(a)
        a = a.reshape(r.shape)
        return np.ascontiguousarray(a if rows is None else a[rows], dtype=np.float32)
