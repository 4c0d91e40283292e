#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, PyPI) of the Python message front end: content parsing
(minicpmo_cpp.messages.parse_messages), image inputs (minicpmo_cpp.media.load_image: data: URIs,
file:// URLs, paths, bytes, content-part dicts, arrays) and audio inputs
(minicpmo_cpp.audio_input.load_audio, the soundfile / miniaudio path).

The property: any input parses, or fails with MinicpmoError (the package's one error type, whose
message names the problem). Any other exception (TypeError, ValueError, KeyError, a Pillow or
soundfile error leaking out, ...) or a crash is a finding.

    pip install atheris
    python fuzz/fuzz_messages.py -atheris_runs=200000 build/fuzz/corpus/fuzz_messages
    python fuzz/fuzz_messages.py FILE...      # replay (what tests/test_fuzz_replay.py does)

Without atheris (`--replay FILE...`) the files run through the same entry point once each.
"""

from __future__ import annotations

import base64
import sys
import warnings

import numpy as np

# Pillow's decompression-bomb limit is turned into MinicpmoError by media.py; other warnings are noise
warnings.simplefilter("ignore")

from minicpmo_cpp import MinicpmoError  # noqa: E402
from minicpmo_cpp.audio_input import load_audio  # noqa: E402
from minicpmo_cpp.media import load_image  # noqa: E402
from minicpmo_cpp.messages import parse_messages  # noqa: E402

ROLES = ["user", "assistant", "system", "", "tool", "USER"]
MIME = ["image/png", "image/jpeg", "audio/wav", "audio/mpeg", "text/plain", "", "image/png;charset=x"]


class Input:
    """Decisions taken off the front of the fuzz input (zeros and empty strings once it runs out)."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def blob(self) -> bytes:
        n = self.byte() * 4 + self.byte() % 4
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def text(self) -> str:
        return self.blob().decode("utf-8", errors="surrogateescape")

    def pick(self, options):
        return options[self.byte() % len(options)]


def data_uri(inp: Input) -> str:
    payload = inp.blob()
    form = inp.byte() % 5
    mime = inp.pick(MIME)
    if form == 0:
        return f"data:{mime};base64,{base64.b64encode(payload).decode()}"
    if form == 1:
        return f"data:{mime};base64,{inp.text()}"  # not base64 at all
    if form == 2:
        return f"data:{mime},{inp.text()}"  # percent-encoded form
    if form == 3:
        return "data:" + inp.text()
    return f"DATA:{mime};BASE64,{base64.b64encode(payload).decode()[: inp.byte()]}"  # cut short


def image_value(inp: Input, depth: int):
    kind = inp.byte() % 10
    if kind == 0:
        return data_uri(inp)
    if kind == 1:
        return inp.blob()  # encoded bytes
    if kind == 2:
        return "file://" + inp.text()
    if kind == 3:
        return inp.text()  # a path (mostly missing) or a URL
    if kind == 4:
        shape = tuple(inp.byte() % 5 for _ in range(inp.byte() % 4 + 1))
        dtype = inp.pick([np.uint8, np.float32, np.int16, np.bool_])
        return np.zeros(shape, dtype)
    if kind == 5 and depth < 3:
        return {"type": "image", "image": image_value(inp, depth + 1)}
    if kind == 6:
        return {"type": "image_url", "image_url": inp.pick([{"url": data_uri(inp)}, data_uri(inp), {}, None, 3])}
    if kind == 7:
        return {"type": inp.pick(["image", "image_url", "text", "audio", "input_audio", "video", None])}
    if kind == 8:
        return memoryview(inp.blob())
    return inp.pick([None, 3, 2.5, [], {}, b"", ""])


def audio_value(inp: Input, depth: int):
    kind = inp.byte() % 7
    if kind == 0:
        return data_uri(inp)
    if kind == 1:
        return inp.blob()
    if kind == 2:
        n = inp.byte()
        return np.frombuffer(inp.blob()[: (n // 4) * 4], np.float32).copy()
    if kind == 3:
        return {"type": "input_audio", "input_audio": {"data": base64.b64encode(inp.blob()).decode(),
                                                       "format": inp.pick(["wav", "mp3", "flac", "", "ogg"])}}
    if kind == 4 and depth < 3:
        return {"type": "audio", "audio": audio_value(inp, depth + 1)}
    if kind == 5:
        return (np.zeros(inp.byte(), np.float32), inp.byte() * 1000 - 5000)
    return inp.pick([None, 0, "", "file://" + inp.text(), {"type": "audio"}])


def content(inp: Input):
    kind = inp.byte() % 6
    if kind == 0:
        return inp.text()
    if kind == 5:
        return inp.pick([None, 5, {"type": "text", "text": inp.text()}, ("a", "b")])
    parts = []
    for _ in range(inp.byte() % 4):
        p = inp.byte() % 5
        if p == 0:
            parts.append(inp.text())
        elif p == 1:
            parts.append({"type": "text", "text": inp.pick([inp.text(), None, 3])})
        elif p == 2:
            parts.append(image_value(inp, 0))
        elif p == 3:
            parts.append(audio_value(inp, 0))
        else:
            parts.append(inp.pick([None, 1, {"type": "video", "video": "x.mp4"}, {}]))
    return parts


def TestOneInput(data: bytes) -> None:
    inp = Input(data)
    what = inp.byte() % 4
    try:
        if what == 0:
            load_image(image_value(inp, 0))
        elif what == 1:
            load_audio(audio_value(inp, 0))
        else:
            msgs = [{"role": inp.pick(ROLES), "content": content(inp)} if inp.byte() % 8 else inp.pick([None, "hi", {}])
                    for _ in range(1 + inp.byte() % 3)]
            parse_messages(msgs, omni_mode=bool(inp.byte() & 1), with_images=bool(inp.byte() & 2))
    except MinicpmoError:
        pass


def main(argv: list[str]) -> None:
    if argv[1:2] == ["--replay"]:
        for path in argv[2:]:
            with open(path, "rb") as f:
                TestOneInput(f.read())
            print("ok", path, flush=True)
        return
    import atheris

    atheris.instrument_all()
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
