"""Speech of a reply as the bytes a client gets: 16-bit little-endian PCM (OpenAI's ``pcm16``), a
WAV file around it, and base64 for JSON."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np


def pcm16(samples: np.ndarray) -> bytes:
    """float32 samples in [-1, 1] -> int16 little-endian bytes (clipped, rounded to nearest)."""
    x = np.clip(np.asarray(samples, np.float32), -1.0, 1.0)
    return np.round(x * 32767.0).astype("<i2").tobytes()


def wav(samples: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm16(samples))
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
