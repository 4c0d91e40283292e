"""Quantize the qwen3 LLM GGUF with libllama (inside our extension, no external binary) and keep
its omni companion beside the result."""

from __future__ import annotations

import os
import re
import shutil
from typing import Callable

from .. import _core
from ..convert.gguf_read import read_gguf_info

# largest first; the names users pass (case-insensitive)
QUANT_TYPES: tuple[str, ...] = tuple(_core.quantize_types())

_SIZE_SUFFIX = re.compile(r"-(F32|F16|BF16|Q\d(_[01K])?(_[SML])?)$", re.IGNORECASE)
_OMNI_KEY = "minicpmo.omni_file"


def output_name(in_path: str, qtype: str) -> str:
    """MiniCPM-o-4_5-F16.gguf -> MiniCPM-o-4_5-Q4_K_M.gguf (the size suffix is replaced)."""
    stem = os.path.basename(in_path)
    if stem.lower().endswith(".gguf"):
        stem = stem[:-5]
    stem = _SIZE_SUFFIX.sub("", stem)
    return f"{stem}-{qtype.upper()}.gguf"


def companion_of(in_path: str) -> str | None:
    """Path of the omni companion named by the LLM file, when that file exists beside it."""
    name = read_gguf_info(in_path).kv.get(_OMNI_KEY)  # header only: fast even with a 150k vocab
    if not isinstance(name, str):
        return None
    if not name or os.path.basename(name) != name:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(in_path)), name)
    return path if os.path.exists(path) else None


def quantize_llm_file(
    in_path: str,
    qtype: str,
    out_dir: str | None = None,
    n_threads: int = 0,
    progress: Callable[[str], None] | None = None,
) -> str:
    """Writes the LLM as `qtype` into out_dir (default: beside the input) and returns its path.
    The omni companion named in the file is copied to out_dir when it is elsewhere."""
    if not os.path.isfile(in_path):
        raise FileNotFoundError(2, f"model file '{in_path}' does not exist", in_path)
    if qtype.upper() not in QUANT_TYPES:
        raise _core.MinicpmoError(f"unknown quantization type '{qtype}' (known: {', '.join(QUANT_TYPES)})")
    out_dir = out_dir or os.path.dirname(os.path.abspath(in_path))
    os.makedirs(out_dir, exist_ok=True)
    out_path = os.path.join(out_dir, output_name(in_path, qtype))
    if os.path.abspath(out_path) == os.path.abspath(in_path):
        raise _core.MinicpmoError(f"'{in_path}' already is {qtype.upper()}: the output would overwrite it")
    tmp_path = out_path + ".part"
    try:
        _core.quantize_llm(in_path, tmp_path, qtype, n_threads, progress)
        os.replace(tmp_path, out_path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
    companion = companion_of(in_path)
    if companion:
        target = os.path.join(out_dir, os.path.basename(companion))
        if not os.path.exists(target):
            shutil.copyfile(companion, target)
    return out_path


