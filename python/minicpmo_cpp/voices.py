"""The ``voice=`` argument of the speaking calls: a voice name of the model file, a ``Voice`` cloned
at run time, or a reference recording (any form ``load_audio`` takes), which is cloned for the call.

A cloned voice is made natively (the omni file's S3 speech tokenizer and CAM++ speaker encoder, spec
§5.2.1) and joins the model's voices under a name like "@voice-3" for as long as the ``Voice`` object
lives, so every session of the model can speak with it.
"""

from __future__ import annotations

import os
from typing import Any

from . import _core
from .audio_input import load_audio_at_source_rate

Voice = _core.Voice

# file name endings that mark a string as a recording rather than a voice name
_AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au", ".caf", ".w64", ".rf64")


def clone_voice(model: Any, audio: Any, n_threads: int = 0) -> Voice:
    """A ``Voice`` from a reference recording (0.5 s to 17 s) with the model's voice encoders. The
    source's rate is kept and resampled natively as the reference does (channels are averaged)."""
    pcm, rate = load_audio_at_source_rate(audio)
    return _core.clone_voice(model, pcm, rate, n_threads)


def _is_recording(text: str, file_voices: list[str]) -> bool:
    if text in file_voices or text.startswith("@"):
        return False
    if text.startswith(("data:", "file://")):
        return True
    return os.sep in text or text.lower().endswith(_AUDIO_SUFFIXES) or os.path.isfile(text)


def resolve_voice(model: Any, voice: Any, file_voices: list[str], n_threads: int = 0) -> tuple[str, Voice | None]:
    """(the voice name for the native call, the cloned ``Voice`` the caller keeps alive for the call or None).

    None or "" is the model file's default voice; a string that names a voice of the file (or a
    cloned one) is used as is; a ``Voice`` by its name; anything else is a recording to clone.
    """
    if voice is None or (isinstance(voice, str) and voice == ""):
        return "", None
    if isinstance(voice, Voice):
        return voice.name, voice
    if isinstance(voice, str) and not _is_recording(voice, file_voices):
        return voice, None
    cloned = clone_voice(model, voice, n_threads)
    return cloned.name, cloned


__all__ = ["Voice", "clone_voice", "resolve_voice"]
