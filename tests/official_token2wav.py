"""Our own writer of the official set's token2wav-gguf/ files, for test fixtures.

No published script makes encoder.gguf, flow_matching.gguf, flow_extra.gguf, hifigan2.gguf and
prompt_cache.gguf of the official release: this writer is ours, written from the tensor names and
keys llama.cpp-omni's loader (tools/omni/token2wav/token2wav-impl.cpp, public repository
tc-mb/llama.cpp-omni) reads:
  encoder.gguf       flow.pt `encoder.*` with `encoder.` dropped
  flow_matching.gguf flow.pt `decoder.estimator.*` with `decoder.` dropped
  flow_extra.gguf    input_embedding, spk_embed_affine_layer, encoder_proj
  hifigan2.gguf      hift.pt with `generator.` dropped and weight norms folded (the loader binds
                     plain `.weight` tensors and its F0 predictor requires F32)
  prompt_cache.gguf  keys mtmd.prompt_cache.{version,n_timesteps,temperature,pre_lookahead,
                     chunk_main,chunk_total,up_rate}. Its tensors (spk_cb and the conformer /
                     estimator caches of the reference voice) are computed by llama.cpp-omni's own
                     runtime from a reference recording; they are not made here, and the importer
                     under test reads only the keys.
All tensors F32, as the release's file sizes imply (e.g. flow_extra.gguf ~13 MB = 6561 x 512 x 4 B).
Weights are read with torch (an independent reader from the converter's own).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _load(path: Path) -> dict[str, np.ndarray]:
    import torch

    sd = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in sd.items()}


def _fold_weight_norms(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """w = g * v / ||v|| (norm over all axes but the first), for both spellings torch uses."""
    out: dict[str, np.ndarray] = {}
    pairs = (("parametrizations.weight.original0", "parametrizations.weight.original1"), ("weight_g", "weight_v"))
    for name, value in sd.items():
        for g_suffix, v_suffix in pairs:
            if name.endswith(g_suffix):
                base = name[: -len(g_suffix)]
                v = sd[base + v_suffix].astype(np.float64)
                norm = np.sqrt((v.reshape(v.shape[0], -1) ** 2).sum(axis=1)).reshape(-1, *([1] * (v.ndim - 1)))
                out[base + "weight"] = (value.astype(np.float64) * v / norm).astype(np.float32)
                break
            if name.endswith(v_suffix):
                break
        else:
            out[name] = value
    return out


def _write(path: Path, tensors: dict[str, np.ndarray], keys: dict | None = None) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), arch=path.stem)
    for key, (kind, value) in (keys or {}).items():
        getattr(w, f"add_{kind}")(key, value)
    for name, value in tensors.items():
        w.add_tensor(name, np.ascontiguousarray(value, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_official_token2wav(t2w_dir: Path, out: Path, n_timesteps: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    flow = _load(t2w_dir / "flow.pt")
    hift = _fold_weight_norms({k.removeprefix("generator."): v for k, v in _load(t2w_dir / "hift.pt").items()})
    enc = {k[len("encoder."):]: v for k, v in flow.items() if k.startswith("encoder.")}
    est = {k[len("decoder."):]: v for k, v in flow.items() if k.startswith("decoder.")}
    extra = {k: v for k, v in flow.items() if not k.startswith(("encoder.", "decoder."))}
    _write(out / "encoder.gguf", enc)
    _write(out / "flow_matching.gguf", est)
    _write(out / "flow_extra.gguf", extra)
    _write(out / "hifigan2.gguf", hift)
    # the official runtime's values for the release: 28-token windows (25 + 3 lookahead), up rate 2
    _write(out / "prompt_cache.gguf", {}, {
        "mtmd.prompt_cache.version": ("int32", 2), "mtmd.prompt_cache.n_timesteps": ("int32", n_timesteps),
        "mtmd.prompt_cache.temperature": ("float32", 1.0), "mtmd.prompt_cache.pre_lookahead": ("int32", 3),
        "mtmd.prompt_cache.chunk_main": ("int32", 25), "mtmd.prompt_cache.chunk_total": ("int32", 28),
        "mtmd.prompt_cache.up_rate": ("int32", 2)})
