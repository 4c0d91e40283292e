"""Write the Hugging Face tokenizer files of a MiniCPM-o 4.5 checkpoint.

Files: vocab.json + merges.txt (slow-tokenizer form), tokenizer.json (fast form), tokenizer_config.json
(added_tokens_decoder, eos/pad/unk, chat_template, bad_token_ids), added_tokens.json and
special_tokens_map.json — the set the release ships, so the converter reads what users will have.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from .base_vocab import BaseVocab
from .tokens import ADDED_TOKENS, EOS, PAD, UNK, AddedToken

# Qwen2 pre-tokenizer split pattern (byte-level BPE over these pieces).
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_BYTE_LEVEL = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}


def _dump(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _added_entry(t: AddedToken) -> dict:
    return {"content": t.content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": t.special}


def write_tokenizer_files(
    out_dir: Path,
    base: BaseVocab,
    chat_template: str,
    added: Sequence[AddedToken] = ADDED_TOKENS,
    bad_token_ids: Sequence[int] = (),
    model_max_length: int = 40960,
) -> None:
    added = sorted(added, key=lambda t: t.id)
    vocab = {tok: i for i, tok in enumerate(base.tokens)}
    _dump(out_dir / "vocab.json", vocab)
    (out_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(base.merges) + "\n", encoding="utf-8"
    )

    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": t.id, **_added_entry(t)} for t in added],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_PRETOKENIZE_REGEX},
                 "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", **_BYTE_LEVEL},
            ],
        },
        "post_processor": {"type": "ByteLevel", **_BYTE_LEVEL},
        "decoder": {"type": "ByteLevel", **_BYTE_LEVEL},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": False, "vocab": vocab, "merges": list(base.merges),
        },
    }
    (out_dir / "tokenizer.json").write_text(
        json.dumps(tokenizer_json, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
    )

    extra_specials = [t.content for t in added if t.special and t.id >= 151669]
    _dump(out_dir / "tokenizer_config.json", {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {str(t.id): _added_entry(t) for t in added},
        "additional_special_tokens": extra_specials,
        "bad_token_ids": list(bad_token_ids),
        "bos_token": None,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS,
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": PAD,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": UNK,
    })
    _dump(out_dir / "added_tokens.json", {t.content: t.id for t in added})
    _dump(out_dir / "special_tokens_map.json", {
        "additional_special_tokens": extra_specials,
        "eos_token": {"content": EOS, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "pad_token": {"content": PAD, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
        "unk_token": {"content": UNK, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
    })
