"""Audio chat end to end on the tiny model: the prompt's token layout (spec §3.3 / §4.4: audio
placeholders, the <|tts_bos|> template), the audio embeddings injected at the <unk> span (checked
against the numpy references of the front end, the Whisper encoder and the LLM), KV-cache reuse,
the system prompt with a reference voice, the C API, the CLI and bad audio inputs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import minicpmo_cpp
from minicpmo_cpp import MinicpmoError, OmniSession, _testing

from audio_inputs import SR, chat_audio_token_count, speechlike, tiny_mel_filters
from c_demos import build_c_demo
from backend import SESSION, tol

PKG_DIR = Path(minicpmo_cpp.__file__).parent
UNK = 128244
AUDIO_START, AUDIO_END, TTS_BOS = 151697, 151699, 151703


@pytest.fixture(scope="module")
def asession(tiny_f32):
    return OmniSession(str(tiny_f32[0]), n_threads=2, **SESSION, n_ctx=4096, seed=0, kv_cache_type="f32")


@pytest.mark.parametrize("seconds", [0.09, 1.0, 1.035, 2.5, 7.3, 30.0])
def test_prompt_layout_matches_spec(asession, seconds):
    pcm = speechlike(seconds, 1)
    msgs = [{"role": "user", "content": [pcm, "Transcribe it."]}]
    n = chat_audio_token_count(pcm.size)
    literal = ("<|im_start|>user\n<|audio_start|>" + "<unk>" * n + "<|audio_end|>\nTranscribe it.<|im_end|>\n"
               "<|im_start|>assistant\n<think>\n\n</think>\n\n<|tts_bos|>")
    ids = asession.prompt_token_ids(msgs)
    assert ids == asession.tokenize(literal)
    assert ids.count(UNK) == n and ids[-1] == TTS_BOS
    assert asession.audio_token_count(pcm) == n
    assert asession.encode_audio(pcm).shape == (n, 64)


def test_omni_mode_and_mixed_media(asession):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(448, 448, 3), dtype=np.uint8)
    pcm = speechlike(1.0, 2)
    msgs = [{"role": "user", "content": [img, pcm, "What?"]}]
    ids = asession.prompt_token_ids(msgs, omni_mode=True, use_image_id=False, max_slice_nums=1)
    literal = ("<|im_start|>user\n<image>" + "<unk>" * 64 + "</image><|audio_start|>" + "<unk>" * 10 +
               "<|audio_end|>What?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n<|tts_bos|>")
    assert ids == asession.tokenize(literal)
    # without audio the template has no <|tts_bos|>; it can be forced either way
    assert asession.prompt_token_ids([{"role": "user", "content": "hi"}])[-1] != TTS_BOS
    assert asession.prompt_token_ids([{"role": "user", "content": "hi"}], use_tts_template=True)[-1] == TTS_BOS
    assert asession.prompt_token_ids(msgs, use_tts_template=False)[-1] != TTS_BOS


def test_system_prompt_with_reference_voice(asession, tmp_path):
    ref = speechlike(2.0, 4)
    sys_msg = asession.get_sys_prompt(ref_audio=ref, mode="audio_assistant", language="en")
    msgs = [sys_msg, {"role": "user", "content": "Hello"}]
    ids = asession.prompt_token_ids(msgs)
    literal = ("<|im_start|>system\nUse the voice in the audio prompt to synthesize new content.\n<|audio_start|>" +
               "<unk>" * 20 + "<|audio_end|>\nYou are a helpful assistant with the above voice style.<|im_end|>\n"
               "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n<|tts_bos|>")
    assert ids == asession.tokenize(literal)
    # a path names the voice file (a string is not text here)
    import soundfile as sf
    wav = tmp_path / "voice.wav"
    sf.write(wav, ref, SR, subtype="FLOAT")
    by_path = asession.get_sys_prompt(ref_audio=str(wav), mode="audio_assistant", language="en")
    assert asession.prompt_token_ids([by_path, msgs[1]]) == ids
    np.testing.assert_array_equal(by_path["content"][1], ref)
    assert asession.get_sys_prompt()["content"] == [
        "You are a helpful assistant. You can accept audio and text input and output voice and text."]
    with pytest.raises(MinicpmoError, match="reference audio"):
        asession.get_sys_prompt(mode="voice_cloning")
    with pytest.raises(MinicpmoError, match="mode"):
        asession.get_sys_prompt(ref, mode="singing")


def test_kv_cache_reuses_audio_across_turns(asession):
    pcm, other = speechlike(1.5, 5), speechlike(1.5, 6)
    greedy = dict(do_sample=False, repetition_penalty=1.0, max_new_tokens=4)
    asession.reset()
    msgs = [{"role": "user", "content": [pcm, "Transcribe it."]}]
    r1 = asession.chat(msgs, **greedy)
    last_unk = max(i for i, t in enumerate(asession.prompt_token_ids(msgs)) if t == UNK)
    msgs2 = msgs + [{"role": "assistant", "content": r1}, {"role": "user", "content": "More?"}]
    asession.chat(msgs2, **greedy)
    reused, _ = asession.last_prefill
    assert reused > last_unk  # the audio's positions stayed in the cache
    msgs3 = [{"role": "user", "content": [other, "Transcribe it."]}] + msgs2[1:]
    asession.chat(msgs3, **greedy)
    reused3, _ = asession.last_prefill
    assert reused3 <= asession.prompt_token_ids(msgs3).index(UNK)


@pytest.fixture(scope="module")
def audio_demo(tmp_path_factory) -> Path:
    return build_c_demo("audio_demo", tmp_path_factory.mktemp("capi_audio"), extra_libs=("-lm",))


def _reply(out: bytes, tag: str) -> str:
    m = re.search(rb"^" + tag.encode() + rb" (\d+)\n", out, re.M)
    assert m, out
    return out[m.end(): m.end() + int(m.group(1))].decode("utf-8")


def test_c_api_and_cli_match_python(tiny_f32, audio_demo, tmp_path):
    import soundfile as sf

    model = str(tiny_f32[0])
    pcm = speechlike(2.2, 7)
    raw, wav = tmp_path / "a.f32", tmp_path / "a.wav"
    raw.write_bytes(pcm.tobytes())
    sf.write(wav, pcm, SR, subtype="FLOAT")  # float WAV: the CLI decodes the very same samples
    prompt, n = "Please listen to the audio snippet carefully and transcribe the content.", 8
    s = OmniSession(model, n_threads=2, n_ctx=2048)
    expected = s.chat([{"role": "user", "content": [pcm, prompt]}], do_sample=False, repetition_penalty=1.0,
                      max_new_tokens=n)
    res = subprocess.run([str(audio_demo), model, str(raw), prompt, str(n)], capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert _reply(res.stdout, "REPLY") == expected
    assert _reply(res.stdout, "LOWLEVEL") == expected
    out = res.stdout.decode()
    assert re.search(r"^EMPTY:invalid argument:.*empty", out, re.M), out
    assert re.search(r"^NAN:invalid argument:.*NaN", out, re.M), out
    assert re.search(r"^SHORT:invalid argument:.*too short", out, re.M), out
    assert re.search(r"^COUNT:invalid argument:.*audio placeholder", out, re.M), out

    cli = shutil.which("minicpmo-cli")
    res = subprocess.run([cli, "-m", model, "--audio", str(wav), "-p", prompt, "-n", str(n), "--temp", "0",
                          "--repeat-penalty", "1", "-c", "2048", "-t", "2"], capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert res.stdout.decode() == expected + "\n"


def test_cli_bad_audio_files(tiny_f32, tmp_path):
    cli = shutil.which("minicpmo-cli")
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    for path in (tmp_path / "missing.wav", text):
        res = subprocess.run([cli, "-m", str(tiny_f32[0]), "--audio", str(path), "-p", "hi"], capture_output=True,
                             timeout=60)
        assert res.returncode == 1
        assert path.name in res.stderr.decode(), res.stderr.decode()


def test_bad_audio_inputs(asession):
    with pytest.raises(MinicpmoError, match="empty"):
        asession.encode_audio(np.zeros(0, np.float32))
    with pytest.raises(MinicpmoError, match="too short"):
        asession.chat([{"role": "user", "content": [np.zeros(160, np.float32), "hi"]}], max_new_tokens=1)
    with pytest.raises(MinicpmoError, match="NaN|finite"):
        asession.encode_audio(np.full(16000, np.nan, np.float32))
    with pytest.raises(MinicpmoError, match="float32"):
        _testing.hooks(asession).encode_audio(np.zeros(16000, np.float64), "block")
    with pytest.raises(MinicpmoError, match="1-D"):
        _testing.hooks(asession).encode_audio(np.zeros((16000, 2), np.float32), "block")
    with pytest.raises(MinicpmoError, match="placeholder"):
        _testing.hooks(asession).prefill_media("<audio>./</audio>", [], [], -1, [])


def test_two_sessions_one_model_same_embeddings(tiny_f32):
    a = OmniSession(str(tiny_f32[0]), n_threads=1, n_ctx=512)
    b = OmniSession(str(tiny_f32[0]), n_threads=2, n_ctx=512)
    pcm = speechlike(1.2, 8)
    np.testing.assert_allclose(a.encode_audio(pcm), b.encode_audio(pcm), rtol=0, atol=1e-5)  # thread count only


# ---- numbers against the references (front end + Whisper encoder + Qwen3), F32 model ----

@pytest.fixture(scope="module")
def aref(tiny_state):
    from reference.audio import AudioReference

    sd, cfg = tiny_state
    return AudioReference(sd, cfg["audio_config"]["encoder_attention_heads"])


def _reference_chat_embedding(aref, filters, pcm) -> np.ndarray:
    """The official chat path on one audio: batch log-mel per 30-s piece, each piece encoded with
    block-causal attention in a batch padded to the longest piece, projected and pooled."""
    from reference.audio_frontend import batch_log_mel

    mel, counts = batch_log_mel(pcm, filters.astype(np.float64))
    pieces = np.split(mel.astype(np.float32), np.cumsum(counts)[:-1], axis=1)
    return aref.chat_embedding(pieces)


@pytest.mark.parametrize("seconds", [2.37, 45.49])
def test_encode_audio_matches_reference(asession, aref, tiny_f32, seconds):
    """PCM -> embeddings through the runtime's front end + encoder = the numpy references
    (F32 model: 1e-4 relative; the front ends agree to ~1e-7, see test_audio_frontend). 45.49 s
    is two pieces; the second one is padded like the official batch (see tests/reference/audio.py)."""
    pcm = speechlike(seconds, 11)
    got = asession.encode_audio(pcm)
    want = _reference_chat_embedding(aref, tiny_mel_filters(tiny_f32), pcm)
    n_want = chat_audio_token_count(min(pcm.size, 480000)) + chat_audio_token_count(max(pcm.size - 480000, 0))
    assert got.shape == want.shape == (n_want, 64)
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert err < tol(1e-4), err


def test_chat_logits_match_reference(asession, aref, tiny_f32, tiny_ref):
    """Greedy audio chat's first-step logits = the numpy Qwen3 reference on token embeddings with the
    reference audio rows at the <unk> span (F32 model, F32 KV: 1e-4 relative, as the text test)."""
    pcm = speechlike(3.1, 12)
    msgs = [{"role": "user", "content": ["Please listen to the audio snippet carefully and transcribe the content.",
                                         pcm]}]
    ids = asession.prompt_token_ids(msgs)
    rows = _reference_chat_embedding(aref, tiny_mel_filters(tiny_f32), pcm)
    embd = tiny_ref.embed[np.asarray(ids)].copy()
    pos = [i for i, t in enumerate(ids) if t == UNK]
    assert len(pos) == rows.shape[0]
    embd[pos] = rows
    ref_logits, _ = tiny_ref.forward_embeddings(embd, logits_all=False)
    asession.reset()
    asession.chat(msgs, max_new_tokens=0)
    got = _testing.hooks(asession).last_logits()[0]
    err = np.max(np.abs(got - ref_logits[0])) / np.max(np.abs(ref_logits[0]))
    assert err < tol(1e-4), err


@pytest.mark.parametrize("feed,redundancy", [("simplex", 0), ("duplex", 2)])
def test_streaming_pcm_pipeline_matches_reference(asession, aref, tiny_f32, feed, redundancy):
    """1-s PCM pieces -> streaming mel (C++) -> encoder with its key/value cache, against the
    streaming references of both stages: each chunk's tokens within 1e-4 (F32 model)."""
    from reference.audio import StreamingWhisperReference
    from reference.audio_frontend import StreamingMelReference

    filters = tiny_mel_filters(tiny_f32)
    pcm = speechlike(8.0, 13)
    mel_rt = _testing.StreamingMel(filters, feed=feed, redundancy_frames=redundancy)
    mel_ref = StreamingMelReference(filters.astype(np.float64), feed=feed, redundancy_frames=redundancy)
    enc_ref = StreamingWhisperReference(aref)
    s = _testing.hooks(asession)
    s.audio_stream_reset()
    n_chunks = 0
    for start in range(0, pcm.size, 16000):
        piece = np.ascontiguousarray(pcm[start:start + 16000])
        mel_rt.push(piece)
        mel_ref.push(piece)
        while (c := mel_rt.next_chunk()) is not None:
            r = mel_ref.chunks[n_chunks]
            np.testing.assert_allclose(c["mel"], r.mel, rtol=0, atol=1e-5)
            tokens, _ = s.audio_stream_chunk(c["mel"], c["prefix_frames"], c["suffix_frames"])
            want_h = enc_ref.push(r.mel.astype(np.float32), r.prefix_frames, r.suffix_frames)
            want = aref.project_and_pool(want_h)
            assert tokens.shape == want.shape and tokens.shape[0] == 10
            assert np.max(np.abs(tokens - want)) / np.max(np.abs(want)) < 1e-4
            n_chunks += 1
    assert n_chunks >= 6
