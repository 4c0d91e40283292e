"""The C API's pull-style reply (minicpmo_session_start_reply / minicpmo_reply_next /
minicpmo_reply_stop): the reply pipeline every front end drives, pulled chunk by chunk, must hand
out exactly what the callback calls deliver for the same greedy request (those are checked against
the numpy / torch references in test_spoken_stream.py, test_tts_runtime.py and the chat tests):
text equal to minicpmo_session_chat, streamed speech equal to minicpmo_session_chat_spoken, whole
speech equal to minicpmo_session_speak_reply; a stop ends the text (its speech still comes) or drops
the speech; another request abandons a reply by name."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from c_demos import build_c_demo

PROMPT = "Say something."
N_PREDICT = 25


@pytest.fixture(scope="module")
def pulled(tiny_f32, tmp_path_factory):
    out = tmp_path_factory.mktemp("reply_pull")
    exe = build_c_demo("reply_pull_demo", out)
    res = subprocess.run([str(exe), str(tiny_f32[0]), PROMPT, str(N_PREDICT), str(out)], capture_output=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    lines = res.stdout.decode().splitlines()
    return out, {l.split(maxsplit=1)[0].split(":")[0]: l for l in lines}


def test_pulled_text_is_the_chat_reply(pulled):
    _, lines = pulled
    assert lines["TEXT_SAME"].split()[1:4] == ["1", "AUDIO", "0"], lines["TEXT_SAME"]


def test_pulled_streamed_speech_is_chat_spoken(pulled):
    out, lines = pulled
    _, same, _, n_pull, n_callback = lines["STREAMED_TEXT_SAME"].split()
    assert same == "1" and int(n_pull) == int(n_callback) > 0
    pull = np.fromfile(out / "pull_streamed.f32", np.float32)
    callback = np.fromfile(out / "callback_streamed.f32", np.float32)
    # the same code path on the same settings: equal samples (atol for float32 rounding only)
    np.testing.assert_allclose(pull, callback, rtol=0, atol=1e-6)


def test_pulled_whole_speech_is_speak_reply(pulled):
    out, lines = pulled
    _, same, _, n_pull, n_callback = lines["WHOLE_TEXT_SAME"].split()
    assert same == "1" and int(n_pull) == int(n_callback) > 0
    pull = np.fromfile(out / "pull_whole.f32", np.float32)
    callback = np.fromfile(out / "callback_whole.f32", np.float32)
    np.testing.assert_allclose(pull, callback, rtol=0, atol=1e-6)  # same path; float32 rounding only


def test_stop_ends_the_text_then_the_speech(pulled):
    _, lines = pulled
    # stopped after two text pieces: a shorter prefix of the reply, still spoken, "cancelled"
    assert lines["STOP_TEXT_PREFIX"].split()[1:] == ["1", "SHORTER", "1", "AUDIO", "1", "FINISH", "cancelled"]
    # stopped once the text was done: the whole text, no speech
    assert lines["STOP_SPEECH_TEXT_SAME"].split()[1:] == ["1", "AUDIO", "0", "FINISH", "cancelled"]


def test_another_request_abandons_a_reply(pulled):
    _, lines = pulled
    assert lines["ABANDONED"].startswith("ABANDONED:invalid argument:") and "abandoned" in lines["ABANDONED"]
    # freeing the abandoned reply did not stop the new one
    assert lines["SECOND_SAME"].split()[1] == "1" and lines["SECOND_SAME"].split()[3] in ("stop", "length")


def test_bad_arguments_are_errors(pulled):
    _, lines = pulled
    assert lines["BADSPEECH"].startswith("BADSPEECH:invalid argument:") and "speech must be" in lines["BADSPEECH"]
    assert lines["VOICE"].startswith("VOICE:invalid argument:") and "nobody" in lines["VOICE"]
    assert lines["NULLREPLY"] == "NULLREPLY:invalid argument"
