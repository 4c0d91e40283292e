"""The tiny generator's Token2Wav assets folder: flow.yaml + flow.pt, hift.yaml + hift.pt and a
random default voice, in the release's layout (spec §8, §9), written without torch.

Tensor names and shapes come from the converter's own description of the assets
(token2wav_gguf.flow_tensors / hift_tensors, the single place that knows them); HiFT's weight-normed
convolutions are stored as (g, v) pairs in torch's parametrization spelling under hift.pt's
`generator.` prefix, as the release stores them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .token2wav_gguf import flow_tensors, hift_tensors, read_flow_config, read_hift_config
from .torch_zip import write_torch_zip
from .voice_gguf import DEFAULT_VOICE_FILE

# HiFT modules built with weight_norm (HiFTGenerator, ResBlock, ConvRNNF0Predictor)
_WEIGHT_NORMED = ("conv_pre", "conv_post", "ups.", "resblocks.", "source_resblocks.", "f0_predictor.condnet.")
TINY_VOICE_TOKENS = 50  # 2 s of prompt


def hift_is_weight_normed(name: str) -> bool:
    """Whether hift.pt stores this weight as a weight-norm (g, v) pair in the release."""
    return name.endswith(".weight") and name.startswith(_WEIGHT_NORMED) and ".activations" not in name


def _init(rng: np.random.Generator, gguf_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Scales that keep activations O(1): norm gains and Snake alphas ~1, small biases, embeddings
    0.1, matrices/kernels std 1/sqrt(fan_in) clipped to [0.02, 0.1]."""
    x = rng.standard_normal(size=shape, dtype=np.float32)
    if gguf_name.endswith(("norm.weight", ".alpha")):
        return 1.0 + 0.1 * x
    if gguf_name.endswith(".bias"):
        return 0.02 * x
    if "tok_embd" in gguf_name:
        return 0.1 * x
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return min(0.1, max(0.02, 1.0 / math.sqrt(fan_in))) * x


def random_voice(rng: np.random.Generator, n_tokens: int = TINY_VOICE_TOKENS, vocab: int = 6561,
                 spk_dim: int = 192, n_mel: int = 80, mel_per_token: int = 2) -> dict[str, np.ndarray]:
    """Random tokens in [0, vocab), a unit-norm x-vector and a log-mel-like prompt of 2 frames per token."""
    spk = rng.standard_normal(spk_dim)
    return {
        "tokens": rng.integers(0, vocab, size=n_tokens).astype(np.int32),
        "spk": (spk / np.linalg.norm(spk)).astype(np.float32),
        "mel": (-6.0 + 2.0 * rng.standard_normal((mel_per_token * n_tokens, n_mel))).astype(np.float32),
    }


def write_token2wav_assets(d: Path, flow_text: str, hift_text: str, seed: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for stale in ("flow.safetensors", "hift.safetensors"):  # would be preferred over the .pt files
        (d / stale).unlink(missing_ok=True)
    (d / "flow.yaml").write_text(flow_text, encoding="utf-8")
    (d / "hift.yaml").write_text(hift_text, encoding="utf-8")
    flow_cfg, hift_cfg = read_flow_config(d / "flow.yaml"), read_hift_config(d / "hift.yaml")
    rng = np.random.default_rng(seed + 5003)
    write_torch_zip(d / "flow.pt", [(w.name, _init(rng, w.gguf, w.shape)) for w in flow_tensors(flow_cfg)],
                    archive_name="flow")
    hift: list[tuple[str, np.ndarray]] = []
    for w in hift_tensors(hift_cfg):
        if hift_is_weight_normed(w.name):
            module = "generator." + w.name[: -len(".weight")]
            g = 1.0 + 0.1 * np.abs(rng.standard_normal((w.shape[0],) + (1,) * (len(w.shape) - 1), dtype=np.float32))
            v = rng.standard_normal(size=w.shape, dtype=np.float32)
            hift += [(module + ".parametrizations.weight.original0", g),
                     (module + ".parametrizations.weight.original1", v)]
        else:
            hift.append(("generator." + w.name, _init(rng, w.gguf, w.shape)))
    write_torch_zip(d / "hift.pt", hift, archive_name="hift")
    voice = random_voice(rng, vocab=flow_cfg.vocab, spk_dim=flow_cfg.spk_dim, n_mel=flow_cfg.n_mel,
                         mel_per_token=flow_cfg.up_stride)
    np.savez(d / DEFAULT_VOICE_FILE, **voice)
    return d
