"""Turns whatever a user passes as audio into the float32 16 kHz mono waveform the audio path takes.

Accepted forms (see ``load_audio``): numpy arrays (16 kHz unless given as a ``(pcm, sample_rate)``
tuple), file paths, ``file://`` URLs, encoded audio bytes, base64 ``data:audio/...`` URIs and OpenAI
style content dicts. Network URLs are refused: fetching is the caller's job.

One rule, shared with ``minicpmo-cli --audio`` (csrc/cli/audio_file.cpp):

- samples become float32 the libsndfile way: N-bit signed integers are divided by 2**(N-1) (int16 by
  32768), 8-bit unsigned data maps to (x - 128) / 128, float data is kept as it is. Values beyond
  +-1 (float files, clipped recordings) are kept, not clipped;
- channels are averaged (the mean, not the sum);
- any rate other than 16 kHz is converted by minicpmo's own band-limited resampler
  (``_core.resample``: Kaiser-windowed sinc, flat to 7.28 kHz, >= 100 dB stopband from 8 kHz, no
  delay, ``ceil(n * 16000 / rate)`` output samples);
- 16 kHz mono float32 input comes back unchanged, bit for bit (and without a copy for a contiguous
  1-D float32 array).

Refused with a ``MinicpmoError`` naming the input: no samples, NaN or infinite samples, sample rates
outside 1 .. 768000 Hz, more than 256 channels, unreadable / corrupt / truncated files, and audio longer
than ``MAX_SECONDS`` (one hour: each second becomes 10 audio tokens, so an hour already fills most of
the LLM's 40960 trained positions; pass ``max_seconds`` to change the limit, e.g. to cut a long
recording into pieces yourself).

File decoding uses ``soundfile`` (libsndfile): WAV, FLAC, OGG (Vorbis, Opus), AIFF, CAF and more. MP3
goes through the miniaudio decoder that minicpmo-cli uses (in ``_core``), because libsndfile silently
cuts MP3 files without a Xing/Info length header to a length estimated from the first frame. AAC / M4A
are not readable: convert them first (e.g. ``ffmpeg -i in.m4a out.wav``). WAV and FLAC decode to the same
bits with both decoders, so Python and the CLI agree on every format the CLI reads.
"""

from __future__ import annotations

import base64
import binascii
import io
import numbers
import os
import re
import struct
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import numpy as np

from . import _core
from ._core import MinicpmoError

SAMPLE_RATE = 16000
MAX_SECONDS = float(_core.AUDIO_MAX_SECONDS)  # 3600.0, the CLI's limit (csrc/cli/audio_file.h)
MAX_SAMPLE_RATE = int(_core.AUDIO_MAX_SAMPLE_RATE)  # 768000
MAX_CHANNELS = int(_core.AUDIO_MAX_CHANNELS)  # 256

AUDIO_PART_TYPES = ("input_audio", "audio_url", "audio")

# OpenAI "input_audio" format names -> libsndfile major formats
_FORMATS = {
    "wav": "WAV", "wave": "WAV", "x-wav": "WAV", "flac": "FLAC", "mp3": "MP3", "mpeg": "MP3",
    "ogg": "OGG", "oga": "OGG", "opus": "OGG", "vorbis": "OGG", "aiff": "AIFF", "aif": "AIFF",
    "au": "AU", "caf": "CAF", "w64": "W64", "rf64": "RF64",
}

# soundfile raises LibsndfileError (a RuntimeError) for unreadable data; others for odd inputs
_DECODE_ERRORS = (RuntimeError, ValueError, TypeError, OSError, EOFError, struct.error)

