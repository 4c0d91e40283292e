"""``/v1/realtime``: a full-duplex conversation over a WebSocket, one unit (1 s) at a time.

Protocol (README "Realtime duplex"):

1. client: ``{"type": "session.start", "voice", "system_prompt", "ref_audio" (base64 audio file),
   "audio_format": "pcm16" | "float32", "decode_mode": "sampling" | "greedy", "seed",
   "generate_audio"}`` (all optional); server: ``{"type": "session.started", ...}``.
2. client, every second: a binary message of 16 kHz mono audio (16000 samples; the first unit up to
   16560), or ``{"type": "unit", "audio": <base64 of the same bytes>, "frame": <base64 image>}``.
3. server, for every unit in order: ``{"type": "unit.result", "unit", "is_listen", "text",
   "end_of_turn", "current_time", "lag_units", "dropped_units", "timing": {...}}``, then (speech on)
   a binary message of the unit's 24 kHz 16-bit PCM.
4. client: ``{"type": "interrupt"}`` (server: ``{"type": "interrupted"}`` once applied, before the
   next unit) and ``{"type": "session.close"}`` (or closing the socket).

Units wait in a backlog of at most ``MAX_BACKLOG``; when the machine is slower than real time and the
backlog is full, the **oldest waiting unit is dropped** (the conversation stays near the present)
and the next result says how many were dropped. Bad messages get ``{"type": "error", ...}`` and the
conversation goes on. The conversation holds one session of the pool until the socket closes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import json
import time

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import MinicpmoError
from . import audio_out
from .errors import ApiError
from .pool import SessionPool

MAX_BACKLOG = 8
UNIT_SAMPLES, FIRST_UNIT_MAX = 16000, 16560
DEFAULT_SYSTEM = "Streaming Omni Conversation."
_START_FIELDS = {"type", "voice", "system_prompt", "ref_audio", "audio_format", "decode_mode", "seed",
                 "generate_audio", "frame_size"}
MAX_FRAME_SIDE = 16384  # the runtime's largest image side


class _Refused(Exception):
    """A client message that is answered with an error event (the conversation goes on)."""


async def realtime(ws: WebSocket, pool: SessionPool, voices: list[str]) -> None:
    await ws.accept()
    conv = None
    try:
        start = await _start_message(ws, voices)
        try:
            lease = await pool.acquire()
        except ApiError as e:
            await _send_json(ws, {"type": "error", "code": e.code, "message": e.message})
            await ws.close(code=1013, reason="server busy")  # "try again later"
            return
        conv = _Conversation(ws, pool, lease, start)
        await conv.run()
    except WebSocketDisconnect:
        pass
    finally:
        if conv is not None:
            await conv.finish()


async def _start_message(ws: WebSocket, voices: list[str]) -> dict:
    """The first ``session.start`` message, checked; errors before it are answered and skipped."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        try:
            data = _json_message(message)
            if data.get("type") != "session.start":
                raise _Refused("send {'type': 'session.start', ...} first")
            return _check_start(data, voices)
        except _Refused as e:
            await _send_json(ws, {"type": "error", "code": "bad_message", "message": str(e)})


