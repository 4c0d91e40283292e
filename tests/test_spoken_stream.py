"""Streamed spoken replies (spec §6.1 pipeline): chat(stream=True, generate_audio=True) and the C
API's minicpmo_session_chat_spoken on the tiny model, against independent pieces:
- the reply text equals the non-streamed greedy reply (the LLM is checked against numpy elsewhere);
- the speech tokens equal the numpy StreamingTTS reference (tests/reference/tts.py) fed with the
  reply's tokens and captured hidden rows in 10-token chunks, the last one with text_eos;
- the audio equals streaming Token2Wav over those reference tokens (that component is checked
  sample for sample against the numpy TokenStreamer in test_speech_stream_runtime.py), chunk by
  chunk: 24000 samples per second of speech, the rest at the end."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from minicpmo_cpp import MinicpmoError, OmniSession, _testing

from c_demos import build_c_demo

from reference.tts import StreamingTTS
from backend import DEVICE

PROMPT = "Say something."
SPEECH_PER_CHUNK = 30  # speech tokens per text chunk: the tiny random TTS rarely samples EOS
CHUNK_SAMPLES = 24000  # 25 speech tokens = 50 mel frames x 480 samples
# F32 everywhere (model, KV cache): the same computation in the same order, but the streamed path
# and the component path run different graph sizes, so allow float32 rounding.
AUDIO_ATOL = 1e-5


def _session(tiny_f32) -> OmniSession:
    return OmniSession(str(tiny_f32[0]), n_threads=2, n_ctx=2048, kv_cache_type="f32")


def _reply_with_hidden(tiny_f32, n_new: int):
    """Greedy reply ids and their captured hidden rows, generated without streaming."""
    s = _session(tiny_f32)
    core = _testing.hooks(s)
    core.prefill(s.tokenize(s.apply_chat_template([{"role": "user", "content": PROMPT}], use_tts_template=True)))
    core.begin_generation(False, 1.0, 1.0, 0, 1.0, 0, n_new, capture_hidden=True)
    text = []
    while True:
        more, piece = core.step()
        text.append(piece)
        if not more:
            break
    return "".join(text), list(core.last_generated), core.generated_hidden()


def _reference_speech_tokens(tiny_tts_ref, ids, hidden):
    """The official streaming layout: 10-token text chunks, the final one with text_eos (a reply
    that ends on a chunk boundary has none), then the decoder's unreleased rest."""
    tts = StreamingTTS(tiny_tts_ref, max_new_tokens_per_chunk=SPEECH_PER_CHUNK)
    out = []
    n = len(ids)
    for start in range(0, n, 10):
        final = start + 10 >= n and n % 10 != 0
        r = tts.feed_text_chunk(ids[start:start + 10], hidden[start:start + 10].astype(np.float64), final)
        for block, _last in r.released:
            out += list(block)
    return out + tts.flush()  # the unreleased rest (a chunk cut at the token limit keeps one)


def _token2wav_stream(tiny_f32, tokens):
    """Streaming Token2Wav over `tokens` with the generator seed a fresh session's synthesizer has
    (0), fed in 25-token blocks as the TTS releases them: the chunks it releases, then the rest."""

    synth = _testing.SpeechSynthesizer(str(tiny_f32[1]), n_threads=2, device=DEVICE, seed=0)
    synth.stream_begin("")
    chunks = []
    for start in range(0, len(tokens), 25):
        chunks += synth.stream_push(tokens[start:start + 25])
    rest = synth.stream_finish()
    return chunks + ([rest] if rest.size else [])


@pytest.mark.parametrize("n_new", [25, 20])
def test_streamed_spoken_reply_matches_the_pipeline_references(tiny_f32, tiny_tts_ref, n_new):
    """25 reply tokens: chunks of 10, 10 and a final 5; 20: two full chunks then a flush."""
    want_text, ids, hidden = _reply_with_hidden(tiny_f32, n_new)
    assert len(ids) == n_new and 151704 not in ids  # a random model does not say <|tts_eos|>
    want_tokens = _reference_speech_tokens(tiny_tts_ref, ids, hidden)
    want_chunks = _token2wav_stream(tiny_f32, want_tokens)

    s = _session(tiny_f32)
    pieces = list(s.chat([{"role": "user", "content": PROMPT}], stream=True, generate_audio=True, do_sample=False,
                         repetition_penalty=1.0, max_new_tokens=n_new, max_speech_tokens=SPEECH_PER_CHUNK))
    assert "".join(p for p, _ in pieces) == want_text
    chunks = [a for _, a in pieces if a.size]
    assert all(a.dtype == np.float32 for a in chunks)
    got = np.concatenate(chunks)
    want = np.concatenate(want_chunks)
    # 3 silence tokens lead every utterance, 2 mel frames x 480 samples per token, and HiFT's first
    # chunk starts with its 3840-sample cross-fade length of zeros
    assert got.shape == want.shape == ((3 + len(want_tokens)) * 960 + 3840,)
    assert [c.size for c in chunks[:-1]] == [CHUNK_SAMPLES] * (len(chunks) - 1)
    np.testing.assert_allclose(got, want, rtol=0, atol=AUDIO_ATOL)


