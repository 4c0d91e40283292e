"""Added tokens of the MiniCPM-o 4.5 tokenizer (id -> content, special flag) and the named ids.

The tokenizer is Qwen2's byte-level BPE: ids 0..151642 are the base vocabulary; ids 151643..151747
are added tokens (vocab_size 151748). Sources for the table below:

* 151643..151668 are the Qwen3 added tokens (the Qwen3 tokenizer_config.json). Their special flags
  follow Qwen3: the ChatML / vision-pad markers are special, while the tool-call, FIM, repo and
  think markers are *not* special (Qwen marks them "special": false).
* 151669..151747 are MiniCPM-o's own tokens. Names and ids come from spec/MODEL_SPEC.md §4.2 and,
  for the ids the spec does not list (151671..151678, 151685..151696), from a public C++ port's
  token table that states it was extracted from the release's tokenizer.json; it agrees with the
  spec on every id both give. No id in 151643..151747 had to be invented.
  Their special flag is not attested by any file we could read; we mark them all special, as
  MiniCPM-V releases do for their markup tokens (consequence for libllama: they are CONTROL
  tokens, so prompts must be tokenized with parse_special=true and they render as "" unless
  detokenized with special=true).

`<unk>` (id 128244) is different: it lies inside the base range. Qwen2's BPE vocabulary already
contains the string "<unk>" at id 128244 (see models/ggml-vocab-qwen2.gguf), but the Qwen2
pre-tokenizer splits "<unk>" into "<unk" + ">", so plain BPE never produces it. MiniCPM declares
unk_token="<unk>", which Hugging Face registers as a special added token mapped onto the existing
id 128244 (no new id). The converter therefore marks id 128244 as CONTROL so that "<unk>" in a
prompt (parse_special=true) becomes the multimodal placeholder id, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

BASE_VOCAB_SIZE = 151643  # ids 0..151642 are plain BPE tokens
VOCAB_SIZE = 151748  # embed_tokens / lm_head rows of the release
UNK_ID = 128244
UNK = "<unk>"


@dataclass(frozen=True)
class AddedToken:
    id: int
    content: str
    special: bool


def _t(i: int, content: str, special: bool = True) -> AddedToken:
    return AddedToken(i, content, special)


# Qwen3 base added tokens (ids fixed by the Qwen2/Qwen3 tokenizer).
_QWEN3 = [
    _t(151643, "<|endoftext|>"),
    _t(151644, "<|im_start|>"),
    _t(151645, "<|im_end|>"),
    _t(151646, "<|object_ref_start|>"),
    _t(151647, "<|object_ref_end|>"),
    _t(151648, "<|box_start|>"),
    _t(151649, "<|box_end|>"),
    _t(151650, "<|quad_start|>"),
    _t(151651, "<|quad_end|>"),
    _t(151652, "<|vision_start|>"),
    _t(151653, "<|vision_end|>"),
    _t(151654, "<|vision_pad|>"),
    _t(151655, "<|image_pad|>"),
    _t(151656, "<|video_pad|>"),
    _t(151657, "<tool_call>", False),
    _t(151658, "</tool_call>", False),
    _t(151659, "<|fim_prefix|>", False),
    _t(151660, "<|fim_middle|>", False),
    _t(151661, "<|fim_suffix|>", False),
    _t(151662, "<|fim_pad|>", False),
    _t(151663, "<|repo_name|>", False),
    _t(151664, "<|file_sep|>", False),
    _t(151665, "<tool_response>", False),
    _t(151666, "</tool_response>", False),
    _t(151667, "<think>", False),
    _t(151668, "</think>", False),
]

# MiniCPM-o 4.5 tokens, in id order (151669..151722), then the timbre tokens.
_MINICPMO_NAMES = [
    "<image>", "</image>", "<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>",
    "<point>", "</point>", "<slice>", "</slice>", "<image_id>", "</image_id>", "<unit>", "</unit>",
    "<answer>", "</answer>", "<focus>", "</focus>", "<line>", "</line>", "<perception>",
    "</perception>", "<source_image>", "</source_image>", "<image_save_to>", "</image_save_to>",
    "<|audio_start|>", "<|audio|>", "<|audio_end|>", "<|spk_bos|>", "<|spk|>", "<|spk_eos|>",
    "<|tts_bos|>", "<|tts_eos|>", "<|listen|>", "<|speak|>", "<|interrupt|>", "<|vad_start|>",
    "<|vad_end|>", "<|emotion_start|>", "<|emotion_end|>", "<|speed_start|>", "<|speed_end|>",
    "<|pitch_start|>", "<|pitch_end|>", "<|turn_bos|>", "<|turn_eos|>", "<|chunk_eos|>",
    "<|chunk_bos|>", "<|chunk_tts_bos|>", "<|chunk_tts_eos|>", "<|tts_pad|>",
] + [f"<|timbre_{k}|>" for k in range(7, 32)]

_MINICPMO = [_t(151669 + k, name) for k, name in enumerate(_MINICPMO_NAMES)]

# All tokens that the release's tokenizer adds on top of plain BPE, `<unk>` included.
ADDED_TOKENS: tuple[AddedToken, ...] = (_t(UNK_ID, UNK), *_QWEN3, *_MINICPMO)

# Short names used as GGUF keys `minicpmo.token.<name>` (spec §4.2 "important ids").
NAMED_TOKENS: dict[str, str] = {
    "unk": UNK,
    "endoftext": "<|endoftext|>",
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "think_start": "<think>",
    "think_end": "</think>",
    "image_start": "<image>",
    "image_end": "</image>",
    "slice_start": "<slice>",
    "slice_end": "</slice>",
    "image_id_start": "<image_id>",
    "image_id_end": "</image_id>",
    "unit_start": "<unit>",
    "unit_end": "</unit>",
    "audio_start": "<|audio_start|>",
    "audio": "<|audio|>",
    "audio_end": "<|audio_end|>",
    "spk_bos": "<|spk_bos|>",
    "spk": "<|spk|>",
    "spk_eos": "<|spk_eos|>",
    "tts_bos": "<|tts_bos|>",
    "tts_eos": "<|tts_eos|>",
    "listen": "<|listen|>",
    "speak": "<|speak|>",
    "interrupt": "<|interrupt|>",
    "vad_start": "<|vad_start|>",
    "vad_end": "<|vad_end|>",
    "turn_bos": "<|turn_bos|>",
    "turn_eos": "<|turn_eos|>",
    "chunk_eos": "<|chunk_eos|>",
    "chunk_bos": "<|chunk_bos|>",
    "chunk_tts_bos": "<|chunk_tts_bos|>",
    "chunk_tts_eos": "<|chunk_tts_eos|>",
    "tts_pad": "<|tts_pad|>",
}

EOS = "<|im_end|>"  # tokenizer_config eos_token
PAD = "<|endoftext|>"  # tokenizer_config pad_token; also generation_config bos/pad id 151643


def added_token_by_content() -> dict[str, AddedToken]:
    return {t.content: t for t in ADDED_TOKENS}


def _self_check() -> None:
    # Cheap invariants, run at import: contiguous ids above the base range, no duplicates.
    ids = [t.id for t in ADDED_TOKENS if t.id >= BASE_VOCAB_SIZE]
    assert ids == list(range(BASE_VOCAB_SIZE, VOCAB_SIZE)), "added-token ids must be contiguous"
    assert len({t.content for t in ADDED_TOKENS}) == len(ADDED_TOKENS)
    by_content = added_token_by_content()
    assert all(c in by_content for c in NAMED_TOKENS.values())


_self_check()
