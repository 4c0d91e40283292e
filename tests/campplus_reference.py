"""An independent CAM++ for the speaker-encoder tests and benchmark: FunASR's CAMPPlus (installed in the
test environment with --no-deps) run as is, with seeded random weights, exported to ONNX the way the
release's campplus.onnx was (input (1, T, 80) fbank, output (1, 192)).

FunASR's package __init__ pulls dependencies the tests do not install, so its two model files are
loaded on their own, with stand-ins for the few imports they make that the forward pass never uses
(the model registry decorator, feature extraction and audio loading, autocast).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np


def _funasr_campplus_dir() -> Path:
    spec = importlib.util.find_spec("funasr")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("funasr is not installed (pip install --no-deps funasr)")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / "campplus"


def load_campplus_class():
    """FunASR's CAMPPlus class, loaded from its files without importing the funasr package."""
    name = "funasr_campplus_standalone"
    if name + ".model" in sys.modules:
        return sys.modules[name + ".model"].CAMPPlus
    d = _funasr_campplus_dir()
    stubs = {
        "funasr.register": {"tables": types.SimpleNamespace(register=lambda *a, **k: (lambda cls: cls))},
        "funasr.models.campplus.utils": {"extract_feature": None},
        "funasr.utils.load_utils": {"load_audio_text_image_video": None},
        "funasr.utils.amp": {"autocast": None},
    }
    saved = {k: sys.modules.get(k) for k in list(stubs) + ["funasr", "funasr.models", "funasr.models.campplus",
                                                           "funasr.utils", "funasr.models.campplus.components"]}
    try:
        for pkg in ("funasr", "funasr.models", "funasr.models.campplus", "funasr.utils"):
            sys.modules[pkg] = types.ModuleType(pkg)
        for mod_name, attrs in stubs.items():
            m = types.ModuleType(mod_name)
            m.__dict__.update(attrs)
            sys.modules[mod_name] = m
        modules = {}
        for short in ("components", "model"):
            spec = importlib.util.spec_from_file_location(f"funasr.models.campplus.{short}", d / f"{short}.py")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod
            spec.loader.exec_module(mod)
            modules[short] = mod
    finally:
        for k, v in saved.items():  # leave no stand-in behind for other tests
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    sys.modules[name + ".model"] = modules["model"]
    return modules["model"].CAMPPlus


def random_campplus(seed: int, **sizes):
    """CAMPPlus in eval mode with seeded random weights and non-trivial BatchNorm statistics (the
    defaults 0 / 1 would make every BatchNorm an identity and hide a mis-mapped one)."""
    import torch

    torch.manual_seed(seed)
    net = load_campplus_class()(**sizes)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                n = mod.running_mean.numel()
                mod.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                mod.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
                if mod.affine:
                    mod.weight.copy_(0.5 + torch.rand(n, generator=g))
                    mod.bias.copy_(0.6 * torch.rand(n, generator=g) - 0.3)
            elif isinstance(mod, torch.nn.Conv1d) and mod.bias is not None:
                mod.bias.copy_(0.2 * torch.rand(mod.bias.numel(), generator=g) - 0.1)
    return net.eval()


def export_onnx(net, path: Path, fold: bool = True, frames: int = 200) -> Path:
    """torch.onnx (TorchScript exporter, as the release's file was made): input `feats` (1, T, 80) with T
    dynamic, output `embedding` (1, 192). fold=False keeps every BatchNorm a BatchNormalization node."""
    import torch

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, frames, 80)).astype(np.float32))
    torch.onnx.export(net, (x,), str(path), input_names=["feats"], output_names=["embedding"],
                      dynamic_axes={"feats": {1: "T"}}, opset_version=13, do_constant_folding=fold,
                      training=torch.onnx.TrainingMode.EVAL if fold else torch.onnx.TrainingMode.PRESERVE,
                      dynamo=False)
    return path


def speech_like(seconds: float, seed: int, sample_rate: int = 16000) -> np.ndarray:
    """Voiced, syllable-rate modulated harmonics with a drifting pitch and a little noise: a signal
    whose fbank has speech's spread (not a pure tone, not silence)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = 110 + 60 * rng.random() + 25 * np.sin(2 * np.pi * (0.3 + 0.4 * rng.random()) * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    formants = 500 + 1500 * rng.random(3)
    x = np.zeros(n)
    for h in range(1, 30):
        f = h * f0
        gain = sum(np.exp(-((f - fm) / 250.0) ** 2) for fm in formants) + 0.05 / h
        x += gain * np.sin(h * phase + rng.random() * 6.28)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * (3 + 2 * rng.random()) * t) ** 2
    x = x * envelope + 0.02 * rng.standard_normal(n)
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)
