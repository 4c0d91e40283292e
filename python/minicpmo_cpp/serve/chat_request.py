"""An OpenAI chat-completions request body -> the arguments of ``OmniSession.chat``.

Every field is either mapped or refused with a 400 naming it: nothing a client sends is silently
dropped. Content parts accepted: ``text``, ``image_url`` (``data:`` URIs; ``file://`` URLs only
under the server's media root) and ``input_audio`` (base64 + format). Extensions beyond OpenAI's
fields: ``top_k``, ``repetition_penalty``, ``enable_thinking``, ``max_slice_nums``, ``max_speech_tokens``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

from ..defaults import REPLY
from .errors import ApiError, bad_request

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
AUDIO_FORMATS = ("wav", "pcm16")
MAX_STOP = 4

# fields OpenAI defines that change nothing here when left at their neutral value
_NEUTRAL = {"frequency_penalty": (None, 0, 0.0), "presence_penalty": (None, 0, 0.0), "logprobs": (None, False),
            "top_logprobs": (None, 0), "n": (None, 1), "logit_bias": (None, {}), "parallel_tool_calls": (None, True, False),
            "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []), "function_call": (None, "none")}
# fields that only describe the request to OpenAI's platform (no effect on the reply)
_INFORMATIONAL = {"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"}
_KNOWN = {"model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens",
          "max_completion_tokens", "seed", "stop", "modalities", "audio", "response_format",
          "top_k", "repetition_penalty", "enable_thinking", "max_slice_nums", "max_speech_tokens"} | set(_NEUTRAL) | _INFORMATIONAL


@dataclass
class ChatCall:
    msgs: list
    stream: bool = False
    include_usage: bool = False
    audio_format: str | None = None   # "wav" / "pcm16" when the reply is spoken
    stop: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)  # keyword arguments of OmniSession.chat


def parse_chat_request(body, model_id: str, voices: list[str], media_root: str | None) -> ChatCall:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise bad_request(f"unsupported field(s): {', '.join(unknown)}", unknown[0])
    check_model(body, model_id)
    for name, neutral in _NEUTRAL.items():
        if name in body and body[name] not in neutral:
            raise bad_request(f"{name}={body[name]!r} is not supported by this server", name)
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise bad_request("only response_format {'type': 'text'} is supported", "response_format")

    call = ChatCall(msgs=_messages(body.get("messages"), media_root))
    call.stream = _bool(body, "stream", False)
    so = body.get("stream_options")
    if so is not None:
        if not call.stream or not isinstance(so, dict) or set(so) - {"include_usage"}:
            raise bad_request("stream_options needs stream=true and takes only include_usage", "stream_options")
        call.include_usage = _bool(so, "include_usage", False)

    opt = call.options
    temperature = _number(body, "temperature", 0.0, 2.0)
    if temperature is not None:
        if temperature == 0.0:
            opt["do_sample"] = False  # OpenAI's temperature 0: greedy
        else:
            opt["temperature"] = temperature
    for name, hi in (("top_p", 1.0), ("repetition_penalty", 10.0)):
        value = _number(body, name, 0.0, hi, low_open=True)
        if value is not None:
            opt[name] = value
    top_k = _integer(body, "top_k", 0, 1 << 20)
    if top_k is not None:
        opt["top_k"] = top_k
    if "max_tokens" in body and "max_completion_tokens" in body:
        raise bad_request("give max_completion_tokens or max_tokens, not both", "max_tokens")
    max_new = _integer(body, "max_completion_tokens", 1, 1 << 20)
    if max_new is None:
        max_new = _integer(body, "max_tokens", 1, 1 << 20)
    opt["max_new_tokens"] = max_new if max_new is not None else REPLY.max_new_tokens
    seed = _integer(body, "seed", -(1 << 63), (1 << 64) - 1)
    if seed is not None:
        opt["seed"] = seed % (1 << 64)  # OpenAI seeds are signed 64-bit; ours unsigned
    if "enable_thinking" in body:
        opt["enable_thinking"] = _bool(body, "enable_thinking", False)
    slices = _integer(body, "max_slice_nums", 1, 64)
    if slices is not None:
        opt["max_slice_nums"] = slices
    speech_cap = _integer(body, "max_speech_tokens", 1, 1 << 16)

    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > MAX_STOP:
            raise bad_request(f"stop must be a non-empty string or a list of at most {MAX_STOP} of them", "stop")
        call.stop = stops

    modalities = body.get("modalities")
    if modalities is None or modalities == ["text"]:
        for name in ("audio", "max_speech_tokens"):
            if body.get(name) is not None:
                raise bad_request(f"'{name}' needs modalities ['text', 'audio']", name)
    elif isinstance(modalities, list) and sorted(map(str, modalities)) == ["audio", "text"]:
        _spoken(call, body.get("audio"), voices)
        if speech_cap is not None:
            opt["max_speech_tokens"] = speech_cap
    else:
        raise bad_request("modalities must be ['text'] or ['text', 'audio']", "modalities")
    return call


def check_model(body: dict, model_id: str) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required", "model")
    if model != model_id:
        raise ApiError(404, f"The model '{model}' does not exist; this server serves '{model_id}'",
                       param="model", code="model_not_found")


def _spoken(call: ChatCall, audio, voices: list[str]) -> None:
    if not voices:
        raise bad_request("this model's files have no speech components: audio output is not available", "modalities")
    if not isinstance(audio, dict) or set(audio) - {"voice", "format"}:
        raise bad_request("modalities with 'audio' need audio: {'voice': ..., 'format': 'wav' | 'pcm16'}", "audio")
    fmt = audio.get("format")
    if fmt not in AUDIO_FORMATS:
        raise bad_request(f"audio.format must be one of {', '.join(AUDIO_FORMATS)}", "audio.format")
    if call.stream and fmt != "pcm16":
        raise bad_request("a streamed spoken reply comes as pcm16 chunks: use audio.format 'pcm16'", "audio.format")
    voice = audio.get("voice")
    if voice not in voices:
        raise bad_request(f"unknown voice {voice!r}; this model has: {', '.join(voices)}", "audio.voice")
    if call.stop:
        raise bad_request("stop sequences cannot cut a spoken reply; leave 'stop' out with audio output", "stop")
    call.audio_format = fmt
    call.options["generate_audio"] = True
    call.options["voice"] = voice


def _messages(messages, media_root: str | None) -> list:
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"{where} must be an object", where)
        extra = sorted(set(m) - {"role", "content", "name"})
        if extra:
            raise bad_request(f"{where}: unsupported field(s) {', '.join(extra)}", f"{where}.{extra[0]}")
        role = ROLES.get(m.get("role"))
        if role is None:
            raise bad_request(f"{where}: role must be one of {', '.join(ROLES)}", f"{where}.role")
        content = m.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list) or not content:
            raise bad_request(f"{where}: content must be a string or a non-empty list of parts", f"{where}.content")
        parts = [_part(p, f"{where}.content[{j}]", role, media_root) for j, p in enumerate(content)]
        out.append({"role": role, "content": parts})
    return out


def _part(part, where: str, role: str, media_root: str | None):
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise bad_request(f"{where}: a text part needs 'text'", where)
        return part["text"]
    if role == "assistant":
        raise bad_request(f"{where}: assistant messages hold text only", where)
    if kind == "image_url":
        value = part.get("image_url")
        url = value.get("url") if isinstance(value, dict) else value
        if not isinstance(url, str):
            raise bad_request(f"{where}: image_url needs a 'url'", where)
        if isinstance(value, dict) and value.get("detail") not in (None, "auto", "high", "low"):
            raise bad_request(f"{where}: image_url.detail must be auto, low or high", where)
        return {"type": "image_url", "image_url": {"url": _media_url(url, where, media_root)}}
    if kind == "input_audio":
        value = part.get("input_audio")
        if not isinstance(value, dict) or not isinstance(value.get("data"), str) or set(value) - {"data", "format"}:
            raise bad_request(f"{where}: input_audio needs {{'data': <base64>, 'format': ...}}", where)
        return {"type": "input_audio", "input_audio": dict(value)}
    raise bad_request(f"{where}: unsupported content part type {kind!r} (text, image_url, input_audio)", where)


def _media_url(url: str, where: str, media_root: str | None) -> str:
    if url[:5].lower() == "data:":
        return url
    parsed = urlparse(url)
    if parsed.scheme != "file":
        raise bad_request(f"{where}: only data: URIs and file:// URLs are read (no network access)", where)
    if media_root is None:
        raise bad_request(f"{where}: file:// URLs are off; start the server with --media-root DIR to allow them", where)
    if parsed.netloc not in ("", "localhost"):
        raise bad_request(f"{where}: file:// URLs must name a local file", where)
    path = os.path.realpath(unquote(parsed.path))
    root = os.path.realpath(media_root)
    if os.path.commonpath([path, root]) != root:
        raise ApiError(403, f"{where}: {url!r} lies outside the server's media root", param=where,
                       type_="permission_error")
    return path


def _bool(d: dict, name: str, default: bool) -> bool:
    v = d.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise bad_request(f"{name} must be true or false", name)
    return v


def _number(d: dict, name: str, lo: float, hi: float, low_open: bool = False) -> float | None:
    """d[name] as a float in [lo, hi] ((lo, hi] with low_open); None when absent."""
    v = d.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi or (low_open and v == lo):
        raise bad_request(f"{name} must be a number in {'(' if low_open else '['}{lo:g}, {hi:g}]", name)
    return float(v)


def _integer(d: dict, name: str, lo: int, hi: int) -> int | None:
    v = d.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise bad_request(f"{name} must be an integer in [{lo}, {hi}]", name)
    return v
