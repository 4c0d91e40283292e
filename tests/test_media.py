"""Image inputs (minicpmo_cpp.media) and video helpers (minicpmo_cpp.video).

Pixel references are independent of the code under test where possible: the array an image was made
from (lossless PNG), or PIL's own decode + convert("RGB") — the official processor's colour rule.
Pixels are uint8, so every comparison is exact (tolerance 0).
"""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from minicpmo_cpp import MinicpmoError
from minicpmo_cpp.media import MAX_SIDE, is_image_part, load_image
from minicpmo_cpp.video import concat_images, concat_layout, sample_frames, video_content
from pillow_official import official_resize

RNG_SEED = 1234


@pytest.fixture()
def rgb() -> np.ndarray:
    return np.random.default_rng(RNG_SEED).integers(0, 256, size=(7, 13, 3), dtype=np.uint8)


def _check_rgb(out: np.ndarray, expected: np.ndarray) -> None:
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, expected)


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _forged_png(width: int, height: int) -> bytes:
    """A 1x1 1-bit PNG whose IHDR claims width x height (CRC recomputed so PIL accepts the header)."""
    data = bytearray(_png_bytes(Image.new("1", (1, 1))))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _expect_error(obj, *fragments: str) -> str:
    with pytest.raises(MinicpmoError) as info:
        load_image(obj)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------- accepted forms


@pytest.mark.parametrize("mode", ["1", "L", "P", "LA", "RGBA", "CMYK", "YCbCr", "I", "F", "HSV"])
def test_pil_modes_match_pil_convert(rgb, mode):
    image = Image.fromarray(rgb).convert(mode)
    _check_rgb(load_image(image), np.asarray(image.convert("RGB")))


