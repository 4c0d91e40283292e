"""The duplex "context" sliding window (spec §6.5) on the tiny model.

`ContextWindowModel` below restates the rule (read in the official StreamDecoder, see
csrc/session/duplex_window.h) in a few lines of Python, on top of `SpecDuplexModel` (the §6.3 unit
layout written from the spec): while more than max_units units are cached the oldest goes; what a
speaking unit said (its fed tokens after the decision, special ids >= 151643 removed) is appended to
"previous" = marker ids + text, capped to the last N text tokens; the cache reads
[prefix][previous][suffix][units]. The session's cache is compared with it token for token, and the
logits after a context drop with the numpy Qwen3 reference replaying the same cache edits.
"""

from __future__ import annotations

import numpy as np
import pytest

from minicpmo_cpp import MinicpmoError, OmniSession
from audio_inputs import chat_audio_token_count, speechlike
from test_duplex_session import (CHUNK_EOS, CHUNK_TTS_EOS, LISTEN, PREFIX, SPEAK, SUFFIX, TURN_EOS, UNIT,
                                 SpecDuplexModel, _words)
from backend import SESSION, tol

MARKER = "\n\nprevious: "
# the marker as the Qwen2 BPE (MiniCPM-o's tokenizer) encodes it: "\n\n", "previous", ":", " "
MARKER_IDS = [271, 19702, 25, 220]
FIRST_ADDED_ID = 151643  # ids from here on are the tokenizer's added (special) tokens (spec §4.2)


class ContextWindowModel:
    """[prefix][previous][suffix][units]; `drops` records each drop for the numpy replay."""

    def __init__(self, prefix: list[int], suffix: list[int], max_units: int, cap: int):
        self.prefix, self.suffix = list(prefix), list(suffix)
        self.max_units, self.cap = max_units, cap
        self.previous: list[int] = []
        self.units: list[tuple[list[int], list[int]]] = []  # (cache tokens, text it leaves behind)
        self.drops: list[dict] = []

    @property
    def layout(self) -> list[int]:
        return self.prefix + self.previous + self.suffix + [t for u, _ in self.units for t in u]

    def add(self, unit_tokens: list[int], speak: list[int], is_listen: bool) -> int:
        said = [] if is_listen else [t for t in speak if t < FIRST_ADDED_ID]
        self.units.append((list(unit_tokens), said))
        dropped = 0
        while len(self.units) > self.max_units:
            old_system = len(self.prefix) + len(self.previous) + len(self.suffix)
            gone, said = self.units.pop(0)
            dropped += len(gone)
            if said:
                text = (self.previous[len(MARKER_IDS):] if self.previous else []) + said
                self.previous = MARKER_IDS + (text[max(0, len(text) - self.cap):] if self.cap else [])
            self.drops.append({"old_system": old_system, "unit": len(gone), "rebuilt": bool(said),
                               "previous": list(self.previous)})
        return dropped




def _scripts(omni) -> list[list[int]]:
    a, b, c, e, f = _words(omni, 5)
    return [
        [SPEAK, a, b, c, CHUNK_EOS],
        [LISTEN, a, CHUNK_EOS],              # mid-turn: <|tts_bos|> (special, not kept), then a
        [SPEAK, e, f, TURN_EOS, CHUNK_EOS],
        [LISTEN],                            # a listening unit leaves nothing behind
        [SPEAK, TURN_EOS, CHUNK_TTS_EOS],    # only special tokens spoken: nothing either
        [LISTEN],
        [SPEAK, c, c, a, b, e, f],           # runs into the forced <|chunk_eos|> (max 7)
        [SPEAK, f, CHUNK_EOS],
    ]


def _run(d, omni, model: ContextWindowModel, spec: SpecDuplexModel, n_units: int, start: int = 0,
         on_unit=None):
    scripts = _scripts(omni)
    for k in range(start, start + n_units):
        script = scripts[k % len(scripts)]
        text = f"user says {k}"
        d.streaming_prefill(text_list=[text])
        spec.prefill(text_ids=tuple(omni.tokenize(text)))
        r = d.streaming_generate(decode_mode="greedy", max_new_speak_tokens_per_chunk=7, _scripted=script)
        want = spec.generate(script, 7)
        n_drops_before = len(model.drops)
        want_dropped = model.add(spec.units[-1], want["speak"], want["is_listen"])
        assert d.kv_tokens == model.layout, f"unit {k}"
        assert r["n_dropped"] == want_dropped, f"unit {k}"
        assert d.system_length == len(model.prefix) + len(model.previous) + len(model.suffix)
        assert d.unit_lengths == [len(u) for u, _ in model.units]
        if on_unit:
            on_unit(spec.units[-1], model.drops[n_drops_before:])


@pytest.fixture(scope="module")
def omni(tiny_f32):
    # F32 KV cache: the logits are compared with the float64 reference at 1e-4
    return OmniSession(str(tiny_f32[0]), n_threads=2, **SESSION, n_ctx=4096, seed=0, kv_cache_type="f32")


