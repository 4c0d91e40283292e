"""The official llama.cpp-omni GGUF set on disk: finding its files and reading their tensors.

The release's folder (llama.cpp-omni README):
    DIR/MiniCPM-o-4_5-{Q4_K_M,Q8_0,F16,...}.gguf   LLM (arch qwen3)
    DIR/vision/*.gguf        SigLIP + resampler (arch clip)
    DIR/audio/*.gguf         Whisper encoder + projector (arch whisper)
    DIR/tts/*tts*.gguf       TTS decoder (arch llama)
    DIR/tts/*projector*.gguf the TTS's semantic projector (arch projector)
    DIR/token2wav-gguf/{encoder,flow_matching,flow_extra,hifigan2,prompt_cache}.gguf
Files are told apart by their general.architecture (and, for Token2Wav, by name), not by their
quantization label, so any LLM quantization works. A bad or truncated file fails with its path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from .errors import ConversionError
from .gguf_read import GGUFInfo, TensorInfo, read_gguf_info

T2W_DIR = "token2wav-gguf"
T2W_FILES = ("encoder", "flow_matching", "flow_extra", "hifigan2", "prompt_cache")


class GGUFTensors:
    """One GGUF file: its keys, and its tensors as raw bytes or float32 (PyTorch dimension order)."""

    def __init__(self, path: Path):
        self.path = path
        self.info: GGUFInfo = read_gguf_info(path)
        self.by_name: dict[str, TensorInfo] = {t.name: t for t in self.info.tensors}
        size = path.stat().st_size
        for t in self.info.tensors:
            end = self.info.data_offset + t.offset + self.nbytes(t.name)
            if end > size:
                raise ConversionError(f"{path}: truncated: tensor {t.name} ends at byte {end}, the file has {size}")

    @property
    def arch(self) -> str:
        return str(self.info.kv.get("general.architecture", ""))

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def qtype(self, name: str) -> GGMLQuantizationType:
        t = self._info(name)
        try:
            return GGMLQuantizationType(t.ggml_type)
        except ValueError as e:
            raise ConversionError(f"{self.path}: tensor {name} has unknown type {t.ggml_type}") from e

    def shape(self, name: str) -> tuple[int, ...]:
        """PyTorch order (the file stores ggml order, innermost first)."""
        return tuple(int(n) for n in reversed(self._info(name).shape))

    def nbytes(self, name: str) -> int:
        t = self._info(name)
        block, size = GGML_QUANT_SIZES[self.qtype(name)]
        return math.prod(t.shape) // block * size

    def raw(self, name: str) -> np.memmap:
        t = self._info(name)
        return np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.info.data_offset + t.offset,
                         shape=(self.nbytes(name),))

    def float32(self, name: str) -> np.ndarray:
        q = self.qtype(name)
        raw = np.asarray(self.raw(name))
        if q == GGMLQuantizationType.F32:
            flat = raw.view("<f4")
        elif q == GGMLQuantizationType.F16:
            flat = raw.view("<f2").astype(np.float32)
        else:
            flat = dequantize(raw, q).reshape(-1).astype(np.float32)
        return flat.reshape(self.shape(name))

    def _info(self, name: str) -> TensorInfo:
        t = self.by_name.get(name)
        if t is None:
            raise ConversionError(f"{self.path}: missing tensor {name}")
        return t


@dataclass
class OmniSet:
    dir: Path
    llm: Path
    vision: Path | None = None
    audio: Path | None = None
    tts: Path | None = None
    projector: Path | None = None
    token2wav: dict[str, Path] = field(default_factory=dict)  # T2W_FILES stem -> path (those present)
    opened: dict[Path, GGUFTensors] = field(default_factory=dict, repr=False)

    def open(self, path: Path) -> GGUFTensors:
        if path not in self.opened:
            self.opened[path] = GGUFTensors(path)
        return self.opened[path]


def _arch_of(path: Path) -> str:
    return str(read_gguf_info(path).kv.get("general.architecture", ""))


def find_omni_set(d: str | Path, llm: str | Path | None = None) -> OmniSet:
    """Classify the GGUF files of the set in folder d. llm: which LLM file, when d holds several
    quantizations of it (otherwise the only qwen3 file at the top)."""
    d = Path(d)
    if not d.is_dir():
        raise ConversionError(f"official GGUF folder not found: {d}")
    if llm is not None:
        llm_path = Path(llm)
        if not llm_path.is_file():
            raise ConversionError(f"LLM file not found: {llm_path}")
    else:
        top = sorted(p for p in d.glob("*.gguf") if p.is_file())
        llms = [p for p in top if _arch_of(p) == "qwen3"]
        if not llms:
            raise ConversionError(f"no LLM GGUF (architecture qwen3) at the top of {d} "
                                  f"(found: {', '.join(p.name for p in top) or 'no .gguf files'})")
        if len(llms) > 1:
            raise ConversionError(f"{d} holds several LLM files ({', '.join(p.name for p in llms)}): "
                                  "choose one with --llm FILE")
        llm_path = llms[0]
    if _arch_of(llm_path) != "qwen3":
        raise ConversionError(f"{llm_path}: architecture {_arch_of(llm_path)!r}, expected the qwen3 LLM")
    s = OmniSet(d, llm_path)
    for sub, arch, attr in (("vision", "clip", "vision"), ("audio", "whisper", "audio")):
        found = [p for p in sorted((d / sub).glob("*.gguf")) if _arch_of(p) == arch]
        if len(found) > 1:
            raise ConversionError(f"{d / sub} holds several {arch} files: {', '.join(p.name for p in found)}")
        setattr(s, attr, found[0] if found else None)
    for p in sorted((d / "tts").glob("*.gguf")):
        arch = _arch_of(p)
        if arch == "llama":
            if s.tts is not None:
                raise ConversionError(f"{d / 'tts'} holds several TTS files: {s.tts.name}, {p.name}")
            s.tts = p
        elif arch == "projector":
            s.projector = p
    for stem in T2W_FILES:
        p = d / T2W_DIR / f"{stem}.gguf"
        if p.is_file():
            s.token2wav[stem] = p
    return s


def kv(src: GGUFTensors, key: str, default: Any = None) -> Any:
    v = src.info.kv.get(key, default)
    if v is None:
        raise ConversionError(f"{src.path}: missing key {key}")
    return v
