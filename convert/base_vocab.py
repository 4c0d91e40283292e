"""The Qwen2 byte-level BPE base vocabulary, taken from llama.cpp's models/ggml-vocab-qwen2.gguf.

The tiny test checkpoint needs the real tokenizer (so prompts tokenize as for the release) but
there is no hub access; llama.cpp's source tree ships this vocabulary as a test fixture.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConversionError
from .gguf_read import read_gguf_info
from .tokens import BASE_VOCAB_SIZE

VOCAB_GGUF_RELPATH = Path("models") / "ggml-vocab-qwen2.gguf"
ENV_LLAMA_CPP_DIR = "MINICPMO_LLAMA_CPP_DIR"


@dataclass
class BaseVocab:
    tokens: list[str]  # ids 0..151642, byte-level BPE strings (as in vocab.json)
    merges: list[str]  # "left right", rank order (as in merges.txt)


def find_vocab_gguf(vocab_gguf: str | os.PathLike | None = None) -> Path:
    """Explicit path, else $MINICPMO_LLAMA_CPP_DIR/models/..., else the build's llama.cpp tree."""
    if vocab_gguf is not None:
        p = Path(vocab_gguf)
        if not p.is_file():
            raise ConversionError(f"vocabulary file not found: {p}")
        return p
    tried = []
    env = os.environ.get(ENV_LLAMA_CPP_DIR)
    if env:
        tried.append(Path(env) / VOCAB_GGUF_RELPATH)
    try:  # written by the build; absent in a plain source checkout
        from minicpmo_cpp.build_info import LLAMA_CPP_DIR  # type: ignore[import-not-found]

        if LLAMA_CPP_DIR:
            tried.append(Path(LLAMA_CPP_DIR) / VOCAB_GGUF_RELPATH)
    except Exception:  # noqa: BLE001 - any import problem just means "not available"
        pass
    for p in tried:
        if p.is_file():
            return p
    where = ", ".join(str(p) for p in tried) or "nowhere"
    raise ConversionError(
        "cannot find llama.cpp's models/ggml-vocab-qwen2.gguf (looked at: "
        f"{where}); pass vocab_gguf=... or set {ENV_LLAMA_CPP_DIR} to a llama.cpp source tree"
    )


def load_base_vocab(vocab_gguf: str | os.PathLike | None = None) -> BaseVocab:
    path = find_vocab_gguf(vocab_gguf)
    kv = read_gguf_info(path).kv
    if kv.get("tokenizer.ggml.model") != "gpt2" or kv.get("tokenizer.ggml.pre") != "qwen2":
        raise ConversionError(f"{path}: not a Qwen2 byte-level BPE vocabulary")
    tokens = kv["tokenizer.ggml.tokens"]
    if len(tokens) < BASE_VOCAB_SIZE:
        raise ConversionError(f"{path}: only {len(tokens)} tokens, expected >= {BASE_VOCAB_SIZE}")
    # Entries from 151643 on are llama.cpp's own specials/[PAD] fillers; the added tokens of
    # MiniCPM-o are placed there by the tokenizer files instead.
    return BaseVocab(tokens=list(tokens[:BASE_VOCAB_SIZE]), merges=list(kv["tokenizer.ggml.merges"]))
