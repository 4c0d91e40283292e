"""Video helpers: frame sampling, the high-FPS stacked composite, and per-second chat content.

MiniCPM-o 4.5 has no temporal resampler: a video is fed as one frame per second (interleaved with
that second's audio), each frame an ordinary image (MODEL_SPEC §1.3). This module does no video
decoding and pulls in no decoder: decode the frames yourself (PyAV, decord, OpenCV, ffmpeg, ...),
using ``sample_frames`` to know which frames to decode, then build the message content::

    import av
    from minicpmo_cpp.video import sample_frames, video_content

    container = av.open("clip.mp4")
    stream = container.streams.video[0]
    frames = [f.to_image() for f in container.decode(stream)]     # or seek to just the needed ones
    plan = sample_frames(len(frames), float(stream.average_rate))
    content = video_content([frames[i] for i in plan.indices])
    msgs = [{"role": "user", "content": content + ["Describe the video."]}]

Audio is optional: cut the track at ``plan.timestamps`` (segment i runs from timestamps[i] to the next
timestamp, the last one to ``plan.duration``) and pass the 16 kHz float32 segments as ``audio``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import numpy as np
from PIL import Image

from . import _core
from ._core import MinicpmoError
from .media import load_image

SEPARATOR_WIDTH = 6
SEPARATOR_COLOR = (0, 0, 0)
LETTERBOX_COLOR = (255, 255, 255)
MAX_NUM_FRAMES = 64
LONG_VIDEO_STEP_S = 0.1


class FrameSample(NamedTuple):
    """Which frames of a video to feed. One entry of ``timestamps`` / ``indices`` / ``stack_indices``
    per chat unit (≈ one second of video)."""

    timestamps: list  # float seconds, the unit's start time
    indices: list  # int index of the frame to decode for each unit
    stack_indices: list  # per unit, the extra frame indices for its high-FPS composite (else [])
    duration: float  # seconds, n_frames_total / fps


def sample_frames(
    n_frames_total: int, fps: float, max_frames: int = MAX_NUM_FRAMES, stack_frames: int = 1
) -> FrameSample:
    """Frame schedule of MODEL_SPEC §1.3 for a video of ``n_frames_total`` frames at ``fps``.

    - duration ≤ ``max_frames`` seconds: one unit per started second, at t = 0, 1, 2, ...,
      ceil(duration) - 1; frame index int(t * fps).
    - longer videos: candidate timestamps every 0.1 s (round(i * 0.1, 1), i < int(duration / 0.1)),
      uniformly down-sampled to ``max_frames`` by positions int(linspace(0, n - 1, max_frames));
      frame index min(int(t * fps), n_frames_total - 1).
    These are the expressions of the official minicpmo-utils ``get_video_frame_audio_segments``, float
    rounding included (e.g. int(0.3 * 30) = 8), so the same frames are picked.

    ``stack_frames`` = k > 1 (high-FPS mode): each unit also gets the frames at t + j / k for
    j = 1 .. k - 1 (those before the end of the video), to be stacked with ``concat_images``. For short
    videos this is the official schedule. For long videos the official utility groups the extra frames
    by whole second, which does not line up with its down-sampled units; here each unit takes the extras
    just after its own timestamp instead (deliberate deviation).
    """
    if isinstance(n_frames_total, bool) or not isinstance(n_frames_total, (int, np.integer)) or n_frames_total < 1:
        raise MinicpmoError(f"n_frames_total must be a positive integer, got {n_frames_total!r}")
    is_number = isinstance(fps, (int, float, np.integer, np.floating)) and not isinstance(fps, bool)
    if not is_number or not math.isfinite(fps) or fps <= 0:
        raise MinicpmoError(f"fps must be a positive finite number, got {fps!r}")
    for name, value in (("max_frames", max_frames), ("stack_frames", stack_frames)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise MinicpmoError(f"{name} must be a positive integer, got {value!r}")
    n_frames_total, fps = int(n_frames_total), float(fps)
    last = n_frames_total - 1
    duration = n_frames_total / fps

    if duration > max_frames:
        candidates = [round(i * LONG_VIDEO_STEP_S, 1) for i in range(int(duration / LONG_VIDEO_STEP_S))]
        timestamps = [candidates[p] for p in _uniform_positions(len(candidates), max_frames)]
    else:
        timestamps = [float(s) for s in range(math.ceil(duration))]
    # The clamp only matters for long videos; short ones stay below the end anyway.
    indices = [min(int(t * fps), last) for t in timestamps]

    stack_indices = []
    for t in timestamps:
        extras = [t + j / stack_frames for j in range(1, stack_frames)]
        stack_indices.append([min(int(e * fps), last) for e in extras if e < duration])
    return FrameSample(timestamps, indices, stack_indices, duration)


def _uniform_positions(length: int, count: int) -> list:
    if length <= count:
        return list(range(length))
    return [int(p) for p in np.linspace(0, length - 1, count)]


def concat_layout(sizes: Sequence, line_width: int = SEPARATOR_WIDTH) -> tuple:
    """(rows, cols) of the composite for images of the given (width, height) sizes.

    1 -> 1x1, 4 -> 2x2, 5 or more -> 1xN (one row). For 2 and 3 images the spec only says "1x2 or
    2x1" / "1x3 or 3x1"; the rule used (the official minicpmo-utils one) picks the arrangement whose
    canvas, built from cells of the largest width and largest height, has the aspect ratio closest to
    square: landscape frames end up stacked vertically, portrait frames side by side. An exact tie for
    2 images goes to side by side when the mean width/height ratio is ≥ 1, else stacked; for 3 images
    to the single row.
    """
    n = len(sizes)
    if n == 0:
        raise MinicpmoError("concat_images needs at least one image")
    if n == 1:
        return (1, 1)
    if n == 4:
        return (2, 2)
    if n > 4:
        return (1, n)
    cell_w = max(w for w, _ in sizes)
    cell_h = max(h for _, h in sizes)

    def distance_from_square(rows: int, cols: int) -> float:
        canvas_w = cols * cell_w + (cols - 1) * line_width
        canvas_h = rows * cell_h + (rows - 1) * line_width
        return abs(canvas_w / max(1, canvas_h) - 1.0)

    in_row, in_column = distance_from_square(1, n), distance_from_square(n, 1)
    if in_row == in_column and n == 2:
        mean_aspect = sum(w / max(1, h) for w, h in sizes) / n
        return (1, 2) if mean_aspect >= 1.0 else (2, 1)
    return (1, n) if in_row <= in_column else (n, 1)


def concat_images(
    images: Sequence,
    line_width: int = SEPARATOR_WIDTH,
    line_color: tuple = SEPARATOR_COLOR,
    background: tuple = LETTERBOX_COLOR,
) -> Image.Image:
    """The high-FPS composite of MODEL_SPEC §1.3: ``images`` (any form ``load_image`` takes) on one
    RGB canvas in the ``concat_layout`` grid.

    Every cell is (largest width) x (largest height) of the inputs; each image is scaled to fit its
    cell keeping its aspect ratio (factor min(cell_w / w, cell_h / h), new size rounded, at least 1 px,
    bicubic as Pillow 10.4.0, the official stack's version, computes it; an image that already fills
    the cell is pasted unchanged), centred (offsets rounded down) on a ``background`` (white, as the
    official utility) letterbox. Cells are separated by ``line_width``-pixel ``line_color`` (black)
    bands; there is no outer border, so the canvas is cols*cell_w + (cols-1)*line_width wide and rows*cell_h + (rows-1)*line_width high.
    """
    if isinstance(images, (str, bytes, dict, np.ndarray, Image.Image)):
        raise MinicpmoError("concat_images takes a list of images")
    if isinstance(line_width, bool) or not isinstance(line_width, int) or line_width < 0:
        raise MinicpmoError(f"line_width must be a non-negative integer, got {line_width!r}")
    pictures = [Image.fromarray(load_image(im)) for im in images]
    rows, cols = concat_layout([p.size for p in pictures], line_width)
    cell_w = max(p.width for p in pictures)
    cell_h = max(p.height for p in pictures)
    canvas = Image.new(
        "RGB", (cols * cell_w + (cols - 1) * line_width, rows * cell_h + (rows - 1) * line_width), line_color
    )
    for i, picture in enumerate(pictures):
        row, col = divmod(i, cols)
        origin = (col * (cell_w + line_width), row * (cell_h + line_width))
        canvas.paste(_letterbox(picture, cell_w, cell_h, background), origin)
    return canvas


def _letterbox(picture: Image.Image, cell_w: int, cell_h: int, background: tuple) -> Image.Image:
    scale = min(cell_w / picture.width, cell_h / picture.height)
    new_w = max(1, int(round(picture.width * scale)))
    new_h = max(1, int(round(picture.height * scale)))
    if (new_w, new_h) != picture.size:
        # the runtime's resize, Pillow 10.4.0's arithmetic (the official stack's version), not the
        # installed Pillow's: one resize for every image path
        picture = Image.fromarray(_core.resize_bicubic(np.asarray(picture), new_w, new_h))
    cell = Image.new("RGB", (cell_w, cell_h), background)
    cell.paste(picture, ((cell_w - new_w) // 2, (cell_h - new_h) // 2))
    return cell


def video_content(frames: Sequence, stacked: Sequence | None = None, audio: Sequence | None = None) -> list:
    """User-message content for a video: per unit (second) i, in this order,

    - ``{"type": "image", "image": frames[i]}`` (the frame as given, any ``load_image`` form);
    - ``audio[i]`` if ``audio`` is given: that second's 16 kHz mono waveform, a 1-D float numpy array
      (converted to float32);
    - if ``stacked`` is given and ``stacked[i]`` is not None: an image part with that second's high-FPS
      composite. ``stacked[i]`` may be a list/tuple of frames (stacked here with ``concat_images``; an
      empty one adds nothing) or one image that is already the composite.

    Append the text prompt after it. ``stacked`` and ``audio`` must have one entry per frame.
    """
    if isinstance(frames, (str, bytes, dict, np.ndarray, Image.Image)):
        raise MinicpmoError("video_content takes a list of frames (one per second)")
    frames = list(frames)
    if not frames:
        raise MinicpmoError("video_content needs at least one frame")
    for name, extra in (("stacked", stacked), ("audio", audio)):
        if extra is not None and len(extra) != len(frames):
            raise MinicpmoError(
                f"{name} has {len(extra)} entries but there are {len(frames)} frames (one per second)"
            )
    content: list = []
    for i, frame in enumerate(frames):
        content.append({"type": "image", "image": frame})
        if audio is not None:
            content.append(_audio_segment(audio[i], i))
        if stacked is not None and stacked[i] is not None:
            composite = stacked[i]
            if isinstance(composite, (list, tuple)):
                if not composite:  # a second without extra frames (end of the video)
                    continue
                composite = concat_images(composite)
            content.append({"type": "image", "image": composite})
    return content


def _audio_segment(segment: Any, index: int) -> np.ndarray:
    if not isinstance(segment, np.ndarray) or segment.ndim != 1 or not np.issubdtype(segment.dtype, np.floating):
        raise MinicpmoError(f"audio[{index}] must be a 1-D float numpy array (16 kHz mono samples)")
    return np.ascontiguousarray(segment, dtype=np.float32)
