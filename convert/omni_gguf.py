"""Write the companion file (arch `minicpmo-omni`): everything besides the Qwen3 LLM.

Metadata: format version, the LLM file it belongs to (name and fingerprint) and the LLM dims it expects, the special token
ids (spec §4.2) read from the checkpoint's tokenizer, the forbidden-token list, and
`minicpmo.components` naming the component tensor groups present. Each component (so far: vision =
SigLIP tower + resampler, audio = Whisper encoder + projector, tts = speech-token decoder,
token2wav = flow + HiFT vocoder, voice = voice prompts, speaker_encoder = CAM++)
registers in COMPONENTS which part of the Checkpoint it writes and a function that adds its keys to
the writer and returns the tensors to write. The component modules never see the Checkpoint, so
checkpoint.py can import their checks without a cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from gguf import GGUFValueType

from .checkpoint import Checkpoint
from .audio_gguf import audio_component
from .llm_fingerprint import FINGERPRINT_KEY
from .gguf_write import PlannedTensor, Writer, write_gguf
from .outtypes import OUTTYPES, tts_outtype_for
from .speaker_encoder_gguf import speaker_encoder_component
from .speech import voice_component
from .speech_tokenizer_gguf import speech_tokenizer_component
from .token2wav_gguf import token2wav_component
from .tts_gguf import tts_component
from .vision_gguf import vision_component

ARCH = "minicpmo-omni"
FORMAT_VERSION = "4.5"

# (component name, its checked plan in the Checkpoint, writer hook) in file order; a hook returns []
# when the checkpoint lacks the component (plan None, no voices).
ComponentHook = Callable[[Any, Writer, str], list[PlannedTensor]]
COMPONENTS: list[tuple[str, Callable[[Checkpoint], Any], ComponentHook]] = [
    ("vision", lambda c: c.vision, vision_component),
    ("audio", lambda c: c.audio, audio_component),
    ("tts", lambda c: c.speech.tts if c.speech else None, tts_component),
    ("token2wav", lambda c: c.speech.token2wav if c.speech else None, token2wav_component),
    ("voice", lambda c: c.speech.voices if c.speech else [], voice_component),
    ("speech_tokenizer", lambda c: c.speech.speech_tokenizer if c.speech else None, speech_tokenizer_component),
    ("speaker_encoder", lambda c: c.speech.speaker_encoder if c.speech else None, speaker_encoder_component),
]


def write_omni_gguf(ckpt: Checkpoint, path: Path, outtype: str, name: str, llm_basename: str,
                    quiet: bool = False, fingerprint: str = "", tts_outtype: str | None = None) -> Path:
    """tts_outtype: the TTS decoder's matrix type (outtypes.tts_outtype_for); the rest follows outtype."""
    w = Writer(None, ARCH)
    w.add_name(name)
    w.add_type("model")
    w.add_file_type(int(OUTTYPES[outtype][1]))
    w.add_string("minicpmo.version", FORMAT_VERSION)
    w.add_string("minicpmo.llm_file", llm_basename)
    if fingerprint:
        w.add_string(FINGERPRINT_KEY, fingerprint)  # the LLM file's value: a pair from one conversion
    w.add_uint32("minicpmo.llm.embedding_length", ckpt.llm.hidden)
    w.add_uint32("minicpmo.llm.vocab_size", ckpt.llm.vocab)
    for key, token_id in ckpt.token_ids.items():
        w.add_uint32(f"minicpmo.token.{key}", token_id)
    w.add_typed_array("minicpmo.bad_token_ids", ckpt.tokenizer.bad_token_ids, GGUFValueType.INT32)

    plan: list[PlannedTensor] = []
    present: list[str] = []
    for comp_name, part_of, hook in COMPONENTS:
        tensors = hook(part_of(ckpt), w, tts_outtype_for(outtype, tts_outtype) if comp_name == "tts" else outtype)
        if tensors:
            present.append(comp_name)
            plan.extend(tensors)
    w.add_typed_array("minicpmo.components", present, GGUFValueType.STRING)
    return write_gguf(w, path, plan, ckpt.weights, quiet)
