"""Turns user-facing chat messages (OpenAI / official MiniCPM-o style) into the (role, text) pairs
the native chat template takes."""

from __future__ import annotations

from typing import Any, Iterable

from ._core import MinicpmoError

# Content kinds that later components handle; named here so the error says what is missing.
_MEDIA_KINDS = {
    "image_url": "image",
    "image": "image",
    "input_audio": "audio",
    "audio_url": "audio",
    "audio": "audio",
    "video": "video",
}


def _media_error(kind: str, index: int) -> MinicpmoError:
    return MinicpmoError(
        f"message {index}: {kind} input is not supported by this version of minicpmo-cpp yet "
        f"(only text chat is implemented so far)"
    )


def content_to_text(content: Any, index: int) -> str:
    """Text of one message's content: a string, or a list of parts joined by "\\n" (the official
    chat() joins content items with a newline)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, (list, tuple)):
        kind = _kind_of_object(content)
        if kind:
            raise _media_error(kind, index)
        raise MinicpmoError(f"message {index}: content must be a string or a list, got {type(content).__name__}")
    parts = []
    for item in content:
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, dict):
            kind = item.get("type")
            if kind == "text":
                text = item.get("text")
                if not isinstance(text, str):
                    raise MinicpmoError(f"message {index}: a text part has no string 'text'")
                parts.append(text)
            elif kind in _MEDIA_KINDS:
                raise _media_error(_MEDIA_KINDS[kind], index)
            else:
                raise MinicpmoError(f"message {index}: unknown content part type {kind!r}")
        else:
            kind = _kind_of_object(item)
            if kind:
                raise _media_error(kind, index)
            raise MinicpmoError(f"message {index}: unsupported content part of type {type(item).__name__}")
    return "\n".join(parts)


def _kind_of_object(obj: Any) -> str | None:
    mod = type(obj).__module__ or ""
    if mod.startswith("PIL."):
        return "image"
    if type(obj).__name__ == "ndarray":
        return "image or audio"
    return None


def to_role_text_pairs(msgs: Iterable[Any]) -> list[tuple[str, str]]:
    if isinstance(msgs, (str, bytes)) or not isinstance(msgs, Iterable):
        raise MinicpmoError("msgs must be a list of {'role': ..., 'content': ...} dicts")
    pairs = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise MinicpmoError(f"message {i} must be a dict with 'role' and 'content'")
        role = m["role"]
        if not isinstance(role, str):
            raise MinicpmoError(f"message {i}: role must be a string")
        pairs.append((role, content_to_text(m["content"], i)))
    if not pairs:
        raise MinicpmoError("msgs is empty")
    return pairs
