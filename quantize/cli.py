"""minicpmo-quantize: make the LLM file in one or all of the 16 sizes."""

from __future__ import annotations

import argparse
import sys
import time

from .. import _core
from .llm import QUANT_TYPES, quantize_llm_file


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="minicpmo-quantize",
        description="Quantize the MiniCPM-o LLM GGUF (F32/F16/BF16 input) with libllama's quantizer.",
    )
    p.add_argument("model", help="LLM GGUF, e.g. MiniCPM-o-4_5-F16.gguf")
    p.add_argument("type", nargs="*", help=f"one or more of: {', '.join(QUANT_TYPES)}")
    p.add_argument("--all", action="store_true", help="make all 16 sizes")
    p.add_argument("-o", "--out-dir", default=None, help="output folder (default: beside the input)")
    p.add_argument("-t", "--threads", type=int, default=0, help="threads (default: all cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-tensor progress")
    args = p.parse_args(argv)

    types = list(QUANT_TYPES) if args.all else [t.upper() for t in args.type]
    if not types:
        p.error("give a type or --all")
    unknown = [t for t in types if t not in QUANT_TYPES]
    if unknown:
        p.error(f"unknown type(s) {', '.join(unknown)}; known: {', '.join(QUANT_TYPES)}")

    def progress(line: str) -> None:
        if not args.quiet and line.lstrip().startswith("["):
            sys.stderr.write("    " + line.strip() + "\n")

    for i, qtype in enumerate(types, 1):
        t0 = time.time()
        sys.stderr.write(f"[{i}/{len(types)}] {qtype} ...\n")
        try:
            out = quantize_llm_file(args.model, qtype, args.out_dir, args.threads, progress)
        except (FileNotFoundError, _core.MinicpmoError) as e:
            sys.stderr.write(f"minicpmo-quantize: error: {e}\n")
            raise SystemExit(1)
        sys.stderr.write(f"[{i}/{len(types)}] {qtype} -> {out} ({time.time() - t0:.1f} s)\n")
        print(out)


if __name__ == "__main__":
    main()
