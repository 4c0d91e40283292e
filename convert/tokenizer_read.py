"""Read a checkpoint's tokenizer files into the id -> (text, type) table a GGUF vocabulary needs.

Accepts either tokenizer.json (fast form) or vocab.json + merges.txt (slow form), plus
tokenizer_config.json (eos/pad/unk, added_tokens_decoder, chat template) and, when present,
added_tokens.json, special_tokens_map.json and chat_template.jinja.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import TokenType

from .errors import ConversionError


@dataclass
class TokenizerInfo:
    tokens: list[str]  # index = token id; byte-level BPE strings or added-token contents
    token_types: list[int]  # gguf TokenType per id
    merges: list[str]  # "left right" in rank order
    eos_id: int
    bos_id: int | None = None
    pad_id: int | None = None
    unk_id: int | None = None
    add_bos: bool = False
    chat_template: str | None = None
    bad_token_ids: list[int] = field(default_factory=list)
    _by_text: dict[str, int] = field(default_factory=dict, repr=False)

    def id_of(self, text: str) -> int | None:
        if not self._by_text:
            # later ids win, so an added token shadows a same-text base entry
            self._by_text = {t: i for i, t in enumerate(self.tokens)}
        return self._by_text.get(text)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConversionError(f"{path}: cannot read JSON ({e})") from e


def _token_text(v: Any) -> str | None:
    """tokenizer_config values are a string, null, or an AddedToken dict."""
    if isinstance(v, dict):
        return v.get("content")
    return v if isinstance(v, str) else None


def _read_bpe(d: Path) -> tuple[dict[str, int], list[str], dict[int, tuple[str, bool]]]:
    """(base vocab, merges, added tokens id -> (content, special))."""
    tj = d / "tokenizer.json"
    if tj.is_file():
        data = _load_json(tj)
        model = data.get("model") or {}
        if model.get("type") != "BPE":
            raise ConversionError(f"{tj}: expected a BPE tokenizer, got {model.get('type')!r}")
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        added = {int(t["id"]): (t["content"], bool(t.get("special", False)))
                 for t in data.get("added_tokens", [])}
        return dict(model.get("vocab", {})), merges, added
    vj, mt = d / "vocab.json", d / "merges.txt"
    if not vj.is_file() or not mt.is_file():
        raise ConversionError(
            f"missing tokenizer file in {d}: need tokenizer.json, or vocab.json and merges.txt"
        )
    lines = mt.read_text(encoding="utf-8").split("\n")
    merges = [ln for ln in lines if ln and not ln.startswith("#version")]
    return dict(_load_json(vj)), merges, {}


def read_tokenizer(d: Path, n_vocab: int, config: dict[str, Any]) -> TokenizerInfo:
    """Build the full table of n_vocab entries (n_vocab = embedding rows)."""
    tc_path = d / "tokenizer_config.json"
    if not tc_path.is_file():
        raise ConversionError(f"missing tokenizer file {tc_path}")
    tc = _load_json(tc_path)
    vocab, merges, added = _read_bpe(d)

    # added_tokens_decoder is authoritative for special flags; added_tokens.json only adds ids.
    for sid, entry in (tc.get("added_tokens_decoder") or {}).items():
        added[int(sid)] = (entry["content"], bool(entry.get("special", False)))
    stm_path = d / "special_tokens_map.json"
    named_specials = set()
    if stm_path.is_file():
        stm = _load_json(stm_path)
        for v in stm.values():
            for x in v if isinstance(v, list) else [v]:
                if (t := _token_text(x)) is not None:
                    named_specials.add(t)
    at_path = d / "added_tokens.json"
    if at_path.is_file():
        for content, i in _load_json(at_path).items():
            added.setdefault(int(i), (content, content in named_specials))

    tokens: list[str | None] = [None] * n_vocab
    types = [int(TokenType.UNUSED)] * n_vocab
    for text, i in vocab.items():
        if not 0 <= i < n_vocab:
            raise ConversionError(f"tokenizer token {text!r} has id {i}, but the model has {n_vocab} embedding rows")
        tokens[i], types[i] = text, int(TokenType.NORMAL)
    for i, (content, special) in added.items():
        if not 0 <= i < n_vocab:
            raise ConversionError(f"added token {content!r} has id {i}, but the model has {n_vocab} embedding rows")
        tokens[i] = content
        types[i] = int(TokenType.CONTROL if special else TokenType.USER_DEFINED)
    # Ids nobody names (none in the release) get llama.cpp's usual filler.
    full = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]

    info = TokenizerInfo(tokens=full, token_types=types, merges=merges, eos_id=-1,
                         add_bos=bool(tc.get("add_bos_token", False)),
                         bad_token_ids=[int(x) for x in tc.get("bad_token_ids", []) or []])

    def lookup(key: str) -> int | None:
        text = _token_text(tc.get(key))
        if text is None:
            return None
        i = info.id_of(text)
        if i is None:
            raise ConversionError(f"tokenizer_config.json: {key} {text!r} is not in the vocabulary")
        return i

    eos = lookup("eos_token")
    if eos is None:
        eos = config.get("eos_token_id")
        eos = eos[0] if isinstance(eos, list) else eos
    if eos is None:
        raise ConversionError("tokenizer_config.json: no eos_token")
    info.eos_id = int(eos)
    info.pad_id = lookup("pad_token")
    info.unk_id = lookup("unk_token")
    bos = lookup("bos_token")
    info.bos_id = bos if bos is not None else config.get("bos_token_id")
    info.chat_template = _chat_template(d, tc)
    bad = [i for i in info.bad_token_ids if not 0 <= i < n_vocab]
    if bad:
        raise ConversionError(f"tokenizer_config.json: bad_token_ids contains out-of-range id {bad[0]}")
    return info


def _chat_template(d: Path, tc: dict[str, Any]) -> str | None:
    t = tc.get("chat_template")
    if isinstance(t, list):  # [{"name": ..., "template": ...}]
        t = next((c.get("template") for c in t if c.get("name") == "default"), None)
    if t is None and (d / "chat_template.jinja").is_file():
        t = (d / "chat_template.jinja").read_text(encoding="utf-8")
    return t
