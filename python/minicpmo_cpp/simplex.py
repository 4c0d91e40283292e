"""Simplex streaming (spec §6.1): the pieces behind ``OmniSession.streaming_prefill`` and
``OmniSession.streaming_generate``. The native ``SimplexStream`` (csrc/session/simplex_stream.h)
owns the conversation state and the cache layout; this module turns official-style messages into
what it takes (the replies are driven by OmniSession like chat()'s)."""

from __future__ import annotations

from typing import Any

from ._core import MinicpmoError
from .messages import parse_messages


def streaming_message(msgs: Any) -> tuple[str, str, list, list]:
    """(role, text with one marker per image / audio, images, audios) of the one message
    ``streaming_prefill`` takes: a dict, or a list holding exactly one (the official form). Content
    items are joined with "" (omni mode), as the official streaming_prefill does."""
    if isinstance(msgs, dict):
        msgs = [msgs]
    if not isinstance(msgs, (list, tuple)) or len(msgs) != 1:
        n = len(msgs) if isinstance(msgs, (list, tuple)) else None
        raise MinicpmoError("streaming_prefill takes one message at a time (a dict or a list of one dict)"
                            + (f", got {n} messages" if n is not None else f", got {type(msgs).__name__}"))
    parsed = parse_messages(msgs, omni_mode=True)
    role, text = parsed.pairs[0]
    return role, text, parsed.images, parsed.audios


__all__ = ["streaming_message"]