def test_marker_tokens(omni):
    assert omni.tokenize(MARKER, False) == MARKER_IDS


@pytest.mark.parametrize("max_units,cap,n_units", [(24, 500, 40), (3, 7, 17), (2, 0, 9)])
def test_layout_after_context_drops(omni, max_units, cap, n_units):
    """Prefix text + reference audio, then "previous", then the suffix; checked after every unit."""
    d = omni.as_duplex(generate_audio=False, seed=1, sliding_window="context", context_max_units=max_units,
                       context_previous_max_tokens=cap)
    ref_pcm = speechlike(1.0, 3)
    d.prepare(PREFIX, SUFFIX, ref_audio=ref_pcm)
    prefix = omni.tokenize(PREFIX) + [-1] * chat_audio_token_count(ref_pcm.size)
    model = ContextWindowModel(prefix, omni.tokenize(SUFFIX), max_units, cap)
    spec = SpecDuplexModel(d.kv_tokens)
    assert d.kv_tokens == model.layout
    _run(d, omni, model, spec, n_units)
    assert len(model.drops) == n_units - max_units  # the window did slide, once per unit
    assert any(x["rebuilt"] for x in model.drops) and any(not x["rebuilt"] for x in model.drops)
    if cap < 500:
        assert len(model.previous) == len(MARKER_IDS) + cap  # the cap was reached
    text, ids = d.get_previous_context()
    assert ids == model.previous
    assert text == omni.detokenize(model.previous[len(MARKER_IDS):])


def test_keeps_running_past_the_context_size(tiny_f32):
    """n_ctx 160: without a window the conversation hits context_full; with the context window it
    goes on for 60 units and stays within prefix + marker + cap + suffix + 4 units."""
    small = OmniSession(str(tiny_f32[0]), n_threads=2, **SESSION, n_ctx=160, seed=0)
    off = small.as_duplex(generate_audio=False, seed=1)
    off.prepare(PREFIX, SUFFIX)
    spec = SpecDuplexModel(off.kv_tokens)
    model = ContextWindowModel(off.kv_tokens[:-len(small.tokenize(SUFFIX))], small.tokenize(SUFFIX), 10**6, 500)
    with pytest.raises(MinicpmoError, match="does not fit"):
        _run(off, small, model, spec, 60)

    d = small.as_duplex(generate_audio=False, seed=1, sliding_window="context", context_max_units=4,
                        context_previous_max_tokens=20)
    d.prepare(PREFIX, SUFFIX)
    suffix = small.tokenize(SUFFIX)
    model = ContextWindowModel(small.tokenize(PREFIX), suffix, 4, 20)
    spec = SpecDuplexModel(d.kv_tokens)
    _run(d, small, model, spec, 60)
    assert len(model.drops) == 56
    assert len(d.kv_tokens) <= 160


def _ref_context_drop(ref, cache, prefix_len: int, old_system: int, unit_len: int, previous: list[int],
                      suffix: list[int]):
    """The reference rebuild: prefix K/V kept, previous + suffix prefilled afresh after the prefix,
    the remaining units' keys rotated from their old start to their new one (values moved)."""
    tail_start = old_system + unit_len
    new = cache.copy()
    new.truncate(prefix_len)
    ref.forward(previous + suffix, cache=new, logits_all=False)
    shift = new.n_past - tail_start
    for li in range(len(cache.k)):
        k, v = cache.k[li][tail_start:], cache.v[li][tail_start:]
        if len(k):
            k = ref.rope(k, np.full(len(k), shift))
        new.k[li] = np.concatenate([new.k[li], k], axis=0)
        new.v[li] = np.concatenate([new.v[li], v], axis=0)
    new.n_past += cache.n_past - tail_start
    return new


