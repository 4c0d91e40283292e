"""Pillow 10.4.0, the version the official MiniCPM-o stack pins (minicpmo-utils 1.0.7 requires
pillow==10.4.0), as the reference for the bicubic resize.

The suite's own environment has a current Pillow (the package decodes images with it), and Pillow
changed its resize between versions (Pillow 13 filters vertically first when the height shrinks much
more than the width; 10.4.0 always filters horizontally first and rounds to uint8 in between). So the
reference resizes run in a separate small venv holding only pillow==10.4.0, made on first use:

    ~/.cache/minicpmo-cpp/pillow-10.4.0-venv   (python3 -m venv + pip install pillow==10.4.0)

MINICPMO_PILLOW_OFFICIAL_PYTHON=/path/to/python overrides it with an interpreter that already has
Pillow 10.4.0 (e.g. on a machine without PyPI access). When the running interpreter itself has
Pillow 10.4.0, it is used directly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

OFFICIAL_PILLOW = "10.4.0"
VENV_DIR = Path.home() / ".cache" / "minicpmo-cpp" / f"pillow-{OFFICIAL_PILLOW}-venv"
_READY_MARK = ".minicpmo-ready"  # written after a complete install: a half-made venv is remade

# Runs inside the Pillow 10.4.0 interpreter (no numpy there): request.json lists the images, the
# pixels travel as raw RGB bytes in request.bin, the results come back the same way in result.bin.
_RESIZE_SCRIPT = r"""
import json, sys
import PIL
from PIL import Image
assert PIL.__version__ == sys.argv[2], PIL.__version__
folder = sys.argv[1]
cases = json.load(open(folder + "/request.json"))
data = open(folder + "/request.bin", "rb").read()
with open(folder + "/result.bin", "wb") as out:
    for c in cases:
        raw = data[c["offset"]:c["offset"] + c["w"] * c["h"] * 3]
        im = Image.frombytes("RGB", (c["w"], c["h"]), raw)
        out.write(im.resize((c["nw"], c["nh"]), Image.Resampling.BICUBIC).tobytes())
"""


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _make_venv() -> Path:
    python = _venv_python(VENV_DIR)
    if (VENV_DIR / _READY_MARK).is_file() and python.is_file():
        return python
    shutil.rmtree(VENV_DIR, ignore_errors=True)
    VENV_DIR.parent.mkdir(parents=True, exist_ok=True)
    steps = [[sys.executable, "-m", "venv", str(VENV_DIR)],
             [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              f"pillow=={OFFICIAL_PILLOW}"]]
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(
                f"cannot make the Pillow {OFFICIAL_PILLOW} reference venv at {VENV_DIR} ({' '.join(cmd)} "
                f"failed: {(r.stderr or r.stdout).strip()[-800:]}); set MINICPMO_PILLOW_OFFICIAL_PYTHON to "
                f"an interpreter with pillow=={OFFICIAL_PILLOW}")
    (VENV_DIR / _READY_MARK).write_text(OFFICIAL_PILLOW + "\n")
    return python


def official_pillow_python() -> str:
    """An interpreter with Pillow 10.4.0 (made on first use, see the module docstring)."""
    env = os.environ.get("MINICPMO_PILLOW_OFFICIAL_PYTHON")
    if env:
        return env
    import PIL

    if PIL.__version__ == OFFICIAL_PILLOW:
        return sys.executable
    return str(_make_venv())


def official_resize(requests: list[tuple[np.ndarray, tuple[int, int]]]) -> list[np.ndarray]:
    """Pillow 10.4.0's Image.fromarray(rgb).resize((w, h), BICUBIC) of each (rgb, (w, h)), as uint8
    (h, w, 3) arrays; one interpreter call for the whole batch."""
    cases, blobs, offset = [], [], 0
    for rgb, (nw, nh) in requests:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        assert rgb.ndim == 3 and rgb.shape[2] == 3, rgb.shape
        h, w = rgb.shape[:2]
        cases.append({"w": w, "h": h, "nw": int(nw), "nh": int(nh), "offset": offset})
        blobs.append(rgb.tobytes())
        offset += rgb.nbytes
    with tempfile.TemporaryDirectory(prefix="pillow-official-") as folder:
        Path(folder, "request.json").write_text(json.dumps(cases))
        Path(folder, "request.bin").write_bytes(b"".join(blobs))
        r = subprocess.run([official_pillow_python(), "-c", _RESIZE_SCRIPT, folder, OFFICIAL_PILLOW],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"Pillow {OFFICIAL_PILLOW} reference failed: {r.stderr[-2000:]}"
        data = Path(folder, "result.bin").read_bytes()
    out, pos = [], 0
    for c in cases:
        n = c["nw"] * c["nh"] * 3
        out.append(np.frombuffer(data[pos:pos + n], np.uint8).reshape(c["nh"], c["nw"], 3))
        pos += n
    assert pos == len(data)
    return out
