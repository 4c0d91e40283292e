"""HF checkpoint directory -> the two GGUF files (LLM + omni companion)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

from .checkpoint import Checkpoint
from .errors import ConversionError
from .llm_fingerprint import llm_fingerprint
from .llm_gguf import write_llm_gguf
from .omni_gguf import write_omni_gguf
from .outtypes import file_label, parse_outtype, tts_outtype_for
from .speech import SpeechOptions
from .voice_gguf import add_voices

DEFAULT_NAME = "MiniCPM-o-4_5"


def output_names(name: str, outtype: str) -> tuple[str, str]:
    """('{name}-{QTYPE}.gguf', '{name}-omni-{QTYPE}.gguf')."""
    label = file_label(outtype)
    return f"{name}-{label}.gguf", f"{name}-omni-{label}.gguf"


def convert_checkpoint(
    hf_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    outtype: str = "f16",
    name: str = DEFAULT_NAME,
    quiet: bool = False,
    *,
    token2wav_dir: str | os.PathLike | None = None,
    voice_wav: str | os.PathLike | None = None,
    voice_npz: str | os.PathLike | None = None,
    voices: Sequence[tuple[str, str | os.PathLike]] = (),
    tts_outtype: str | None = None,
) -> tuple[Path, Path]:
    """Convert a MiniCPM-o 4.5 Hugging Face checkpoint; return (llm_path, omni_path).

    out_dir defaults to hf_dir. Raises ConversionError for bad input (nothing is written then).
    Speech output: token2wav_dir defaults to HF_DIR/assets/token2wav; the default voice comes from
    voice_npz / voice_wav (or the sources listed in speech.py); voices adds (name, .wav/.npz) voices.
    tts_outtype: the TTS decoder's matrices (default: q8_0 in f16/bf16 files, else outtype).
    """
    outtype = parse_outtype(outtype)
    tts_outtype = tts_outtype_for(outtype, tts_outtype)
    if not name or os.sep in name or (os.altsep and os.altsep in name) or name in (".", ".."):
        raise ConversionError(f"invalid model name {name!r}")
    opts = SpeechOptions(
        token2wav_dir=Path(token2wav_dir) if token2wav_dir is not None else None,
        voice_wav=Path(voice_wav) if voice_wav is not None else None,
        voice_npz=Path(voice_npz) if voice_npz is not None else None,
        extra_voices=tuple((str(n), Path(p)) for n, p in voices),
    )
    ckpt = Checkpoint.load(hf_dir, opts)
    if not quiet and ckpt.speech is not None:
        for note in ckpt.speech.notes:
            print(note, file=sys.stderr, flush=True)
    out = Path(out_dir) if out_dir is not None else Path(hf_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConversionError(f"cannot create output directory {out}: {e}") from e
    llm_name, omni_name = output_names(name, outtype)
    if not quiet:
        print(f"converting {ckpt.path} -> {out / llm_name}", file=sys.stderr, flush=True)
    fingerprint = llm_fingerprint(ckpt)
    llm_path = write_llm_gguf(ckpt, out / llm_name, outtype, name, omni_name, quiet, fingerprint)
    if not quiet:
        print(f"writing companion {out / omni_name}", file=sys.stderr, flush=True)
    try:
        omni_path = write_omni_gguf(ckpt, out / omni_name, outtype, name, llm_name, quiet, fingerprint, tts_outtype)
        deferred = ckpt.speech.deferred_voices if ckpt.speech is not None else []
        if deferred:  # recordings cloned by the runtime with the voice encoders just written
            if not quiet:
                print(f"cloning voice(s) {', '.join(n for n, _ in deferred)} with the companion's voice encoders",
                      file=sys.stderr, flush=True)
            add_voices(omni_path, deferred, None, quiet=True,
                       default="default" if any(n == "default" for n, _ in deferred) else None)
    except BaseException:
        # the two files are one model: an LLM file naming a companion that was never written (or
        # is incomplete) is not left behind
        Path(llm_path).unlink(missing_ok=True)
        (out / omni_name).unlink(missing_ok=True)
        raise
    return llm_path, omni_path
