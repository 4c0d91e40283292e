"""Turns user-facing chat messages (OpenAI / official MiniCPM-o style) into the (role, text) pairs
the native chat template takes, plus the images and audios they contain.

An image part becomes the placeholder ``<image>./</image>`` and an audio part ``<audio>./</audio>``
in its message's text (what the official processor expands); the pixels and the 16 kHz samples go,
in conversation order, to the lists of images and audios."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ._core import MinicpmoError
from .audio_input import is_audio_part, load_audio
from .media import is_image_part, load_image

IMAGE_MARKER = "<image>./</image>"
AUDIO_MARKER = "<audio>./</audio>"

# Content kinds with no direct part type: named here so the error says what to do instead.
_MEDIA_KINDS = {
    "video": "video (pass the frames as images; see minicpmo_cpp.video)",
}


def _media_error(kind: str, index: int) -> MinicpmoError:
    return MinicpmoError(f"message {index}: {kind} parts are not accepted as such")


@dataclass
class ParsedMessages:
    pairs: list[tuple[str, str]]
    images: list[np.ndarray] = field(default_factory=list)  # uint8 (H, W, 3), conversation order
    audios: list[np.ndarray] = field(default_factory=list)  # float32 16 kHz mono, conversation order
    image_keys: list[int] = field(default_factory=list)     # native content keys (0 = hash the pixels)
    audio_keys: list[int] = field(default_factory=list)


def _plain(kind: str, obj: Any, load) -> tuple[np.ndarray, int]:
    """Decodes without a cache (content key 0: the native side hashes the samples)."""
    return load(obj), 0


def content_to_text(content: Any, index: int, images: list | None = None, joiner: str = "\n",
                    audios: list | None = None, decode=_plain, image_keys: list | None = None,
                    audio_keys: list | None = None) -> str:
    """Text of one message's content: a string, or a list of parts joined by "\\n" (the official
    chat() joins content items with a newline; omni mode joins them with ""). Image and audio parts
    are appended to ``images`` / ``audios`` and leave a placeholder; without the list they are refused.
    ``decode(kind, part, loader)`` returns (array, content key): a ``MediaCache.get`` remembers
    decoded media across turns."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, (list, tuple)):
        if is_image_part(content) or is_audio_part(content):
            content = [content]
    if not isinstance(content, (list, tuple)):
        kind = _kind_of_object(content)
        if kind:
            raise _media_error(kind, index)
        raise MinicpmoError(f"message {index}: content must be a string or a list, got {type(content).__name__}")
    parts = []
    for item in content:
        if is_image_part(item):
            if images is None:
                raise MinicpmoError(f"message {index}: images are not accepted here (text only)")
            try:
                pixels, key = decode("image", item, load_image)
                images.append(pixels)
                if image_keys is not None:
                    image_keys.append(key)
            except MinicpmoError as e:
                raise MinicpmoError(f"message {index}: {e}") from None
            parts.append(IMAGE_MARKER)
        elif is_audio_part(item):
            if audios is None:
                raise MinicpmoError(f"message {index}: audio is not accepted here (text only)")
            try:
                pcm, key = decode("audio", item, load_audio)
                audios.append(pcm)
                if audio_keys is not None:
                    audio_keys.append(key)
            except MinicpmoError as e:
                raise MinicpmoError(f"message {index}: {e}") from None
            parts.append(AUDIO_MARKER)
        elif isinstance(item, str):
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
    return joiner.join(parts)


def _kind_of_object(obj: Any) -> str | None:
    mod = type(obj).__module__ or ""
    if mod.startswith("PIL."):
        return "image"
    return None


def parse_messages(msgs: Iterable[Any], omni_mode: bool = False, with_images: bool = True,
                   cache=None) -> ParsedMessages:
    """(role, text) pairs with media placeholders, and the images and audios in conversation order;
    ``cache`` (a ``MediaCache``) decodes each immutable source once across turns."""
    if isinstance(msgs, (str, bytes, dict)) or not isinstance(msgs, Iterable):
        raise MinicpmoError("msgs must be a list of {'role': ..., 'content': ...} dicts")
    parsed = ParsedMessages(pairs=[])
    images = parsed.images if with_images else None
    audios = parsed.audios if with_images else None
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise MinicpmoError(f"message {i} must be a dict with 'role' and 'content'")
        role = m["role"]
        if not isinstance(role, str):
            raise MinicpmoError(f"message {i}: role must be a string")
        parsed.pairs.append((role, content_to_text(m["content"], i, images, "" if omni_mode else "\n", audios,
                                                   cache.get if cache is not None else _plain, parsed.image_keys,
                                                   parsed.audio_keys)))
    if not parsed.pairs:
        raise MinicpmoError("msgs is empty")
    return parsed


def to_role_text_pairs(msgs: Iterable[Any]) -> list[tuple[str, str]]:
    """Text-only conversations (images and audio are refused)."""
    return parse_messages(msgs, with_images=False).pairs
