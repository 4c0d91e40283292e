"""Runtime apply_chat_template against (a) the Jinja chat_template of the tiny checkpoint's
tokenizer_config.json rendered with jinja2 the way Hugging Face renders it, and (b) literal strings
written by hand from MODEL_SPEC.md §4.3/§4.4."""

from __future__ import annotations

import json

import jinja2
import jinja2.ext
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment


@pytest.fixture(scope="module")
def hf_template(tiny_hf):
    cfg = json.loads((tiny_hf / "tokenizer_config.json").read_text(encoding="utf-8"))
    tpl = cfg["chat_template"]
    if isinstance(tpl, list):  # [{"name": "default", "template": ...}, ...]
        tpl = {t["name"]: t["template"] for t in tpl}["default"]
    assert "use_tts_template" in tpl and "enable_thinking" in tpl  # MODEL_SPEC §4.3 flags

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    # the environment settings transformers uses for chat templates
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(tpl)
    special = {k: cfg.get(k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    special = {k: (v["content"] if isinstance(v, dict) else v) for k, v in special.items()}

    def render(msgs, add_generation_prompt=True, enable_thinking=False, use_tts_template=False):
        return template.render(messages=msgs, add_generation_prompt=add_generation_prompt,
                               enable_thinking=enable_thinking, use_tts_template=use_tts_template,
                               **{k: v for k, v in special.items() if v is not None})

    return render


SYS = {"role": "system", "content": "You are a helpful assistant."}
U1 = {"role": "user", "content": "Hi"}
A1 = {"role": "assistant", "content": "Hello! How can I help?"}
A1_THINK = {"role": "assistant", "content": "<think>\nThe user greets.\n</think>\n\nHello again."}
U2 = {"role": "user", "content": "Tell me a joke.\nA short one."}
UZH = {"role": "user", "content": "你好，请介绍一下你自己。"}

CASES = {
    "user_only": [U1],
    "system_user": [SYS, U1],
    "multi_turn": [SYS, U1, A1, U2],
    "multi_turn_think_history": [U1, A1_THINK, U2],
    "unicode": [UZH],
    "whitespace": [{"role": "user", "content": "  padded \n\n"}],
    "ends_with_assistant": [U1, A1],
    # last assistant turn after the last user query keeps its reasoning block
    "ends_with_assistant_think": [U1, A1_THINK],
    "system_only": [SYS],
    # no user query at all: Qwen3 then treats the last message as the query boundary
    "no_user_query": [SYS, A1],
    "assistant_leading_newlines_last": [U1, {"role": "assistant", "content": "\n\nAnswer."}],
    "assistant_leading_newlines_history": [U1, {"role": "assistant", "content": "\n\nAnswer."}, U2],
    "two_think_blocks": [U1, {"role": "assistant", "content": "<think>a</think>b</think>\nc"}],
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("enable_thinking", [False, True])
@pytest.mark.parametrize("use_tts_template", [False, True])
def test_matches_jinja(session_f32, hf_template, name, enable_thinking, use_tts_template):
    msgs = CASES[name]
    add_gen = msgs[-1]["role"] != "assistant"
    want = hf_template(msgs, add_generation_prompt=add_gen, enable_thinking=enable_thinking,
                       use_tts_template=use_tts_template)
    got = session_f32.apply_chat_template(msgs, add_generation_prompt=add_gen,
                                          enable_thinking=enable_thinking,
                                          use_tts_template=use_tts_template)
    assert got.encode("utf-8") == want.encode("utf-8")  # byte-exact


def test_no_generation_prompt(session_f32, hf_template):
    msgs = [SYS, U1]
    want = hf_template(msgs, add_generation_prompt=False)
    assert session_f32.apply_chat_template(msgs, add_generation_prompt=False) == want
    assert want == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nHi<|im_end|>\n")


# Literal strings, by hand from MODEL_SPEC §4.3/§4.4 (independent of the checkpoint's template)
LITERALS = [
    ([U1], dict(),
     "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    ([U1], dict(enable_thinking=True),
     "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
    ([U1], dict(use_tts_template=True),
     "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n<|tts_bos|>"),
    ([SYS, U1], dict(),
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
     "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    ([U1, A1, U2], dict(),
     "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
     "<|im_start|>user\nTell me a joke.\nA short one.<|im_end|>\n"
     "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    # reasoning of an assistant turn before the last user query is stripped (Qwen3 template)
    ([U1, A1_THINK, U2], dict(),
     "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello again.<|im_end|>\n"
     "<|im_start|>user\nTell me a joke.\nA short one.<|im_end|>\n"
     "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
]


@pytest.mark.parametrize("i", range(len(LITERALS)))
def test_literal(session_f32, hf_template, i):
    msgs, kw, want = LITERALS[i]
    assert session_f32.apply_chat_template(msgs, add_generation_prompt=True, **kw) == want
    full = dict(enable_thinking=False, use_tts_template=False)
    full.update(kw)
    # the checkpoint's template must agree with the spec too (guards the generator's template)
    assert hf_template(msgs, add_generation_prompt=True, **full) == want


def test_defaults(session_f32):
    # documented defaults: add_generation_prompt=True, enable_thinking=False, use_tts_template=False
    assert session_f32.apply_chat_template([U1]) == LITERALS[0][2]