_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def load_audio(obj: Any, *, max_seconds: float | None = MAX_SECONDS) -> np.ndarray:
    """The audio ``obj`` as a C-contiguous float32 1-D array of 16 kHz mono samples.

    - ``numpy.ndarray`` of dtype float32, float64 or int16 (int16 is scaled by 1/32768): a 1-D array
      is mono at 16 kHz; a 2-D array is (n_samples, n_channels) at 16 kHz and its channels are
      averaged. Other dtypes are refused rather than guessed at.
    - ``(pcm, sample_rate)`` tuple: such an array at another rate, e.g. ``(pcm, 44100)``; it is
      mixed to mono, then resampled to 16 kHz.
    - ``str`` / ``os.PathLike``: an audio file path; ``file://`` URLs and ``data:audio/...;base64,``
      URIs are accepted as strings, http(s) URLs are refused (no network access).
    - ``bytes`` / ``bytearray`` / ``memoryview``: an encoded audio file (WAV, FLAC, ...), not raw PCM.
    - ``dict``: ``{"type": "input_audio", "input_audio": {"data": <base64>, "format": "wav"}}``
      (OpenAI), ``{"type": "audio_url", "audio_url": {"url": ...}}`` (or ``"audio_url": "..."``) and
      ``{"type": "audio", "audio": <any form above>}``.

    ``max_seconds`` bounds the duration (``None``: no bound); longer audio is refused before it is
    decoded when the file header tells its length. Raises ``MinicpmoError`` naming the source and the
    problem for anything that is not usable audio.
    """
    mono, rate = _decode(obj, _check_limit(max_seconds))
    return mono if rate == SAMPLE_RATE else _core.resample(mono, rate, SAMPLE_RATE)


def load_audio_at_source_rate(obj: Any, *, max_seconds: float | None = MAX_SECONDS) -> tuple[np.ndarray, int]:
    """``(pcm, sample_rate)``: like ``load_audio`` (the same forms, checks and channel mix), but the
    mono samples keep the rate of the source (a bare array counts as 16 kHz). Voice cloning takes this,
    so it can resample as the reference does."""
    return _decode(obj, _check_limit(max_seconds))


def _decode(obj: Any, limit: float | None) -> tuple[np.ndarray, int]:
    """(mono float32 samples, their rate) of any form load_audio takes."""
    if isinstance(obj, np.ndarray):
        return _from_array(obj, SAMPLE_RATE, _array_label(obj, None), limit)
    if isinstance(obj, tuple):
        return _from_tuple(obj, limit)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
        return _from_encoded(data, f"audio bytes ({len(data)} bytes)", limit)
    if isinstance(obj, dict):
        return _from_content_part(obj, limit)
    if isinstance(obj, str):
        return _from_string(obj, limit)
    if isinstance(obj, os.PathLike):
        return _from_file(os.fsdecode(os.fspath(obj)), limit)
    raise MinicpmoError(
        f"cannot use a {type(obj).__name__} as audio: pass a float32/float64/int16 numpy array (16 kHz), "
        f"a (pcm, sample_rate) tuple, a file path, encoded audio bytes, a data:audio/... URI or an audio "
        f"content dict"
    )


def is_audio_part(part: Any) -> bool:
    """Whether a message content part is meant as audio (so it goes to ``load_audio``).

    True for dicts of type "input_audio" / "audio_url" / "audio", ``(numpy array, int)`` tuples, 1-D
    numpy arrays of any dtype (a wrong dtype then gets ``load_audio``'s clear error) and 2-D non-uint8
    arrays with at most ``MAX_CHANNELS`` columns ((n_samples, n_channels); uint8 2-D arrays are grey
    images). Strings are text, never audio, even when they name a file.
    """
    if isinstance(part, dict):
        return part.get("type") in AUDIO_PART_TYPES
    if isinstance(part, tuple):
        return (len(part) == 2 and isinstance(part[0], np.ndarray) and isinstance(part[1], numbers.Integral)
                and not isinstance(part[1], bool))
    if isinstance(part, np.ndarray):
        if part.ndim == 1:
            return True
        return part.ndim == 2 and part.dtype != np.uint8 and 1 <= part.shape[1] <= MAX_CHANNELS
    return False


# ---- sources ----


def _check_limit(max_seconds: Any) -> float | None:
    if max_seconds is None:
        return None
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, numbers.Real) or not max_seconds > 0:
        raise MinicpmoError(f"max_seconds must be a positive number or None, got {max_seconds!r}")
    return float(max_seconds)


def _from_tuple(value: tuple, limit: float | None) -> tuple[np.ndarray, int]:
    if len(value) != 2:
        raise MinicpmoError(f"an audio tuple must be (pcm, sample_rate), got a tuple of {len(value)} items")
    pcm, rate = value
    if not isinstance(pcm, np.ndarray):
        raise MinicpmoError(
            f"in an audio (pcm, sample_rate) tuple pcm must be a numpy array, got {type(pcm).__name__}"
        )
    if isinstance(rate, bool) or not isinstance(rate, numbers.Integral):
        raise MinicpmoError(f"in an audio (pcm, sample_rate) tuple sample_rate must be an int, got {rate!r}")
    rate = int(rate)
    _check_rate(rate, _array_label(pcm, rate))
    return _from_array(pcm, rate, _array_label(pcm, rate), limit)