def test_audio_arrives_while_the_reply_is_decoded(tiny_f32):
    """The first second of speech comes out after the first text chunk, before the reply ends."""
    s = _session(tiny_f32)
    it = s.chat([{"role": "user", "content": PROMPT}], stream=True, generate_audio=True, do_sample=False,
                max_new_tokens=40, max_speech_tokens=SPEECH_PER_CHUNK)
    n_text_before_audio = 0
    for piece, audio in it:
        if audio.size:
            break
        n_text_before_audio += 1
    else:
        pytest.fail("no audio")
    assert audio.size == CHUNK_SAMPLES
    assert 1 <= n_text_before_audio <= 11  # after the first 10-token chunk, not at the end (40 tokens)
    rest = list(it)
    assert any(a.size for _, a in rest)


def test_streamed_reply_writes_a_wav_and_sampled_runs_repeat(tiny_f32, tmp_path):
    import soundfile as sf

    out = tmp_path / "streamed.wav"
    msgs = [{"role": "user", "content": PROMPT}]
    runs = []
    for path in (out, None):
        s = _session(tiny_f32)
        pieces = list(s.chat(msgs, stream=True, generate_audio=True, seed=7, max_new_tokens=12,
                             max_speech_tokens=SPEECH_PER_CHUNK, output_audio_path=path))
        runs.append(np.concatenate([a for _, a in pieces if a.size]))
    np.testing.assert_array_equal(runs[0], runs[1])  # same seed: same text, speech tokens and noise
    back, rate = sf.read(out, dtype="float32")
    assert rate == 24000
    np.testing.assert_array_equal(back, runs[0])


def test_streamed_speech_bad_inputs(tiny_f32):
    s = _session(tiny_f32)
    msgs = [{"role": "user", "content": PROMPT}]
    with pytest.raises(MinicpmoError, match="nobody"):
        next(iter(s.chat(msgs, stream=True, generate_audio=True, voice="nobody", max_new_tokens=3)))
    with pytest.raises(MinicpmoError, match="max_speech_tokens"):
        s.chat(msgs, stream=True, generate_audio=True, max_speech_tokens=0)
    # an abandoned stream does not spoil the next one
    it = s.chat(msgs, stream=True, generate_audio=True, do_sample=False, max_new_tokens=30,
                max_speech_tokens=SPEECH_PER_CHUNK)
    next(it)
    r = s.chat(msgs, generate_audio=True, do_sample=False, max_new_tokens=3, max_speech_tokens=SPEECH_PER_CHUNK)
    assert r.audio.size > 0
    with pytest.raises(MinicpmoError, match="abandoned"):
        next(it)


@pytest.fixture(scope="module")
def spoken_demo(tmp_path_factory) -> Path:
    return build_c_demo("spoken_stream_demo", tmp_path_factory.mktemp("capi_spoken"))


def test_c_api_streams_the_same_spoken_reply(tiny_f32, spoken_demo, tmp_path):
    s = _session(tiny_f32)
    pieces = list(s.chat([{"role": "user", "content": PROMPT}], stream=True, generate_audio=True, do_sample=False,
                         repetition_penalty=1.0, max_new_tokens=25, max_speech_tokens=SPEECH_PER_CHUNK))
    raw = tmp_path / "c.f32"
    res = subprocess.run([str(spoken_demo), str(tiny_f32[0]), PROMPT, "25", str(raw)], capture_output=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    out = res.stdout.decode()
    text = "".join(p for p, _ in pieces)
    assert out.startswith(text + "\nREPLY_BYTES %d " % len(text.encode()))
    chunks = [a for _, a in pieces if a.size]
    sizes = [int(l.split()[1]) for l in res.stderr.decode().splitlines() if l.startswith("CHUNK")]
    assert sizes[:len(chunks)] == [c.size for c in chunks]
    audio = np.fromfile(raw, dtype=np.float32)
    np.testing.assert_allclose(audio, np.concatenate(chunks), rtol=0, atol=1e-6)  # same code path, same session setup
    assert "STOPPED ok 1" in out  # stopped by the callback after its first chunk, not an error
    voice_line = next(l for l in out.splitlines() if l.startswith("VOICE:"))
    assert voice_line.startswith("VOICE:invalid argument") and "nobody" in voice_line
    assert "NOCALLBACK:" in out and "on_audio is NULL" in out
