"""Generate a random-weight MiniCPM-o 4.5 checkpoint in the real Hugging Face layout (tiny dims).

Tests never hand-build GGUFs: they make this checkpoint and run the same converter users run.
Dimensions: spec §8; names: spec §9; tokenizer: the real Qwen2 BPE plus the 4.5 added tokens.

    python -m minicpmo_cpp.convert.make_tiny OUT_DIR [--seed 0] [--vocab-gguf PATH]
        [--components vision,audio] [--llm-dims hidden_size=4096,...] [--vision-dims ...]
        [--audio-dims d_model=1024,encoder_layers=24,encoder_attention_heads=16]
        [--token2wav-dims enc_dim=512,...] [--tts-dims hidden_size=768,...] [--no-token2wav]

With the TTS component, the Token2Wav assets folder assets/token2wav/ is written too (flow.yaml +
flow.pt, hift.yaml + hift.pt as torch zip archives written without torch, and a random
default_voice.npz standing in for the ONNX voice models, which tests cannot have).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
import numpy as np

from .base_vocab import load_base_vocab
from .chat_template import CHAT_TEMPLATE
from .errors import ConversionError
from .layout import Shape, checkpoint_shapes
from .safetensors_io import write_safetensors
from .tiny_config import COMPONENTS, flow_yaml, generation_config, hift_yaml, preprocessor_config, tiny_config
from .tiny_token2wav import write_token2wav_assets
from .tokenizer_files import write_tokenizer_files
from .tokens import BASE_VOCAB_SIZE

_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}

_EMBEDDING_NAMES = ("embed_tokens", "emb_text", "emb_code", "resampler.query")
_POSITION_NAMES = ("position_embedding", "embed_positions")


def _is_norm_weight(name: str) -> bool:
    leaf = name.rsplit(".", 2)[-2] if name.endswith(".weight") else ""
    return "norm" in leaf or leaf.startswith("ln_")


def init_tensor(rng: np.random.Generator, name: str, shape: Shape) -> np.ndarray:
    """One tensor with a scale that keeps activations O(1) through the tiny stacks.

    Norm gains are ~1 with 10% noise (so a missing or mis-ordered norm shows up in tests);
    biases are small but non-zero; matrices use std 1/sqrt(fan_in) clipped to [0.02, 0.1].
    """
    x = rng.standard_normal(size=shape, dtype=np.float32)
    if name.endswith("parametrizations.weight.original0"):  # weight-norm gain g > 0
        return 1.0 + 0.1 * np.abs(x)
    if name.endswith(".weight") and len(shape) == 1 and _is_norm_weight(name):
        return 1.0 + 0.1 * x
    if name.endswith("bias") or len(shape) == 1:
        return 0.02 * x
    if any(k in name for k in _POSITION_NAMES):
        return 0.02 * x
    if any(k in name for k in _EMBEDDING_NAMES):
        return 0.1 * x
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    if name == "resampler.proj":  # used as x @ proj: fan-in is the first axis
        fan_in = shape[0]
    std = min(0.1, max(0.02, 1.0 / math.sqrt(fan_in)))
    return std * x


def _tiny_bad_token_ids(seed: int, n: int = 16) -> list[int]:
    # The release's 6965 ids could not be obtained; these are an invented, deterministic sample
    # inside the base vocabulary so the code path that reads them is exercised.
    rng = np.random.default_rng(seed + 7919)
    return sorted(int(i) for i in rng.choice(BASE_VOCAB_SIZE, size=n, replace=False))


def _dump(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _write_weights(out: Path, tensors: list[tuple[str, np.ndarray]], st_dtype: str, shards: int) -> None:
    # Stale weights of an earlier run (e.g. a shard index) would shadow the new ones.
    for old in [*out.glob("model*.safetensors"), out / "model.safetensors.index.json"]:
        old.unlink(missing_ok=True)
    if shards <= 1:
        write_safetensors(out / "model.safetensors", tensors, st_dtype)
        return
    weight_map: dict[str, str] = {}
    chunks = np.array_split(np.arange(len(tensors)), shards)
    for k, idx in enumerate(chunks, start=1):
        fname = f"model-{k:05d}-of-{shards:05d}.safetensors"
        part = [tensors[i] for i in idx]
        write_safetensors(out / fname, part, st_dtype)
        weight_map.update({name: fname for name, _ in part})
    total = sum(int(a.size) * (4 if st_dtype == "F32" else 2) for _, a in tensors)
    _dump(out / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def make_tiny_checkpoint(
    out_dir: str | os.PathLike,
    seed: int = 0,
    vocab_gguf: str | os.PathLike | None = None,
    dtype: str = "float32",
    shards: int = 1,
    llm_dims: dict[str, int] | None = None,
    vision_dims: dict[str, int] | None = None,
    components: tuple[str, ...] = COMPONENTS,
    audio_dims: dict[str, int] | None = None,
    token2wav: bool = True,
    token2wav_dims: dict[str, int] | None = None,
    tts_dims: dict[str, int] | None = None,
) -> Path:
    """Write the tiny checkpoint into out_dir (created if needed) and return its path.

    dtype: storage of model.safetensors ("float32", "float16" or "bfloat16").
    shards: >1 writes model-0000k-of-0000n.safetensors + model.safetensors.index.json.
    llm_dims: overrides of the LLM shape (hidden_size, num_hidden_layers, num_attention_heads,
    num_key_value_heads, head_dim, intermediate_size).
    vision_dims: overrides of the vision tower (hidden_size, intermediate_size, num_attention_heads,
    num_hidden_layers; drop_vision_last_layer stays on, so one layer fewer is stored) and of
    resampler_num_heads.
    components: the parts besides the LLM, a subset of ("vision", "audio", "tts"); e.g. ("vision",)
    keeps a vision benchmark checkpoint free of audio and TTS weights.
    audio_dims: overrides of the Whisper encoder (d_model, encoder_layers, encoder_attention_heads;
    encoder_ffn_dim follows as 4 * d_model unless given).
    token2wav: with "tts" in components, also write assets/token2wav/ (False: TTS weights only).
    token2wav_dims: overrides of tiny_config.TINY_TOKEN2WAV (flow encoder, DiT, HiFT widths).
    tts_dims: overrides of tiny_config.TINY_TTS (the speech-token LM's backbone).
    """
    if dtype not in _DTYPES:
        raise ConversionError(f"unknown dtype {dtype!r}: choose one of {', '.join(_DTYPES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = load_base_vocab(vocab_gguf)  # fail early, before writing weights

    try:
        cfg = tiny_config(llm_dims, vision_dims, tuple(components), audio_dims, token2wav_dims, tts_dims)
        flow_text, hift_text = flow_yaml(token2wav_dims), hift_yaml(token2wav_dims)
    except ValueError as e:
        raise ConversionError(str(e)) from e
    cfg["torch_dtype"] = dtype
    rng = np.random.default_rng(seed)
    tensors = [(name, init_tensor(rng, name, shape)) for name, shape in checkpoint_shapes(cfg).items()]
    _write_weights(out, tensors, _DTYPES[dtype], shards)

    t2w_dir = out / "assets" / "token2wav"
    if "tts" in components and token2wav:
        write_token2wav_assets(t2w_dir, flow_text, hift_text, seed)
    elif t2w_dir.is_dir():
        for old in t2w_dir.iterdir():  # stale assets of an earlier run would be converted
            old.unlink()
        t2w_dir.rmdir()
        if not any(t2w_dir.parent.iterdir()):
            t2w_dir.parent.rmdir()

    _dump(out / "config.json", cfg)
    _dump(out / "generation_config.json", generation_config())
    _dump(out / "preprocessor_config.json", preprocessor_config())
    write_tokenizer_files(out, base, CHAT_TEMPLATE, bad_token_ids=_tiny_bad_token_ids(seed),
                          model_max_length=cfg["max_position_embeddings"])
    return out


def parse_dims(text: str) -> dict[str, int]:
    """'key=value,key=value' (positive integers) -> dict, for the --*-dims options."""
    out: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip().isdigit() or int(value) <= 0:
            raise argparse.ArgumentTypeError(f"expected key=positive integer, got {item!r}")
        out[key.strip()] = int(value)
    return out


def parse_components(text: str) -> tuple[str, ...]:
    """'vision,audio' -> ('vision', 'audio'); '' or 'none' -> () (LLM only)."""
    if text.strip().lower() == "none":
        return ()
    return tuple(p.strip() for p in text.split(",") if p.strip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="minicpmo-make-tiny", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab-gguf", default=None, help="path to llama.cpp's models/ggml-vocab-qwen2.gguf")
    ap.add_argument("--dtype", default="float32", choices=sorted(_DTYPES))
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--components", type=parse_components, default=COMPONENTS,
                    help=f"comma-separated subset of {','.join(COMPONENTS)}, or 'none' (default: all)")
    ap.add_argument("--llm-dims", type=parse_dims, default=None, metavar="KEY=N,...",
                    help="LLM shape overrides, e.g. hidden_size=4096,num_hidden_layers=1")
    ap.add_argument("--vision-dims", type=parse_dims, default=None, metavar="KEY=N,...",
                    help="vision tower overrides, e.g. hidden_size=1152,num_hidden_layers=27")
    ap.add_argument("--audio-dims", type=parse_dims, default=None, metavar="KEY=N,...",
                    help="Whisper encoder overrides, e.g. d_model=1024,encoder_layers=24,encoder_attention_heads=16")
    ap.add_argument("--token2wav-dims", type=parse_dims, default=None, metavar="KEY=N,...",
                    help="Token2Wav overrides, e.g. enc_dim=512,enc_heads=8,dit_dim=512,hift_base=512")
    ap.add_argument("--tts-dims", type=parse_dims, default=None, metavar="KEY=N,...",
                    help="TTS backbone overrides, e.g. hidden_size=768,intermediate_size=3072,num_hidden_layers=20")
    ap.add_argument("--no-token2wav", action="store_true", help="no assets/token2wav folder (TTS weights only)")
    args = ap.parse_args(argv)
    try:
        path = make_tiny_checkpoint(args.out_dir, args.seed, args.vocab_gguf, args.dtype, args.shards,
                                    llm_dims=args.llm_dims, vision_dims=args.vision_dims,
                                    components=args.components, audio_dims=args.audio_dims,
                                    token2wav=not args.no_token2wav, token2wav_dims=args.token2wav_dims,
                                    tts_dims=args.tts_dims)
    except ConversionError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
