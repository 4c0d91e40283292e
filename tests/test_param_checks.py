"""Numeric parameters are checked once in the C++ core: a value out of range is a MinicpmoError
naming the parameter, its value and the range (never an abort, a raw pybind11 TypeError, or a
silent change); the bounds themselves work. A reply that fills the context is returned with
finish_reason "context" (streaming too), one cut by max_new_tokens with "length"."""

from __future__ import annotations

import numpy as np
import pytest

from minicpmo_cpp import MinicpmoError, OmniSession, _testing

MSGS = [{"role": "user", "content": "Tell me a long story."}]
GREEDY = dict(do_sample=False, repetition_penalty=1.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_batch=0), "n_batch must be in [8, 65536], got 0"),
    (dict(n_batch=1), "n_batch must be in [8, 65536], got 1"),
    (dict(n_batch=65537), "n_batch must be in [8, 65536], got 65537"),
    (dict(n_ctx=-1), "n_ctx must be in [16, 40960] (16 to the model's training context), got -1"),
    (dict(n_ctx=0), "n_ctx must be in [16, 40960]"),
    (dict(n_ctx=15), "got 15"),
    (dict(n_ctx=10**7), "got 10000000"),
    (dict(n_ctx=40961), "got 40961"),
    (dict(n_threads=-1), "n_threads must be in [0, 512] (0 = all cores), got -1"),
    (dict(n_threads=513), "got 513"),
    (dict(n_threads=1000), "got 1000"),
    (dict(n_gpu_layers=-2), "n_gpu_layers must be -1 (all) or >= 0, got -2"),
    (dict(n_ctx=512.0), "n_ctx must be an integer, got 512.0"),
    (dict(n_threads="2"), "n_threads must be an integer"),
])
def test_session_parameters_out_of_range(tiny_f32, kwargs, message):
    with pytest.raises(MinicpmoError) as e:
        OmniSession(str(tiny_f32[0]), **kwargs)
    assert message in str(e.value)


def test_session_parameter_bounds_work(tiny_f32):
    s = OmniSession(str(tiny_f32[0]), n_ctx=16, n_batch=8, n_threads=1, n_gpu_layers=0)
    assert s.n_ctx >= 16  # libllama rounds n_ctx up (to 256)
    assert s.chat([{"role": "user", "content": "Hi"}], max_new_tokens=2, **GREEDY)
    s.set_n_threads(0)
    for bad in (-1, 513):
        with pytest.raises(MinicpmoError, match=rf"n_threads must be in \[0, 512\] \(0 = all cores\), got {bad}"):
            s.set_n_threads(bad)
    assert OmniSession(str(tiny_f32[0]), n_ctx=40960, n_batch=65536, n_threads=1).n_ctx == 40960


@pytest.fixture(scope="module")
def s(tiny_f32):
    return OmniSession(str(tiny_f32[0]), n_threads=1, n_ctx=256, seed=0, kv_cache_type="f32")


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_new_tokens=-1), "max_new_tokens must be >= 0"),
    (dict(temperature=-0.5), "temperature must be >= 0, got -0.5"),
    (dict(temperature=float("nan")), "temperature must be >= 0"),
    (dict(top_p=0.0), "top_p must be in (0, 1], got 0"),
    (dict(top_p=1.5), "top_p must be in (0, 1], got 1.5"),
    (dict(repetition_penalty=0.0), "repetition_penalty must be > 0, got 0"),
    (dict(seed=-1), "seed must be an integer in [0, 2**64), got -1"),
    (dict(seed=2**64), "seed must be an integer in [0, 2**64)"),
    (dict(max_slice_nums=0), "max_slice_nums must be an integer >= 1, got 0"),
    (dict(max_speech_tokens=0, generate_audio=True), "max_speech_tokens must be >= 1, got 0"),
])
def test_chat_parameters_out_of_range(s, kwargs, message):
    n_past = s.n_past
    with pytest.raises(MinicpmoError) as e:
        s.chat(MSGS, **{**dict(max_new_tokens=2), **kwargs})
    assert message in str(e.value)
    assert s.n_past == n_past or "max_new_tokens" not in message  # refused before the prompt went in


