"""System messages of MiniCPM-o 4.5's voice modes (``get_sys_prompt``, spec §4.4).

Each mode frames a reference audio (the voice to speak with) between an instruction and a role
description; the content list is joined like any user content ("\\n" in chat, "" in omni mode).
The texts are the model's training prompts, so they are kept verbatim."""

from __future__ import annotations

from typing import Any

from ._core import MinicpmoError
from .audio_input import load_audio

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. You can accept audio and text input and output voice and text."

# mode -> language -> (text before the reference audio, text after it); None = no text after
_VOICE_TEXTS: dict[str, dict[str, tuple[str, str | None]]] = {
    "omni": {
        "zh": ("模仿音频样本的音色并生成新的内容。",
               "请用这种声音风格来为用户提供帮助。 请认真、高质量地回复用户的问题。 请用高自然度的方式和用户聊天。"),
        "en": ("Clone the voice in the provided audio prompt.",
               "As an assistant, you will speak using this voice style."),
    },
    "audio_assistant": {
        "zh": ("模仿音频样本的音色并生成新的内容。",
               "你的任务是用这种声音模式来当一个助手。请认真、高质量地回复用户的问题。请用高自然度的方式和用户聊天。"
               "你是由面壁智能开发的人工智能助手：面壁小钢炮。"),
        "en": ("Use the voice in the audio prompt to synthesize new content.",
               "You are a helpful assistant with the above voice style."),
    },
    "audio_roleplay": {
        "zh": ("模仿输入音频中的声音特征。", "假装你是上述音频中的人物，与我进行对话。"),
        "en": ("Clone the voice in the provided audio prompt.",
               "Try to role-play the character based on the audio prompt above."),
    },
    "voice_cloning": {
        "zh": ("模仿输入音频中的声音特征。", None),
        "en": ("Clone the voice in the provided audio prompt.", None),
    },
}

MODES = ("default", *_VOICE_TEXTS)


def get_sys_prompt(ref_audio: Any = None, mode: str = "default", language: str = "zh") -> dict:
    """The system message of a voice mode: ``{"role": "system", "content": [...]}``.

    ``ref_audio`` (anything ``chat`` accepts as audio, or a path: a string here names a file, not
    text) is the voice to imitate; it is loaded to 16 kHz mono right away. Without it, "omni"
    gives an empty system text and "voice_cloning" is an error. The official code falls back to
    "Use the <reserved_53> voice." for the assistant/roleplay modes; that token does not exist in
    4.5, so here those modes also need a reference audio (or use mode "default")."""
    if mode not in MODES:
        raise MinicpmoError(f"unknown system prompt mode {mode!r}; choose from {', '.join(MODES)}")
    if language not in ("zh", "en"):
        raise MinicpmoError(f"language must be 'zh' or 'en', got {language!r}")
    if mode == "default":
        return {"role": "system", "content": [DEFAULT_SYSTEM_PROMPT]}
    prefix, suffix = _VOICE_TEXTS[mode][language]
    if ref_audio is None:
        if mode == "omni":
            return {"role": "system", "content": [""]}
        raise MinicpmoError(f"mode {mode!r} needs a reference audio (ref_audio)")
    content = [prefix, load_audio(ref_audio)] + ([suffix] if suffix is not None else [])
    return {"role": "system", "content": content}