def _check_start(d: dict, voices: list[str]) -> dict:
    unknown = sorted(set(d) - _START_FIELDS)
    if unknown:
        raise _Refused(f"session.start: unsupported field(s) {', '.join(unknown)}")
    generate = d.get("generate_audio", bool(voices))
    if not isinstance(generate, bool) or (generate and not voices):
        raise _Refused("session.start: generate_audio needs a model with speech components")
    voice = d.get("voice")
    if voice is not None and voice not in voices:
        raise _Refused(f"session.start: unknown voice {voice!r}; this model has: {', '.join(voices) or 'none'}")
    fmt = d.get("audio_format", "pcm16")
    if fmt not in ("pcm16", "float32"):
        raise _Refused("session.start: audio_format must be pcm16 or float32")
    mode = d.get("decode_mode", "sampling")
    if mode not in ("sampling", "greedy"):
        raise _Refused("session.start: decode_mode must be sampling or greedy")
    system = d.get("system_prompt", DEFAULT_SYSTEM)
    if not isinstance(system, str):
        raise _Refused("session.start: system_prompt must be a string")
    seed = d.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64):
        raise _Refused("session.start: seed must be an integer in [0, 2**64)")
    ref = d.get("ref_audio")
    if ref is not None:
        ref = _b64(ref, "ref_audio")
    size = d.get("frame_size")
    if size is not None and (not isinstance(size, list) or len(size) != 2 or
                             not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_FRAME_SIDE
                                     for v in size)):
        raise _Refused(f"session.start: frame_size must be [width, height], each 1..{MAX_FRAME_SIDE}")
    return {"generate_audio": generate, "voice": voice, "audio_format": fmt, "decode_mode": mode,
            "system_prompt": system, "seed": seed, "ref_audio": ref,
            "frame_size": tuple(size) if size is not None else None}