def test_seed_bounds_work(s):
    assert s.chat(MSGS, max_new_tokens=2, seed=0) is not None
    assert s.chat(MSGS, max_new_tokens=2, seed=2**64 - 1) is not None


def test_duplex_parameters_out_of_range(s):
    for kwargs, message in [
        (dict(sliding_window=True, window_high=100, window_low=200), "0 <= low <= high"),
        (dict(sliding_window=True, window_high=100_000), "must be below the context size"),
        (dict(sliding_window="context", context_max_units=0), "max units must be >= 1, got 0"),
    ]:
        with pytest.raises(MinicpmoError, match=message):
            s.as_duplex(generate_audio=False, **kwargs).prepare("<|im_start|>system\nx\n", "<|im_end|>")
    d = s.as_duplex(generate_audio=False)
    d.prepare("<|im_start|>system\nx\n", "<|im_end|>")
    d.streaming_prefill(audio_waveform=np.zeros(16000, np.float32))
    for kwargs, message in [
        (dict(max_new_speak_tokens_per_chunk=0), "max_new_speak_tokens_per_chunk must be >= 1, got 0"),
        (dict(temperature=0.0), "temperature must be a positive number"),
        (dict(top_p=2.0), "top_p must be in (0, 1]"),
        (dict(length_penalty=0.0), "length_penalty must be positive"),
    ]:
        with pytest.raises(MinicpmoError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            d.streaming_generate(**kwargs)
    d.close()


def test_reply_that_fills_the_context_is_returned(s):
    # n_ctx 256: the reply runs until the cache is full; nothing generated is lost
    n_prompt = len(s.prompt_token_ids(MSGS))
    r = s.chat(MSGS, max_new_tokens=100_000, **GREEDY)
    assert r.finish_reason == "context"
    ids = s.last_generated_ids
    assert len(ids) == s.n_ctx - n_prompt + 1  # every position used, and the last token handed out
    assert s.n_past == s.n_ctx
    # the same reply streamed (same cache state: reset first both times)
    s.reset()
    r = s.chat(MSGS, max_new_tokens=100_000, **GREEDY)
    s.reset()
    it = s.chat(MSGS, max_new_tokens=100_000, stream=True, **GREEDY)
    assert it.finish_reason == ""
    assert "".join(it) == r and it.finish_reason == "context"
    # the next turn does not fit: a clear error, the session stays usable after reset
    with pytest.raises(MinicpmoError, match="does not fit"):
        s.chat(MSGS + [{"role": "assistant", "content": r}, {"role": "user", "content": "More."}], **GREEDY)
    s.reset()
    assert s.chat(MSGS, max_new_tokens=3, **GREEDY).finish_reason == "length"


def test_finish_reasons_of_streams_and_spoken_replies(s):
    s.reset()
    r = s.chat(MSGS, max_new_tokens=4, **GREEDY)
    assert isinstance(r, str) and r.finish_reason == "length"
    it = s.chat(MSGS, max_new_tokens=4, stream=True, **GREEDY)
    assert "".join(it) == r and it.finish_reason == "length"
    it = s.chat(MSGS, max_new_tokens=50, stream=True, **GREEDY)
    next(it)
    it.close()
    assert it.finish_reason == "" and _testing.hooks(s).finish_reason == "cancelled"
    spoken = s.chat(MSGS, max_new_tokens=4, generate_audio=True, max_speech_tokens=30, **GREEDY)
    assert spoken.finish_reason == "length"
    s.reset()
    s.streaming_prefill({"role": "user", "content": "Hello"})
    it = s.streaming_generate(generate_audio=False, max_new_tokens=3, do_sample=False)
    list(it)
    # the reply ended at the limit, or earlier at the streaming terminator (<|tts_eos|>, <|im_end|>, <unk>)
    n = len(s.last_generated_ids)
    model = _testing.hooks(s).model
    assert it.finish_reason == ("length" if n == 3 and not model.is_eog(s.last_generated_ids[-1]) else "stop")
