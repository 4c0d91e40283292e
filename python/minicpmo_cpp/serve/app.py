"""The OpenAI-compatible HTTP server's routes (limits and authentication: serve/middleware.py).

Routes: ``GET /health``, ``GET /v1/models[/{id}]``, ``POST /v1/chat/completions`` (text, images,
audio in; text or text + speech out; server-sent events with ``stream``),
``POST /v1/audio/transcriptions``, ``POST /v1/audio/speech`` and the duplex WebSocket
``/v1/realtime`` (serve/realtime.py). Every reply is computed by
``OmniSession`` (the one reply pipeline in C++); this module only maps HTTP onto it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
import weakref
from pathlib import Path

import anyio
from fastapi import FastAPI, Request, WebSocket
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse

from .. import MinicpmoError
from ..session import OmniSession
from . import audio_out
from .chat_request import ChatCall, check_model, parse_chat_request
from .config import ServerConfig
from .errors import ApiError, bad_request, error_response
from .middleware import BearerAuth, BodyLimit
from .pool import SessionPool
from .realtime import realtime
from .stop_text import StopText

log = logging.getLogger("minicpmo_cpp.serve")

# the model's ASR instructions (the English one is README "Audio"'s): English unless the client says zh
ASR_PROMPTS = {"en": "Please listen to the audio snippet carefully and transcribe the content.",
               "zh": "请仔细听这段音频片段，并对其内容进行转录。"}
MAX_SPEECH_INPUT = 4096  # characters of /v1/audio/speech input, OpenAI's limit
WEB_DIR = Path(__file__).resolve().parent / "web"
WEB_FILES = {"app.js", "mic-worklet.js"}
FINISH = {"stop": "stop", "length": "length", "context": "length", "cancelled": "stop"}


def create_app(config: ServerConfig, session: OmniSession | None = None) -> FastAPI:
    """The ASGI app. ``session``: an already loaded model's session (else the config's model is
    loaded); further sessions are made over its model as requests need them. The app owns them all:
    they are closed when it shuts down."""
    first = session or OmniSession(config.model_path, omni_path=config.omni_path, n_threads=config.n_threads,
                                   n_ctx=config.n_ctx, device=config.device, n_gpu_layers=config.n_gpu_layers,
                                   kv_cache_type=config.kv_cache_type)
    server = _Server(config, first)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        server.pool.close()

    app = FastAPI(title="minicpmo-cpp", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    server.routes(app)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(BearerAuth, api_key=config.api_key)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError):
        return e.response()

    @app.exception_handler(MinicpmoError)
    async def _model_error(_: Request, e: MinicpmoError):
        return error_response(400, str(e))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, e: StarletteHTTPException):
        return error_response(e.status_code, str(e.detail), "not_found_error" if e.status_code == 404 else
                              "invalid_request_error")

    @app.exception_handler(Exception)
    async def _internal(_: Request, e: Exception):
        log.exception("internal error")
        return error_response(500, f"internal server error: {type(e).__name__}", "server_error")

    return app


class _Server:
    def __init__(self, config: ServerConfig, first: OmniSession):
        self.config = config
        self.model_id = config.served_model_id
        self.voices = first.voices
        self.created = int(os.path.getmtime(config.model_path)) if os.path.exists(config.model_path) else 0
        self.pool = SessionPool(first, config.max_sessions, config.max_queue, config.queue_timeout,
                                config.retry_after)

    def routes(self, app: FastAPI) -> None:
        app.get("/health")(self.health)
        app.get("/v1/models")(self.models)
        app.get("/v1/models/{model_id:path}")(self.model)
        app.post("/v1/chat/completions")(self.chat_completions)
        app.post("/v1/audio/transcriptions")(self.transcriptions)
        app.post("/v1/audio/speech")(self.speech)
        app.websocket("/v1/realtime")(self.realtime)
        app.get("/")(self.page)
        app.get("/ui/{name}")(self.page_file)
        app.get("/favicon.ico")(lambda: Response(status_code=204))  # no icon: spare browsers a 404

    # ---- the browser page (serve/web: plain HTML + JS, no build step, nothing from a CDN) ----
    async def page(self):
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    async def page_file(self, name: str):
        if name not in WEB_FILES:
            raise ApiError(404, f"no page file '{name}'", type_="not_found_error")
        return FileResponse(WEB_DIR / name, media_type="text/javascript")

    # ---- facts ----
    async def health(self):
        p = self.pool
        return {"status": "ok", "model": self.model_id, "pid": os.getpid(),
                "sessions": {"max": p.max_sessions, "busy": p.busy, "waiting": p.waiting, "queue": p.max_queue},
                "requests_served": p.served}

    def _model_card(self) -> dict:
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "minicpmo-cpp",
                "voices": self.voices, "modalities": ["text", "audio"] if self.voices else ["text"]}

    async def models(self):
        return {"object": "list", "data": [self._model_card()]}

    async def model(self, model_id: str):
        if model_id != self.model_id:
            raise ApiError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")
        return self._model_card()

    # ---- chat ----
    async def chat_completions(self, request: Request):
        call = parse_chat_request(await _json(request), self.model_id, self.voices, self.config.media_root)
        lease = await self.pool.acquire()
        if call.stream:
            try:
                stream = await self.pool.run(lambda: lease.session.chat(call.msgs, stream=True, **call.options))
            except BaseException:
                lease.release()
                raise
            return StreamingResponse(_releasing(self._chat_events(call, lease, stream), lease),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            result = await self.pool.run(_whole_reply, lease.session, call)
        finally:
            lease.release()
        text, audio, finish, usage = result
        message = {"role": "assistant", "content": text}
        if call.audio_format:
            data = audio_out.wav(*audio) if call.audio_format == "wav" else audio_out.pcm16(audio[0])
            message = {"role": "assistant", "content": None,
                       "audio": {"id": _id("audio"), "data": audio_out.b64(data), "expires_at": int(time.time()) + 3600,
                                 "transcript": text}}
        return {"id": _id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
                "model": self.model_id, "choices": [{"index": 0, "message": message, "finish_reason": finish,
                                                     "logprobs": None}], "usage": usage}

    async def _chat_events(self, call: ChatCall, lease, stream):
        cid, created, audio_id = _id("chatcmpl"), int(time.time()), _id("audio")

        def event(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> bytes:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": self.model_id,
                     "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish,
                                                           "logprobs": None}]}
            if usage is not None:
                chunk["usage"] = usage
            return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"

        stop = StopText(call.stop)
        steps = _Steps(self.pool, stream)
        try:
            yield event({"role": "assistant", "content": "" if not call.audio_format else None})
            while True:
                try:
                    item = await steps.next()
                except MinicpmoError as e:  # mid-reply (e.g. a full context): said in the stream, then it ends
                    yield b"data: " + json.dumps({"error": {"message": str(e), "type": "server_error",
                                                            "param": None, "code": None}}).encode() + b"\n\n"
                    return
                if item is None:
                    break
                piece, chunk = item if call.audio_format else (item, None)
                if call.audio_format:
                    audio = {"id": audio_id}
                    if piece:
                        audio["transcript"] = piece
                    if chunk is not None and chunk.size:
                        audio["data"] = audio_out.b64(audio_out.pcm16(chunk))
                    if len(audio) > 1:
                        yield event({"audio": audio})
                    continue
                text = stop.feed(piece)
                if text:
                    yield event({"content": text})
                if stop.stopped:
                    break
            rest = stop.flush()
            if rest:
                yield event({"content": rest})
            finish = "stop" if stop.stopped else FINISH.get(stream.finish_reason, "stop")
            usage = await steps.close_and(_usage, lease.session)
            yield event({}, finish)
            if call.include_usage:
                yield event(None, usage=usage)
            yield b"data: [DONE]\n\n"
        finally:
            await steps.close_and(None)
            lease.release()

    async def realtime(self, websocket: WebSocket):
        await realtime(websocket, self.pool, self.voices)

    # ---- audio ----
    async def transcriptions(self, request: Request):
        form = await _form(request)
        try:
            fields = {k: v for k, v in form.items() if k != "file"}
            check_model(fields, self.model_id)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise bad_request("'file' (the audio to transcribe) is required", "file")
            data = await upload.read()
        finally:
            await form.close()
        if not data:
            raise bad_request("the uploaded audio file is empty", "file")
        unknown = sorted(set(fields) - {"model", "language", "response_format", "temperature"})
        if unknown:
            raise bad_request(f"unsupported field(s): {', '.join(unknown)}", unknown[0])
        language = fields.get("language") or "en"
        if language not in ASR_PROMPTS:
            raise bad_request(f"language must be one of {', '.join(ASR_PROMPTS)}", "language")
        fmt = fields.get("response_format") or "json"
        if fmt not in ("json", "text"):
            raise bad_request("response_format must be json or text", "response_format")
        options = {"do_sample": False}
        if fields.get("temperature"):
            try:
                t = float(fields["temperature"])
            except ValueError:
                raise bad_request("temperature must be a number", "temperature") from None
            if not 0.0 <= t <= 2.0:
                raise bad_request("temperature must be in [0, 2]", "temperature")
            if t > 0.0:
                options = {"temperature": t}
        msgs = [{"role": "user", "content": [{"type": "audio", "audio": data}, ASR_PROMPTS[language]]}]
        lease = await self.pool.acquire()
        try:
            text = await self.pool.run(lambda: str(lease.session.chat(msgs, **options)))
        finally:
            lease.release()
        return PlainTextResponse(text) if fmt == "text" else {"text": text}

    async def speech(self, request: Request):
        body = await _json(request)
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        check_model(body, self.model_id)
        unknown = sorted(set(body) - {"model", "input", "voice", "response_format", "speed", "instructions",
                                      "stream_format", "max_speech_tokens", "seed"})
        if unknown:
            raise bad_request(f"unsupported field(s): {', '.join(unknown)}", unknown[0])
        if not self.voices:
            raise bad_request("this model's files have no speech components", "model")
        text = body.get("input")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_SPEECH_INPUT:
            raise bad_request(f"input must be a non-empty string of at most {MAX_SPEECH_INPUT} characters", "input")
        voice = body.get("voice")
        if voice not in self.voices:
            raise bad_request(f"unknown voice {voice!r}; this model has: {', '.join(self.voices)}", "voice")
        fmt = body.get("response_format") or "wav"
        if fmt not in ("wav", "pcm"):
            raise bad_request("response_format must be wav or pcm (16-bit, 24 kHz, mono)", "response_format")
        if body.get("speed") not in (None, 1, 1.0):
            raise bad_request("speed must be 1.0 (other speeds are not supported)", "speed")
        if body.get("instructions"):
            raise bad_request("instructions are not supported; the reading template is fixed", "instructions")
        if body.get("stream_format") not in (None, "audio"):
            raise bad_request("stream_format must be 'audio'", "stream_format")
        cap = body.get("max_speech_tokens")  # extension: bounds the speech (25 tokens a second)
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 1 << 16):
            raise bad_request("max_speech_tokens must be an integer in [1, 65536]", "max_speech_tokens")
        seed = body.get("seed")  # extension: a reproducible reading
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64):
            raise bad_request("seed must be an integer in [0, 2**64)", "seed")
        options = dict(generate_audio=True, voice=voice, max_new_tokens=1024, max_speech_tokens=cap, seed=seed)
        msgs = OmniSession.tts_messages(text)
        lease = await self.pool.acquire()
        if fmt == "wav":
            try:
                reply = await self.pool.run(lambda: lease.session.chat(msgs, **options))
            finally:
                lease.release()
            return Response(audio_out.wav(reply.audio, reply.sample_rate), media_type="audio/wav")
        try:
            stream = await self.pool.run(lambda: lease.session.chat(msgs, stream=True, **options))
        except BaseException:
            lease.release()
            raise
        return StreamingResponse(_releasing(self._pcm_stream(lease, stream), lease), media_type="audio/pcm",
                                 headers={"X-Sample-Rate": "24000"})

    async def _pcm_stream(self, lease, stream):
        steps = _Steps(self.pool, stream)
        try:
            while True:
                try:
                    item = await steps.next()
                except MinicpmoError:  # mid-reading: the body ends short (the status line went out)
                    log.exception("speech stream ended early")
                    return
                if item is None:
                    break
                if item[1].size:
                    yield audio_out.pcm16(item[1])
        finally:
            await steps.close_and(None)
            lease.release()


def _releasing(body, lease):
    """``body`` (a response's async generator), with the lease given back even when the client left
    before the body was ever started (a generator never started runs no ``finally``)."""
    weakref.finalize(body, lease.release)
    return body


class _Steps:
    """Advances a ``ReplyStream`` on the pool's threads. A step in flight when the client goes away
    is waited for (it cannot be interrupted midway) before the stream is closed, so the session is
    whole when it goes back to the pool."""

    def __init__(self, pool: SessionPool, stream):
        self.pool, self.stream = pool, stream
        self._future = None
        self._closed = False

    async def next(self):
        self._future = self.pool.executor.submit(next, self.stream, None)
        return await asyncio.wrap_future(self._future)

    async def close_and(self, fn, *args):
        """Waits for the step in flight, closes the stream, then returns ``fn(*args)`` (on a pool thread)."""
        with anyio.CancelScope(shield=True):
            if self._future is not None and not self._future.done():
                await asyncio.wrap_future(self._future)
            if not self._closed:
                self._closed = True
                await self.pool.run(self.stream.close)
            return await self.pool.run(fn, *args) if fn else None


def _whole_reply(session: OmniSession, call: ChatCall):
    """(text, audio, finish_reason, usage) of a reply that is not streamed to the client."""
    if call.stop:  # text only: stream internally, to end the reply at the stop sequence
        stream = session.chat(call.msgs, stream=True, **call.options)
        stop = StopText(call.stop)
        try:
            text = "".join(stop.feed(p) for p in _until(stream, stop)) + stop.flush()
        finally:
            stream.close()
        finish = "stop" if stop.stopped else FINISH.get(stream.finish_reason, "stop")
        return text, None, finish, _usage(session)
    reply = session.chat(call.msgs, **call.options)
    audio = (reply.audio, reply.sample_rate) if call.audio_format else None
    return str(reply), audio, FINISH.get(reply.finish_reason, "stop"), _usage(session)


def _until(stream, stop: StopText):
    for piece in stream:
        yield piece
        if stop.stopped:
            return


def _usage(session: OmniSession) -> dict:
    reused, decoded = session.last_prefill
    prompt = reused + decoded
    completion = len(session.last_generated_ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": reused}}


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


async def _json(request: Request):
    raw = await request.body()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise bad_request(f"the request body is not valid JSON: {e}") from None


async def _form(request: Request):
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise bad_request("send the audio as multipart/form-data with a 'file' field")
    try:
        return await request.form(max_files=1, max_fields=16)
    except (ValueError, AssertionError) as e:
        raise bad_request(f"the multipart body could not be read: {e}") from None
    except StarletteHTTPException as e:
        raise bad_request(f"the multipart body could not be read: {e.detail}") from None
