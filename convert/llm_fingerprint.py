"""A fingerprint of the LLM a conversion writes, stored in both output files
(`minicpmo.llm_fingerprint`) so the runtime refuses a companion from another conversion.

It hashes what identifies the LLM in the source checkpoint, so the F32, F16 and quantized files of
one checkpoint share it and any other checkpoint (a fine-tune with the same shapes, another random
init) gets another:
  - the hyper-parameters and the tokenizer (tokens, merges, chat template);
  - every LLM tensor's name and shape, and its first and last 16384 values as float32 (a few tens
    of MB for the 8B model: every fine-tuned matrix differs there, and reading all 16 GB again would
    double the conversion time). Values, not stored bytes: the same weights stored as BF16, F16 or
    F32, in one file or in shards, are the same LLM.
libllama's quantizer copies all metadata keys, so `minicpmo-quantize` output keeps it.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from .checkpoint import Checkpoint
from .safetensors_io import bf16_to_f32

FINGERPRINT_KEY = "minicpmo.llm_fingerprint"
_SAMPLE_VALUES = 16384
_VERSION = b"minicpmo-llm-fingerprint-1\0"


def llm_fingerprint(ckpt: Checkpoint) -> str:
    """Hex SHA-256 over the items above (64 characters)."""
    h = hashlib.sha256(_VERSION)

    def add(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little"))  # length-prefixed: no two inputs hash alike
        h.update(data)

    d, tok = ckpt.llm, ckpt.tokenizer
    add(json.dumps(vars(d), sort_keys=True).encode())
    add("\0".join(tok.tokens).encode("utf-8", "surrogatepass"))
    add("\0".join(tok.merges).encode("utf-8", "surrogatepass"))
    add((tok.chat_template or "").encode("utf-8", "surrogatepass"))
    for name, shape in ckpt.llm_tensor_shapes.items():
        add(f"{name}:{tuple(shape)}".encode())
        raw = ckpt.weights.raw(name).reshape(-1)
        bf16 = ckpt.weights.dtype(name) == "BF16"
        for part in (raw[:_SAMPLE_VALUES], raw[-_SAMPLE_VALUES:]):
            values = bf16_to_f32(np.asarray(part)) if bf16 else np.asarray(part, dtype=np.float32)
            add(values.astype("<f4").tobytes())
    return h.hexdigest()