def _from_content_part(part: dict, limit: float | None) -> tuple[np.ndarray, int]:
    kind = part.get("type")
    if kind == "input_audio":
        value = part.get("input_audio")
        if not isinstance(value, dict):
            raise MinicpmoError("an input_audio content part needs an 'input_audio' dict with 'data' and 'format'")
        data, fmt = value.get("data"), value.get("format")
        if not isinstance(data, str):
            raise MinicpmoError("an input_audio content part needs base64 text in input_audio.data")
        label = f"input_audio data ({fmt if isinstance(fmt, str) else 'no format'}, {len(data)} characters)"
        if fmt is not None:
            _check_format_name(fmt, label)
        return _from_encoded(_decode_base64(data, label), label, limit)
    if kind == "audio_url":
        value = part.get("audio_url")
        if isinstance(value, dict):
            value = value.get("url")
        if not isinstance(value, str):
            raise MinicpmoError("an audio_url content part needs a string URL in audio_url.url (or audio_url itself)")
        return _from_string(value, limit)
    if kind == "audio":
        value = part.get("audio")
        if value is None:
            raise MinicpmoError("an audio content part has no 'audio' value")
        if isinstance(value, dict):
            raise MinicpmoError("the 'audio' value of an audio content part cannot itself be a dict")
        return _decode(value, limit)
    raise MinicpmoError(
        f"a content part of type {kind!r} is not audio (expected 'input_audio', 'audio_url' or 'audio')"
    )


def _check_format_name(fmt: Any, label: str) -> None:
    if not isinstance(fmt, str) or fmt.lower() not in _FORMATS:
        raise MinicpmoError(
            f"{label}: audio format {fmt!r} is not supported (known: {', '.join(sorted(set(_FORMATS)))})"
        )
    major = _FORMATS[fmt.lower()]
    if major != "MP3" and major not in _soundfile().available_formats():  # MP3 is decoded by miniaudio
        raise MinicpmoError(
            f"{label}: the installed libsndfile ({_soundfile().__libsndfile_version__}) cannot decode {major}"
        )


def _from_string(text: str, limit: float | None) -> tuple[np.ndarray, int]:
    if not text:
        raise MinicpmoError("an empty string is neither an audio path nor a URL")
    if text[:5].lower() == "data:":
        return _from_data_uri(text, limit)
    match = _URL_SCHEME.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme == "file":
            return _from_file(_file_url_to_path(text), limit)
        shown = text if len(text) <= 100 else text[:100] + "..."
        if scheme in ("http", "https"):
            raise MinicpmoError(
                f"audio URL {shown!r}: minicpmo-cpp does not fetch audio over the network; "
                f"download it and pass the file path (or its bytes)"
            )
        raise MinicpmoError(f"audio URL {shown!r}: unsupported scheme {scheme!r} (use a file path)")
    return _from_file(text, limit)


def _file_url_to_path(url: str) -> str:
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise MinicpmoError(f"audio URL {url!r} names a remote host; only local file:// URLs are read")
    return url2pathname(parsed.path)  # undoes %-escapes


def _from_file(path: str, limit: float | None) -> tuple[np.ndarray, int]:
    label = f"audio file {path if len(path) <= 200 else path[:200] + '...'!r}"
    if not os.path.exists(path):
        hint = ""
        if len(path) > 260:
            hint = " (a long string that is not a path: pass base64 audio as a data:audio/...;base64, URI)"
        raise MinicpmoError(f"{label} does not exist{hint}")
    if os.path.isdir(path):
        raise MinicpmoError(f"{label} is a directory, not an audio file")
    try:
        stream = open(path, "rb")
    except OSError as e:
        raise MinicpmoError(f"{label} cannot be read: {e.strerror or e}") from e
    with stream:
        if os.fstat(stream.fileno()).st_size == 0:
            raise MinicpmoError(f"{label} is empty (0 bytes)")
        return _decode_stream(stream, label, limit)


