"""Decoded media of a conversation, remembered across its turns.

``chat(msgs)`` takes the whole conversation every turn, so the images and audios of earlier turns
come again and again. An item given by an immutable source -- a file path (with its size and
modification time), a ``data:`` URI, ``bytes`` or a content dict made of those -- is decoded once
and handed out again, read-only, while the conversation keeps it; the native side then knows it by
a content key instead of hashing its samples every turn (the key also tells the KV cache that the
item is the one it already holds). Mutable sources (numpy arrays, PIL images, bytearrays,
``(pcm, rate)`` tuples) are decoded, and hashed natively, every time: their content may change
between turns. Entries a turn no longer uses are dropped after it."""

from __future__ import annotations

import itertools
import os
from typing import Any, Callable, Hashable

import numpy as np

# The native content keys of cached items: odd numbers from a per-cache counter never collide with
# one another; against the native 64-bit content hashes of uncached items a collision is as unlikely
# as between two of those hashes.
_KEY_BASE = 0x9E3779B97F4A7C15


class MediaCache:
    def __init__(self):
        self._entries: dict[Hashable, tuple[np.ndarray, int]] = {}
        self._used: dict[Hashable, tuple[np.ndarray, int]] = {}
        self._ids = itertools.count(1)

    def get(self, kind: str, obj: Any, load: Callable[[Any], np.ndarray]) -> tuple[np.ndarray, int]:
        """(decoded array, content key) of ``obj``; the key is 0 for a source that is not cached."""
        source = _frozen(obj)
        if source is None:
            return load(obj), 0
        key = (kind, source)
        hit = self._used.get(key) or self._entries.get(key)
        if hit is None:
            array = load(obj)
            array.flags.writeable = False  # it is handed out again: nobody may change it
            hit = (array, (_KEY_BASE * (2 * next(self._ids) + 1)) & 0xFFFFFFFFFFFFFFFF)
        self._used[key] = hit
        return hit

    def end_turn(self) -> None:
        """Keeps only what the last conversation used."""
        self._entries, self._used = self._used, {}

    def clear(self) -> None:
        self._entries.clear()
        self._used.clear()


def _frozen(obj: Any) -> Hashable | None:
    """A hashable stand-in for an immutable source, None for anything that may change."""
    if isinstance(obj, bytes):
        return ("bytes", obj)
    if isinstance(obj, os.PathLike):
        return _path_key(os.fsdecode(os.fspath(obj)))
    if isinstance(obj, str):
        if obj.startswith("data:"):
            return ("text", obj)
        path = obj[len("file://"):] if obj.startswith("file://") else obj
        return _path_key(path) or ("text", obj)
    if isinstance(obj, dict):
        items = []
        for k in sorted(obj, key=repr):
            v = _frozen(obj[k]) if not isinstance(obj[k], (int, float, bool, type(None))) else obj[k]
            if v is None and obj[k] is not None:
                return None
            items.append((repr(k), v))
        return ("dict", tuple(items))
    return None


def _path_key(path: str) -> Hashable | None:
    """A file's path with what changes when it is rewritten; None when it is not a readable file (the
    loader says why)."""
    if "\n" in path or len(path) > 4096:
        return None
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return ("file", os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
