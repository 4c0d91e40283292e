"""`minicpmo-convert HF_DIR [-o OUT_DIR] [--outtype f32|f16|bf16|q8_0] [--tts-outtype T] [--name NAME] [-q]
    [--token2wav-dir DIR] [--voice-wav REF.wav | --voice-npz VOICE.npz] [--add-voice NAME=FILE ...]`

`minicpmo-convert --omni OMNI.gguf --add-voice NAME=FILE [...] [--token2wav-dir DIR]` adds voices
to an existing companion instead (FILE: a reference recording, or a ready-made .npz voice).

`minicpmo-convert --from-omni-gguf DIR -o OUT_DIR [--llm FILE] [--tokenizer-config FILE] [--companion-only]`
imports the official llama.cpp-omni GGUF set instead (omni_import.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ConversionError
from .outtypes import OUTTYPES
from .pipeline import DEFAULT_NAME, convert_checkpoint
from .voice_gguf import add_voices, parse_voice_arg

PROG = "minicpmo-convert"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Convert a MiniCPM-o 4.5 Hugging Face checkpoint into an LLM GGUF "
        "(stock llama.cpp qwen3) and its omni companion GGUF; or add voices to a companion (--omni).",
    )
    ap.add_argument("hf_dir", metavar="HF_DIR", nargs="?", default=None,
                    help="checkpoint directory (config.json, *.safetensors, tokenizer files, assets/token2wav)")
    ap.add_argument("-o", "--out-dir", metavar="OUT_DIR", default=None, help="output directory (default: HF_DIR)")
    # no argparse choices: an unknown type is reported by the converter in its own words
    ap.add_argument("--outtype", default="f16", help=f"tensor type: {', '.join(OUTTYPES)} (default f16)")
    ap.add_argument("--tts-outtype", default=None,
                    help="type of the TTS decoder's matrices (default: q8_0 when --outtype is f16 or bf16, "
                         "else --outtype): its speech-code decoding reads every matrix once per code")
    ap.add_argument("--name", default=DEFAULT_NAME, help=f"file name stem (default {DEFAULT_NAME})")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-tensor progress")
    ap.add_argument("--token2wav-dir", metavar="DIR", default=None,
                    help="Token2Wav assets: flow.yaml, flow.pt, hift.pt, ONNX voice models "
                         "(default: HF_DIR/assets/token2wav)")
    ap.add_argument("--voice-wav", metavar="REF", default=None,
                    help="make the default voice from this recording (needs: pip install 'minicpmo-cpp[voice]')")
    ap.add_argument("--voice-npz", metavar="NPZ", default=None,
                    help="ready-made default voice: arrays tokens, spk (192), mel (2 x tokens, 80)")
    ap.add_argument("--add-voice", metavar="NAME=FILE", action="append", default=[],
                    help="add a named voice (recording or .npz); repeatable")
    ap.add_argument("--omni", metavar="OMNI_GGUF", default=None,
                    help="add the --add-voice voices to this existing companion instead of converting")
    ap.add_argument("--from-omni-gguf", metavar="DIR", default=None,
                    help="import the official llama.cpp-omni GGUF set in DIR (LLM file re-keyed, tensors "
                         "copied; component files re-laid into the companion) instead of converting")
    ap.add_argument("--llm", metavar="FILE", default=None,
                    help="with --from-omni-gguf: the LLM file, when DIR holds several quantizations")
    ap.add_argument("--tokenizer-config", metavar="FILE", default=None,
                    help="with --from-omni-gguf: a checkpoint's tokenizer_config.json for bad_token_ids")
    ap.add_argument("--companion-only", action="store_true",
                    help="with --from-omni-gguf: write only the companion, naming the official LLM file (no copy "
                         "of the LLM); load with OmniSession(official_llm, omni_path=companion)")
    ap.add_argument("--resampler-heads", metavar="N", type=int, default=None,
                    help="with --from-omni-gguf: resampler attention heads (only for models narrower than "
                         "the release; the official files do not record it, the reference uses width / 128)")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    try:
        voices = [parse_voice_arg(v) for v in args.add_voice]
        if args.omni is not None:
            if args.hf_dir is not None or args.voice_wav or args.voice_npz:
                ap.error("--omni only takes --add-voice (and --token2wav-dir), not HF_DIR or --voice-*")
            if not voices:
                ap.error("--omni needs at least one --add-voice NAME=FILE")
            t2w = Path(args.token2wav_dir) if args.token2wav_dir else None
            print(add_voices(args.omni, voices, t2w, args.quiet))
            return 0
        if args.from_omni_gguf is not None:
            if args.hf_dir is not None or args.voice_wav or args.voice_npz or voices or args.token2wav_dir:
                ap.error("--from-omni-gguf takes -o, --name, --llm, --tokenizer-config, --resampler-heads, "
                         "--companion-only, -q "
                         "(add voices afterwards with --omni OUT --add-voice NAME=FILE)")
            from .omni_import import import_omni_set

            rep = import_omni_set(args.from_omni_gguf, args.out_dir or args.from_omni_gguf, args.name, args.quiet,
                                  llm_file=args.llm, tokenizer_config=args.tokenizer_config,
                                  resampler_heads=args.resampler_heads, companion_only=args.companion_only)
            if not args.quiet:
                kept = ", ".join(f"{n} {q}" for q, n in sorted(rep.kept_types.items()))
                print(f"components: {', '.join(rep.components) or 'none'}; companion tensors: {kept}",
                      file=sys.stderr)
            print(rep.llm)
            print(rep.omni)
            return 0
        if args.hf_dir is None:
            ap.error("HF_DIR is required (or --omni FILE with --add-voice, or --from-omni-gguf DIR)")
        llm, omni = convert_checkpoint(args.hf_dir, args.out_dir, args.outtype, args.name, args.quiet,
                                       token2wav_dir=args.token2wav_dir, voice_wav=args.voice_wav,
                                       voice_npz=args.voice_npz, voices=voices, tts_outtype=args.tts_outtype)
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
