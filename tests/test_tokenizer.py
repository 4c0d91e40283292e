"""Runtime tokenizer (libllama, on the tiny LLM GGUF) against llama.cpp's Qwen2 BPE test vectors and
the MiniCPM-o 4.5 added tokens at their real ids (MODEL_SPEC.md §4.2)."""

from __future__ import annotations

import pytest

# MODEL_SPEC.md §4.2 (token -> id)
SPECIAL_TOKENS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<think>": 151667, "</think>": 151668,
    "<image>": 151669, "</image>": 151670, "<slice>": 151679, "</slice>": 151680,
    "<image_id>": 151681, "</image_id>": 151682, "<unit>": 151683, "</unit>": 151684,
    "<|audio_start|>": 151697, "<|audio|>": 151698, "<|audio_end|>": 151699,
    "<|spk_bos|>": 151700, "<|spk|>": 151701, "<|spk_eos|>": 151702,
    "<|tts_bos|>": 151703, "<|tts_eos|>": 151704, "<|listen|>": 151705, "<|speak|>": 151706,
    "<|interrupt|>": 151707, "<|vad_start|>": 151708, "<|vad_end|>": 151709,
    "<|turn_bos|>": 151716, "<|turn_eos|>": 151717,
    "<|chunk_eos|>": 151718, "<|chunk_bos|>": 151719, "<|chunk_tts_bos|>": 151720,
    "<|chunk_tts_eos|>": 151721, "<|tts_pad|>": 151722,
    **{f"<|timbre_{k}|>": 151723 + (k - 7) for k in range(7, 32)},
}


def load_vocab_tests(gguf_path):
    """Parse llama.cpp's ``<vocab>.gguf.inp`` / ``.out`` pair (as its test-tokenizer-0 does):
    inputs are separated by ``\\n__ggml_vocab_test__\\n``; outputs are one line of ids per input."""
    inp = gguf_path.with_name(gguf_path.name + ".inp").read_bytes().decode("utf-8")
    out = gguf_path.with_name(gguf_path.name + ".out").read_text(encoding="utf-8").split("\n")
    sep = "\n__ggml_vocab_test__\n"
    texts, pos = [], 0
    while pos < len(inp):
        nxt = inp.find(sep, pos)
        if nxt < 0:
            texts.append(inp[pos:])
            break
        texts.append(inp[pos:nxt])
        pos = nxt + len(sep)
    if out and out[-1] == "":
        out = out[:-1]
    assert len(texts) == len(out), (len(texts), len(out))
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, out)]


@pytest.fixture(scope="module")
def vocab_tests(qwen2_vocab_gguf):
    tests = load_vocab_tests(qwen2_vocab_gguf)
    assert len(tests) >= 40
    return tests


@pytest.mark.parametrize("parse_special", [False, True])
def test_qwen2_bpe_vectors(session_f32, vocab_tests, parse_special):
    s = session_f32
    bad = []
    for text, want in vocab_tests:
        got = list(s.tokenize(text, parse_special=parse_special))
        if got != want:
            bad.append((text, got, want))
    # the vectors contain no special-token strings, so parse_special must not matter
    assert not bad, f"{len(bad)}/{len(vocab_tests)} mismatches, first: {bad[:3]!r}"


def test_qwen2_bpe_roundtrip(session_f32, vocab_tests):
    s = session_f32
    for text, want in vocab_tests:
        # byte-level BPE is lossless and no BOS / leading space is added (add_bos_token=false)
        assert s.detokenize(want) == text, (text, want)


def test_special_tokens_are_single_ids(session_f32):
    s = session_f32
    wrong = {}
    for text, tid in SPECIAL_TOKENS.items():
        got = list(s.tokenize(text, parse_special=True))
        if got != [tid] or s.detokenize([tid]) != text:
            wrong[text] = (got, tid, s.detokenize([tid]))
    assert not wrong, wrong


def test_unk_placeholder_is_one_id_each(session_f32):
    # image/audio placeholders are written as "<unk>" (id 128244, MODEL_SPEC §1.3/§3.3): a run of
    # them must give exactly one id per placeholder, never a BPE merge across them
    s = session_f32
    assert list(s.tokenize("<unk>" * 5, parse_special=True)) == [128244] * 5
    assert list(s.tokenize("<|audio_start|><unk><unk><|audio_end|>", parse_special=True)) == \
        [151697, 128244, 128244, 151699]


def test_special_tokens_in_text(session_f32):
    s = session_f32
    body = list(s.tokenize("user\nHi there", parse_special=False))
    got = list(s.tokenize("<|im_start|>user\nHi there<|im_end|>\n", parse_special=True))
    assert got == [151644] + body + [151645, 198]
    # without parse_special the marker is plain text: several ordinary BPE ids, no 151644
    plain = list(s.tokenize("<|im_start|>", parse_special=False))
    assert 151644 not in plain and len(plain) > 1
    assert s.detokenize(plain) == "<|im_start|>"
    # adjacent specials and text between them
    ids = list(s.tokenize("<|tts_bos|>hello<|tts_eos|><|im_end|>", parse_special=True))
    assert ids[0] == 151703 and ids[-2:] == [151704, 151645]
    assert s.detokenize(ids) == "<|tts_bos|>hello<|tts_eos|><|im_end|>"


def test_unicode_roundtrip(session_f32):
    s = session_f32
    for text in ["模仿音频样本的音色并生成新的内容。", "Ünïcödé ✓ 🚀 emoji", "tabs\tand\nnewlines\r\n",
                 "  leading spaces", "a" * 300]:
        ids = list(s.tokenize(text, parse_special=False))
        assert s.detokenize(ids) == text
    assert list(s.tokenize("", parse_special=True)) == []
