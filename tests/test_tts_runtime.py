"""The runtime's speech-token decoder (TTS) against the numpy reference (tests/reference/tts.py) on
the tiny model's own weights: condition rows, logits step by step through the key/value cache
(including a gap in positions), and whole chat-layout generations, greedy and with injected
uniform draws, token for token."""

from __future__ import annotations

import numpy as np
import pytest

from minicpmo_cpp import MinicpmoError, OmniSession, _testing

from reference.tts import generate_chat
from relative_error import rel
from tts_choices import follow_runtime
from tts_inputs import text_chunk
from backend import SESSION, tol

# F32 model vs float64 numpy: summation order and float32 rounding (~1e-6 measured); 1e-4 relative
# leaves room for the longer sums. F16 matrices round every weight to 11 bits: 2e-2 relative.
# tol(): the test backend's float floor where larger (tests/backend.py; the CPU keeps these)
TOL = {"f32": tol(1e-4), "f16": tol(2e-2)}
# The converter's default TTS matrices are Q8_0 in an f16 file: each weight within 0.57 of its
# block's step (amax / 127), ~20x F16's rounding error: measured 2.8e-2 (F16 1.4e-3) on the tiny model.
TOL_Q8_0 = tol(5e-2)


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_condition_rows(tiny_sessions, tiny_tts_ref, kind):
    ids, hidden = text_chunk(9, 1)
    got = tiny_sessions[kind].tts_condition_rows(ids.tolist(), hidden)
    assert rel(got, tiny_tts_ref.condition_rows(ids, hidden)) < TOL[kind]
    extra = tiny_sessions[kind].tts_text_rows([151692, 151687])
    assert rel(extra, np.concatenate([tiny_tts_ref.text_eos_row(), tiny_tts_ref.audio_bos_row()])) < TOL[kind]


@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_logits_step_by_step(tiny_sessions, tiny_tts_ref, kind):
    """The condition block at 0..L-1, then codes one by one, then a second block after a gap of one
    position (the streaming layout's never-fed sample): logits of each call's last row."""
    _check_logits_step_by_step(tiny_sessions[kind], tiny_tts_ref, TOL[kind])


def test_logits_step_by_step_default_q8_0_tts(tiny_f16_default, tiny_tts_ref):
    """The same through the converter's default companion: Q8_0 TTS matrices beside F16 ones."""
    s = _testing.hooks(OmniSession(str(tiny_f16_default[0]), n_threads=2, **SESSION, n_ctx=512))
    _check_logits_step_by_step(s, tiny_tts_ref, TOL_Q8_0)


def _check_logits_step_by_step(s, tiny_tts_ref, bound):
    worst = 0.0

    def check(got, want, what):
        nonlocal worst
        worst = max(worst, rel(got, want))
        assert rel(got, want) < bound, (what, rel(got, want))

    ids, hidden = text_chunk(6, 2)
    cond = np.concatenate([tiny_tts_ref.condition_rows(ids, hidden), tiny_tts_ref.text_eos_row(), tiny_tts_ref.audio_bos_row()])
    rows = cond.astype(np.float32)
    cache = tiny_tts_ref.new_cache()
    s.tts_reset()
    L = rows.shape[0]
    got = s.tts_forward_rows(rows, list(range(L)))[0]
    want = tiny_tts_ref.logits(tiny_tts_ref.forward(rows, list(range(L)), cache)[-1:])[0]
    check(got, want, "condition")
    pos = L
    for code in (17, 4218, 6560, 3):
        got = s.tts_forward_code(code, pos)[0]
        want = tiny_tts_ref.logits(tiny_tts_ref.forward(tiny_tts_ref.code_rows([code]), [pos], cache)[-1:])[0]
        check(got, want, code)
        pos += 1
    more = rows[:3]
    got = s.tts_forward_rows(more, [pos + 1, pos + 2, pos + 3])[0]
    want = tiny_tts_ref.logits(tiny_tts_ref.forward(more, [pos + 1, pos + 2, pos + 3], cache)[-1:])[0]
    check(got, want, "after the gap")
    print(f"worst logits rel {worst:.2e} (bound {bound:.0e})")


