"""Open and validate a MiniCPM-o 4.5 Hugging Face checkpoint directory.

Everything the writers need is checked here, before any output file is created, so a bad
checkpoint fails fast with a ConversionError naming the problem.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .audio_gguf import AudioPlan, check_audio
from .errors import ConversionError
from .layout import LLM_IGNORED_SUFFIXES, LLM_PREFIX, LlmDims, Shape, llm_shapes
from .safetensors_io import SafetensorsSource
from .speech import SpeechOptions, SpeechPlan, plan_speech
from .tokenizer_read import TokenizerInfo, read_tokenizer
from .tokens import NAMED_TOKENS
from .vision_gguf import VisionPlan, check_vision

SUPPORTED_VERSION = 4.5


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]
    llm: LlmDims
    weights: SafetensorsSource
    tokenizer: TokenizerInfo
    llm_tensor_shapes: dict[str, Shape]  # HF name -> shape, in writing order
    token_ids: dict[str, int]  # NAMED_TOKENS key -> id in this tokenizer
    vision: VisionPlan | None = None  # None: the checkpoint has no vision tower
    audio: AudioPlan | None = None  # None: no audio encoder
    speech: SpeechPlan | None = None  # TTS, Token2Wav and voices, checked (None: not planned)

    @classmethod
    def load(cls, hf_dir: str | os.PathLike, speech: SpeechOptions | None = None) -> "Checkpoint":
        d = Path(hf_dir)
        if not d.is_dir():
            raise ConversionError(f"checkpoint directory not found: {d}")
        config = _read_config(d)
        llm = LlmDims.from_config(config)
        weights = SafetensorsSource.open_dir(d)
        shapes = _check_llm_tensors(weights, llm)
        # checked here, before any output; the writers use these plans
        vision = check_vision(config, weights, d)
        audio = check_audio(config, weights, d)
        tok = read_tokenizer(d, llm.vocab, config)
        token_ids = {}
        for key, text in NAMED_TOKENS.items():
            i = tok.id_of(text)
            if i is None:
                raise ConversionError(f"tokenizer lacks the MiniCPM-o token {text!r}")
            token_ids[key] = i
        # last: the voice models may run here, after everything cheaper has been checked
        speech_plan = plan_speech(config, weights, d, llm.hidden, speech or SpeechOptions())
        return cls(d, config, llm, weights, tok, shapes, token_ids, vision=vision, audio=audio,
                   speech=speech_plan)


def _read_config(d: Path) -> dict[str, Any]:
    p = d / "config.json"
    if not p.is_file():
        raise ConversionError(f"missing config.json in {d}")
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConversionError(f"{p}: invalid JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise ConversionError(f"{p}: expected a JSON object")
    mt = cfg.get("model_type")
    if mt is not None and mt != "minicpmo":
        raise ConversionError(f"config.json: model_type is {mt!r}, expected 'minicpmo' (MiniCPM-o)")
    ver = cfg.get("version")
    if ver is not None and float(ver) != SUPPORTED_VERSION:
        raise ConversionError(f"config.json: MiniCPM-o version {ver} is not supported (only 4.5)")
    return cfg


def _check_llm_tensors(weights: SafetensorsSource, llm: LlmDims) -> dict[str, Shape]:
    expected = llm_shapes(llm)
    for name, shape in expected.items():
        if name not in weights:
            raise ConversionError(f"missing tensor {name}")
        got = weights.shape(name)
        if tuple(got) != tuple(shape):
            raise ConversionError(f"tensor {name}: expected shape {tuple(shape)}, got {tuple(got)}")
        if weights.entry(name).dtype not in ("F32", "F16", "BF16", "F64"):
            raise ConversionError(f"tensor {name}: unsupported dtype {weights.entry(name).dtype}")
    for name in weights.names():
        if name.startswith(LLM_PREFIX) and name not in expected and not name.endswith(LLM_IGNORED_SUFFIXES):
            raise ConversionError(
                f"unexpected tensor {name} (config.json describes {llm.layers} layers, "
                f"tie_word_embeddings={llm.tie_embeddings})"
            )
    return expected