def test_pil_palette_with_transparency_and_16_bit(rgb):
    palette = Image.fromarray(rgb).convert("P")
    palette.info["transparency"] = 0
    _check_rgb(load_image(palette), np.asarray(palette.convert("RGB")))
    # 16-bit grey: PIL clips to 0..255 when converting to RGB (values chosen across that edge).
    values = np.array([[0, 7, 255, 256, 1000, 65535]], dtype=np.uint16)
    image16 = Image.fromarray(values)
    assert image16.mode == "I;16"
    clipped = np.repeat(np.clip(values, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    _check_rgb(load_image(image16), clipped)


def test_rgba_drops_alpha_without_compositing(rgb):
    alpha = np.random.default_rng(RNG_SEED + 1).integers(0, 256, size=rgb.shape[:2] + (1,), dtype=np.uint8)
    rgba = np.concatenate([rgb, alpha], axis=2)
    _check_rgb(load_image(Image.fromarray(rgba, "RGBA")), rgb)
    _check_rgb(load_image(rgba), rgb)
    _check_rgb(load_image(rgba), np.asarray(Image.fromarray(rgba, "RGBA").convert("RGB")))


def test_numpy_forms(rgb):
    out = load_image(rgb)
    _check_rgb(out, rgb)
    assert np.shares_memory(out, rgb)  # (H, W, 3) uint8 C-contiguous is taken as is
    grey = rgb[:, :, 0].copy()
    expected_grey = np.asarray(Image.fromarray(grey, "L").convert("RGB"))
    _check_rgb(load_image(grey), expected_grey)
    _check_rgb(load_image(grey[:, :, None]), expected_grey)
    flipped = rgb[::-1, ::2]  # non-contiguous view
    _check_rgb(load_image(flipped), np.ascontiguousarray(flipped))


def test_file_bytes_uri_and_dict_forms(rgb, tmp_path):
    path = tmp_path / "dir with space é" / "pic.png"
    path.parent.mkdir()
    Image.fromarray(rgb).save(path)
    raw = path.read_bytes()
    b64 = base64.b64encode(raw).decode()
    uri = "data:image/png;base64," + b64
    forms = [
        str(path),
        path,
        path.as_uri(),  # file:// with %-escapes
        raw,
        bytearray(raw),
        memoryview(raw),
        uri,
        "data:image/png;base64," + b64.replace("+", "-").replace("/", "_").rstrip("="),  # URL-safe, unpadded
        "data:image/png;base64," + "\n".join(b64[i : i + 60] for i in range(0, len(b64), 60)),  # wrapped
        {"type": "image_url", "image_url": {"url": uri, "detail": "high"}},
        {"type": "image_url", "image_url": str(path)},
        {"type": "image", "image": Image.open(path)},
        {"type": "image", "image": str(path)},
        {"type": "image", "image": rgb},
    ]
    for form in forms:
        _check_rgb(load_image(form), rgb)  # PNG is lossless: the source array is the reference


def test_jpeg_and_any_image_media_type(rgb, tmp_path):
    path = tmp_path / "pic.jpg"
    Image.fromarray(rgb).save(path, quality=90)
    expected = np.asarray(Image.open(path).convert("RGB"))
    _check_rgb(load_image(path), expected)
    uri = "data:image/webp;base64," + base64.b64encode(path.read_bytes()).decode()  # type is only a label
    _check_rgb(load_image(uri), expected)


def test_animated_and_16_bit_files(tmp_path):
    red, blue = Image.new("RGB", (5, 4), (255, 0, 0)), Image.new("RGB", (5, 4), (0, 0, 255))
    gif = tmp_path / "anim.gif"
    red.save(gif, save_all=True, append_images=[blue], duration=100)
    with Image.open(gif) as check:
        assert check.n_frames == 2
    out = load_image(gif)
    _check_rgb(out, np.broadcast_to(np.array([255, 0, 0], np.uint8), (4, 5, 3)))  # first frame

    values = np.array([[0, 100, 255, 256, 40000]], dtype=np.uint16)
    png16 = tmp_path / "deep.png"
    Image.fromarray(values).save(png16)
    expected = np.asarray(Image.open(png16).convert("RGB"))
    _check_rgb(load_image(png16), expected)
    np.testing.assert_array_equal(expected[..., 0], np.clip(values, 0, 255))


def test_is_image_part(rgb):
    assert is_image_part(Image.fromarray(rgb))
    assert is_image_part(rgb)
    assert is_image_part(np.zeros((4, 4, 4), np.uint8))
    assert is_image_part({"type": "image_url", "image_url": {"url": "x"}})
    assert is_image_part({"type": "image", "image": "x.png"})
    assert is_image_part(np.zeros((4, 4, 3), np.float32))  # routed to load_image's "pass uint8" error
    assert not is_image_part(np.zeros(16000, np.float32))  # audio
    assert not is_image_part(np.zeros((16000, 3), np.float32))
    assert not is_image_part(np.zeros((4, 4), np.uint8))
    assert not is_image_part("pic.png")  # strings are text
    assert not is_image_part({"type": "text", "text": "hi"})
    assert not is_image_part({"type": "input_audio"})
    assert not is_image_part(None)


# ---------------------------------------------------------------- errors


def test_file_errors(tmp_path):
    missing = tmp_path / "nope.png"
    _expect_error(str(missing), "nope.png", "does not exist")
    _expect_error(tmp_path, "is a directory")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    _expect_error(empty, "empty.png", "empty (0 bytes)")
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not an image\n")
    _expect_error(text, "notes.txt", "not an image")
    _expect_error("", "empty string")
    _expect_error("A" * 400, "data:image")  # long non-path string: hint about data URIs


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files(tmp_path, fmt):
    noise = np.random.default_rng(RNG_SEED).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    full = tmp_path / f"full.{fmt.lower()}"
    Image.fromarray(noise).save(full, format=fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with Image.open(cut) as lazy:  # the header alone is fine: only load() notices the truncation
        assert lazy.size == (64, 64)
    _expect_error(cut, f"cut.{fmt.lower()}", "truncated or corrupt")
    _expect_error(data[: len(data) // 2], "image bytes", "truncated or corrupt")
    _expect_error(Image.open(cut), "PIL image", "truncated or corrupt")  # a lazily opened PIL image


def test_uri_and_dict_errors():
    _expect_error("data:image/png;base64,@@@@", "data URI", "invalid base64")
    _expect_error("data:image/png;base64,iVBORw0K" + "A", "invalid base64")
    _expect_error("data:text/plain;base64,aGVsbG8=", "'text/plain' is not an image")
    _expect_error("data:image/png,rawbytes", "not base64-encoded")
    _expect_error("data:image/png;base64", "no ','")
    _expect_error("data:image/png;base64,", "empty")
    _expect_error("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "data URI", "not an image")
    _expect_error("https://example.com/cat.png", "does not fetch", "file path")
    _expect_error({"type": "image_url", "image_url": {"url": "http://example.com/a.jpg"}}, "does not fetch")
    _expect_error("ftp://example.com/a.png", "unsupported scheme 'ftp'")
    _expect_error("file://otherhost/a.png", "remote host")
    _expect_error({"type": "image_url", "image_url": {}}, "image_url.url")
    _expect_error({"type": "image"}, "no 'image' value")
    _expect_error({"type": "text", "text": "hi"}, "'text' is not an image")
    _expect_error(12345, "cannot use a int as an image")


def test_array_errors(rgb):
    _expect_error(rgb.astype(np.float32) / 255, "float32", "pass uint8")
    _expect_error(rgb.astype(np.uint16), "must have dtype uint8")
    _expect_error(np.ascontiguousarray(rgb.transpose(2, 0, 1)), "channel-first")
    _expect_error(np.zeros((4, 4, 2), np.uint8), "expected (H, W)")
    _expect_error(np.zeros(10, np.uint8), "expected (H, W)")
    _expect_error(np.zeros((0, 5, 3), np.uint8), "zero size (5x0)")
    _expect_error(np.zeros((1, MAX_SIDE + 1, 3), np.uint8), "too large", str(MAX_SIDE))


def test_zero_size_and_huge_images(tmp_path, monkeypatch):
    _expect_error(Image.new("RGB", (0, 5)), "zero size (0x5)")
    # Over 2 * PIL.Image.MAX_IMAGE_PIXELS: PIL's DecompressionBombError at open.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_forged_png(20000, 20000))
    _expect_error(bomb, "bomb.png", "too large to decode safely")
    _expect_error(_forged_png(20000, 20000), "image bytes", "too large to decode safely")
    # Between MAX_IMAGE_PIXELS and twice it: PIL only warns; the warning is turned into an error.
    _expect_error(_forged_png(10000, 10000), "too large to decode safely")
    # Our own side limit, below PIL's pixel limits.
    _expect_error(_forged_png(MAX_SIDE + 1, 8), "too large", f"at most {MAX_SIDE}")
    # With PIL's check disabled by the user, our limit still refuses before any decoding.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    _expect_error(_forged_png(20000, 20000), "too large (20000x20000")
    # A plausible header with no pixel data behind it fails at decoding, cleanly.
    _expect_error(_forged_png(100, 100), "truncated or corrupt")


# ---------------------------------------------------------------- concat_images


def _solid(w: int, h: int, color) -> Image.Image:
    return Image.new("RGB", (w, h), color)


COLORS = [(200, 50, 100), (60, 180, 90), (90, 70, 220), (120, 230, 60), (250, 140, 40)]
BLACK, WHITE = (0, 0, 0), (255, 255, 255)


def _assert_region(canvas: np.ndarray, rows: slice, cols: slice, color) -> None:
    region = canvas[rows, cols]
    assert region.size > 0
    assert (region == np.array(color, np.uint8)).all(), (rows, cols, color)


@pytest.mark.parametrize(
    "sizes, grid",
    [
        ([(30, 50)] * 2, (1, 2)),  # portrait: side by side
        ([(50, 30)] * 2, (2, 1)),  # landscape: stacked
        ([(40, 40)] * 2, (2, 1)),  # square: 40x86 (ratio 0.47 off square) beats 86x40 (1.15 off)
        ([(22, 30)] * 2, (2, 1)),  # exact tie: 50/30 and 22/66 are both 2/3 off; mean aspect < 1 -> stacked
        ([(20, 60)] * 3, (1, 3)),
        ([(60, 20)] * 3, (3, 1)),
        ([(30, 30)] * 4, (2, 2)),
        ([(10, 10)] * 5, (1, 5)),
        ([(10, 10)], (1, 1)),
    ],
)
def test_concat_layout_and_geometry(sizes, grid):
    assert concat_layout(sizes) == grid
    images = [_solid(w, h, COLORS[i % len(COLORS)]) for i, (w, h) in enumerate(sizes)]
    out = concat_images(images)
    rows, cols = grid
    cell_w, cell_h = sizes[0]
    assert out.size == (cols * cell_w + (cols - 1) * 6, rows * cell_h + (rows - 1) * 6)
    canvas = np.asarray(out)
    for i in range(len(images)):
        r, c = divmod(i, cols)
        y, x = r * (cell_h + 6), c * (cell_w + 6)
        _assert_region(canvas, slice(y, y + cell_h), slice(x, x + cell_w), COLORS[i % len(COLORS)])
    for c in range(1, cols):  # vertical separators: 6 px, full height
        x = c * (cell_w + 6) - 6
        _assert_region(canvas, slice(None), slice(x, x + 6), BLACK)
    for r in range(1, rows):
        y = r * (cell_h + 6) - 6
        _assert_region(canvas, slice(y, y + 6), slice(None), BLACK)


def test_concat_letterbox_cells():
    # Cells are 40x40 (largest width, largest height); 2 cells -> stacked (see the square case).
    big = _solid(40, 40, COLORS[0])
    narrow = _solid(20, 40, COLORS[1])  # fits at scale 1: pasted unchanged, centred
    out = np.asarray(concat_images([big, narrow]))
    assert out.shape == (86, 40, 3)
    _assert_region(out, slice(0, 40), slice(0, 40), COLORS[0])
    _assert_region(out, slice(40, 46), slice(None), BLACK)
    _assert_region(out, slice(46, 86), slice(0, 10), WHITE)
    _assert_region(out, slice(46, 86), slice(10, 30), COLORS[1])
    _assert_region(out, slice(46, 86), slice(30, 40), WHITE)

    # Upscaling: a 5x10 image in a 40x40 cell (next to a 40x40 image) is scaled by 4 -> 20x40
    # bicubic, centred at x = 10. Pillow 10.4.0's resize (the official stack's version) of the same
    # image is the reference for the pixels: concat_images resizes with the runtime's bicubic, which
    # follows the same integer arithmetic by design, so exact equality.
    small = Image.fromarray(np.random.default_rng(RNG_SEED).integers(40, 200, size=(10, 5, 3), dtype=np.uint8))
    out = np.asarray(concat_images([big, small]))
    expected, = official_resize([(np.asarray(small), (20, 40))])
    np.testing.assert_array_equal(out[46:86, 10:30], expected)
    _assert_region(out, slice(46, 86), slice(0, 10), WHITE)
    _assert_region(out, slice(46, 86), slice(30, 40), WHITE)

    # Cells never shrink an image (each is at most cell-sized); one that fills the cell width is
    # centred vertically: 80x20 in an 80x30 cell sits at y = 5.
    wide = _solid(80, 20, COLORS[2])
    tall = _solid(40, 30, COLORS[3])
    layout = concat_layout([(80, 20), (40, 30)])
    assert layout == (2, 1)  # cell 80x30: stacked 80x66 (0.21 off square) beats 166x30
    out = np.asarray(concat_images([tall, wide]))
    assert out.shape == (66, 80, 3)
    _assert_region(out, slice(0, 30), slice(0, 20), WHITE)  # 40x30 centred in 80x30
    _assert_region(out, slice(0, 30), slice(20, 60), COLORS[3])
    _assert_region(out, slice(36, 41), slice(None), WHITE)  # letterbox above the 80x20 image
    _assert_region(out, slice(41, 61), slice(None), COLORS[2])
    _assert_region(out, slice(61, 66), slice(None), WHITE)


def test_concat_errors():
    with pytest.raises(MinicpmoError, match="at least one image"):
        concat_images([])
    with pytest.raises(MinicpmoError, match="list of images"):
        concat_images(_solid(4, 4, BLACK))
    with pytest.raises(MinicpmoError, match="does not exist"):
        concat_images([_solid(4, 4, BLACK), "/nonexistent/frame.png"])


# ---------------------------------------------------------------- video helpers


def test_sample_frames_short_video():
    plan = sample_frames(300, 30.0)  # 10 s
    assert plan.timestamps == [float(s) for s in range(10)]
    assert plan.indices == [30 * s for s in range(10)]
    assert plan.stack_indices == [[]] * 10
    assert plan.duration == 10.0
    plan = sample_frames(100, 29.97)  # 3.34 s: 4 started seconds
    assert plan.indices == [0, 29, 59, 89]  # int(s * 29.97)
    # High-FPS, 2 frames per second: the extra frame sits half a second in; none past the end.
    plan = sample_frames(75, 30, stack_frames=2)  # 2.5 s
    assert plan.indices == [0, 30, 60]
    assert plan.stack_indices == [[15], [45], []]
    plan = sample_frames(90, 30, stack_frames=4)  # extras at +0.25, +0.5, +0.75 s
    assert plan.stack_indices == [[7, 15, 22], [37, 45, 52], [67, 75, 82]]


def test_sample_frames_long_video():
    plan = sample_frames(3000, 30, max_frames=64)  # 100 s > 64 s: 1000 candidates every 0.1 s
    assert len(plan.timestamps) == len(plan.indices) == 64
    # positions floor(k * 999 / 63) (np.linspace agrees with exact arithmetic here)
    positions = [k * 999 // 63 for k in range(64)]
    assert plan.timestamps == [round(p * 0.1, 1) for p in positions]
    assert plan.timestamps[0] == 0.0 and plan.timestamps[-1] == 99.9
    assert plan.indices[:3] == [0, 45, 93]  # int(1.5 * 30), int(3.1 * 30)
    assert plan.indices[-1] == 2997
    assert all(0 <= i < 3000 for i in plan.indices)
    # exactly 64 s is still "short": one frame per second
    assert len(sample_frames(64 * 25, 25).indices) == 64


def test_sample_frames_errors():
    bad_arguments = [
        (0, 30, {}, "n_frames_total"),
        (2.5, 30, {}, "n_frames_total"),
        (10, 0, {}, "fps"),
        (10, -1, {}, "fps"),
        (10, float("nan"), {}, "fps"),
        (10, True, {}, "fps"),
        (10, 30, {"max_frames": 0}, "max_frames"),
        (10, 30, {"stack_frames": 0}, "stack_frames"),
    ]
    for n_frames, fps, extra, name in bad_arguments:
        with pytest.raises(MinicpmoError, match=name):
            sample_frames(n_frames, fps, **extra)


def test_video_content_order():
    frames = [_solid(8, 6, COLORS[i]) for i in range(3)]
    audio = [np.full(16000, i, np.float64) for i in range(3)]
    extra = [_solid(8, 6, COLORS[3]), _solid(8, 6, COLORS[4])]
    ready = _solid(4, 4, BLACK)
    content = video_content(frames, stacked=[extra, None, ready], audio=audio)
    kinds = ["image" if isinstance(p, dict) else "audio" for p in content]
    assert kinds == ["image", "audio", "image", "image", "audio", "image", "audio", "image"]
    assert [content[i]["image"] for i in (0, 3, 5)] == frames
    np.testing.assert_array_equal(load_image(content[2]), np.asarray(concat_images(extra)))
    assert content[7]["image"] is ready
    assert [p.dtype for p in (content[1], content[4], content[6])] == [np.float32] * 3
    assert [p[0] for p in (content[1], content[4], content[6])] == [0.0, 1.0, 2.0]
    assert all(is_image_part(p) for p in content if isinstance(p, dict))
    assert video_content(frames, stacked=[[], None, []]) == [{"type": "image", "image": f} for f in frames]
    with pytest.raises(MinicpmoError, match="stacked has 2 entries but there are 3 frames"):
        video_content(frames, stacked=[None, None])
    with pytest.raises(MinicpmoError, match="audio\\[0\\] must be a 1-D float"):
        video_content(frames, audio=[np.zeros((2, 2)), None, None])
    with pytest.raises(MinicpmoError, match="at least one frame"):
        video_content([])