def test_chat_generation_greedy_and_sampled(tiny_sessions, tiny_tts_ref, monkeypatch):
    """Token-for-token equality with the reference's chat layout on the F32 model: greedy, and with
    the same injected uniform draws (one per step, EOS masked for the first 50 steps, processors
    skipped on step 0). The reference follows the runtime's tokens, each of which must be its own
    choice or a near tie within the F32 logit tolerance (tests/tts_choices.py); the end (EOS or the
    limit) is the reference's own choice."""
    s = tiny_sessions["f32"]
    ids, hidden = text_chunk(12, 3)
    n = 120
    tokens, finished = s.tts_generate_chat(ids.tolist(), hidden, max_new_tokens=n)
    ties = [follow_runtime(monkeypatch, tokens, TOL["f32"])]
    want = generate_chat(tiny_tts_ref, ids, hidden, draws=None, max_new_tokens=n)
    assert tokens == want.tokens and finished == want.finished
    draws = np.random.default_rng(4).random(n).tolist()
    tokens, finished = s.tts_generate_chat(ids.tolist(), hidden, draws=draws, max_new_tokens=n)
    ties.append(follow_runtime(monkeypatch, tokens, TOL["f32"]))
    want = generate_chat(tiny_tts_ref, ids, hidden, draws=draws, max_new_tokens=n)
    assert tokens == want.tokens and finished == want.finished
    assert sum(t.not_own for t in ties) <= 1  # F32 near ties are rare (measured: none)
    assert len(set(tokens)) > 5  # sampling, not a constant
    assert all(0 <= t < 6561 for t in tokens)
    # a seeded run is reproducible
    a = s.tts_generate_chat(ids.tolist(), hidden, seed=7, max_new_tokens=60)
    b = s.tts_generate_chat(ids.tolist(), hidden, seed=7, max_new_tokens=60)
    assert a == b


def test_tts_bad_inputs(tiny_sessions):
    s = tiny_sessions["f32"]
    ids, hidden = text_chunk(3, 5)
    with pytest.raises(MinicpmoError, match="empty|no text"):
        s.tts_generate_chat([], np.zeros((0, 64), np.float32))
    with pytest.raises(MinicpmoError, match="speech token"):
        s.tts_forward_code(6562, 0)
    with pytest.raises(MinicpmoError, match="outside"):
        s.tts_condition_rows([152064], hidden[:1])
    with pytest.raises(MinicpmoError, match="shape"):
        s.tts_condition_rows(ids.tolist(), np.zeros((3, 7), np.float32))
    with pytest.raises(MinicpmoError, match="draws"):
        s.tts_generate_chat(ids.tolist(), hidden, draws=[0.5], max_new_tokens=5)


def test_reply_hidden_states_feed_the_tts(tiny_f32):
    """The LLM hidden rows captured while generating a spoken reply are the final-norm hidden states
    at the positions where each reply token is the input (= a full forward over prompt + reply),
    which is what the TTS condition rows read (spec §5.1)."""
    s = OmniSession(str(tiny_f32[0]), n_threads=2, n_ctx=1024, kv_cache_type="f32")
    prompt = s.apply_chat_template([{"role": "user", "content": "Say something."}], use_tts_template=True)
    ids = s.tokenize(prompt)
    assert ids[-1] == 151703  # <|tts_bos|>
    core = _testing.hooks(s)
    core.prefill(ids)
    core.begin_generation(False, 1.0, 1.0, 0, 1.0, 0, 6, capture_hidden=True)
    while core.step()[0]:
        pass
    reply = list(core.last_generated)
    hidden = core.generated_hidden()
    assert hidden.shape == (len(reply), 64)
    # a random model never says <|tts_eos|>: the reply is spoken as far as it went, i.e. the TTS
    # conditions on every fed reply token with its captured hidden row
    tokens, _ = core.reply_speech_tokens(max_new_tokens=40)
    want, _ = core.tts_generate_chat(reply, hidden, max_new_tokens=40)
    assert tokens == want and len(tokens) == 39
    _, full_hidden = s.forward(ids + reply)
    np.testing.assert_allclose(hidden, full_hidden[len(ids):], rtol=0, atol=tol(1e-4) * np.abs(full_hidden).max())
    # without the spoken-reply template (or without captured states) there is nothing to speak
    plain = s.tokenize(s.apply_chat_template([{"role": "user", "content": "Hi"}]))
    core.prefill(plain)
    core.begin_generation(False, 1.0, 1.0, 0, 1.0, 0, 3)
    while core.step()[0]:
        pass
    with pytest.raises(MinicpmoError, match="spoken-reply template"):
        core.reply_speech_tokens()


