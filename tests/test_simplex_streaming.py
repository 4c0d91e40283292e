"""Simplex streaming (spec §6.1, §4.4 "Omni / simplex streaming", §3.4) on the tiny model:
OmniSession.streaming_prefill / streaming_generate and the C API's
minicpmo_session_streaming_prefill / _generate, against independent pieces:
- the KV cache token layout, written here from the §4.4 literal (system with full-attention audio,
  three 1-s user pieces of a frame and audio, the reply opening, the reply, the next user turn);
- the streamed user audio embeddings equal the numpy reference: StreamingMelReference (simplex
  feeding) -> StreamingWhisperReference (Whisper key/value cache, restarted per user turn);
- a text-only streamed turn decodes exactly what the non-streaming chat() decodes (greedy);
- a C program through the C API gets the same text and audio as Python;
- bad inputs are clear errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from minicpmo_cpp import MinicpmoError, OmniSession, _testing

from c_demos import build_c_demo
from test_sampling import penalise, reference_steps, tolerance

from reference.audio import AudioReference, StreamingWhisperReference, audio_placeholder_count
from reference.audio_frontend import StreamingMelReference
from reference.mel_filters import slaney_mel_filters
from backend import tol

SYSTEM = "You are a helpful assistant."
N_QUERY = 64              # tiny config query_num (spec §8 keeps the real 64)
SPEECH_PER_CHUNK = 30     # speech tokens per text chunk: the tiny random TTS rarely samples EOS
# every terminator of a streamed reply (spec §4.4): <|tts_eos|>, <|im_end|>, <unk> ("</s>")
TTS_EOS, IM_END, UNK = 151704, 151645, 128244


def _session(tiny_f32) -> OmniSession:
    return OmniSession(str(tiny_f32[0]), n_threads=2, n_ctx=2048, kv_cache_type="f32", seed=0)


def _speechlike(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    x = np.sin(2 * np.pi * (150 + 30 * np.sin(2 * np.pi * 0.8 * t)) * t) + 0.3 * np.sin(2 * np.pi * 450 * t)
    return (0.2 * x + 0.01 * rng.standard_normal(n)).astype(np.float32)


def _frame(seed: int, w: int = 40, h: int = 30) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _official_cache(s: OmniSession, before: str, reply_ids: list[int], after: str) -> list[int]:
    """The official cache: `before`, the reply without its terminator (never fed there), then `after`.
    (At the max_new_tokens limit the official loop also drops the last sampled token, neither
    yielded nor fed; the runtime keeps it in the text and the cache, a documented deviation.)"""
    fed = list(reply_ids)
    if fed and fed[-1] in (TTS_EOS, IM_END, UNK):
        fed = fed[:-1]
    return s.tokenize(before) + fed + s.tokenize(after)


def _user_pieces(s: OmniSession, pieces) -> None:
    for content in pieces:
        s.streaming_prefill({"role": "user", "content": content})


def test_kv_layout_follows_the_spec(tiny_f32):
    s = _session(tiny_f32)
    sys_audio = _speechlike(21000, 1)
    audio = _speechlike(48000, 2)
    pieces = [[_frame(k), audio[16000 * k:16000 * (k + 1)]] for k in range(3)]
    s.streaming_prefill([{"role": "system", "content": ["Sys A.", sys_audio, "Sys B."]}])
    _user_pieces(s, pieces)
    reply = list(s.streaming_generate(do_sample=False, max_new_tokens=12, max_speech_tokens=SPEECH_PER_CHUNK))
    assert any(a.size for _, a in reply)
    reply_ids = s.last_generated_ids
    s.streaming_prefill({"role": "user", "content": ["Next question?"]})

    m = audio_placeholder_count(sys_audio.size)  # system audio: one block, 10 per second
    piece = "<image>" + "<unk>" * N_QUERY + "</image><|audio_start|>" + "<unk>" * 10 + "<|audio_end|>"
    before = ("<|im_start|>system\nSys A.<|audio_start|>" + "<unk>" * m + "<|audio_end|>Sys B.<|im_end|>\n"
              "<|im_start|>user\n" + piece * 3 +
              "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n<|tts_bos|>")
    want = _official_cache(s, before, reply_ids, "<|tts_eos|><|im_end|>\n<|im_start|>user\nNext question?")
    assert _testing.hooks(s).kv_tokens == want

    # a second reply and a third turn: the conversation goes on in the same cache
    k0 = _testing.hooks(s).kv_tokens
    list(s.streaming_generate(generate_audio=False, do_sample=False, max_new_tokens=5))
    reply2 = s.last_generated_ids
    s.streaming_prefill({"role": "user", "content": "Third."})
    want = k0 + _official_cache(s, "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n<|tts_bos|>", reply2,
                                "<|tts_eos|><|im_end|>\n<|im_start|>user\nThird.")
    assert _testing.hooks(s).kv_tokens == want


@pytest.mark.parametrize("ending", ["<|tts_eos|>", "<unk>"])
def test_next_turn_after_a_fed_terminator(tiny_f32, ending):
    """Session.step feeds <|tts_eos|> and <unk> (the official reply feeds neither). A reply that
    ended on one must still leave the official layout: <|tts_eos|> once, no <unk>. The ending is
    appended by hand: a random model does not say it on cue."""
    s = _session(tiny_f32)
    s.streaming_prefill({"role": "system", "content": SYSTEM})
    s.streaming_prefill({"role": "user", "content": "Hi."})
    list(s.streaming_generate(generate_audio=False, do_sample=False, max_new_tokens=4))
    reply = [t for t in s.last_generated_ids if t != IM_END]
    _testing.hooks(s).append_text(ending)  # what Session.step leaves when the reply ends there
    s.streaming_prefill({"role": "user", "content": "Again."})
    before = ("<|im_start|>system\n" + SYSTEM + "<|im_end|>\n<|im_start|>user\nHi.<|im_end|>\n<|im_start|>assistant\n"
              "<think>\n\n</think>\n\n<|tts_bos|>")
    want = s.tokenize(before) + reply + s.tokenize("<|tts_eos|><|im_end|>\n<|im_start|>user\nAgain.")
    assert _testing.hooks(s).kv_tokens == want


def test_assistant_message_and_thinking_reply(tiny_f32):
    """An assistant message closes the open user turn and is a whole turn of its own (chat
    template); enable_thinking leaves the empty think block out of the reply opening."""
    s = _session(tiny_f32)
    s.streaming_prefill({"role": "user", "content": "Hi."})
    s.streaming_prefill({"role": "assistant", "content": "Hello!"})
    s.streaming_prefill({"role": "user", "content": ["Bye."]})
    list(s.streaming_generate(generate_audio=False, enable_thinking=True, do_sample=False, max_new_tokens=1))
    want = s.tokenize("<|im_start|>user\nHi.<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
                      "<|im_start|>user\nBye.<|im_end|>\n<|im_start|>assistant\n<|tts_bos|>")
    kv = _testing.hooks(s).kv_tokens
    assert kv[:len(want)] == want and len(kv) == len(want) + len([t for t in s.last_generated_ids if t != IM_END])


def test_streamed_audio_matches_the_numpy_streaming_path(tiny_f32, tiny_state):
    """Each 1-s user piece: simplex streaming mel (first piece front-padded to 1035 ms, no
    redundancy frames) -> Whisper with its key/value cache -> projector and pooling, the cache and
    the mel stream restarted for the second user turn."""
    sd, cfg = tiny_state
    aref = AudioReference(sd, cfg["audio_config"]["encoder_attention_heads"])
    filters = slaney_mel_filters(201, 80, 16000, 0.0, 8000.0)
    s = _session(tiny_f32)
    n_embd = _testing.hooks(s).model.n_embd
    s.streaming_prefill({"role": "system", "content": SYSTEM})
    turns = [[_speechlike(12000, 3), _speechlike(16000, 4), _speechlike(16000, 5)],  # first piece padded
             [_speechlike(16560, 6), _speechlike(16000, 7)]]
    worst = 0.0
    for t, turn in enumerate(turns):
        mel = StreamingMelReference(filters, feed="simplex", redundancy_frames=0)
        whisper = StreamingWhisperReference(aref)
        for k, pcm in enumerate(turn):
            s.streaming_prefill({"role": "user", "content": [pcm] if k else ["Turn %d." % t, pcm]})
            mel.push(pcm)
            chunk = mel.chunks[-1]
            assert chunk.mel.shape[1] == 100 and chunk.prefix_frames == chunk.suffix_frames == 0
            want = whisper.push_embeddings(chunk.mel.astype(np.float32))
            got = np.asarray(_testing.hooks(s).simplex.last_audio_rows).reshape(-1, n_embd)
            assert got.shape == want.shape == (10, n_embd)
            err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
            worst = max(worst, err)
        list(s.streaming_generate(generate_audio=False, do_sample=False, max_new_tokens=2))
    # float32 runtime vs float64 mel + float32 numpy encoder: measured 2.6e-7 (summation order);
    # 1e-5 still catches a Whisper cache not restarted per turn (8e-2) or a wrong padding
    assert worst < tol(1e-5), worst


def test_streamed_text_turn_equals_chat(tiny_f32, tiny_ref):
    """A text-only turn streamed in two pieces decodes what chat() decodes for the same
    conversation with the spoken-reply template (same prompt tokens, greedy, same penalty).
    Pieces are split where the tokenizer splits anyway ("there" | " how"): the official code
    tokenizes each piece on its own. Audio turns are not compared: streaming encodes each second
    with the streaming mel and the Whisper key/value cache, chat() the whole audio with a batch mel
    and block-causal attention, so their embeddings differ."""
    n_new = 24
    st = _session(tiny_f32)
    st.streaming_prefill({"role": "system", "content": SYSTEM})
    _user_pieces(st, ["Hello there", [" how are you?"]])
    streamed = "".join(st.streaming_generate(generate_audio=False, do_sample=False, max_new_tokens=n_new))
    streamed_ids = st.last_generated_ids

    ch = _session(tiny_f32)
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello there how are you?"}]
    chat_text = ch.chat(msgs, do_sample=False, max_new_tokens=n_new, use_tts_template=True)
    chat_ids = ch.last_generated_ids
    assert _testing.hooks(st).kv_tokens[:len(ch.prompt_token_ids(msgs, use_tts_template=True))] == \
        ch.prompt_token_ids(msgs, use_tts_template=True)
    # the streamed reply also stops at <|tts_eos|> / <unk>; chat() only at <|im_end|>
    stops = [i for i, t in enumerate(chat_ids) if t in (TTS_EOS, UNK)]
    cut = stops[0] + 1 if stops else len(chat_ids)
    # The two runs prefill the same prompt in other batches (pieces vs whole), where float32 kernels
    # may round differently (~1e-6 relative, test_llm_logits): their greedy ids are equal, unless they
    # part at a near tie, where both picks must be maxima of the float64 reference's penalised logits
    # within test_sampling's tolerance (GREEDY_TIE of the logit scale).
    k = next((i for i, (a, b) in enumerate(zip(streamed_ids, chat_ids[:cut])) if a != b), None)
    if k is not None:
        prompt = ch.prompt_token_ids(msgs, use_tts_template=True)
        raw = reference_steps(tiny_ref, prompt, chat_ids[:k + 1])[k]
        lg = penalise(raw, chat_ids[:k], 1.02)  # chat()'s and streaming_generate()'s default penalty
        for t in (streamed_ids[k], chat_ids[k]):
            assert lg[t] >= lg.max() - tolerance(raw, 1.02), (k, streamed_ids, chat_ids)
        print(f"streamed and chat() replies part at step {k} on a near tie")
    else:
        assert streamed_ids == chat_ids[:cut]
        if not stops:
            assert streamed == chat_text

    # the spoken path decodes the same text
    sp = _session(tiny_f32)
    sp.streaming_prefill({"role": "system", "content": SYSTEM})
    _user_pieces(sp, ["Hello there", [" how are you?"]])
    spoken = list(sp.streaming_generate(do_sample=False, max_new_tokens=n_new, max_speech_tokens=SPEECH_PER_CHUNK))
    assert "".join(p for p, _ in spoken) == streamed
    assert sp.last_generated_ids == streamed_ids


def test_streaming_bad_inputs(tiny_f32):
    s = _session(tiny_f32)
    with pytest.raises(MinicpmoError, match="no user turn"):
        s.streaming_generate()  # before any prefill
    with pytest.raises(MinicpmoError, match="empty"):
        s.streaming_prefill({"role": "user", "content": []})
    with pytest.raises(MinicpmoError, match="role must be 'system', 'user' or 'assistant', got 'tool'"):
        s.streaming_prefill({"role": "tool", "content": "x"})
    with pytest.raises(MinicpmoError, match="one message at a time"):
        s.streaming_prefill([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    s.streaming_prefill({"role": "system", "content": SYSTEM})
    s.streaming_prefill({"role": "user", "content": "Hi."})
    with pytest.raises(MinicpmoError, match="system message can only open the conversation"):
        s.streaming_prefill({"role": "system", "content": "Again."})
    n = s.n_past
    with pytest.raises(MinicpmoError, match="16560 samples"):
        s.streaming_prefill({"role": "user", "content": [np.zeros(20000, np.float32)]})
    s.streaming_prefill({"role": "user", "content": [np.zeros(16000, np.float32)]})
    with pytest.raises(MinicpmoError, match="16000 samples"):
        s.streaming_prefill({"role": "user", "content": [np.zeros(8000, np.float32)]})
    with pytest.raises(MinicpmoError, match="at most one audio"):
        s.streaming_prefill({"role": "user", "content": [np.zeros(16000, np.float32)] * 2})
    with pytest.raises(MinicpmoError, match="assistant message takes text only"):
        s.streaming_prefill({"role": "assistant", "content": [np.zeros(16000, np.float32)]})
    assert s.n_past == n + 12  # the errors left the cache as it was; the good piece added 12
    with pytest.raises(MinicpmoError, match="unknown voice"):
        s.streaming_generate(voice="nobody")
    list(s.streaming_generate(generate_audio=False, do_sample=False, max_new_tokens=2))
    with pytest.raises(MinicpmoError, match="no user turn"):
        s.streaming_generate(generate_audio=False)  # twice in a row
    s.chat([{"role": "user", "content": "x"}], max_new_tokens=1)
    with pytest.raises(MinicpmoError, match="changed outside"):
        s.streaming_prefill({"role": "user", "content": "y"})
    s.reset()  # a reset starts a new streaming conversation
    s.streaming_prefill({"role": "user", "content": "y"})
    assert _testing.hooks(s).kv_tokens == s.tokenize("<|im_start|>user\ny")


@pytest.fixture(scope="module")
def simplex_demo(tmp_path_factory) -> Path:
    return build_c_demo("simplex_stream_demo", tmp_path_factory.mktemp("capi_simplex"))


def _turn(out: bytes, n: int) -> str:
    head = b"TURN%d " % n
    i = out.index(head) + len(head)
    j = out.index(b"\n", i)
    size = int(out[i:j])
    return out[j + 1:j + 1 + size].decode()


def test_c_api_gives_the_same_conversation(tiny_f32, simplex_demo, tmp_path):
    pcm = _speechlike(32000, 8)
    n_new = 15
    s = _session(tiny_f32)
    s.streaming_prefill({"role": "system", "content": SYSTEM})
    s.streaming_prefill({"role": "user", "content": ["Listen: ", pcm[:16000]]})
    s.streaming_prefill({"role": "user", "content": [pcm[16000:]]})
    pieces = list(s.streaming_generate(do_sample=False, max_new_tokens=n_new, max_speech_tokens=SPEECH_PER_CHUNK))
    s.streaming_prefill({"role": "user", "content": "And now?"})
    text2 = "".join(s.streaming_generate(generate_audio=False, do_sample=False, max_new_tokens=n_new))

    wav = tmp_path / "in.f32"
    pcm.tofile(wav)
    raw = tmp_path / "out.f32"
    res = subprocess.run([str(simplex_demo), str(tiny_f32[0]), str(wav), str(n_new), str(raw)], capture_output=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    out = res.stdout
    assert _turn(out, 1) == "".join(p for p, _ in pieces)
    assert _turn(out, 2) == text2
    chunks = [a for _, a in pieces if a.size]
    assert chunks
    # same code path and session setup: the same floats up to summation-order noise
    np.testing.assert_allclose(np.fromfile(raw, dtype=np.float32), np.concatenate(chunks), rtol=0, atol=1e-6)
    text = out.decode(errors="replace")
    assert f"N_PAST {s.n_past} CHUNKS {len(chunks)}" in text
    assert "NOTURN:invalid argument:" in text and "no user turn" in text
    assert "ROLE:invalid argument:" in text and "got 'tool'" in text