def _from_data_uri(uri: str, limit: float | None) -> tuple[np.ndarray, int]:
    header, comma, payload = uri.partition(",")
    if not comma:
        raise MinicpmoError("data URI has no ',' between its header and its data")
    params = [p.strip().lower() for p in header[5:].split(";")]
    media_type = params[0]
    label = f"data URI audio ({media_type or 'no media type'}, {len(uri)} characters)"
    if not media_type.startswith("audio/"):
        raise MinicpmoError(f"data URI media type {media_type or '(none)'!r} is not an audio/* type")
    if "base64" not in params[1:]:
        raise MinicpmoError(f"{label} is not base64-encoded (';base64' is missing); only base64 data URIs are read")
    return _from_encoded(_decode_base64(payload, label), label, limit)


def _decode_base64(payload: str, label: str) -> bytes:
    text = re.sub(r"\s+", "", unquote(payload))  # URIs may be %-escaped or wrapped over lines
    text = text.replace("-", "+").replace("_", "/")  # accept the URL-safe alphabet too
    text += "=" * (-len(text) % 4)  # and missing padding
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MinicpmoError(f"{label}: invalid base64 data ({e})") from e


def _from_encoded(data: bytes, label: str, limit: float | None) -> tuple[np.ndarray, int]:
    if not data:
        raise MinicpmoError(f"{label} is empty (0 bytes)")
    return _decode_stream(io.BytesIO(data), label, limit)


# ---- decoding ----


def _decode_stream(stream: BinaryIO, label: str, limit: float | None) -> tuple[np.ndarray, int]:
    head = stream.read(4)
    stream.seek(0)
    if _looks_like_mp3(head):
        return _decode_mp3(stream.read(), label, limit)
    _check_wav_complete(stream, label)
    try:
        sound = _soundfile().SoundFile(stream)
    except _DECODE_ERRORS as e:
        detail = getattr(e, "error_string", None) or str(e)
        raise MinicpmoError(
            f"{label} is not audio soundfile can read (unknown format or corrupt header: {detail}); readable "
            f"formats include WAV, FLAC, OGG (Vorbis, Opus) and MP3, not AAC/M4A"
        ) from e
    with sound:
        if sound.format == "MP3":  # MP3 behind leading junk that the sniffing missed
            stream.seek(0)
            return _decode_mp3(stream.read(), label, limit)
        frames, rate, channels = sound.frames, sound.samplerate, sound.channels
        label = f"{label} ({sound.format}, {rate} Hz, {channels} channel{'s' if channels != 1 else ''})"
        _check_rate(rate, label)
        if not 1 <= channels <= MAX_CHANNELS:
            raise MinicpmoError(f"{label}: {channels} channels (1 .. {MAX_CHANNELS} accepted)")
        if frames <= 0:
            raise MinicpmoError(f"{label} contains no audio samples")
        _check_duration(frames, rate, label, limit)  # before decoding anything
        try:
            pcm = sound.read(dtype="float32", always_2d=True)
        except _DECODE_ERRORS as e:
            raise MinicpmoError(f"{label} could not be decoded (truncated or corrupt audio data?): {e}") from e
        if len(pcm) < frames:
            raise MinicpmoError(
                f"{label} is truncated: its header declares {frames} frames but only {len(pcm)} could be decoded"
            )
    return _from_array(pcm, rate, label, limit)


def _soundfile():
    """The soundfile module, imported on first use: arrays and MP3 work without it."""
    try:
        import soundfile
    except (ImportError, OSError) as e:  # OSError: the package is there but libsndfile is not
        raise MinicpmoError(f"reading audio files needs the 'soundfile' package and libsndfile ({e})") from e
    return soundfile


def _looks_like_mp3(head: bytes) -> bool:
    """An ID3v2 tag or an MPEG audio frame header (11 sync bits, a valid layer; AAC's ADTS has layer 0)."""
    if head[:3] == b"ID3":
        return True
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06 != 0


def _decode_mp3(data: bytes, label: str, limit: float | None) -> tuple[np.ndarray, int]:
    """MP3 goes through minicpmo-cli's miniaudio decoder, not libsndfile: libsndfile takes the length
    of an MP3 without a Xing/Info header from the first frame's bitrate and silently stops there (a 3 s
    VBR file came back as 0.9 s). The decoder counts the frames it actually decodes."""
    pcm, rate = _core.decode_audio(data, label, 0.0 if limit is None else limit)
    label = f"{label} (MP3, {rate} Hz, {pcm.shape[1]} channel{'s' if pcm.shape[1] != 1 else ''})"
    return _from_array(pcm, rate, label, limit)