def test_spoken_chat_end_to_end(tiny_f32, tiny_tts_ref, tmp_path):
    """chat(generate_audio=True): reply text, its speech tokens (= the reference TTS on the reply's
    hidden rows, greedy), Token2Wav audio at 24 kHz (2 mel frames x 480 samples per token), a WAV
    file soundfile reads back, and the same audio again from the same seed."""
    import soundfile as sf

    s = OmniSession(str(tiny_f32[0]), n_threads=2, n_ctx=1024, kv_cache_type="f32")
    msgs = [{"role": "user", "content": "Say something."}]
    out = tmp_path / "reply.wav"
    r = s.chat(msgs, do_sample=False, repetition_penalty=1.0, max_new_tokens=5, generate_audio=True,
               output_audio_path=out, max_speech_tokens=30)
    assert isinstance(r.text, str) and r.sample_rate == 24000
    reply = s.last_generated_ids
    hidden = _testing.hooks(s).generated_hidden()
    want = generate_chat(tiny_tts_ref, np.asarray(reply), hidden.astype(np.float64), draws=None, max_new_tokens=30)
    assert r.audio.dtype == np.float32 and r.audio.shape == (len(want.tokens) * 2 * 480,)
    assert np.all(np.isfinite(r.audio)) and np.max(np.abs(r.audio)) <= 0.99 + 1e-6
    back, rate = sf.read(out, dtype="float32")
    assert rate == 24000
    np.testing.assert_array_equal(back, r.audio)
    again = s.chat(msgs, do_sample=False, repetition_penalty=1.0, max_new_tokens=5, generate_audio=True,
                   max_speech_tokens=30)
    assert again.text == r.text
    assert _testing.hooks(s).voice_names == ["default"]
    with pytest.raises(MinicpmoError, match="voice"):
        s.chat(msgs, do_sample=False, max_new_tokens=2, generate_audio=True, voice="nobody", max_speech_tokens=30)


def test_cli_speak_matches_python(tiny_f32, tmp_path):
    """minicpmo-cli --speak writes the same 24 kHz audio the Python API returns (greedy text and
    speech tokens, the sessions' default noise seed), through the C API's speak_reply."""
    import shutil
    import subprocess

    import soundfile as sf

    model = str(tiny_f32[0])
    s = OmniSession(model, n_threads=2, n_ctx=2048)
    r = s.chat([{"role": "user", "content": "Hello"}], do_sample=False, repetition_penalty=1.0, max_new_tokens=4,
               generate_audio=True, max_speech_tokens=30)
    out = tmp_path / "cli.wav"
    cli = shutil.which("minicpmo-cli")
    res = subprocess.run([cli, "-m", model, "-p", "Hello", "-n", "4", "--temp", "0", "--repeat-penalty", "1", "-c", "2048",
                          "-t", "2", "--speak", str(out), "--max-speech-tokens", "30"], capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert res.stdout.decode() == r.text + "\n"
    audio, rate = sf.read(out, dtype="float32")
    assert rate == 24000
    np.testing.assert_allclose(audio, r.audio, rtol=0, atol=1e-6)
    res = subprocess.run([cli, "-m", model, "-p", "Hello", "-n", "2", "--speak", str(out), "--voice", "nobody",
                          "--max-speech-tokens", "30"], capture_output=True, timeout=300)
    assert res.returncode == 1 and "nobody" in res.stderr.decode()
    res = subprocess.run([cli, "-m", model, "-p", "Hello", "--voice", "default"], capture_output=True, timeout=60)
    assert res.returncode == 2 and "--speak" in res.stderr.decode()


def test_tts_reading_template(tiny_f32):
    """tts(text): the reading instruction + text in a user turn, the spoken-reply template, and audio
    whose length follows its speech tokens (2 mel frames x 480 samples each)."""
    s = OmniSession(str(tiny_f32[0]), n_threads=2, n_ctx=1024)
    r = s.tts("你好，世界。", do_sample=False, max_new_tokens=4, max_speech_tokens=20)
    literal = ("<|im_start|>user\n请朗读以下内容。你好，世界。<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
               "<|tts_bos|>")
    assert _testing.hooks(s).kv_tokens[: len(s.tokenize(literal))] == s.tokenize(literal)
    assert r.sample_rate == 24000 and r.audio.size % 960 == 0 and 0 < r.audio.size <= 19 * 960
    with pytest.raises(MinicpmoError, match="non-empty"):
        s.tts("  ")
