"""Reading the checkpoint's optional preprocessor_config.json (image and audio processor settings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ConversionError

FILE_NAME = "preprocessor_config.json"


def read_preprocessor_config(ckpt_dir: Path) -> dict[str, Any]:
    """The file's JSON object, or {} when the checkpoint has none (the processor defaults apply)."""
    p = Path(ckpt_dir) / FILE_NAME
    if not p.is_file():
        return {}
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConversionError(f"{p}: invalid JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise ConversionError(f"{p}: expected a JSON object")
    return cfg