def _check_wav_complete(stream: BinaryIO, label: str) -> None:
    """libsndfile reads a WAV file whose data chunk is shorter than its header says without a word
    (it just returns fewer samples); a cut-off download should be an error instead."""
    start = stream.tell()
    try:
        head = stream.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        size = stream.seek(0, io.SEEK_END)
        pos = start + 12
        while pos + 8 <= size:
            stream.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", stream.read(8))
            if chunk_id == b"data":
                available = size - pos - 8
                # 0 and 0xFFFFFFFF mark a length unknown to a streaming writer
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                    raise MinicpmoError(
                        f"{label} is truncated: its WAV header declares {chunk_size} bytes of samples but "
                        f"only {available} are present"
                    )
                return
            pos += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to an even size
    finally:
        stream.seek(start)


# ---- decoded forms ----


def _array_label(array: np.ndarray, rate: int | None) -> str:
    where = "16 kHz" if rate is None else f"{rate} Hz"
    return f"audio array of shape {array.shape}, dtype {array.dtype} ({where})"


def _check_rate(rate: int, label: str) -> None:
    if not 1 <= rate <= MAX_SAMPLE_RATE:
        raise MinicpmoError(f"{label}: sample rate {rate} Hz is not usable (expected 1 .. {MAX_SAMPLE_RATE} Hz)")


def _check_duration(n_samples: int, rate: int, label: str, limit: float | None) -> None:
    if limit is not None and n_samples > limit * rate:
        raise MinicpmoError(
            f"{label} lasts {n_samples / rate:.1f} s, longer than the {limit:g} s accepted (one second of audio "
            f"takes 10 tokens of context); cut it into pieces or pass a larger max_seconds"
        )


def _from_array(array: np.ndarray, rate: int, label: str, limit: float | None) -> tuple[np.ndarray, int]:
    kind, size = array.dtype.kind, array.dtype.itemsize
    if not ((kind == "f" and size in (4, 8)) or (kind == "i" and size == 2)):
        hint = ""
        if kind in "iu":
            hint = " (scale integer PCM yourself, e.g. x / 2**31 for int32, or pass int16)"
        raise MinicpmoError(f"{label}: audio arrays must have dtype float32, float64 or int16{hint}")
    if array.ndim == 1:
        array = array[:, None]
    elif array.ndim != 2:
        raise MinicpmoError(f"{label}: expected (n_samples,) or (n_samples, n_channels)")
    n, channels = array.shape
    if channels > MAX_CHANNELS or channels == 0:
        hint = " (it looks channel-first: use array.T)" if 1 <= n <= MAX_CHANNELS < channels else ""
        raise MinicpmoError(f"{label}: {channels} channels (1 .. {MAX_CHANNELS} accepted){hint}")
    if n == 0:
        raise MinicpmoError(f"{label} is empty (0 samples)")
    _check_duration(n, rate, label, limit)

    if kind == "i":
        pcm = array.astype(np.float32) * np.float32(1.0 / 32768.0)  # exact: a power of two
    else:
        _check_finite(array, label)
        with np.errstate(over="ignore"):  # values beyond the float32 range become inf, reported next
            pcm = np.asarray(array, dtype=np.float32)  # float64 rounds to nearest
        if kind == "f" and size == 8:
            _check_finite(pcm, f"{label} after conversion to float32", "beyond the float32 range")
    if channels == 1:
        mono = np.ascontiguousarray(pcm[:, 0])  # a view of a contiguous 1-D input: no copy
    else:
        mono = _core.mix_to_mono(pcm)
    return mono, rate


def _check_finite(array: np.ndarray, label: str, what: str | None = None) -> None:
    finite = np.isfinite(array)
    if finite.all():
        return
    index = np.unravel_index(int(np.argmin(finite)), array.shape)
    value = array[index]
    sample = f"sample {index[0]}" + (f", channel {index[1]}" if array.shape[1] > 1 else "")
    raise MinicpmoError(
        f"{label}: {sample} is {what or ('NaN' if np.isnan(value) else 'infinite')} "
        f"(audio samples must be finite numbers)"
    )
