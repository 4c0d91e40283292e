"""The official Token2Wav Python code (PyPI ``minicpmo-utils==1.0.7``, package ``stepaudio2``) as an
oracle for tests/reference/token2wav.py.

Installed with ``pip install --no-deps`` (scripts/test.sh): its declared dependencies pin
pillow==10.4.0, librosa, moviepy, decord, ... which this project must not get. The classes used here
(flow: CausalMaskedDiffWithXvec, UpsampleConformerEncoderV2, CausalConditionalCFM, DiT; vocoder:
HiFTGenerator, ConvRNNF0Predictor) import only torch, numpy, scipy and einops, plus two things
handled here, test-only:

* ``stepaudio2/__init__.py`` imports ``token2wav.py`` (voice-prompt code: torchaudio, onnxruntime,
  s3tokenizer, hyperpyyaml, librosa; torchaudio has no build for torch 2.13). The submodules are
  imported below a bare ``stepaudio2`` package object, so that __init__ never runs.
* ``cosyvoice2/flow/flow_matching.py`` has an unused ``import onnxruntime``: an empty stand-in
  module is placed in sys.modules for that one import and removed right after.

Two Token2wav methods (``_trim_estimator_cache``, ``_trim_conformer_cache``) are taken from the
installed token2wav.py by parsing it (ast) and compiling just those functions with ``torch`` in
scope, so the official cache trimming runs without importing that file.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch


@functools.lru_cache(maxsize=1)
def stepaudio2():
    """Namespace with the official classes and the two trimming functions."""
    spec = importlib.util.find_spec("stepaudio2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("minicpmo-utils (package stepaudio2) is not installed; see scripts/test.sh")
    root = Path(list(spec.submodule_search_locations)[0])
    if "stepaudio2" not in sys.modules:
        pkg = types.ModuleType("stepaudio2")
        pkg.__path__ = [str(root)]
        pkg.__file__ = None
        sys.modules["stepaudio2"] = pkg
    stub = None
    try:
        importlib.import_module("onnxruntime")
    except ImportError:
        stub = types.ModuleType("onnxruntime")
        sys.modules["onnxruntime"] = stub
    try:
        fm = importlib.import_module("stepaudio2.cosyvoice2.flow.flow_matching")
    finally:
        if stub is not None and sys.modules.get("onnxruntime") is stub:
            del sys.modules["onnxruntime"]
    fl = importlib.import_module("stepaudio2.cosyvoice2.flow.flow")
    dit = importlib.import_module("stepaudio2.cosyvoice2.flow.decoder_dit")
    enc = importlib.import_module("stepaudio2.cosyvoice2.transformer.upsample_encoder_v2")
    hg = importlib.import_module("stepaudio2.flashcosyvoice.modules.hifigan")

    src_path = root / "token2wav.py"
    tree = ast.parse(src_path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Token2wav")
    wanted = ("_trim_estimator_cache", "_trim_conformer_cache")
    body = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    consts = [n for n in cls.body if isinstance(n, ast.Assign)]
    if len(body) != 2:
        raise ImportError(f"{src_path} does not define {wanted} (not minicpmo-utils 1.0.7?)")
    ns = {"torch": torch}
    exec(compile(ast.Module(body=consts + body, type_ignores=[]), str(src_path), "exec"), ns)
    trim_cls = type("Token2wavCacheTrim", (), {k: ns[k] for k in list(wanted) + ["CONFORMER_HISTORY_FRAMES"]})

    return types.SimpleNamespace(
        CausalMaskedDiffWithXvec=fl.CausalMaskedDiffWithXvec, CausalConditionalCFM=fm.CausalConditionalCFM,
        DiT=dit.DiT, UpsampleConformerEncoderV2=enc.UpsampleConformerEncoderV2,
        HiFTGenerator=hg.HiFTGenerator, ConvRNNF0Predictor=hg.ConvRNNF0Predictor, Token2wavCacheTrim=trim_cls)


def _load(module, state):
    module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True)
    return module.eval()


def official_flow(state, cfg, noise, max_cache_frames=1000, max_timesteps=16):
    """CausalMaskedDiffWithXvec built with ``cfg`` (a FlowConfig), holding ``state``; the CFM noise
    buffer is replaced by ``noise`` (80, N), and the streaming buffers that the official code
    allocates at the REAL sizes (16 blocks x 1024 channels, 8 heads x 128) are re-made at the tiny
    sizes (same 1000-frame capacity)."""
    sa = stepaudio2()
    enc = sa.UpsampleConformerEncoderV2(
        input_size=cfg.input_size, output_size=cfg.encoder_output_size, input_layer="linear",
        pre_lookahead_len=cfg.pre_lookahead_len, num_blocks=cfg.num_blocks, num_up_blocks=cfg.num_up_blocks,
        up_stride=cfg.up_stride, up_scale_factor=cfg.up_scale_factor, attention_heads=cfg.attention_heads,
        pos_enc_layer_type="rel_pos_espnet", selfattention_layer_type="rel_selfattn", key_bias=cfg.key_bias,
        linear_units=cfg.linear_units, dropout_rate=0.0, positional_dropout_rate=0.0, attention_dropout_rate=0.0,
        normalize_before=True, activation_type="swish")
    est = sa.DiT(in_channels=cfg.dit_in_channels, out_channels=cfg.dit_out_channels, mlp_ratio=cfg.dit_mlp_ratio,
                 depth=cfg.dit_depth, num_heads=cfg.dit_num_heads, head_dim=cfg.dit_head_dim,
                 hidden_size=cfg.dit_hidden_size)
    cfm = sa.CausalConditionalCFM(est, inference_cfg_rate=cfg.inference_cfg_rate)
    flow = sa.CausalMaskedDiffWithXvec(input_size=cfg.input_size, output_size=cfg.output_size,
                                       spk_embed_dim=cfg.spk_embed_dim, vocab_size=cfg.vocab_size,
                                       encoder=enc, decoder=cfm)
    _load(flow, state)
    H, nh, hd, depth = cfg.dit_hidden_size, cfg.dit_num_heads, cfg.dit_head_dim, cfg.dit_depth
    est.att_cache_buffer = torch.zeros(depth, 2, nh, max_cache_frames, 2 * hd)
    est.cnn_cache_buffer = torch.zeros(depth, 2, 2 * H, 2)
    cfm.att_cache_buffer = torch.zeros(max_timesteps, depth, 2, nh, max_cache_frames, 2 * hd)
    cfm.cnn_cache_buffer = torch.zeros(max_timesteps, depth, 2, 2 * H, 2)
    cfm.rand_noise = torch.from_numpy(np.ascontiguousarray(noise, np.float32)[None])
    return flow


def official_hift(state, cfg):
    """HiFTGenerator (+ ConvRNNF0Predictor) built with ``cfg`` (a HiFTConfig), holding ``state``
    (weight-norm parametrizations; a leading ``generator.`` is removed as Token2wav does)."""
    sa = stepaudio2()
    f0 = sa.ConvRNNF0Predictor(num_class=1, in_channels=cfg.in_channels, cond_channels=cfg.f0_cond_channels)
    hift = sa.HiFTGenerator(
        in_channels=cfg.in_channels, base_channels=cfg.base_channels, nb_harmonics=cfg.nb_harmonics,
        sampling_rate=cfg.sampling_rate, nsf_alpha=cfg.nsf_alpha, nsf_sigma=cfg.nsf_sigma,
        nsf_voiced_threshold=cfg.nsf_voiced_threshold, upsample_rates=list(cfg.upsample_rates),
        upsample_kernel_sizes=list(cfg.upsample_kernel_sizes),
        istft_params={"n_fft": cfg.n_fft, "hop_len": cfg.hop_len},
        resblock_kernel_sizes=list(cfg.resblock_kernel_sizes),
        resblock_dilation_sizes=[list(d) for d in cfg.resblock_dilation_sizes],
        source_resblock_kernel_sizes=list(cfg.source_resblock_kernel_sizes),
        source_resblock_dilation_sizes=[list(d) for d in cfg.source_resblock_dilation_sizes],
        lrelu_slope=cfg.lrelu_slope, audio_limit=cfg.audio_limit, f0_predictor=f0)
    return _load(hift, {k.removeprefix("generator."): v for k, v in state.items()})


@contextlib.contextmanager
def injected_sinegen_random(randomness):
    """Within the block, SineGen2's ``torch.rand`` (initial phases, shape (1, H+1)) returns
    ``randomness.phases()`` and its ``torch.randn_like(sine_waves)`` (1, L, H+1) returns
    ``randomness.noise(L)``; the unused noise branch of SourceModuleHnNSF2
    (``randn_like(uv)``, (1, L, 1)) gets zeros. torch is restored on exit."""
    nh = randomness.nh
    orig_rand, orig_randn_like = torch.rand, torch.randn_like

    def rand(*size, **kw):
        shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        if tuple(shape) != (1, nh):
            raise AssertionError(f"unexpected torch.rand{shape} inside HiFT")
        return torch.from_numpy(randomness.phases().reshape(1, nh))

    def randn_like(t, **kw):
        if t.dim() == 3 and t.shape[0] == 1 and t.shape[2] == nh:
            return torch.from_numpy(randomness.noise(t.shape[1])[None]).to(t.dtype)
        if t.dim() == 3 and t.shape[2] == 1:
            return torch.zeros_like(t)
        raise AssertionError(f"unexpected torch.randn_like{tuple(t.shape)} inside HiFT")

    torch.rand, torch.randn_like = rand, randn_like
    try:
        yield
    finally:
        torch.rand, torch.randn_like = orig_rand, orig_randn_like
