"""minicpmo-server (python/minicpmo_cpp/serve): a real uvicorn server on 127.0.0.1 driven by the
official ``openai`` client and by raw HTTP for what that client cannot send.

The reference for every number is the in-process API on the same files: a second OmniSession
(its own model load) answers the same request, and the server's reply must equal it -- greedy text
exactly, usage counts exactly, audio sample counts exactly and samples to 16-bit rounding. Both
sides use the F32 tiny model with an F32 KV cache, the exact path, so that a KV cache reused across
requests (the server keeps sessions warm) cannot flip a near-tie of the random model's logits.
"""

from __future__ import annotations

import base64
import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import wave
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openai  # the official client (test extra)
import pytest
import uvicorn  # the server extra, in the test extra too

from backend import SESSION
from minicpmo_cpp import OmniSession
from minicpmo_cpp.serve import ServerConfig, create_app

MODEL = "MiniCPM-o-4_5-F32"
HELLO = [{"role": "user", "content": "Hello"}]
BODY_LIMIT = 1 << 20  # the test server's request body limit (1 MiB)


class RunningServer:
    """uvicorn serving ``app`` on a free 127.0.0.1 port, in a thread of this process."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "the server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, **kw) -> "openai.OpenAI":
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self.sock.close()


def _session(paths) -> OmniSession:
    return OmniSession(str(paths[0]), n_threads=2, **SESSION, n_ctx=2048, seed=0, kv_cache_type="f32")


@pytest.fixture(scope="module")
def media_root(tmp_path_factory):
    return tmp_path_factory.mktemp("media_root")


@pytest.fixture(scope="module")
def server(tiny_f32, media_root):
    config = ServerConfig(model_path=str(tiny_f32[0]), max_sessions=2, max_queue=4, queue_timeout=60,
                          max_body_bytes=BODY_LIMIT, media_root=str(media_root))
    s = RunningServer(create_app(config, _session(tiny_f32)))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def ref(tiny_f32):
    """The in-process reference: a fresh session over its own load of the same files."""
    return _session(tiny_f32)


def _greedy(ref: OmniSession, msgs, **kw):
    reply = ref.chat(msgs, do_sample=False, **kw)
    reused, decoded = ref.last_prefill
    return reply, reused + decoded, len(ref.last_generated_ids)


def _raw(server, path, body: bytes | None = None, headers: dict | None = None, method: str | None = None):
    """(status, headers, parsed JSON or bytes) of a raw HTTP request."""
    req = urllib.request.Request(server.url + path, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, hdrs, data = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, data = e.code, e.headers, e.read()
    try:
        return status, hdrs, json.loads(data)
    except ValueError:
        return status, hdrs, data


def _wav_bytes(pcm: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.round(np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def _tone(seconds: float = 1.5) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-t)).astype(np.float32)


def _png(side: int = 40) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _int16(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)


# ---- routes, against the in-process reference ----

def test_models_and_health(server, ref):
    c = server.client()
    models = c.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert models[0].model_extra["voices"] == ref.voices == ["default"]
    assert c.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("another-model")
    status, _, body = _raw(server, "/health")
    assert status == 200 and body["status"] == "ok" and body["sessions"]["max"] == 2


def test_chat_text_equals_the_in_process_reply(server, ref):
    want, n_prompt, n_completion = _greedy(ref, HELLO, max_new_tokens=12)
    r = server.client().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0)
    assert r.choices[0].message.content == str(want)
    assert r.choices[0].finish_reason == "length" and want.finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (n_prompt, n_completion)
    assert r.usage.total_tokens == n_prompt + n_completion


def test_chat_stream_pieces_join_to_the_in_process_reply(server, ref):
    want, n_prompt, n_completion = _greedy(ref, HELLO, max_new_tokens=12)
    chunks = list(server.client().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0,
                                                          stream=True, stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == str(want)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].choices == [] and (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == \
        (n_prompt, n_completion)


def test_multi_turn_reuses_the_session_cache_and_stays_exact(server, ref):
    first, _, _ = _greedy(ref, HELLO, max_new_tokens=6)
    turn2 = HELLO + [{"role": "assistant", "content": str(first)}, {"role": "user", "content": "And then?"}]
    want, n_prompt, _ = _greedy(ref, turn2, max_new_tokens=8)
    c = server.client()
    c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6, temperature=0)
    r = c.chat.completions.create(model=MODEL, messages=turn2, max_tokens=8, temperature=0)
    assert r.choices[0].message.content == str(want)
    assert r.usage.prompt_tokens == n_prompt
    # the two sessions of the pool each may have served the first turn; either way part of the
    # prompt came from a cache (the system-less chat template's first tokens at least)
    assert 0 < r.usage.prompt_tokens_details.cached_tokens < n_prompt


def test_stop_sequences_cut_the_reply_where_the_in_process_text_has_them(server, ref):
    want = str(_greedy(ref, HELLO, max_new_tokens=16)[0])
    stop = want[len(want) // 2: len(want) // 2 + 3]
    assert stop and stop in want
    expect = want[:want.index(stop)]
    c = server.client()
    r = c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=16, temperature=0, stop=[stop, "\x00"])
    assert r.choices[0].message.content == expect and r.choices[0].finish_reason == "stop"
    chunks = c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=16, temperature=0, stop=stop, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == expect


def test_image_and_audio_inputs_equal_the_in_process_reply(server, ref, media_root):
    png, wav = _png(), _wav_bytes(_tone())
    (media_root / "pic.png").write_bytes(png)
    parts = [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}},
             {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav).decode(), "format": "wav"}},
             {"type": "text", "text": "What is this?"}]
    msgs = [{"role": "user", "content": parts}]
    want, n_prompt, _ = _greedy(ref, msgs, max_new_tokens=8)
    c = server.client()
    r = c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8, temperature=0)
    assert r.choices[0].message.content == str(want) and r.usage.prompt_tokens == n_prompt
    # the same image by a file:// URL under the server's media root
    parts[0] = {"type": "image_url", "image_url": {"url": (media_root / "pic.png").as_uri()}}
    r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": parts}], max_tokens=8,
                                  temperature=0)
    assert r.choices[0].message.content == str(want)


def test_spoken_reply_wav_equals_the_in_process_audio(server, ref):
    want = ref.chat(HELLO, do_sample=False, max_new_tokens=8, generate_audio=True, max_speech_tokens=60)
    r = server.client().chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=8, temperature=0, modalities=["text", "audio"],
        audio={"voice": "default", "format": "wav"}, extra_body={"max_speech_tokens": 60})
    msg = r.choices[0].message
    assert msg.content is None and msg.audio.transcript == want.text
    with wave.open(io.BytesIO(base64.b64decode(msg.audio.data))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        got = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert got.size == want.audio.size > 0
    # greedy speech tokens and the vocoder's fixed noise: the same samples, up to 16-bit rounding
    assert np.abs(got.astype(np.int32) - _int16(want.audio)).max() <= 1


def test_spoken_stream_pcm16_equals_the_in_process_stream(server, ref):
    stream = ref.chat(HELLO, stream=True, do_sample=False, max_new_tokens=24, generate_audio=True,
                      max_speech_tokens=30)
    want_text, want_audio = [], []
    for piece, chunk in stream:
        want_text.append(piece)
        want_audio.append(chunk)
    want = np.concatenate(want_audio)
    chunks = server.client().chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=24, temperature=0, stream=True, modalities=["text", "audio"],
        audio={"voice": "default", "format": "pcm16"}, extra_body={"max_speech_tokens": 30})
    text, pcm = [], []
    for ch in chunks:
        audio = ch.choices[0].delta.audio if ch.choices else None
        if audio is not None:
            text.append(audio.transcript or "")
            if audio.data:
                pcm.append(np.frombuffer(base64.b64decode(audio.data), "<i2"))
    got = np.concatenate(pcm)
    assert "".join(text) == "".join(want_text)
    assert got.size == want.size > 24000  # more than a second: several chunks went out
    assert np.abs(got.astype(np.int32) - _int16(want)).max() <= 1


def test_transcription_equals_the_in_process_asr_reply(server, ref):
    wav = _wav_bytes(_tone())
    msgs = [{"role": "user", "content": [{"type": "audio", "audio": wav},
                                         "Please listen to the audio snippet carefully and transcribe the content."]}]
    want = str(ref.chat(msgs, do_sample=False))
    c = server.client()
    r = c.audio.transcriptions.create(model=MODEL, file=("clip.wav", wav, "audio/wav"))
    assert r.text == want
    assert c.audio.transcriptions.create(model=MODEL, file=("clip.wav", wav, "audio/wav"),
                                         response_format="text") == want


def test_speech_wav_and_pcm_stream_equal_the_in_process_reading(server, ref):
    msgs = OmniSession.tts_messages("你好")
    opts = dict(generate_audio=True, max_new_tokens=1024, max_speech_tokens=50, seed=7)
    want = ref.chat(msgs, **opts)  # the route reads with tts()'s sampling, seeded here
    c = server.client()
    extra = {"max_speech_tokens": 50, "seed": 7}
    wav = c.audio.speech.create(model=MODEL, voice="default", input="你好", response_format="wav",
                                extra_body=extra).content
    with wave.open(io.BytesIO(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        got = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert got.size == want.audio.size > 0
    assert np.abs(got.astype(np.int32) - _int16(want.audio)).max() <= 1

    # streamed: the random model never ends its reading, so every 10-token text chunk adds speech up
    # to the cap; 10 keeps the speech decoder's 4096 rows enough for the 1024 text tokens
    opts["max_speech_tokens"] = extra["max_speech_tokens"] = 10
    want = np.concatenate([chunk for _, chunk in ref.chat(msgs, stream=True, **opts)])
    with c.audio.speech.with_streaming_response.create(model=MODEL, voice="default", input="你好",
                                                       response_format="pcm", extra_body=extra) as r:
        assert r.headers["content-type"] == "audio/pcm"
        got = np.frombuffer(b"".join(r.iter_bytes()), "<i2")
    assert got.size == want.size > 0
    assert np.abs(got.astype(np.int32) - _int16(want)).max() <= 1


# ---- load, limits, authentication ----

def test_four_concurrent_clients_get_the_in_process_replies(server, ref):
    prompts = [[{"role": "user", "content": f"Count to {k}"}] for k in range(4)]
    want = [str(_greedy(ref, p, max_new_tokens=10)[0]) for p in prompts]

    def ask(p):
        return server.client().chat.completions.create(model=MODEL, messages=p, max_tokens=10,
                                                       temperature=0).choices[0].message.content

    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(ask, prompts))
    assert got == want


def _hold(server, seconds_hint: str):
    """Starts a long spoken reply in a thread (it holds one session) and waits until the server
    says the session is busy; returns the thread."""
    def run():
        server.client(timeout=300).chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=8, temperature=0, modalities=["text", "audio"],
            audio={"voice": "default", "format": "wav"}, extra_body={"max_speech_tokens": 600})

    t = threading.Thread(target=run, name=seconds_hint)
    t.start()
    deadline = time.time() + 30
    while _raw(server, "/health")[2]["sessions"]["busy"] < 1:
        assert time.time() < deadline and t.is_alive(), "the long request never started"
        time.sleep(0.01)
    return t


@pytest.mark.parametrize("queue, expect", [(0, 429), (1, 503)])
def test_past_the_queue_429_and_past_the_wait_503_with_retry_after(tiny_f32, queue, expect):
    config = ServerConfig(model_path=str(tiny_f32[0]), max_sessions=1, max_queue=queue, queue_timeout=0.3,
                          retry_after=3)
    s = RunningServer(create_app(config, _session(tiny_f32)))
    try:
        holder = _hold(s, "holder")
        status, headers, body = _raw(s, "/v1/chat/completions", json.dumps(
            {"model": MODEL, "messages": HELLO, "max_tokens": 2}).encode(), {"Content-Type": "application/json"})
        assert holder.is_alive(), "the holding request ended too early for this test"
        assert status == expect and headers["Retry-After"] == "3"
        assert body["error"]["type"] == ("rate_limit_error" if expect == 429 else "server_error")
        if expect == 429:
            with pytest.raises(openai.RateLimitError):
                s.client().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
        holder.join()
        # the session is free again: the server serves
        assert s.client().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2).choices
    finally:
        s.stop()


def test_cli_server_with_api_key(tiny_f32):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "minicpmo_cpp.serve.cli", "-m", str(tiny_f32[0]), "--port",
                             str(port), "--api-key", "sekret", "-t", "2", "-c", "1024", "--device", SESSION["device"]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=5)
            except urllib.error.HTTPError as e:
                assert e.code == 401  # up, and the key is required even for /health
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.time() < deadline, "minicpmo-server did not start"
                time.sleep(0.2)
        bad = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=url + "/v1", api_key="sekret", max_retries=0)
        assert [m.id for m in good.models.list().data] == [MODEL]
        r = good.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=3)
        assert r.usage.completion_tokens == 3
        # the WebSocket takes the key as a query parameter too (browsers cannot set the header)
        server = type("S", (), {"url": url})
        with _ws(server, query="?api_key=sekret") as ws:
            ws.send(json.dumps({"type": "session.start", "generate_audio": False}))
            assert _recv_json(ws)["type"] == "session.started"
        with pytest.raises(Exception, match="403|1008"):
            with _ws(server, query="?api_key=wrong") as ws:
                ws.recv(timeout=30)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    # a graceful stop on SIGTERM (uvicorn then re-raises the signal: exit status 0 or -SIGTERM)
    assert proc.returncode in (0, -signal.SIGTERM) and "Finished server process" in out, out


# ---- bad requests: a 4xx JSON error each, and the server keeps serving ----

def _post(server, path, payload, **headers):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return _raw(server, path, body, {"Content-Type": "application/json", **headers})


def _chat(**fields):
    return {"model": MODEL, "messages": HELLO, "max_tokens": 2, **fields}


def _user(*parts):
    return {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": list(parts)}]}


def _image(url):
    return {"type": "image_url", "image_url": {"url": url}}


BAD_CHATS = {
    "malformed JSON": (b'{"model": "x", "messages": [', 400),
    "not UTF-8": (b'{"model": "\xff"}', 400),
    "not an object": ([1, 2], 400),
    "unknown model": (_chat(model="gpt-4o"), 404),
    "no messages": (_chat(messages=[]), 400),
    "bad role": (_chat(messages=[{"role": "tool", "content": "x"}]), 400),
    "n > 1": (_chat(n=2), 400),
    "tools": (_chat(tools=[{"type": "function", "function": {"name": "f"}}]), 400),
    "unknown field": (_chat(frobnicate=1), 400),
    "temperature out of range": (_chat(temperature=5), 400),
    "max_tokens not an int": (_chat(max_tokens="many"), 400),
    "unknown voice": (_chat(modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"}), 400),
    "streamed wav": (_chat(modalities=["text", "audio"], audio={"voice": "default", "format": "wav"}, stream=True), 400),
    "0-byte image": (_user(_image("data:image/png;base64,")), 400),
    "not an image": (_user(_image("data:image/png;base64," + base64.b64encode(b"hello").decode())), 400),
    "http image": (_user(_image("http://example.com/a.png")), 400),
    "file outside the media root": (_user(_image("file:///etc/passwd")), 403),
    "wrong audio format": (_user({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "xyz"}}), 400),
    "bad base64 audio": (_user({"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}), 400),
    "not audio": (_user({"type": "input_audio", "input_audio": {"data": base64.b64encode(b"x" * 400).decode(),
                                                                  "format": "wav"}}), 400),
    "unknown part": (_user({"type": "video_url", "video_url": {"url": "x"}}), 400),
}


@pytest.mark.parametrize("name", list(BAD_CHATS))
def test_bad_chat_requests_get_a_json_error(server, name):
    payload, status = BAD_CHATS[name]
    got, _, body = _post(server, "/v1/chat/completions", payload)
    assert got == status, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_oversized_bodies_get_413_and_the_server_keeps_serving(server):
    big = _user(_image("data:image/png;base64," + "A" * BODY_LIMIT))
    status, _, body = _post(server, "/v1/chat/completions", big)
    assert status == 413 and body["error"]["code"] == "request_too_large"

    # the same without a Content-Length (chunked upload): counted as it arrives
    def chunks():
        data = json.dumps(big).encode()
        for i in range(0, len(data), 1 << 16):
            yield data[i:i + (1 << 16)]

    conn = __import__("http.client").client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=chunks(), headers={"Content-Type": "application/json"},
                 encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 413 and json.loads(r.read())["error"]["code"] == "request_too_large"
    conn.close()
    assert server.client().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2).choices


def test_bad_audio_routes_and_unknown_paths(server):
    c = server.client()
    with pytest.raises(openai.BadRequestError, match="empty"):
        c.audio.transcriptions.create(model=MODEL, file=("a.wav", b"", "audio/wav"))
    with pytest.raises(openai.BadRequestError):
        c.audio.transcriptions.create(model=MODEL, file=("a.wav", b"not audio at all", "audio/wav"))
    with pytest.raises(openai.BadRequestError, match="language"):
        c.audio.transcriptions.create(model=MODEL, file=("a.wav", _wav_bytes(_tone(0.5)), "audio/wav"), language="xx")
    with pytest.raises(openai.BadRequestError, match="voice"):
        c.audio.speech.create(model=MODEL, voice="alloy", input="hi")
    with pytest.raises(openai.BadRequestError, match="response_format"):
        c.audio.speech.create(model=MODEL, voice="default", input="hi", response_format="mp3")
    with pytest.raises(openai.BadRequestError, match="input"):
        c.audio.speech.create(model=MODEL, voice="default", input="")
    status, _, body = _raw(server, "/v1/audio/transcriptions", b"plain", {"Content-Type": "text/plain"})
    assert status == 400 and "multipart" in body["error"]["message"]
    status, _, body = _raw(server, "/v1/nothing-here")
    assert status == 404 and body["error"]["message"]
    status, _, body = _raw(server, "/v1/chat/completions", method="GET")
    assert status == 405 and body["error"]["message"]
    assert c.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2).choices


def test_a_client_that_leaves_mid_stream_frees_its_session(server, ref):
    before = _raw(server, "/health")[2]["requests_served"]
    conn = __import__("http.client").client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(_chat(max_tokens=400, stream=True)),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200 and r.readline().startswith(b"data: ")
    conn.close()  # gone after the first event
    deadline = time.time() + 60
    while _raw(server, "/health")[2]["sessions"]["busy"]:
        assert time.time() < deadline, "the abandoned stream still holds its session"
        time.sleep(0.05)
    assert _raw(server, "/health")[2]["requests_served"] == before + 1
    want = str(_greedy(ref, HELLO, max_new_tokens=5)[0])
    r = server.client().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=5, temperature=0)
    assert r.choices[0].message.content == want


# ---- realtime duplex over a WebSocket ----

def _ws(server, **kw):
    from websockets.sync.client import connect

    return connect(server.url.replace("http", "ws") + "/v1/realtime" + kw.pop("query", ""), max_size=None,
                   open_timeout=30, **kw)


def _units(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [(0.1 * rng.standard_normal(16000)).astype(np.float32) for _ in range(n)]


def _recv_json(ws) -> dict:
    message = ws.recv(timeout=120)
    assert isinstance(message, str), "expected a JSON event"
    return json.loads(message)


def test_realtime_duplex_equals_the_in_process_duplex(server, ref):
    units = _units(4)
    d = ref.as_duplex(seed=5)
    d.prepare("<|im_start|>system\nStreaming Omni Conversation.\n<|audio_start|>", "<|audio_end|><|im_end|>")
    want = []
    for pcm in units:
        d.streaming_prefill(audio_waveform=pcm)
        want.append(d.streaming_generate(decode_mode="greedy"))
    d.as_simplex()
    with _ws(server) as ws:
        # frame_size readies the vision tower at the start; the results are the same
        ws.send(json.dumps({"type": "session.start", "decode_mode": "greedy", "seed": 5, "audio_format": "float32",
                            "frame_size": [640, 480]}))
        started = _recv_json(ws)
        assert started["type"] == "session.started" and started["sample_rate_out"] == 24000
        for pcm in units:
            ws.send(pcm.astype("<f4").tobytes())
        for k, w in enumerate(want):
            r = _recv_json(ws)
            assert r["type"] == "unit.result" and r["dropped_units"] == 0
            assert (r["is_listen"], r["text"], r["end_of_turn"], r["current_time"]) == \
                (w["is_listen"], w["text"], w["end_of_turn"], w["current_time"]), k
            audio = np.frombuffer(ws.recv(timeout=120), "<i2")
            assert audio.size == w["audio_waveform"].size >= 24000
            assert np.abs(audio.astype(np.int32) - _int16(w["audio_waveform"])).max() <= 1
        ws.send(json.dumps({"type": "session.close"}))
        with pytest.raises(Exception):  # the server closes after the last result
            ws.recv(timeout=30)
    _wait_idle(server)


def _wait_idle(server):
    deadline = time.time() + 60
    while _raw(server, "/health")[2]["sessions"]["busy"]:
        assert time.time() < deadline, "the realtime conversation still holds its session"
        time.sleep(0.05)


def test_realtime_bad_messages_interrupt_and_backlog(server):
    with _ws(server) as ws:
        ws.send("not json")
        assert _recv_json(ws)["code"] == "bad_message"
        ws.send(json.dumps({"type": "unit"}))  # before session.start
        assert "session.start" in _recv_json(ws)["message"]
        ws.send(json.dumps({"type": "session.start", "voice": "alloy"}))
        assert "voice" in _recv_json(ws)["message"]
        for size in ([640], [0, 480], [640, 480.5], "640x480", [640, 20000]):
            ws.send(json.dumps({"type": "session.start", "frame_size": size}))
            assert "frame_size must be [width, height]" in _recv_json(ws)["message"], size
        ws.send(json.dumps({"type": "session.start", "decode_mode": "greedy"}))  # pcm16 units
        assert _recv_json(ws)["type"] == "session.started"
        for bad in (b"\x01\x02\x03", b"\x00" * (2 * 16561), json.dumps({"type": "dance"}),
                    json.dumps({"type": "unit", "audio": "%%%"}), json.dumps({"type": "unit"})):
            ws.send(bad)
            assert _recv_json(ws)["code"] == "bad_message"
        ws.send(json.dumps({"type": "unit", "frame": base64.b64encode(b"not an image").decode()}))
        assert _recv_json(ws)["code"] == "bad_unit"  # a unit the model cannot take is skipped
        # 12 units at once: the backlog keeps at most 8 waiting, the oldest waiting go first
        pcm16 = [np.round(u * 32767).astype("<i2").tobytes() for u in _units(12)]
        for u in pcm16:
            ws.send(u)
        ws.send(json.dumps({"type": "interrupt"}))
        results, dropped, interrupted = 0, 0, False
        while results + dropped < 12:
            message = ws.recv(timeout=120)
            if isinstance(message, bytes):
                assert len(message) >= 2 * 24000
                continue
            event = json.loads(message)
            if event["type"] == "interrupted":
                interrupted = True
                continue
            assert event["type"] == "unit.result", event
            results += 1
            dropped += event["dropped_units"]
            assert 0 <= event["lag_units"] <= 8 and event["timing"]["compute_ms"] > 0
        assert results + dropped == 12 and results >= 8 and interrupted
    _wait_idle(server)


def test_realtime_client_that_vanishes_mid_unit_frees_its_session(server):
    with _ws(server) as ws:
        ws.send(json.dumps({"type": "session.start"}))
        assert _recv_json(ws)["type"] == "session.started"
        ws.send(np.zeros(16000, "<i2").tobytes())
        ws.socket.shutdown(socket.SHUT_RDWR)  # gone without a close handshake, the unit in flight
    _wait_idle(server)
    assert server.client().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2).choices


def test_a_client_that_stops_reading_blocks_only_its_own_conversation(server, ref):
    want = str(_greedy(ref, HELLO, max_new_tokens=4)[0])
    with _ws(server) as ws:
        ws.send(json.dumps({"type": "session.start", "decode_mode": "greedy"}))
        assert _recv_json(ws)["type"] == "session.started"
        for u in _units(12):  # 12 units of replies (about 1 MB of audio) that this client never reads
            ws.send(np.round(u * 32767).astype("<i2").tobytes())
        time.sleep(1.0)
        t = time.time()
        r = server.client().chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4, temperature=0)
        assert r.choices[0].message.content == want and time.time() - t < 30
    _wait_idle(server)
