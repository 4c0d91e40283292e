"""The independent reference of the speech tokenizer tests and benchmark: PyPI s3tokenizer's
S3TokenizerV2 with seeded random weights, exported to ONNX with torch.onnx the way the release's
speech_tokenizer_v2_25hz.onnx was made (TorchScript exporter, opset 17 LayerNormalization, inputs
feats (1, 128, T) float32 and feats_length (1,) int32, ids out).

s3tokenizer imports torchaudio at module level only for file loading and resampling, which these
tests never use; the venv installs it without torchaudio, so an empty stand-in module satisfies the
import. Its rotary table is complex64, which torch.onnx cannot store, so during the export only its
rotation reads an equivalent real (cos, sin) table (the ids of the export are checked equal to the
unpatched model's in the tests).
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np


def s3tokenizer_v2():
    """The s3tokenizer.model_v2 module (a torchaudio stand-in while it is imported, when torchaudio is
    absent; removed again at once, so that other libraries' checks for torchaudio still see none)."""
    if "s3tokenizer.model_v2" in sys.modules or importlib.util.find_spec("torchaudio") is not None:
        import s3tokenizer.model_v2 as mv2

        return mv2
    sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        import s3tokenizer.model_v2 as mv2
    finally:
        del sys.modules["torchaudio"]
    return mv2


def make_model(width: int = 256, n_layer: int = 6, seed: int = 0):
    """S3TokenizerV2 with random weights; heads are 64 wide as in the release (its rotary table is
    64 wide). LayerNorm gains/biases are randomised too (the default ones/zeros would let a swapped
    mapping pass); the encoder keeps PyTorch's default init (realistic activations). The FSQ
    projection is then rescaled so that on speech-like audio each of its outputs has mean 0 and
    std 0.8 before tanh: every code dimension then takes all three levels (the default init leaves
    some dimensions stuck at one level, which would hide a wrong mapping of them)."""
    import torch

    from minicpmo_cpp.convert.voice_frontend import whisper_log_mel
    from minicpmo_cpp.signals import speechlike

    mv2 = s3tokenizer_v2()
    torch.manual_seed(seed)
    cfg = mv2.ModelConfig(n_audio_state=width, n_audio_head=width // 64, n_audio_layer=n_layer)
    model = mv2.S3TokenizerV2("speech_tokenizer_v2_25hz", cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "_ln." in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif "_ln." in name and name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
        mel = torch.from_numpy(whisper_log_mel(speechlike(6.0, 99)))[None]
        hidden, _ = model.encoder(mel, torch.tensor([mel.shape[2]]))
        proj = model.quantizer._codebook.project_down
        z = proj(hidden[0])
        gain = 0.8 / z.std(dim=0)
        proj.weight.mul_(gain[:, None])
        proj.bias.copy_((proj.bias - z.mean(dim=0)) * gain)
    return model


@contextlib.contextmanager
def _real_rotary(model):
    import torch

    mv2 = s3tokenizer_v2()
    enc = model.encoder
    saved_table, saved_rot = enc.freqs_cis, mv2.apply_rotary_emb

    def rotate(xq, xk, freqs_cis):  # freqs_cis: (T, 64, 2) real [cos, sin], as view_as_real gives
        cos = freqs_cis[..., 0].unsqueeze(0).unsqueeze(2)
        sin = freqs_cis[..., 1].unsqueeze(0).unsqueeze(2)

        def half_turn(x):
            d = x.shape[-1] // 2
            return torch.cat((-x[..., d:], x[..., :d]), dim=-1)

        return xq * cos + half_turn(xq) * sin, xk * cos + half_turn(xk) * sin

    enc.freqs_cis = torch.view_as_real(saved_table).contiguous()
    mv2.apply_rotary_emb = rotate
    view_as_real = torch.view_as_real
    torch.view_as_real = lambda t: view_as_real(t) if t.is_complex() else t  # the table is real already
    try:
        yield
    finally:
        torch.view_as_real = view_as_real
        mv2.apply_rotary_emb = saved_rot
        enc.freqs_cis = saved_table


def export_onnx(model, path: Path) -> Path:
    import torch

    class Ids(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, feats, feats_length):
            hidden, _ = self.m.encoder(feats, feats_length)
            return self.m.quantizer.encode(hidden)

    feats = torch.randn(1, 128, 400)
    with _real_rotary(model), torch.no_grad():
        torch.onnx.export(Ids(model), (feats, torch.tensor([400], dtype=torch.int32)), str(path),
                          input_names=["feats", "feats_length"], output_names=["indices"],
                          dynamic_axes={"feats": {2: "T"}, "indices": {1: "T"}}, opset_version=17, dynamo=False)
    return path


def reference_values(model, mel: np.ndarray) -> np.ndarray:
    """(T, 8) FSQ values before rounding, 0.999 * tanh(project_down(encoder)), from the torch model."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(mel)[None]
        hidden, _ = model.encoder(x, torch.tensor([mel.shape[1]]))
        h = model.quantizer._codebook.project_down(hidden[0]).tanh() * 0.9990000128746033
    return h.numpy()

