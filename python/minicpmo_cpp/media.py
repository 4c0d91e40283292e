"""Turns whatever a user passes as an image into the uint8 (H, W, 3) RGB array the vision path takes.

Accepted forms (see ``load_image``): PIL images, uint8 numpy arrays, file paths, ``file://`` URLs,
encoded image bytes, base64 ``data:`` URIs and OpenAI / MiniCPM-o style content dicts. Colour handling
follows the official processor, which calls ``image.convert("RGB")``: alpha is dropped (not composited
over a background), palettes are expanded, 16-bit / 32-bit / float modes are clipped to 0..255 the way
PIL does it, and EXIF orientation is NOT applied. Network URLs are refused: fetching is the caller's job.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import os
import re
import struct
import warnings
from typing import Any, BinaryIO, Iterator
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import numpy as np
from PIL import Image

from . import _core
from ._core import MinicpmoError

# Largest accepted side. It also bounds the pixel count at 16384**2 = 2**28, far above anything the
# model can use (images are resized to about 448x448 per slice, at most 9 slices).
MAX_SIDE = int(_core.IMAGE_MAX_SIDE)  # 16384, the CLI's limit (csrc/cli/image_file.h)
# Most pixels an encoded image may declare (PIL's default MAX_IMAGE_PIXELS, also the CLI's), checked
# from the header before decoding; arrays and PIL images the caller already holds are not limited.
MAX_PIXELS = int(_core.IMAGE_MAX_PIXELS)  # 89478485

# Errors PIL raises for unreadable, corrupt or truncated data (decoder errors surface as OSError,
# malformed headers as SyntaxError/struct.error, short reads as EOFError, bad values as ValueError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)

_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

IMAGE_PART_TYPES = ("image_url", "image")


def load_image(obj: Any) -> np.ndarray:
    """The image ``obj`` as a C-contiguous uint8 array of shape (H, W, 3), RGB.

    - ``PIL.Image.Image``: ``convert("RGB")`` of its current frame (a freshly opened animated image is
      at its first frame).
    - ``numpy.ndarray`` of dtype uint8: (H, W, 3) is returned as is (no copy when already
      C-contiguous); (H, W) and (H, W, 1) grey levels are replicated to 3 channels; (H, W, 4) loses its
      alpha channel. Other dtypes are refused: float data is never rescaled silently.
    - ``str`` / ``os.PathLike``: a file path; ``file://`` URLs and ``data:`` URIs are accepted as
      strings, http(s) URLs are refused (no network access).
    - ``bytes`` / ``bytearray`` / ``memoryview``: an encoded image file (PNG, JPEG, ...).
    - ``dict``: ``{"type": "image_url", "image_url": {"url": ...}}``,
      ``{"type": "image_url", "image_url": "..."}`` or ``{"type": "image", "image": <any form above>}``.

    Encoded images (files, bytes, data URIs) decode their first frame. Raises ``MinicpmoError`` naming
    the source and the problem for anything that is not a usable image.
    """
    if isinstance(obj, Image.Image):
        return _from_pil(obj, f"PIL image (mode {obj.mode}, size {obj.size[0]}x{obj.size[1]})")
    if isinstance(obj, np.ndarray):
        return _from_array(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
        return _from_encoded(data, f"image bytes ({len(data)} bytes)")
    if isinstance(obj, dict):
        return _from_content_part(obj)
    if isinstance(obj, str):
        return _from_string(obj)
    if isinstance(obj, os.PathLike):
        return _from_file(os.fsdecode(os.fspath(obj)))
    raise MinicpmoError(
        f"cannot use a {type(obj).__name__} as an image: pass a PIL image, a uint8 numpy array "
        f"(H, W, 3), a file path, encoded image bytes, a data: URI or an image content dict"
    )


def is_image_part(part: Any) -> bool:
    """Whether a message content part is meant as an image (so it goes to ``load_image``).

    True for PIL images, dicts of type "image_url" / "image", and numpy arrays shaped (H, W, 3) or
    (H, W, 4). The array test looks at the shape only, so a float (H, W, 3) array is routed to
    ``load_image`` and gets its clear "pass uint8" error; audio (1-D float arrays) never matches.
    Strings are text, never images, even when they happen to name a file.
    """
    if isinstance(part, Image.Image):
        return True
    if isinstance(part, dict):
        return part.get("type") in IMAGE_PART_TYPES
    if isinstance(part, np.ndarray):
        return part.ndim == 3 and part.shape[-1] in (3, 4)
    return False


# ---- sources ----


def _from_content_part(part: dict) -> np.ndarray:
    kind = part.get("type")
    if kind == "image_url":
        value = part.get("image_url")
        if isinstance(value, dict):
            value = value.get("url")
        if not isinstance(value, str):
            raise MinicpmoError(
                "an image_url content part needs a string URL in image_url.url (or image_url itself)"
            )
        return _from_string(value)
    if kind == "image":
        value = part.get("image")
        if value is None:
            raise MinicpmoError("an image content part has no 'image' value")
        if isinstance(value, dict):
            raise MinicpmoError("the 'image' value of an image content part cannot itself be a dict")
        return load_image(value)
    raise MinicpmoError(f"a content part of type {kind!r} is not an image (expected 'image_url' or 'image')")


def _from_string(text: str) -> np.ndarray:
    if not text:
        raise MinicpmoError("an empty string is neither an image path nor a URL")
    if text[:5].lower() == "data:":
        return _from_data_uri(text)
    match = _URL_SCHEME.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme == "file":
            return _from_file(_file_url_to_path(text))
        shown = text if len(text) <= 100 else text[:100] + "..."
        if scheme in ("http", "https"):
            raise MinicpmoError(
                f"image URL {shown!r}: minicpmo-cpp does not fetch images over the network; "
                f"download it and pass the file path (or its bytes)"
            )
        raise MinicpmoError(f"image URL {shown!r}: unsupported scheme {scheme!r} (use a file path)")
    return _from_file(text)


def _file_url_to_path(url: str) -> str:
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise MinicpmoError(f"image URL {url!r} names a remote host; only local file:// URLs are read")
    return url2pathname(parsed.path)  # undoes %-escapes


def _from_file(path: str) -> np.ndarray:
    label = f"image file {path if len(path) <= 200 else path[:200] + '...'!r}"
    if not os.path.exists(path):
        hint = ""
        if len(path) > 260:
            hint = " (a long string that is not a path: pass base64 image data as a data:image/...;base64, URI)"
        raise MinicpmoError(f"{label} does not exist{hint}")
    if os.path.isdir(path):
        raise MinicpmoError(f"{label} is a directory, not an image file")
    try:
        stream = open(path, "rb")
    except OSError as e:
        raise MinicpmoError(f"{label} cannot be read: {e.strerror or e}") from e
    with stream:
        if os.fstat(stream.fileno()).st_size == 0:
            raise MinicpmoError(f"{label} is empty (0 bytes)")
        return _decode_stream(stream, label)


def _from_data_uri(uri: str) -> np.ndarray:
    header, comma, payload = uri.partition(",")
    if not comma:
        raise MinicpmoError("data URI has no ',' between its header and its data")
    params = [p.strip().lower() for p in header[5:].split(";")]
    media_type = params[0]
    label = f"data URI image ({media_type or 'no media type'}, {len(uri)} characters)"
    if not media_type.startswith("image/"):
        raise MinicpmoError(f"data URI media type {media_type or '(none)'!r} is not an image/* type")
    if "base64" not in params[1:]:
        raise MinicpmoError(
            f"{label} is not base64-encoded (';base64' is missing); only base64 data URIs are read"
        )
    data = _decode_base64(payload, label)
    return _from_encoded(data, label)


def _decode_base64(payload: str, label: str) -> bytes:
    text = re.sub(r"\s+", "", unquote(payload))  # URIs may be %-escaped or wrapped over lines
    text = text.replace("-", "+").replace("_", "/")  # accept the URL-safe alphabet too
    text += "=" * (-len(text) % 4)  # and missing padding
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MinicpmoError(f"{label}: invalid base64 data ({e})") from e


def _from_encoded(data: bytes, label: str) -> np.ndarray:
    if not data:
        raise MinicpmoError(f"{label} is empty (0 bytes)")
    return _decode_stream(io.BytesIO(data), label)


def _decode_stream(stream: BinaryIO, label: str) -> np.ndarray:
    try:
        with _bomb_warning_as_error():
            image = Image.open(stream)  # parses the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MinicpmoError(_bomb_message(label, e)) from e
    except Image.UnidentifiedImageError as e:
        raise MinicpmoError(f"{label} is not an image PIL can read (unknown format or corrupt header)") from e
    except _DECODE_ERRORS as e:
        raise MinicpmoError(f"{label} could not be opened as an image: {e}") from e
    with image:
        _check_pixels(*image.size, label)  # PIL's own limit is a global a caller may have raised
        return _from_pil(image, label)


# ---- decoded forms ----


def _from_pil(image: Image.Image, label: str) -> np.ndarray:
    width, height = image.size
    _check_size(width, height, label)  # before load(): lazily opened files are not decoded yet
    try:
        with _bomb_warning_as_error():
            image.load()  # forces decoding here so truncation is reported, not deferred
            rgb = image if image.mode == "RGB" else image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MinicpmoError(_bomb_message(label, e)) from e
    except _DECODE_ERRORS as e:
        raise MinicpmoError(f"{label} could not be decoded (truncated or corrupt image data?): {e}") from e
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _from_array(array: np.ndarray) -> np.ndarray:
    desc = f"numpy array of shape {array.shape} and dtype {array.dtype}"
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating):
            raise MinicpmoError(
                f"{desc}: float image arrays are not accepted because their range (0..1 or 0..255) is "
                f"ambiguous; pass uint8, e.g. (x * 255).round().clip(0, 255).astype(np.uint8) for 0..1 data"
            )
        raise MinicpmoError(f"{desc}: image arrays must have dtype uint8")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        hint = ""
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):
            hint = " (it looks channel-first: use array.transpose(1, 2, 0))"
        raise MinicpmoError(f"{desc}: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4){hint}")
    height, width, channels = array.shape
    _check_size(width, height, desc)
    if channels == 1:
        return np.repeat(array, 3, axis=2)  # grey -> RGB, as PIL's L -> RGB
    return np.ascontiguousarray(array[:, :, :3])  # drops alpha, as PIL's RGBA -> RGB


def _check_size(width: int, height: int, label: str) -> None:
    if width <= 0 or height <= 0:
        raise MinicpmoError(f"{label} has zero size ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise MinicpmoError(
            f"{label} is too large ({width}x{height} pixels; at most {MAX_SIDE} pixels per side are accepted)"
        )


def _check_pixels(width: int, height: int, label: str) -> None:
    _check_size(width, height, label)
    if width * height > MAX_PIXELS:
        raise MinicpmoError(
            f"{label} is too large to decode safely ({width}x{height} = {width * height} pixels; "
            f"at most {MAX_PIXELS} are decoded); downscale it first"
        )


@contextlib.contextmanager
def _bomb_warning_as_error() -> Iterator[None]:
    """Within this block PIL's DecompressionBombWarning (image over PIL.Image.MAX_IMAGE_PIXELS) is
    raised instead of printed, so such images are refused rather than decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _bomb_message(label: str, error: Exception) -> str:
    return (
        f"{label} is too large to decode safely ({error}). Images over PIL.Image.MAX_IMAGE_PIXELS "
        f"are refused; downscale it first"
    )