class _Conversation:
    def __init__(self, ws: WebSocket, pool: SessionPool, lease, start: dict):
        self.ws, self.pool, self.lease, self.start = ws, pool, lease, start
        self.backlog: collections.deque = collections.deque()
        self.arrived = asyncio.Event()
        self.dropped = 0
        self.received = 0  # units taken from the client
        self.interrupt = False
        self.closing = False  # no more units will come (session.close or the socket closed)
        self.gone = False     # the socket closed: nothing more is computed or sent
        self.duplex = None
        self.send_lock = asyncio.Lock()  # a unit's result and its audio go out back to back

    async def run(self) -> None:
        s = self.start
        prefix = "<|im_start|>system\n" + s["system_prompt"] + "\n<|audio_start|>"

        def open_duplex():
            d = self.lease.session.as_duplex(seed=s["seed"], generate_audio=s["generate_audio"], voice=s["voice"])
            # frame_size: the camera's frames are readied for now, not at the first one
            d.prepare(prefix, "<|audio_end|><|im_end|>", ref_audio=s["ref_audio"], frame_size=s["frame_size"])
            return d

        try:
            self.duplex = await self.pool.run(open_duplex)
        except MinicpmoError as e:  # e.g. a reference audio that is not audio
            await _send_json(self.ws, {"type": "error", "code": "bad_session", "message": str(e)})
            await self.ws.close(code=1008, reason="bad session.start")
            return
        await self._send({"type": "session.started", "sample_rate_in": 16000,
                                   "sample_rate_out": self.duplex.sample_rate, "unit_seconds": 1,
                                   "generate_audio": self.duplex.generate_audio, "max_backlog": MAX_BACKLOG})
        reader = asyncio.create_task(self._read())
        try:
            await self._compute()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if not self.gone:
            await self.ws.close(code=1000)

    async def _read(self) -> None:
        """Takes the client's messages as they come: units into the backlog, commands as flags."""
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    self.gone = True
                    break
                try:
                    self._take(message)
                except _Refused as e:
                    await self._send({"type": "error", "code": "bad_message", "message": str(e)})
                if self.closing:
                    break
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.gone = True
        finally:
            self.closing = True
            self.arrived.set()

    def _take(self, message: dict) -> None:
        if message.get("bytes") is not None:
            self._queue(message["bytes"], None)
            return
        data = _json_message(message)
        kind = data.get("type")
        if kind == "unit":
            extra = sorted(set(data) - {"type", "audio", "frame"})
            if extra:
                raise _Refused(f"unit: unsupported field(s) {', '.join(extra)}")
            audio = _b64(data["audio"], "unit.audio") if data.get("audio") is not None else None
            frame = _b64(data["frame"], "unit.frame") if data.get("frame") is not None else None
            if audio is None and frame is None:
                raise _Refused("unit: needs audio, a frame or both")
            self._queue(audio, frame)
        elif kind == "interrupt":
            self.interrupt = True
            self.arrived.set()
        elif kind == "session.close":
            self.closing = True
        else:
            raise _Refused(f"unknown message type {kind!r} (unit, interrupt, session.close)")

    def _queue(self, audio: bytes | None, frame: bytes | None) -> None:
        pcm = None if audio is None else self._samples(audio)
        self.received += 1
        if len(self.backlog) >= MAX_BACKLOG:
            self.backlog.popleft()  # the policy: the oldest waiting unit goes (module docstring)
            self.dropped += 1
        self.backlog.append((pcm, frame, time.monotonic()))
        self.arrived.set()

    def _samples(self, data: bytes) -> np.ndarray:
        width = 2 if self.start["audio_format"] == "pcm16" else 4
        limit = FIRST_UNIT_MAX if self.received == 0 else UNIT_SAMPLES
        if len(data) % width:
            raise _Refused(f"unit audio: {len(data)} bytes is not a whole number of {self.start['audio_format']} samples")
        n = len(data) // width
        if not 0 < n <= limit:
            raise _Refused(f"unit audio: {n} samples; a unit is {UNIT_SAMPLES} samples of 16 kHz audio "
                           f"(the first up to {FIRST_UNIT_MAX})")
        if width == 2:
            return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
        pcm = np.frombuffer(data, "<f4").astype(np.float32)
        if not np.isfinite(pcm).all():
            raise _Refused("unit audio: float32 samples must be finite")
        return pcm

    async def _compute(self) -> None:
        """One unit at a time, in arrival order, on the pool's threads."""
        while not self.gone:
            if self.interrupt:
                self.interrupt = False
                await self.pool.run(self.duplex.interrupt)
                await self._send({"type": "interrupted"})
            if not self.backlog:
                if self.closing:
                    return
                self.arrived.clear()
                await self.arrived.wait()
                continue
            pcm, frame, arrived = self.backlog.popleft()
            dropped, self.dropped = self.dropped, 0
            t0 = time.monotonic()
            try:
                r = await self.pool.run(self._unit, pcm, frame)
            except MinicpmoError as e:  # a frame that is not an image, ...: this unit is skipped
                await self._send({"type": "error", "code": "bad_unit", "message": str(e)})
                continue
            t1 = time.monotonic()
            result = {"type": "unit.result", "unit": r["unit"], "is_listen": r["is_listen"], "text": r["text"],
                      "end_of_turn": r["end_of_turn"], "current_time": r["current_time"],
                      "lag_units": len(self.backlog), "dropped_units": dropped,
                      "timing": {"queued_ms": round((t0 - arrived) * 1e3, 1),
                                 "compute_ms": round((t1 - t0) * 1e3, 1)}}
            audio = r.get("audio_waveform")
            await self._send(result, None if audio is None else audio_out.pcm16(audio))

    async def _send(self, data: dict, audio: bytes | None = None) -> None:
        """A JSON event (and the audio that belongs to it); a socket that is gone ends the conversation."""
        if self.gone:
            return
        try:
            async with self.send_lock:
                await _send_json(self.ws, data)
                if audio is not None:
                    await self.ws.send_bytes(audio)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.gone = self.closing = True
            self.arrived.set()

    def _unit(self, pcm, frame):
        frames = [frame] if frame is not None else None
        self.duplex.streaming_prefill(audio_waveform=pcm, frame_list=frames)
        return self.duplex.streaming_generate(decode_mode=self.start["decode_mode"])

    async def finish(self) -> None:
        """Stops the conversation's speech threads and gives the session back, cache cleared."""
        try:
            if self.duplex is not None:
                await self.pool.run(self.duplex.as_simplex)
        finally:
            self.lease.release()


def _json_message(message: dict) -> dict:
    text = message.get("text")
    if text is None:
        raise _Refused("expected a JSON text message")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise _Refused(f"not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise _Refused("a message must be a JSON object with a 'type'")
    return data


def _b64(value, name: str) -> bytes:
    if not isinstance(value, str):
        raise _Refused(f"{name} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Refused(f"{name} is not valid base64") from None


async def _send_json(ws: WebSocket, data: dict) -> None:
    await ws.send_text(json.dumps(data, ensure_ascii=False))
