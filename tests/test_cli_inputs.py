"""minicpmo-cli's media limits and messages are the Python loaders' (same numbers, from one place in
C++), the voice is checked before a reply is generated, and Ctrl-C stops a reply, not the program."""

from __future__ import annotations

import os
import select
import shutil
import signal
import struct
import subprocess
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from minicpmo_cpp import MinicpmoError, _core
from minicpmo_cpp.audio_input import MAX_SECONDS, load_audio
from minicpmo_cpp.media import MAX_PIXELS, MAX_SIDE, load_image


def cli_path() -> str:
    cli = shutil.which("minicpmo-cli")
    assert cli, "minicpmo-cli must be on PATH after pip install"
    return cli


def cli_error(model, *args: str) -> str:
    """The CLI's error line for a run that must fail before generating anything."""
    res = subprocess.run([cli_path(), "-m", str(model), "-p", "Hi", "-n", "100000", "-t", "2", *args],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert res.stdout == "", res.stdout  # no reply text: refused before generation
    lines = res.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("minicpmo-cli: "), res.stderr
    return lines[-1][len("minicpmo-cli: "):]


def python_error(load, path) -> str:
    with pytest.raises(MinicpmoError) as info:
        load(str(path))
    return str(info.value)


def forged_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height over one row of pixel data (no image behind it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


def test_limits_are_one_set_of_numbers():
    assert MAX_SIDE == _core.IMAGE_MAX_SIDE == 16384
    # PIL's default decompression-bomb limit, which the Python path applied first
    assert MAX_PIXELS == _core.IMAGE_MAX_PIXELS == 1024 * 1024 * 1024 // 4 // 3 == 89478485
    assert MAX_SECONDS == _core.AUDIO_MAX_SECONDS == 3600.0


def test_cli_image_errors_match_python(tmp_path, tiny_f32, monkeypatch):
    model = tiny_f32[0]
    files = {
        "empty.png": b"",
        "wide.png": forged_png(MAX_SIDE + 1, 8),
        "bomb.png": forged_png(16000, 16000),  # 1.5 GB of RGB if decoded
        "over-limit.png": forged_png(9459, 9460),  # 89482140 pixels: just over MAX_PIXELS
        "under-limit.png": forged_png(9459, 9459),  # 89472681 pixels: decoded, then found truncated
        "text.png": b"not an image\n" * 10,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    cli = {name: cli_error(model, "--image", str(tmp_path / name)) for name in files}
    py = {name: python_error(load_image, tmp_path / name) for name in files}
    label = {name: f"image file {str(tmp_path / name)!r}" for name in files}

    # our own checks: the same message word for word
    for name in ("empty.png", "wide.png"):
        assert cli[name] == py[name], (cli[name], py[name])
    assert cli["empty.png"] == f"{label['empty.png']} is empty (0 bytes)"
    assert cli["wide.png"] == (f"{label['wide.png']} is too large ({MAX_SIDE + 1}x8 pixels; at most {MAX_SIDE} "
                               f"pixels per side are accepted)")
    # the pixel limit, read from the header before decoding (stb would otherwise allocate the pixels)
    for name in ("bomb.png", "over-limit.png"):
        assert cli[name].startswith(label[name] + " is too large to decode safely"), cli[name]
        assert py[name].startswith(label[name] + " is too large to decode safely"), py[name]
        assert f"at most {MAX_PIXELS}" in cli[name] and cli[name].endswith("downscale it first"), cli[name]
    for name in ("under-limit.png",):
        assert cli[name].startswith(label[name] + " could not be decoded (truncated or corrupt image data?)")
        assert py[name].startswith(label[name] + " could not be decoded (truncated or corrupt image data?)")
    assert "(unknown format or corrupt header" in cli["text.png"] and label["text.png"] in cli["text.png"]
    assert "(unknown format or corrupt header" in py["text.png"]

    # with PIL's own (global, user-settable) limit lifted, Python refuses by the shared number, with
    # the CLI's exact message
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    for name in ("bomb.png", "over-limit.png"):
        assert python_error(load_image, tmp_path / name) == cli[name]


def test_cli_audio_errors_match_python(tmp_path, tiny_f32):
    import soundfile as sf

    model = tiny_f32[0]
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert cli_error(model, "--audio", str(empty)) == python_error(load_audio, empty) == \
        f"audio file {str(empty)!r} is empty (0 bytes)"
    # one second over the limit, at a low rate to keep the file small (3.6 MB)
    rate = 1000
    long_wav = tmp_path / "long.wav"
    sf.write(long_wav, np.zeros(int((MAX_SECONDS + 1) * rate), np.int16), rate, subtype="PCM_U8")
    expected = f"lasts {MAX_SECONDS + 1:.1f} s, longer than the {MAX_SECONDS:g} s accepted"
    cli, py = cli_error(model, "--audio", str(long_wav)), python_error(load_audio, long_wav)
    assert cli.startswith(f"audio file {str(long_wav)!r} {expected}"), cli
    assert expected in py, py


def test_unknown_voice_refused_before_generating(tmp_path, tiny_f32):
    model, omni = tiny_f32
    out = tmp_path / "out.wav"
    err = cli_error(model, "--speak", str(out), "--voice", "nobody")
    assert "no voice named 'nobody' (voices: default)" in err, err
    assert not out.exists()
    # no companion: speech output is refused up front as well
    lone = tmp_path / "lone" / model.name
    lone.parent.mkdir()
    shutil.copyfile(model, lone)
    err = cli_error(lone, "--speak", str(out))
    assert "speech output needs the omni companion file" in err, err


class Interactive:
    """minicpmo-cli in interactive mode with pipes, read without blocking."""

    def __init__(self, args):
        self.p = subprocess.Popen([cli_path(), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.out = b""
        self.err = b""

    def send(self, line: str) -> None:
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()

    def wait_for(self, predicate, timeout: float = 240.0) -> None:
        t0 = time.monotonic()
        while not predicate():
            assert time.monotonic() - t0 < timeout, (self.out[-2000:], self.err[-2000:])
            ready, _, _ = select.select([self.p.stdout, self.p.stderr], [], [], 1.0)
            for f in ready:
                data = os.read(f.fileno(), 65536)
                if f is self.p.stdout:
                    self.out += data
                else:
                    self.err += data
            assert ready or self.p.poll() is None, (self.p.returncode, self.out[-2000:], self.err[-2000:])

    def finish(self, timeout: float = 240.0) -> int:
        out, err = self.p.communicate(timeout=timeout)
        self.out += out
        self.err += err
        return self.p.returncode


def test_ctrl_c_stops_the_reply_not_the_program(tmp_path, tiny_f32):
    import soundfile as sf

    model = tiny_f32[0]
    wav = tmp_path / "reply.wav"
    # -n 100000: the replies run until Ctrl-C (or the context ends, minutes later)
    cli = Interactive(["-m", str(model), "-n", "100000", "-c", "8192", "--temp", "0", "-t", "2",
                       "--speak", str(wav), "--max-speech-tokens", "20"])
    try:
        cli.wait_for(lambda: cli.err.count(b"> ") >= 1)  # the first prompt: the model is loaded
        for turn in range(2):
            before = len(cli.out)
            cli.send(f"Tell me a long story, part {turn + 1}.")
            cli.wait_for(lambda: len(cli.out) >= before + 20)  # the reply is streaming
            cli.p.send_signal(signal.SIGINT)
            # the reply stops, its speech so far is written, and the next prompt comes
            cli.wait_for(lambda: cli.err.count(b"> ") >= turn + 2)
            assert cli.err.count(b"reply stopped (Ctrl-C)") == turn + 1, cli.err
            assert cli.err.count(b"of speech to") == turn + 1, cli.err
            audio, rate = sf.read(wav, dtype="float32")
            assert rate == 24000 and audio.ndim == 1 and audio.size > 0 and np.isfinite(audio).all()
            os.remove(wav)
        # Ctrl-C at the prompt (no reply running) quits, with the shell's code for SIGINT
        cli.p.send_signal(signal.SIGINT)
        assert cli.finish() == 130, cli.err
    finally:
        if cli.p.poll() is None:
            cli.p.kill()
            cli.p.wait()