def test_logits_after_context_drops_match_reference(omni, tiny_ref):
    """The next unit's logits after context drops (rebuilds with truncated "previous" and plain
    drops) vs the numpy reference doing the same edits; a fresh prefill of the final tokens is not
    the target (the kept units' K/V were computed with the dropped units present) and its distance
    is printed for information."""
    from test_llm_embeddings_kv import ref_remove_range

    d = omni.as_duplex(generate_audio=False, seed=3, sliding_window="context", context_max_units=3,
                       context_previous_max_tokens=5)
    d.prepare(PREFIX, SUFFIX)
    suffix = omni.tokenize(SUFFIX)
    prefix = omni.tokenize(PREFIX)
    model = ContextWindowModel(prefix, suffix, 3, 5)
    spec = SpecDuplexModel(d.kv_tokens)
    state = {"cache": tiny_ref.new_cache()}
    tiny_ref.forward(prefix + suffix, cache=state["cache"], logits_all=False)

    def replay(unit_tokens, drops):
        tiny_ref.forward(unit_tokens, cache=state["cache"], logits_all=False)
        for x in drops:
            if x["rebuilt"]:
                state["cache"] = _ref_context_drop(tiny_ref, state["cache"], len(prefix), x["old_system"],
                                                   x["unit"], x["previous"], suffix)
            else:
                ref_remove_range(tiny_ref, state["cache"], x["old_system"], x["old_system"] + x["unit"])

    _run(d, omni, model, spec, 11, on_unit=replay)
    assert sum(x["rebuilt"] for x in model.drops) >= 3 and any(not x["rebuilt"] for x in model.drops)
    assert len(model.previous) == len(MARKER_IDS) + 5
    assert state["cache"].n_past == len(d.kv_tokens)

    d.streaming_prefill(text_list=["and now"])
    got = np.asarray(d.pending_logits, np.float64)
    want, _ = tiny_ref.forward([UNIT] + omni.tokenize("and now"), cache=state["cache"], logits_all=False)
    want = np.asarray(want, np.float64).reshape(-1)
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    fresh, _ = tiny_ref.forward(d.kv_tokens, logits_all=False)
    fresh = np.asarray(fresh, np.float64).reshape(-1)
    print(f"context window: rel {err:.2e} vs the replayed reference, "
          f"{np.max(np.abs(got - fresh)) / np.max(np.abs(fresh)):.2e} vs a fresh prefill of the kept tokens")
    assert err < tol(1e-4), err  # F32 weights and cache vs float64, as the basic window test


def test_bad_window_options_give_clear_errors(omni):
    with pytest.raises(MinicpmoError, match="sliding_window must be"):
        omni.as_duplex(generate_audio=False, sliding_window="sideways")
    with pytest.raises(MinicpmoError, match="max units must be >= 1"):
        omni.as_duplex(generate_audio=False, sliding_window="context", context_max_units=0)
    with pytest.raises(MinicpmoError, match="previous max tokens must be >= 0"):
        omni.as_duplex(generate_audio=False, sliding_window="context", context_previous_max_tokens=-1)


def test_sliding_window_true_still_means_basic(omni):
    d = omni.as_duplex(generate_audio=False, sliding_window=True, window_high=70, window_low=45, seed=0)
    assert d.sliding_window == "basic"
    d.prepare(PREFIX, SUFFIX)
    for k in range(8):
        d.streaming_prefill(text_list=[f"user says {k}"])
        d.streaming_generate(decode_mode="greedy", force_listen=True)
        assert len(d.kv_tokens) <= 70
    assert d.get_previous_context() == ("", [])


@pytest.fixture(scope="module")
def window_demo(tmp_path_factory):
    import shutil
    import subprocess
    from pathlib import Path

    import minicpmo_cpp

    pkg = Path(minicpmo_cpp.__file__).parent
    src = Path(__file__).parent / "c" / "duplex_window_demo.c"
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to build tests/c/duplex_window_demo.c"
    exe = tmp_path_factory.mktemp("capi_window") / "duplex_window_demo"
    subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{pkg / 'include'}", str(src), "-o", str(exe),
                    f"-L{pkg}", "-lminicpmo", f"-Wl,-rpath,{pkg}"], check=True)
    return exe


def test_c_api_context_window(window_demo, tiny_f32):
    """minicpmo_duplex_params.window_mode = MINICPMO_WINDOW_CONTEXT: with n_ctx 128 the C program
    runs 30 greedy units (with the window off it stops with CONTEXT_FULL) and decides what the
    Python API with the same options decides."""
    import re
    import subprocess

    model = str(tiny_f32[0])
    off = subprocess.run([str(window_demo), model, "128", "0", "30"], capture_output=True, timeout=300)
    assert off.returncode == 1 and b"FAILED context full" in off.stdout, off.stdout + off.stderr
    res = subprocess.run([str(window_demo), model, "128", "2", "30"], capture_output=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    got = []
    for m in re.finditer(rb"^UNIT (\d+) (\d) (\d+)\n", res.stdout, re.M):
        got.append((bool(int(m.group(2))), res.stdout[m.end(): m.end() + int(m.group(3))].decode("utf-8", errors="replace")))
    assert len(got) == 30
    assert sum(not listen and text != "" for listen, text in got) > 3  # dropped units left text behind

    omni = OmniSession(model, n_threads=2, **SESSION, n_ctx=128, seed=0)
    d = omni.as_duplex(generate_audio=False, seed=0, sliding_window="context", context_max_units=3,
                       context_previous_max_tokens=8)
    d.prepare(PREFIX, SUFFIX)
    want = []
    for k in range(30):
        d.streaming_prefill(text_list=[f"user says {k}"])
        r = d.streaming_generate(decode_mode="greedy", max_new_speak_tokens_per_chunk=7)
        want.append((r["is_listen"], r["text"]))
    assert got == want
    assert len(d.unit_lengths) == 3
