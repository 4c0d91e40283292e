"""`minicpmo-convert HF_DIR [-o OUT_DIR] [--outtype f32|f16|bf16|q8_0] [--name NAME] [-q]`."""

from __future__ import annotations

import argparse
import sys

from .errors import ConversionError
from .outtypes import OUTTYPES
from .pipeline import DEFAULT_NAME, convert_checkpoint

PROG = "minicpmo-convert"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Convert a MiniCPM-o 4.5 Hugging Face checkpoint into an LLM GGUF "
        "(stock llama.cpp qwen3) and its omni companion GGUF.",
    )
    ap.add_argument("hf_dir", metavar="HF_DIR",
                    help="checkpoint directory (config.json, *.safetensors, tokenizer files)")
    ap.add_argument("-o", "--out-dir", metavar="OUT_DIR", default=None, help="output directory (default: HF_DIR)")
    # no argparse choices: an unknown type is reported by the converter in its own words
    ap.add_argument("--outtype", default="f16", help=f"tensor type: {', '.join(OUTTYPES)} (default f16)")
    ap.add_argument("--name", default=DEFAULT_NAME, help=f"file name stem (default {DEFAULT_NAME})")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-tensor progress")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        llm, omni = convert_checkpoint(args.hf_dir, args.out_dir, args.outtype, args.name, args.quiet)
    except ConversionError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, permissions, ...
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print(llm)
    print(omni)
    return 0
