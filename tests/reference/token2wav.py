"""numpy reference of Token2Wav (Step-Audio2 flow + HiFT vocoder), written from MODEL_SPEC.md §5.2,
§9, §10 and Appendix A.1/A.3/A.4, with facts checked against the official Python package
(PyPI ``minicpmo-utils`` 1.0.7, package ``stepaudio2``; streaming vocoder protocol of 1.0.1).

Precision: ``dtype=np.float32`` by default (weights cast once, every op in float32 like the float32
PyTorch model); ``dtype=np.float64`` gives a higher-precision oracle. In both modes the constants
the official code builds in float32 stay float32-valued (relative-position table, timestep
frequencies, Hann window, SineGen's uv and noise amplitude). Layouts: tokens (T,), token
embeddings / encoder states (T, D), mel (80, T) (channels first, like the official ``feat``),
waveforms (n_samples,).

Inputs: ``flow_state`` = the arrays of ``flow.pt`` under their state-dict names
(``input_embedding.weight``, ``encoder.*``, ``encoder_proj.*``, ``decoder.estimator.*``), and
``hift_state`` = the arrays of ``hift.pt`` (a leading ``generator.`` is accepted; weight norms as
``parametrizations.weight.original0/1`` or ``weight_g/weight_v`` are folded: W = g·v/‖v‖ over all
axes but 0). Hyper-parameters: :class:`FlowConfig` / :class:`HiFTConfig`, built from the keyword
arguments that flow.yaml passes to the official constructors (:meth:`FlowConfig.from_yaml_dict`).

Randomness is injected, never drawn: the CFM noise buffer (80, N) (the official module draws
``randn(1, 80, 30000)`` once at construction) and, for every HiFT call, the SineGen phases
(H+1,) and the additive noise (n_samples, H+1) through a ``source_random(n_samples)`` callable.

Facts beyond the spec (checked against the official code, see the test files for the measured
agreement):

* CFG: v = (1 + 0.7)·v_cond − 0.7·v_uncond, where the unconditional branch has mu, spk AND cond
  zeroed (x and t shared). Time schedule: t = 1 − cos(linspace(0, 1, N+1)·π/2); the Euler loop
  advances t by accumulation (t += dt; dt = t_span[k+1] − t), which this file reproduces.
* SineGen2's random initial phases are dead: they are added to sample 0 only, and the linear
  ×1/480 down-sampling reads samples 480j+239 and 480j+240, never sample 0. Only the additive
  noise changes the source. (Phases are still taken and applied, as the official code does.)
* torch's CPU cumsum accumulates float32 in double; the source phase is rebuilt with the exact
  float32 interpolation arithmetic of ``F.interpolate(mode="linear")`` on x86-64 (two fused
  multiply-adds, see ``_torch_linear_interp``), because the phase reaches 1e4..1e5 rad and one ulp
  there is visible in the waveform.
* Estimator (DiT) K/V caches are stored NEWEST FIRST (``cat([k_new, k_cache])``); conformer caches
  oldest first. The 1.0.7 estimator trim keeps ``cache[:, :P] ‖ cache[:, -100:]`` on that order,
  i.e. the newest P frames and the OLDEST 100 frames (the prompt's tail), not "prompt + last 100".
  Attention there has no positions, so only the kept set matters; this file reproduces it.
* The CFM noise window of a streaming call starts at the estimator cache length BEFORE the call;
  once trimming is active that length is constant (P + 100), so every later chunk reuses noise
  frames [P+100, P+150).
* Conformer streaming caches: token-rate K‖V cache stored tiled twice (``repeat`` of the whole
  sequence), mel-rate cache as is; the relative-position table is rebuilt for ``cache + chunk`` and
  rel_shift is applied with t_query ≠ t_key (A.1's reshape recipe, valid for any t_query).
* The 1.0.7 conformer trim (limit P + 100 mel frames) keeps token frames [:P//2] ‖ [-50:] and mel
  frames [:P] ‖ [-100:], then re-tiles; the conv caches are never trimmed.
* set_stream_cache appends [4218]*3 to the prompt tokens in minicpmo-utils 1.0.1 (spec) but the
  prompt's first 3 tokens in 1.0.7 (``setup_lookahead``).
* The 1.0.1 Hamming cross-fade is not amplitude-preserving: w[i] + w[i+3840] ≈ 1.08 over the
  overlap (Hamming's 0.08 floor), so seams can exceed the ±0.99 clamp by up to 8 %.
* Non-final windows need ≥ 2 fresh tokens (the pre-lookahead conv cache keeps the last 2 conv1
  outputs of the chunk only; fewer would break the next call) and the first HiFT chunk needs ≥ 8
  mel frames (the 3840-sample cross-fade).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

SILENCE_TOKEN = 4218          # S3 tokenizer v2 silence (spec §5)
SAMPLE_RATE = 24000
STREAM_CHUNK_TOKENS = 25      # tts_config.s3_stream_chunk_size
HISTORY_FRAMES = 100          # Token2wav: caches trimmed to prompt + 100 mel frames
HIFT_MEL_CACHE_FRAMES = 8     # Token2wav (1.0.1): mel_cache_len, 160 ms
PE_MAX_LEN = 5000             # EspnetRelPositionalEncoding max_len (table of 2*5000-1 rows)


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """CausalMaskedDiffWithXvec + UpsampleConformerEncoderV2 + CausalConditionalCFM + DiT.
    Defaults = the released model (spec §5.2.2/§5.2.3)."""
    input_size: int = 512
    output_size: int = 80
    spk_embed_dim: int = 192
    vocab_size: int = 6561
    # encoder
    encoder_output_size: int = 512
    attention_heads: int = 8
    linear_units: int = 2048
    num_blocks: int = 6
    num_up_blocks: int = 4
    pre_lookahead_len: int = 3
    up_stride: int = 2
    up_scale_factor: float = 2.0
    key_bias: bool = True
    # CFM
    inference_cfg_rate: float = 0.7
    # DiT
    dit_in_channels: int = 320
    dit_out_channels: int = 80
    dit_hidden_size: int = 512
    dit_depth: int = 16
    dit_num_heads: int = 8
    dit_head_dim: int = 64
    dit_mlp_ratio: float = 4.0
    t_freq_dim: int = 256     # TimestepEmbedder default; the DiT constructor does not expose it

    @classmethod
    def from_yaml_dict(cls, d: Mapping) -> "FlowConfig":
        """From the keyword arguments flow.yaml gives the official constructors:
        ``{input_size, output_size, spk_embed_dim, vocab_size, encoder: {UpsampleConformerEncoderV2
        kwargs}, decoder: {inference_cfg_rate, estimator: {DiT kwargs}}}``; missing keys keep the
        constructor defaults of the real model."""
        enc = dict(d.get("encoder", {}))
        dec = dict(d.get("decoder", {}))
        est = dict(dec.get("estimator", {}))
        f = {}
        for k in ("input_size", "output_size", "spk_embed_dim", "vocab_size"):
            if k in d:
                f[k] = d[k]
        if "output_size" in enc:
            f["encoder_output_size"] = enc["output_size"]
        for k in ("attention_heads", "linear_units", "num_blocks", "num_up_blocks", "pre_lookahead_len",
                  "up_stride", "up_scale_factor", "key_bias"):
            if k in enc:
                f[k] = enc[k]
        if "input_size" in enc and enc["input_size"] != f.get("input_size", cls.input_size):
            raise ValueError(f"flow.yaml: encoder.input_size {enc['input_size']} != flow input_size")
        if "inference_cfg_rate" in dec:
            f["inference_cfg_rate"] = dec["inference_cfg_rate"]
        for src, dst in (("in_channels", "dit_in_channels"), ("out_channels", "dit_out_channels"),
                         ("hidden_size", "dit_hidden_size"), ("depth", "dit_depth"),
                         ("num_heads", "dit_num_heads"), ("head_dim", "dit_head_dim"),
                         ("mlp_ratio", "dit_mlp_ratio")):
            if src in est:
                f[dst] = est[src]
        unknown = set(enc) - {"input_size", "output_size", "attention_heads", "linear_units", "num_blocks",
                              "num_up_blocks", "pre_lookahead_len", "up_stride", "up_scale_factor", "key_bias",
                              "input_layer", "pos_enc_layer_type", "selfattention_layer_type", "dropout_rate",
                              "positional_dropout_rate", "attention_dropout_rate", "normalize_before",
                              "activation_type"}
        if unknown:
            raise ValueError(f"flow.yaml: unsupported encoder keys {sorted(unknown)}")
        for k, want in (("input_layer", "linear"), ("pos_enc_layer_type", "rel_pos_espnet"),
                        ("selfattention_layer_type", "rel_selfattn"), ("normalize_before", True),
                        ("activation_type", "swish")):
            if k in enc and enc[k] != want:
                raise ValueError(f"flow.yaml: encoder.{k}={enc[k]!r} is not supported (only {want!r})")
        cfg = cls(**f)
        cfg.validate()
        return cfg

    def validate(self):
        def pos(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"FlowConfig.{name} must be a positive integer, got {v!r}")
        for n in ("input_size", "output_size", "spk_embed_dim", "vocab_size", "encoder_output_size",
                  "attention_heads", "linear_units", "num_blocks", "num_up_blocks", "pre_lookahead_len",
                  "up_stride", "dit_in_channels", "dit_out_channels", "dit_hidden_size", "dit_depth",
                  "dit_num_heads", "dit_head_dim", "t_freq_dim"):
            pos(n)
        if self.encoder_output_size % self.attention_heads:
            raise ValueError("FlowConfig: encoder_output_size must be divisible by attention_heads")
        if self.input_size != self.encoder_output_size:
            # up_embed is Linear(input_size -> output_size) applied to encoder features
            raise ValueError("FlowConfig: input_size must equal encoder_output_size (up_embed takes encoder "
                             "features through a Linear(input_size, ...))")
        if self.dit_in_channels != 4 * self.output_size or self.dit_out_channels != self.output_size:
            raise ValueError("FlowConfig: DiT in_channels must be 4*output_size ([x, mu, spk, cond]) and "
                             "out_channels output_size")
        if self.t_freq_dim % 2:
            raise ValueError("FlowConfig.t_freq_dim must be even")
        if not 0 < self.inference_cfg_rate:
            raise ValueError("FlowConfig.inference_cfg_rate must be > 0 (the official CFM asserts it)")


@dataclasses.dataclass(frozen=True)
class HiFTConfig:
    """HiFTGenerator (CosyVoice2, 24 kHz) + ConvRNNF0Predictor. Defaults = the released model."""
    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 24000
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    upsample_rates: tuple = (8, 5, 3)
    upsample_kernel_sizes: tuple = (16, 11, 7)
    n_fft: int = 16
    hop_len: int = 4
    resblock_kernel_sizes: tuple = (3, 7, 11)
    resblock_dilation_sizes: tuple = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple = (7, 7, 11)
    source_resblock_dilation_sizes: tuple = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_cond_channels: int = 512
    f0_num_layers: int = 5     # ConvRNNF0Predictor: 5 x (WNConv1d k3 + ELU)

    @property
    def hop_samples(self) -> int:
        return int(np.prod(self.upsample_rates)) * self.hop_len

    def validate(self):
        if self.sampling_rate == 22050:
            raise ValueError("HiFTConfig: sampling_rate 22050 selects the SourceModuleHnNSF (v1) source, "
                             "which this reference does not implement")
        if not (len(self.upsample_rates) == len(self.upsample_kernel_sizes)
                == len(self.source_resblock_kernel_sizes) == len(self.source_resblock_dilation_sizes)):
            raise ValueError("HiFTConfig: upsample rates/kernels and source resblock lists must have one "
                             "entry per up-sampling stage")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("HiFTConfig: resblock kernel and dilation lists differ in length")
        if self.n_fft % 2 or self.n_fft <= 0 or self.hop_len <= 0:
            raise ValueError("HiFTConfig: n_fft must be even and positive, hop_len positive")


# ------------------------------------------------------------------------------------------------
# state-dict access
# ------------------------------------------------------------------------------------------------

def _as_array(x):
    if hasattr(x, "detach"):            # a torch tensor slipped in: accept it
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class _Weights:
    """Name -> array lookup with shape checks and weight-norm folding, cast once to ``dtype``."""

    def __init__(self, state: Mapping, dtype, what: str, strip_prefix: str = ""):
        if not isinstance(state, Mapping):
            raise TypeError(f"{what}: state must be a mapping name -> array, got {type(state).__name__}")
        self.what = what
        self.dtype = np.dtype(dtype)
        self.raw = {}
        for k, v in state.items():
            if strip_prefix and k.startswith(strip_prefix):
                k = k[len(strip_prefix):]
            self.raw[k] = v
        self.used = set()

    def _fetch(self, name):
        if name not in self.raw:
            raise KeyError(f"{self.what}: missing tensor {name!r}")
        self.used.add(name)
        return _as_array(self.raw[name])

    def get(self, name, shape=None):
        a = self._fetch(name)
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise ValueError(f"{self.what}: tensor {name!r} has shape {tuple(a.shape)}, expected {tuple(shape)}")
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{self.what}: tensor {name!r} must be floating point, got {a.dtype}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{self.what}: tensor {name!r} contains non-finite values")
        return a.astype(self.dtype)

    def conv_weight(self, prefix, shape):
        """``prefix.weight`` or a folded weight norm (g·v/‖v‖, norm over every axis but 0, dim=0)."""
        names = [(f"{prefix}.parametrizations.weight.original0", f"{prefix}.parametrizations.weight.original1"),
                 (f"{prefix}.weight_g", f"{prefix}.weight_v")]
        for gname, vname in names:
            if gname in self.raw and vname in self.raw:
                v = self._fetch(vname).astype(np.float64)
                g = self._fetch(gname).astype(np.float64)
                if tuple(v.shape) != tuple(shape):
                    raise ValueError(f"{self.what}: tensor {vname!r} has shape {tuple(v.shape)}, expected {tuple(shape)}")
                if g.size != v.shape[0]:
                    raise ValueError(f"{self.what}: tensor {gname!r} has {g.size} values, expected {v.shape[0]}")
                norm = np.sqrt(np.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))
                if np.any(norm == 0):
                    raise ValueError(f"{self.what}: weight norm of {prefix!r} divides by a zero vector")
                return (g.reshape((-1,) + (1,) * (v.ndim - 1)) * v / norm).astype(self.dtype)
        return self.get(f"{prefix}.weight", shape)


# ------------------------------------------------------------------------------------------------
# numeric building blocks (op-for-op with torch)
# ------------------------------------------------------------------------------------------------

def _linear(x, w, b=None):
    y = x @ w.T
    return y + b if b is not None else y


def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + x.dtype.type(eps))
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y


def _silu(x):
    with np.errstate(over="ignore"):
        return x / (1 + np.exp(-x))


def _mish(x):
    return x * np.tanh(np.logaddexp(x.dtype.type(0), x))


def _gelu_tanh(x):
    c = x.dtype.type(math.sqrt(2.0 / math.pi))
    return x.dtype.type(0.5) * x * (1 + np.tanh(c * (x + x.dtype.type(0.044715) * x * x * x)))


def _leaky_relu(x, slope):
    return np.where(x >= 0, x, x * x.dtype.type(slope))


def _elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def _softmax(x):
    m = x.max(-1, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(-1, keepdims=True)


def _conv1d(x, w, b=None, stride=1, padding=0, dilation=1):
    """x (C_in, T), w (C_out, C_in, K) -> (C_out, T_out); zero padding on both sides (an int) or
    (left, right)."""
    pl, pr = (padding, padding) if np.isscalar(padding) else padding
    if pl or pr:
        x = np.pad(x, ((0, 0), (pl, pr)))
    k = w.shape[2]
    t_out = (x.shape[1] - dilation * (k - 1) - 1) // stride + 1
    if t_out <= 0:
        raise ValueError(f"conv1d: input of {x.shape[1]} frames is shorter than the kernel span")
    y = np.zeros((w.shape[0], t_out), x.dtype)
    for j in range(k):
        s = j * dilation
        y += w[:, :, j] @ x[:, s: s + stride * (t_out - 1) + 1: stride]
    return y + b[:, None] if b is not None else y


def _conv_transpose1d(x, w, b, stride, padding):
    """x (C_in, T), w (C_in, C_out, K) (torch ConvTranspose1d layout) -> (C_out, (T-1)s - 2p + K)."""
    t, k = x.shape[1], w.shape[2]
    full = np.zeros((w.shape[1], (t - 1) * stride + k), x.dtype)
    for j in range(k):
        full[:, j: j + stride * (t - 1) + 1: stride] += w[:, :, j].T @ x
    y = full[:, padding: full.shape[1] - padding]
    return y + b[:, None]


def _f32(fn, x):
    """A float32 transcendental evaluated in float64 and rounded: closer to torch's SLEEF float32
    kernels (<= 1 ulp) than numpy's own float32 versions, for the float32 constant tables."""
    return fn(np.asarray(x, np.float64)).astype(np.float32)


def espnet_rel_pe(size, d, dtype=np.float32):
    """EspnetRelPositionalEncoding rows for relative positions size-1 ... 0 ... -(size-1) (A.1).
    Computed in float32 whatever ``dtype`` (the official table is built in float32, max_len 5000,
    and only cast to the input dtype), then cast."""
    if size > PE_MAX_LEN:
        # the streaming path slices the fixed 5000-row table without extending it
        raise ValueError(f"relative position table: {size} frames exceed the official max_len {PE_MAX_LEN}")
    f32 = np.float32
    pos = np.arange(size, dtype=f32)[:, None]
    div = _f32(np.exp, np.arange(0, d, 2, dtype=f32) * f32(-(math.log(10000.0) / d)))
    pos_pe = np.zeros((size, d), f32)
    neg_pe = np.zeros((size, d), f32)
    pos_pe[:, 0::2] = _f32(np.sin, pos * div)
    pos_pe[:, 1::2] = _f32(np.cos, pos * div)
    neg_pe[:, 0::2] = _f32(np.sin, -1 * pos * div)
    neg_pe[:, 1::2] = _f32(np.cos, -1 * pos * div)
    return np.concatenate([pos_pe[::-1], neg_pe[1:]], 0).astype(dtype)


def rel_shift(x):
    """ESPnet rel_shift on (heads, t_q, 2*t_k-1) -> (heads, t_q, t_k): the torch view sequence of
    A.1, valid also for t_q != t_k (streaming chunks)."""
    h, tq, m = x.shape
    xp = np.concatenate([np.zeros((h, tq, 1), x.dtype), x], -1).reshape(h, m + 1, tq)
    return xp[:, 1:].reshape(h, tq, m)[:, :, : m // 2 + 1]


def torch_linspace(n_steps, dtype):
    """torch.linspace(0, 1, n_steps) (CPU): first half start + i*step, second half end - (n-1-i)*step."""
    dt = np.dtype(dtype).type
    if n_steps == 1:
        return np.zeros(1, dtype)
    step = dt(1.0) / dt(n_steps - 1)
    i = np.arange(n_steps)
    half = n_steps // 2
    out = np.where(i < half, i.astype(dtype) * step, dt(1.0) - (n_steps - 1 - i).astype(dtype) * step)
    return out.astype(dtype)


def cosine_t_span(n_timesteps, dtype):
    """t_k = 1 - cos(linspace(0,1,N+1) * 0.5 * pi) in the model dtype (spec §5.2.3)."""
    dt = np.dtype(dtype).type
    return (dt(1) - np.cos(torch_linspace(n_timesteps + 1, dtype) * dt(0.5) * dt(math.pi))).astype(dtype)


def _fma(a, b, c, dtype):
    """a*b + c rounded once, as a fused multiply-add: exact in float64 for float32 operands (the
    product of two 24-bit mantissas is exact in double; the double-rounding corner is ~2^-29)."""
    if np.dtype(dtype) != np.float32:
        return (a * b + c).astype(dtype)
    return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(np.float32)


def _torch_linear_interp(x, scale_factor, dtype):
    """F.interpolate(x.T[None], scale_factor=s, mode='linear', align_corners=False) on x (L, C),
    bit-for-bit with torch 2.x on x86-64 CPUs (AVX2/AVX-512 kernels): the source index is
    fma(1/s, dst + 0.5, -0.5) clamped at 0, and the output fma(w0, x[i0], w1 * x[i1]); both FMAs
    are the compiler's contraction in torch's upsample kernel (checked bit-exact against torch 2.13).
    The source phase reaches 1e4..1e5 rad, where one float32 ulp is audible in the waveform."""
    dt = np.dtype(dtype).type
    n_in = x.shape[0]
    n_out = int(math.floor(n_in * scale_factor))
    scale = np.full(n_out, 1.0 / scale_factor).astype(dtype)
    dst = np.arange(n_out).astype(dtype) + dt(0.5)
    src = _fma(scale, dst, np.full(n_out, -0.5, dtype), dtype)
    src = np.maximum(src, dt(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam1 = np.clip(src - i0.astype(dtype), dt(0), dt(1)).astype(dtype)
    lam0 = (dt(1) - lam1).astype(dtype)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return _fma(lam0[:, None], x[i0], (lam1[:, None] * x[i1]).astype(dtype), dtype)


def _check_tokens(tokens, vocab_size, what="tokens"):
    a = np.asarray(tokens)
    if a.ndim != 1:
        raise ValueError(f"{what} must be a 1-D sequence of speech-token ids, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not (np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a))):
            raise ValueError(f"{what} must be integer speech-token ids, got dtype {a.dtype}")
    a = a.astype(np.int64)
    bad = (a < 0) | (a >= vocab_size)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ValueError(f"{what}[{i}] = {int(a[i])} is not a speech token: ids must be in [0, {vocab_size})")
    return a


# ------------------------------------------------------------------------------------------------
# flow: token embedding, speaker affine, conformer encoder, DiT, CFM
# ------------------------------------------------------------------------------------------------

class FlowReference:
    """CausalMaskedDiffWithXvec with its UpsampleConformerEncoderV2 and CausalConditionalCFM(DiT)."""

    def __init__(self, flow_state: Mapping, config: FlowConfig = FlowConfig(), dtype=np.float32):
        if not isinstance(config, FlowConfig):
            raise TypeError("config must be a FlowConfig")
        config.validate()
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        self.cfg = c = config
        self.dtype = np.dtype(dtype)
        W = _Weights(flow_state, dtype, "flow.pt")
        D, E = c.encoder_output_size, c.input_size
        self.embedding = W.get("input_embedding.weight", (c.vocab_size, E))
        self.spk_w = W.get("spk_embed_affine_layer.weight", (c.output_size, c.spk_embed_dim))
        self.spk_b = W.get("spk_embed_affine_layer.bias", (c.output_size,))
        self.embed = self._lin_ln(W, "encoder.embed.out", E, D)
        p = "encoder.pre_lookahead_layer."
        self.pl_w1 = W.get(p + "conv1.weight", (D, D, c.pre_lookahead_len + 1))
        self.pl_b1 = W.get(p + "conv1.bias", (D,))
        self.pl_w2 = W.get(p + "conv2.weight", (D, D, 3))
        self.pl_b2 = W.get(p + "conv2.bias", (D,))
        self.encoders = [self._conformer(W, f"encoder.encoders.{i}") for i in range(c.num_blocks)]
        self.up_w = W.get("encoder.up_layer.conv.weight", (D, D, 2 * c.up_stride + 1))
        self.up_b = W.get("encoder.up_layer.conv.bias", (D,))
        self.up_embed = self._lin_ln(W, "encoder.up_embed.out", E, D)
        self.up_encoders = [self._conformer(W, f"encoder.up_encoders.{i}") for i in range(c.num_up_blocks)]
        self.after_norm = (W.get("encoder.after_norm.weight", (D,)), W.get("encoder.after_norm.bias", (D,)))
        self.proj_w = W.get("encoder_proj.weight", (c.output_size, D))
        self.proj_b = W.get("encoder_proj.bias", (c.output_size,))
        # DiT
        H, hd, nh = c.dit_hidden_size, c.dit_head_dim, c.dit_num_heads
        inner = nh * hd
        e = "decoder.estimator."
        self.t_mlp = (W.get(e + "t_embedder.mlp.0.weight", (H, c.t_freq_dim)), W.get(e + "t_embedder.mlp.0.bias", (H,)),
                      W.get(e + "t_embedder.mlp.2.weight", (H, H)), W.get(e + "t_embedder.mlp.2.bias", (H,)))
        self.in_proj = (W.get(e + "in_proj.weight", (H, c.dit_in_channels)), W.get(e + "in_proj.bias", (H,)))
        mlp_hidden = int(H * c.dit_mlp_ratio)
        self.blocks = []
        for i in range(c.dit_depth):
            b = f"{e}blocks.{i}."
            blk = {}
            for n in ("to_q", "to_k", "to_v"):
                blk[n] = (W.get(b + f"attn.{n}.weight", (inner, H)), W.get(b + f"attn.{n}.bias", (inner,)))
            for n in ("q_norm", "k_norm"):
                blk[n] = (W.get(b + f"attn.{n}.weight", (hd,)), W.get(b + f"attn.{n}.bias", (hd,)))
            blk["proj"] = (W.get(b + "attn.proj.weight", (H, inner)), W.get(b + "attn.proj.bias", (H,)))
            blk["fc1"] = (W.get(b + "mlp.fc1.weight", (mlp_hidden, H)), W.get(b + "mlp.fc1.bias", (mlp_hidden,)))
            blk["fc2"] = (W.get(b + "mlp.fc2.weight", (H, mlp_hidden)), W.get(b + "mlp.fc2.bias", (H,)))
            blk["conv1"] = (W.get(b + "conv.block.1.weight", (H, H, 3)), W.get(b + "conv.block.1.bias", (H,)))
            blk["conv_ln"] = (W.get(b + "conv.block.3.weight", (H,)), W.get(b + "conv.block.3.bias", (H,)))
            blk["conv2"] = (W.get(b + "conv.block.6.weight", (H, H, 3)), W.get(b + "conv.block.6.bias", (H,)))
            blk["ada"] = (W.get(b + "adaLN_modulation.1.weight", (9 * H, H)), W.get(b + "adaLN_modulation.1.bias", (9 * H,)))
            self.blocks.append(blk)
        self.final_ada = (W.get(e + "final_layer.adaLN_modulation.1.weight", (2 * H, H)),
                          W.get(e + "final_layer.adaLN_modulation.1.bias", (2 * H,)))
        self.final_lin = (W.get(e + "final_layer.linear.weight", (c.dit_out_channels, H)),
                          W.get(e + "final_layer.linear.bias", (c.dit_out_channels,)))
        unused = set(W.raw) - W.used
        if unused:
            raise ValueError(f"flow.pt: unexpected tensors {sorted(unused)[:5]} (config does not match the weights?)")

    # -- loading helpers ------------------------------------------------------------------------
    def _lin_ln(self, W, p, n_in, n_out):
        return (W.get(p + ".0.weight", (n_out, n_in)), W.get(p + ".0.bias", (n_out,)),
                W.get(p + ".1.weight", (n_out,)), W.get(p + ".1.bias", (n_out,)))

    def _conformer(self, W, p):
        c = self.cfg
        D, h = c.encoder_output_size, c.attention_heads
        a = p + ".self_attn."
        lay = {
            "q": (W.get(a + "linear_q.weight", (D, D)), W.get(a + "linear_q.bias", (D,))),
            "k": (W.get(a + "linear_k.weight", (D, D)),
                  W.get(a + "linear_k.bias", (D,)) if c.key_bias else None),
            "v": (W.get(a + "linear_v.weight", (D, D)), W.get(a + "linear_v.bias", (D,))),
            "out": (W.get(a + "linear_out.weight", (D, D)), W.get(a + "linear_out.bias", (D,))),
            "pos": W.get(a + "linear_pos.weight", (D, D)),
            "u": W.get(a + "pos_bias_u", (h, D // h)),
            "v_bias": W.get(a + "pos_bias_v", (h, D // h)),
            "w1": (W.get(p + ".feed_forward.w_1.weight", (c.linear_units, D)), W.get(p + ".feed_forward.w_1.bias", (c.linear_units,))),
            "w2": (W.get(p + ".feed_forward.w_2.weight", (D, c.linear_units)), W.get(p + ".feed_forward.w_2.bias", (D,))),
            "norm_mha": (W.get(p + ".norm_mha.weight", (D,)), W.get(p + ".norm_mha.bias", (D,))),
            "norm_ff": (W.get(p + ".norm_ff.weight", (D,)), W.get(p + ".norm_ff.bias", (D,))),
        }
        return lay

    # -- front ----------------------------------------------------------------------------------
    def speaker(self, xvec):
        """spk = Linear(192->80)(xvec / max(||xvec||, 1e-12))   (F.normalize, spk_embed_affine_layer)."""
        x = np.asarray(xvec)
        if x.ndim == 2 and x.shape[0] == 1:
            x = x[0]
        if x.shape != (self.cfg.spk_embed_dim,):
            raise ValueError(f"speaker embedding must have shape ({self.cfg.spk_embed_dim},), got {np.shape(xvec)}")
        x = x.astype(self.dtype)
        if not np.all(np.isfinite(x)):
            raise ValueError("speaker embedding contains non-finite values")
        n = np.sqrt(np.sum(x * x))
        x = x / max(n, self.dtype.type(1e-12))
        return _linear(x, self.spk_w, self.spk_b)

    def embed_tokens(self, tokens, what="tokens"):
        return self.embedding[_check_tokens(tokens, self.cfg.vocab_size, what)]

    # -- conformer ------------------------------------------------------------------------------
    def _embed(self, x, p):
        w, b, lw, lb = p
        y = _layer_norm(_linear(x, w, b), lw, lb, 1e-5)
        return y * self.dtype.type(math.sqrt(self.cfg.encoder_output_size))

    def _pe(self, size):
        return espnet_rel_pe(size, self.cfg.encoder_output_size, self.dtype)

    def _rel_attention(self, lay, x, pe, cache):
        """x (T, D); pe (2*T_k-1, D); cache (h, T_c, 2*d_k) or None -> (out (T, D), new cache)."""
        c = self.cfg
        h = c.attention_heads
        dk = c.encoder_output_size // h
        T = x.shape[0]
        q = _linear(x, *lay["q"]).reshape(T, h, dk).transpose(1, 0, 2)
        k = _linear(x, *lay["k"]).reshape(T, h, dk).transpose(1, 0, 2)
        v = _linear(x, *lay["v"]).reshape(T, h, dk).transpose(1, 0, 2)
        if cache is not None and cache.shape[1] > 0:
            k = np.concatenate([cache[..., :dk], k], 1)
            v = np.concatenate([cache[..., dk:], v], 1)
        new_cache = np.concatenate([k, v], -1)
        p = _linear(pe, lay["pos"]).reshape(-1, h, dk).transpose(1, 0, 2)
        ac = (q + lay["u"][:, None]) @ k.transpose(0, 2, 1)
        bd = (q + lay["v_bias"][:, None]) @ p.transpose(0, 2, 1)
        if bd.shape != ac.shape:
            bd = rel_shift(bd)
        scores = (ac + bd) / self.dtype.type(math.sqrt(dk))
        o = (_softmax(scores) @ v).transpose(1, 0, 2).reshape(T, h * dk)
        return _linear(o, *lay["out"]), new_cache

    def _conformer_layer(self, lay, x, pe, cache=None):
        a, new_cache = self._rel_attention(lay, _layer_norm(x, *lay["norm_mha"], 1e-12), pe, cache)
        x = x + a
        y = _layer_norm(x, *lay["norm_ff"], 1e-12)
        x = x + _linear(_silu(_linear(y, *lay["w1"])), *lay["w2"])
        return x, new_cache

    def _upsample_nearest(self, x):
        """F.interpolate(mode='nearest', scale_factor=s) along time of x (T, D)."""
        s = float(self.cfg.up_scale_factor)
        n_out = int(math.floor(x.shape[0] * s))
        src = np.minimum(np.floor(np.arange(n_out) * np.float32(1.0 / s)).astype(np.int64), x.shape[0] - 1)
        return x[src]

    def encode(self, x):
        """Full-utterance UpsampleConformerEncoderV2.forward on token embeddings x (T, E) -> (2T, D)."""
        c = self.cfg
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError("encode: need a non-empty (T, input_size) array")
        y = self._embed(x, self.embed)
        T = y.shape[0]
        # pre-lookahead: conv1 (k = L+1) on [y || L zero rows], leaky_relu 0.01, conv2 (k3) left-padded by 2
        z = _leaky_relu(_conv1d(y.T, self.pl_w1, self.pl_b1, padding=(0, c.pre_lookahead_len)), 0.01)
        z = _conv1d(z, self.pl_w2, self.pl_b2, padding=(2, 0))
        y = y + z.T
        pe = self._pe(T)
        for lay in self.encoders:
            y, _ = self._conformer_layer(lay, y, pe)
        u = self._upsample_nearest(y)
        u = _conv1d(u.T, self.up_w, self.up_b, padding=(2 * c.up_stride, 0)).T
        y = self._embed(u, self.up_embed)
        pe = self._pe(y.shape[0])
        for lay in self.up_encoders:
            y, _ = self._conformer_layer(lay, y, pe)
        return _layer_norm(y, *self.after_norm, 1e-5)

    def encode_chunk(self, x, last_chunk=False, cnn_cache=None, att_cache=None):
        """UpsampleConformerEncoderV2.forward_chunk. x (T_in, E) includes the look-ahead tokens.
        cnn_cache (D, 2 + 2*stride): [pre-lookahead conv1 outputs | up-sampled frames];
        att_cache (n_blocks + n_up_blocks, heads, 2*t_tok, 2*d_k): token-rate layers tiled twice.
        Returns (h (T_mel, D), new_cnn_cache, new_att_cache)."""
        c = self.cfg
        L = c.pre_lookahead_len
        D = c.encoder_output_size
        n1 = c.num_blocks
        if att_cache is not None:
            if att_cache.ndim != 4 or att_cache.shape[0] != n1 + c.num_up_blocks or att_cache.shape[2] % 2:
                raise ValueError(f"conformer att cache has shape {att_cache.shape}; expected "
                                 f"({n1 + c.num_up_blocks}, heads, even T, 2*d_k)")
        if cnn_cache is not None and cnn_cache.shape != (D, 2 + 2 * c.up_stride):
            raise ValueError(f"conformer cnn cache has shape {cnn_cache.shape}, expected ({D}, {2 + 2 * c.up_stride})")
        offset1 = att_cache.shape[2] // 2 if att_cache is not None else 0
        y = self._embed(x, self.embed)
        if last_chunk:
            y = np.concatenate([y, np.zeros((L, D), y.dtype)], 0)
        if y.shape[0] <= L:
            raise ValueError(f"encoder chunk: {x.shape[0]} tokens leave no frame after the {L} look-ahead tokens")
        # pre-lookahead without right padding: T_in - L outputs
        z = _leaky_relu(_conv1d(y.T, self.pl_w1, self.pl_b1), 0.01)
        new_cnn1 = z[:, -2:]
        prev1 = cnn_cache[:, :2] if cnn_cache is not None else np.zeros((D, 2), y.dtype)
        z = _conv1d(np.concatenate([prev1, z], 1), self.pl_w2, self.pl_b2)
        y = y[:-L] + z.T
        T = y.shape[0]
        pe = self._pe(offset1 + T)
        new_att1 = []
        for i, lay in enumerate(self.encoders):
            cache = att_cache[i, :, :offset1] if att_cache is not None else None
            y, nc = self._conformer_layer(lay, y, pe, cache)
            new_att1.append(nc)
        u = self._upsample_nearest(y).T
        prev2 = cnn_cache[:, 2:] if cnn_cache is not None else np.zeros((D, 2 * c.up_stride), y.dtype)
        u = np.concatenate([prev2, u], 1)
        new_cnn2 = u[:, -2 * c.up_stride:]
        y = self._embed(_conv1d(u, self.up_w, self.up_b).T, self.up_embed)
        pe = self._pe(offset1 * c.up_stride + y.shape[0])
        new_att2 = []
        for i, lay in enumerate(self.up_encoders):
            cache = att_cache[n1 + i] if att_cache is not None else None
            y, nc = self._conformer_layer(lay, y, pe, cache)
            new_att2.append(nc)
        y = _layer_norm(y, *self.after_norm, 1e-5)
        a1 = np.stack(new_att1)
        new_att = np.concatenate([np.concatenate([a1, a1], 2), np.stack(new_att2)], 0)
        return y, np.concatenate([new_cnn1, new_cnn2], 1), new_att

    def project(self, h):
        """encoder_proj: (T, D) -> mu (80, T)."""
        return _linear(h, self.proj_w, self.proj_b).T

    # -- DiT ------------------------------------------------------------------------------------
    def timestep_embedding(self, t):
        """TimestepEmbedder: MLP([cos(1000t f), sin(1000t f)]), f_i = exp(-ln(1e4) i / half)."""
        dt = self.dtype.type
        half = self.cfg.t_freq_dim // 2
        f32 = np.float32     # the official frequencies are float32, then cast to t's dtype
        freqs = _f32(np.exp, f32(-math.log(10000.0)) * np.arange(half).astype(f32) / f32(half)).astype(self.dtype)
        args = (dt(t) * dt(1000)) * freqs
        f = np.concatenate([np.cos(args), np.sin(args)])
        w0, b0, w2, b2 = self.t_mlp
        return _linear(_silu(_linear(f, w0, b0)), w2, b2)

    def _dit_attention(self, blk, x, cache):
        """x (T, H); cache (heads, T_c, 2*hd) stored NEWEST FIRST, as the official code does."""
        c = self.cfg
        nh, hd = c.dit_num_heads, c.dit_head_dim
        T = x.shape[0]

        def heads(n):
            return _linear(x, *blk[n]).reshape(T, nh, hd).transpose(1, 0, 2)
        q = _layer_norm(heads("to_q"), *blk["q_norm"], 1e-5)
        k = _layer_norm(heads("to_k"), *blk["k_norm"], 1e-5)
        v = heads("to_v")
        if cache is not None:
            k = np.concatenate([k, cache[..., :hd]], 1)
            v = np.concatenate([v, cache[..., hd:]], 1)
        new_cache = np.concatenate([k, v], -1)
        s = (q @ k.transpose(0, 2, 1)) * self.dtype.type(hd ** -0.5)
        o = (_softmax(s) @ v).transpose(1, 0, 2).reshape(T, nh * hd)
        return _linear(o, *blk["proj"]), new_cache

    def _causal_conv(self, x, wb, cache):
        """CausalConv1d k3 along time of x (T, H) with a (H, 2) left context (zeros if None)."""
        prev = cache if cache is not None else np.zeros((x.shape[1], 2), x.dtype)
        xin = np.concatenate([prev, x.T], 1)
        return _conv1d(xin, *wb).T, xin[:, -2:]

    def velocity(self, x, mu, spk, cond, t, cnn_cache=None, att_cache=None):
        """One DiT evaluation (one CFG branch). x, mu, cond (80, T); spk (80,); t scalar.
        Caches (streaming): cnn (depth, 2H, 2) = [conv1 | conv2] left contexts, att (depth, heads,
        T_c, 2*hd) newest first. Returns (v (80, T), new_cnn, new_att)."""
        c = self.cfg
        H = c.dit_hidden_size
        dt = self.dtype.type
        T = x.shape[1]
        temb = self.timestep_embedding(t)
        inp = np.concatenate([x, mu, np.broadcast_to(spk[:, None], (spk.shape[0], T)), cond], 0).T
        h = _linear(inp, *self.in_proj)
        silu_c = _silu(temb)
        new_cnn, new_att = [], []
        for i, blk in enumerate(self.blocks):
            mod = _linear(silu_c, *blk["ada"]).reshape(9, H)
            sh_a, sc_a, g_a, sh_m, sc_m, g_m, sh_c, sc_c, g_c = mod
            a, ac = self._dit_attention(blk, _layer_norm(h, None, None, 1e-6) * (dt(1) + sc_a) + sh_a,
                                        att_cache[i] if att_cache is not None else None)
            h = h + g_a * a
            cc = cnn_cache[i] if cnn_cache is not None else None
            y = _layer_norm(h, None, None, 1e-6) * (dt(1) + sc_c) + sh_c
            y, cc1 = self._causal_conv(y, blk["conv1"], cc[:H] if cc is not None else None)
            y = _mish(_layer_norm(y, *blk["conv_ln"], 1e-5))
            y, cc2 = self._causal_conv(y, blk["conv2"], cc[H:] if cc is not None else None)
            h = h + g_c * y
            y = _layer_norm(h, None, None, 1e-6) * (dt(1) + sc_m) + sh_m
            h = h + g_m * _linear(_gelu_tanh(_linear(y, *blk["fc1"])), *blk["fc2"])
            new_cnn.append(np.concatenate([cc1, cc2], 0))
            new_att.append(ac)
        sh, sc = _linear(silu_c, *self.final_ada).reshape(2, H)
        out = _linear(_layer_norm(h, None, None, 1e-6) * (dt(1) + sc) + sh, *self.final_lin).T
        return out, np.stack(new_cnn), np.stack(new_att)

    # -- CFM ------------------------------------------------------------------------------------
    def _noise(self, noise, offset, T, temperature):
        n = np.asarray(noise)
        if n.ndim == 3 and n.shape[0] == 1:
            n = n[0]
        if n.ndim != 2 or n.shape[0] != self.cfg.output_size:
            raise ValueError(f"CFM noise must have shape ({self.cfg.output_size}, N), got {np.shape(noise)}")
        if n.shape[1] < offset + T:
            raise ValueError(f"CFM noise has {n.shape[1]} frames; frames [{offset}, {offset + T}) are needed")
        return n[:, offset: offset + T].astype(self.dtype) * self.dtype.type(temperature)

    def cfm(self, mu, spk, cond, noise, n_timesteps=10, temperature=1.0, noise_offset=0,
            cnn_cache=None, att_cache=None):
        """Euler CFM with CFG (A.3). mu, cond (80, T); spk (80,). ``noise`` is the whole (80, N)
        buffer; frames [noise_offset, noise_offset+T) are used. Streaming caches are per ODE step:
        cnn (N, depth, 2 branches, 2H, 2), att (N, depth, 2 branches, heads, T_c, 2*hd).
        Returns (mel (80, T), new_cnn, new_att)."""
        if not isinstance(n_timesteps, (int, np.integer)) or isinstance(n_timesteps, bool) or n_timesteps <= 0:
            raise ValueError(f"n_timesteps must be a positive integer, got {n_timesteps!r}")
        dt_ = self.dtype.type
        T = mu.shape[1]
        x = self._noise(noise, noise_offset, T, temperature)
        t_span = cosine_t_span(n_timesteps, self.dtype)
        t = t_span[0]
        dt = t_span[1] - t_span[0]
        zeros_mu, zeros_spk, zeros_cond = np.zeros_like(mu), np.zeros_like(spk), np.zeros_like(cond)
        # python floats (1.0 + 0.7) and 0.7 are cast to the tensor dtype by torch
        w_cond, r = dt_(1.0 + self.cfg.inference_cfg_rate), dt_(self.cfg.inference_cfg_rate)
        new_cnn, new_att = [], []
        for step in range(1, n_timesteps + 1):
            k = step - 1
            vc, cc0, ac0 = self.velocity(x, mu, spk, cond, t,
                                         cnn_cache[k, :, 0] if cnn_cache is not None else None,
                                         att_cache[k, :, 0] if att_cache is not None else None)
            vu, cc1, ac1 = self.velocity(x, zeros_mu, zeros_spk, zeros_cond, t,
                                         cnn_cache[k, :, 1] if cnn_cache is not None else None,
                                         att_cache[k, :, 1] if att_cache is not None else None)
            v = w_cond * vc - r * vu
            x = x + dt * v
            t = t + dt
            if step < n_timesteps:
                dt = t_span[step + 1] - t
            new_cnn.append(np.stack([cc0, cc1], 1))
            new_att.append(np.stack([ac0, ac1], 1))
        return x, np.stack(new_cnn), np.stack(new_att)

    # -- whole utterance ------------------------------------------------------------------------
    def inference(self, tokens, prompt_tokens, prompt_mel, xvec, noise, n_timesteps=10):
        """CausalMaskedDiffWithXvec.inference: mel (80, 2*len(tokens)) of the generated tokens,
        conditioned on the prompt (prompt_mel (80, 2*len(prompt_tokens)), may be empty)."""
        tok = _check_tokens(tokens, self.cfg.vocab_size)
        ptok = _check_tokens(prompt_tokens, self.cfg.vocab_size, "prompt_tokens")
        if tok.size == 0:
            raise ValueError("inference needs at least one speech token")
        pm = self._prompt_mel(prompt_mel, ptok.size)
        spk = self.speaker(xvec)
        h = self.encode(self.embedding[np.concatenate([ptok, tok])])
        mu = self.project(h)
        cond = np.zeros_like(mu)
        P = pm.shape[1]
        cond[:, :P] = pm
        mel, _, _ = self.cfm(mu, spk, cond, noise, n_timesteps)
        return mel[:, P:]

    def _prompt_mel(self, prompt_mel, n_prompt_tokens):
        pm = np.asarray(prompt_mel)
        want = n_prompt_tokens * self.cfg.up_stride
        if pm.ndim != 2 or pm.shape[0] != self.cfg.output_size:
            raise ValueError(f"prompt mel must have shape ({self.cfg.output_size}, T), got {pm.shape}")
        if pm.shape[1] != want:
            raise ValueError(f"prompt mel has {pm.shape[1]} frames; {n_prompt_tokens} prompt tokens need exactly "
                             f"{want} (pad/truncate it as the voice-prompt preparation does)")
        pm = pm.astype(self.dtype)
        if not np.all(np.isfinite(pm)):
            raise ValueError("prompt mel contains non-finite values")
        return pm


# ------------------------------------------------------------------------------------------------
# HiFT vocoder
# ------------------------------------------------------------------------------------------------

class HiFTReference:
    """HiFTGenerator.forward: F0 predictor, NSF source (SineGen2), iSTFTNet decoder."""

    def __init__(self, hift_state: Mapping, config: HiFTConfig = HiFTConfig(), dtype=np.float32):
        if not isinstance(config, HiFTConfig):
            raise TypeError("config must be a HiFTConfig")
        config.validate()
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        self.cfg = c = config
        self.dtype = np.dtype(dtype)
        W = _Weights(hift_state, dtype, "hift.pt", strip_prefix="generator.")
        C, F = c.f0_cond_channels, c.in_channels
        self.f0_convs = []
        for i in range(c.f0_num_layers):
            cin = F if i == 0 else C
            p = f"f0_predictor.condnet.{2 * i}"
            self.f0_convs.append((W.conv_weight(p, (C, cin, 3)), W.get(p + ".bias", (C,))))
        self.f0_cls = (W.get("f0_predictor.classifier.weight", (1, C)), W.get("f0_predictor.classifier.bias", (1,)))
        nh = c.nb_harmonics + 1
        self.l_linear = (W.get("m_source.l_linear.weight", (1, nh)), W.get("m_source.l_linear.bias", (1,)))
        B = c.base_channels
        self.conv_pre = (W.conv_weight("conv_pre", (B, F, 7)), W.get("conv_pre.bias", (B,)))
        self.ups = []
        for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes)):
            cin, cout = B // 2 ** i, B // 2 ** (i + 1)
            self.ups.append((W.conv_weight(f"ups.{i}", (cin, cout, k)), W.get(f"ups.{i}.bias", (cout,)), u, (k - u) // 2))
        n_stft = c.n_fft + 2
        down_rates = [1] + list(c.upsample_rates[::-1][:-1])
        cum = np.cumprod(down_rates)[::-1]
        self.source_downs, self.source_resblocks = [], []
        for i, (u, k, d) in enumerate(zip(cum, c.source_resblock_kernel_sizes, c.source_resblock_dilation_sizes)):
            ch = B // 2 ** (i + 1)
            u = int(u)
            if u == 1:
                self.source_downs.append((W.get(f"source_downs.{i}.weight", (ch, n_stft, 1)),
                                          W.get(f"source_downs.{i}.bias", (ch,)), 1, 0))
            else:
                self.source_downs.append((W.get(f"source_downs.{i}.weight", (ch, n_stft, 2 * u)),
                                          W.get(f"source_downs.{i}.bias", (ch,)), u, u // 2))
            self.source_resblocks.append(self._resblock(W, f"source_resblocks.{i}", ch, k, d))
        self.resblocks = []
        for i in range(len(c.upsample_rates)):
            ch = B // 2 ** (i + 1)
            for j, (k, d) in enumerate(zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes)):
                self.resblocks.append(self._resblock(W, f"resblocks.{i * len(c.resblock_kernel_sizes) + j}", ch, k, d))
        ch = B // 2 ** len(c.upsample_rates)
        self.conv_post = (W.conv_weight("conv_post", (n_stft, ch, 7)), W.get("conv_post.bias", (n_stft,)))
        unused = set(W.raw) - W.used
        if unused:
            raise ValueError(f"hift.pt: unexpected tensors {sorted(unused)[:5]} (config does not match the weights?)")
        n = np.arange(c.n_fft)
        # scipy get_window("hann", n_fft, fftbins=True): periodic Hann, stored as float32 officially
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / c.n_fft)).astype(np.float32).astype(self.dtype)

    def _resblock(self, W, p, ch, k, dilations):
        convs = []
        for j, d in enumerate(dilations):
            convs.append(dict(
                a1=W.get(f"{p}.activations1.{j}.alpha", (ch,)),
                c1=(W.conv_weight(f"{p}.convs1.{j}", (ch, ch, k)), W.get(f"{p}.convs1.{j}.bias", (ch,)), d, (k * d - d) // 2),
                a2=W.get(f"{p}.activations2.{j}.alpha", (ch,)),
                c2=(W.conv_weight(f"{p}.convs2.{j}", (ch, ch, k)), W.get(f"{p}.convs2.{j}.bias", (ch,)), 1, (k - 1) // 2),
            ))
        return convs

    def _snake(self, x, alpha):
        a = alpha[:, None]
        return x + (self.dtype.type(1.0) / (a + self.dtype.type(1e-9))) * np.sin(x * a) ** 2

    def _run_resblock(self, convs, x):
        for cv in convs:
            w, b, d, p = cv["c1"]
            xt = _conv1d(self._snake(x, cv["a1"]), w, b, padding=p, dilation=d)
            w, b, d, p = cv["c2"]
            xt = _conv1d(self._snake(xt, cv["a2"]), w, b, padding=p, dilation=d)
            x = xt + x
        return x

    def check_mel(self, mel):
        m = np.asarray(mel)
        if m.ndim == 3 and m.shape[0] == 1:
            m = m[0]
        if m.ndim != 2 or m.shape[0] != self.cfg.in_channels or m.shape[1] == 0:
            raise ValueError(f"HiFT mel must have shape ({self.cfg.in_channels}, T>0), got {np.shape(mel)}")
        if not np.all(np.isfinite(m)):
            raise ValueError("HiFT mel contains non-finite values")
        return m.astype(self.dtype)

    def f0(self, mel):
        """ConvRNNF0Predictor: |Linear(5 x [conv k3 p1 -> ELU](mel))| per frame -> (T,)."""
        x = self.check_mel(mel)
        for w, b in self.f0_convs:
            x = _elu(_conv1d(x, w, b, padding=1))
        return np.abs(_linear(x.T, *self.f0_cls)[:, 0])

    def source(self, f0, phases, noise):
        """SourceModuleHnNSF2 on frame-rate f0 (T,) -> (source (L,), uv (L,)), L = T * hop_samples.
        phases (H+1,) in cycles (official: torch.rand, element 0 forced to 0), noise (L, H+1) N(0,1)."""
        c = self.cfg
        dt = self.dtype.type
        nh = c.nb_harmonics + 1
        up = c.hop_samples
        L = f0.shape[0] * up
        phases = np.asarray(phases, dtype=self.dtype).reshape(-1)
        noise = np.asarray(noise)
        if phases.shape != (nh,):
            raise ValueError(f"SineGen phases must have {nh} values, got {phases.shape}")
        if noise.shape != (L, nh):
            raise ValueError(f"SineGen noise must have shape ({L}, {nh}), got {noise.shape}")
        noise = noise.astype(self.dtype)
        f0_up = np.repeat(f0, up)[:, None]                                 # nn.Upsample nearest x480
        fn = f0_up * np.arange(1, nh + 1, dtype=self.dtype)[None, :]       # harmonics k*f0
        rad = np.mod(fn / dt(c.sampling_rate), dt(1))
        ini = phases.copy()
        ini[0] = 0
        rad[0, :] = rad[0, :] + ini
        rad_d = _torch_linear_interp(rad, 1.0 / up, self.dtype)             # (T, nh)
        # torch CPU cumsum accumulates float32 in double; then * 2 * pi (float32 scalar ops)
        phase = (np.cumsum(rad_d.astype(np.float64), 0).astype(self.dtype) * dt(2)) * dt(np.pi)
        phase = _torch_linear_interp(phase * dt(up), float(up), self.dtype)  # (L, nh)
        sines = np.sin(phase) * dt(c.nsf_alpha)
        # uv and the noise amplitude are float32 in the official code whatever the model dtype
        f32 = np.float32
        uv = (f0_up > dt(c.nsf_voiced_threshold)).astype(f32)
        noise_amp = (uv * f32(c.nsf_sigma) + (f32(1) - uv) * f32(c.nsf_alpha) / f32(3)).astype(self.dtype)
        uv = uv.astype(self.dtype)
        sine_waves = sines * uv + noise_amp * noise
        src = np.tanh(_linear(sine_waves, *self.l_linear))[:, 0]
        return src, uv[:, 0]

    def _stft(self, x):
        """torch.stft(center=True, reflect, Hann periodic, onesided) -> (n_fft+2, frames) [re | im]."""
        c = self.cfg
        pad = c.n_fft // 2
        xp = np.pad(x.astype(np.float64), (pad, pad), mode="reflect")
        n_frames = 1 + (xp.shape[0] - c.n_fft) // c.hop_len
        idx = np.arange(c.n_fft)[None, :] + c.hop_len * np.arange(n_frames)[:, None]
        spec = np.fft.rfft(xp[idx] * self.window.astype(np.float64)[None, :], axis=1)   # (frames, bins)
        return np.concatenate([spec.real.T, spec.imag.T], 0).astype(self.dtype)

    def _istft(self, mag, phase):
        """torch.istft(center=True, Hann periodic): irfft per frame, window, overlap-add, divide by
        the summed squared window, drop n_fft/2 samples at both ends -> hop*(frames-1) samples."""
        c = self.cfg
        spec = mag.astype(np.float64) * np.exp(1j * phase.astype(np.float64))      # (bins, frames)
        frames = np.fft.irfft(spec.T, n=c.n_fft, axis=1) * self.window.astype(np.float64)[None, :]
        n_frames = frames.shape[0]
        n = c.n_fft + c.hop_len * (n_frames - 1)
        y = np.zeros(n)
        env = np.zeros(n)
        w2 = self.window.astype(np.float64) ** 2
        span = c.hop_len * (n_frames - 1) + 1
        for j in range(c.n_fft):                     # overlap-add, one tap of every frame at a time
            y[j: j + span: c.hop_len] += frames[:, j]
            env[j: j + span: c.hop_len] += w2[j]
        a, b = c.n_fft // 2, n - c.n_fft // 2
        if np.min(np.abs(env[a:b])) < 1e-11:
            raise ValueError("iSTFT window envelope vanishes (NOLA violated)")
        return (y[a:b] / env[a:b]).astype(self.dtype)

    def decode(self, mel, source):
        """HiFTGenerator.decode: mel (80, T), source (L,) -> waveform (L,), clamped to ±audio_limit."""
        c = self.cfg
        x = self.check_mel(mel)
        s = self._stft(np.asarray(source, self.dtype))
        x = _conv1d(x, *self.conv_pre, padding=3)
        nk = len(c.resblock_kernel_sizes)
        for i, (w, b, u, p) in enumerate(self.ups):
            x = _conv_transpose1d(_leaky_relu(x, c.lrelu_slope), w, b, u, p)
            if i == len(self.ups) - 1:
                x = np.concatenate([x[:, 1:2], x], 1)            # ReflectionPad1d((1, 0))
            dw, db, ds, dp = self.source_downs[i]
            x = x + self._run_resblock(self.source_resblocks[i], _conv1d(s, dw, db, stride=ds, padding=dp))
            xs = None
            for j in range(nk):
                r = self._run_resblock(self.resblocks[i * nk + j], x)
                xs = r if xs is None else xs + r
            x = xs / self.dtype.type(nk)
        x = _conv1d(_leaky_relu(x, 0.01), *self.conv_post, padding=3)
        nb = c.n_fft // 2 + 1
        mag = np.minimum(np.exp(x[:nb]), self.dtype.type(100.0))
        phase = np.sin(x[nb:])
        wav = self._istft(mag, phase)
        return np.clip(wav, -c.audio_limit, c.audio_limit).astype(self.dtype)

    def __call__(self, mel, phases, noise, cache_source=None):
        """HiFTGenerator.forward(mel, cache_source): returns (waveform (L,), source (L,)); the first
        len(cache_source) source samples are replaced by cache_source before decoding."""
        mel = self.check_mel(mel)
        src, _ = self.source(self.f0(mel), phases, noise)
        if cache_source is not None and len(cache_source):
            cs = np.asarray(cache_source, self.dtype).reshape(-1)
            if cs.shape[0] > src.shape[0]:
                raise ValueError(f"source cache of {cs.shape[0]} samples is longer than the {src.shape[0]}-sample source")
            src = src.copy()
            src[: cs.shape[0]] = cs
        return self.decode(mel, src), src


# ------------------------------------------------------------------------------------------------
# Token2Wav: whole-utterance synthesis and the streaming protocol (spec §5.2.4, A.4)
# ------------------------------------------------------------------------------------------------

SourceRandom = Callable[[int], tuple]


class Token2WavReference:
    """Flow + HiFT with the streaming caches of Token2wav.

    ``cfm_noise`` (80, N): the CFM noise buffer (official: randn(1, 80, 30000) at construction).
    ``source_random(n_samples) -> (phases (H+1,), noise (n_samples, H+1))``: called once per HiFT
    evaluation, in call order (official: torch.rand / torch.randn_like inside SineGen2).
    ``setup_lookahead``: tokens appended to the prompt in set_stream_cache — [4218]*3 in
    minicpmo-utils 1.0.1 (default, spec); 1.0.7 appends the prompt's first 3 tokens instead.
    """

    def __init__(self, flow: FlowReference, hift: HiFTReference, cfm_noise, source_random: SourceRandom,
                 n_timesteps: int = 10, setup_lookahead: Optional[Sequence[int]] = None):
        if not isinstance(flow, FlowReference) or not isinstance(hift, HiFTReference):
            raise TypeError("flow must be a FlowReference and hift a HiFTReference")
        if flow.cfg.output_size != hift.cfg.in_channels:
            raise ValueError("flow output_size and HiFT in_channels differ")
        if not callable(source_random):
            raise TypeError("source_random must be callable: n_samples -> (phases, noise)")
        self.flow, self.hift = flow, hift
        self.noise = cfm_noise
        self.source_random = source_random
        self.n_timesteps = n_timesteps
        L = flow.cfg.pre_lookahead_len
        self.setup_lookahead = (np.full(L, SILENCE_TOKEN) if setup_lookahead is None
                                else _check_tokens(setup_lookahead, flow.cfg.vocab_size, "setup_lookahead"))
        if self.setup_lookahead.size != L:
            raise ValueError(f"setup_lookahead must hold {L} tokens")
        self.hop = hift.cfg.hop_samples
        self.mel_cache_frames = HIFT_MEL_CACHE_FRAMES
        self.source_cache_len = HIFT_MEL_CACHE_FRAMES * self.hop
        self.window = np.hamming(2 * self.source_cache_len)          # float64, as torch.from_numpy(np.hamming)
        self.cache = None
        self.hift_cache = None

    # -- HiFT with injected randomness ----------------------------------------------------------
    def _hift(self, mel, cache_source=None):
        n = mel.shape[1] * self.hop
        phases, noise = self.source_random(n)
        return self.hift(mel, phases, noise, cache_source)

    def synthesize(self, tokens, prompt_tokens, prompt_mel, xvec):
        """Whole utterance (Token2wav.__call__): flow.inference then one HiFT pass, no trimming:
        2*len(tokens)*480 samples."""
        mel = self.flow.inference(tokens, prompt_tokens, prompt_mel, xvec, self.noise, self.n_timesteps)
        return self._hift(mel)[0]

    # -- streaming ------------------------------------------------------------------------------
    def set_stream_cache(self, prompt_tokens, prompt_mel, xvec):
        """Token2wav.set_stream_cache: encoder.forward_chunk over prompt ‖ look-ahead tokens, CFM
        chunk with cond = prompt mel (output discarded) to fill the caches; resets the HiFT caches."""
        f = self.flow
        ptok = _check_tokens(prompt_tokens, f.cfg.vocab_size, "prompt_tokens")
        if ptok.size == 0:
            raise ValueError("the voice prompt needs at least one speech token")
        pm = f._prompt_mel(prompt_mel, ptok.size)
        self.spk = f.speaker(xvec)
        self.prompt_frames = pm.shape[1]
        x = f.embedding[np.concatenate([ptok, self.setup_lookahead])]
        h, cnn, att = f.encode_chunk(x, last_chunk=False)
        mu = f.project(h)
        _, ecnn, eatt = f.cfm(mu, self.spk, pm, self.noise, self.n_timesteps, noise_offset=0)
        self.cache = dict(conformer_cnn_cache=cnn, conformer_att_cache=att,
                          estimator_cnn_cache=ecnn, estimator_att_cache=eatt)
        self.hift_cache = dict(mel=np.zeros((f.cfg.output_size, 0), f.dtype), source=np.zeros(0, f.dtype),
                               speech=np.zeros(0, f.dtype))

    def _trim(self):
        """1.0.7 trimming to prompt + HISTORY_FRAMES mel frames (estimator: newest-first order)."""
        P, keep = self.prompt_frames, HISTORY_FRAMES
        att = self.cache["estimator_att_cache"]
        if att.shape[4] > P + keep:
            self.cache["estimator_att_cache"] = np.concatenate([att[:, :, :, :, :P], att[:, :, :, :, -keep:]], 4)
        att = self.cache["conformer_att_cache"]
        if att.shape[2] > P + keep:
            n1 = self.flow.cfg.num_blocks
            half = att.shape[2] // 2
            tok = att[:n1, :, :half]
            tok = np.concatenate([tok[:, :, : P // 2], tok[:, :, half - keep // 2:]], 2)
            mel = np.concatenate([att[n1:, :, :P], att[n1:, :, att.shape[2] - keep:]], 2)
            self.cache["conformer_att_cache"] = np.concatenate([np.concatenate([tok, tok], 2), mel], 0)

    def flow_chunk(self, window_tokens, last_chunk=False):
        """Flow part of Token2wav.stream: encoder chunk, CFM chunk with cond = 0, cache trimming.
        Returns the chunk mel (80, 2*(len - look-ahead)) (2*len on the last chunk)."""
        if self.cache is None:
            raise RuntimeError("call set_stream_cache(prompt_tokens, prompt_mel, xvec) before streaming")
        f = self.flow
        L = f.cfg.pre_lookahead_len
        tok = _check_tokens(window_tokens, f.cfg.vocab_size, "window tokens")
        if not last_chunk and tok.size < L + 2:
            raise ValueError(f"a non-final window needs {L} look-ahead tokens plus at least 2 fresh tokens, "
                             f"got {tok.size}")
        if last_chunk and tok.size == 0:
            raise ValueError("flow_chunk needs at least one token (an empty final call only flushes HiFT)")
        c = self.cache
        h, cnn, att = f.encode_chunk(f.embedding[tok], last_chunk, c["conformer_cnn_cache"], c["conformer_att_cache"])
        mu = f.project(h)
        offset = c["estimator_att_cache"].shape[4]
        mel, ecnn, eatt = f.cfm(mu, self.spk, np.zeros_like(mu), self.noise, self.n_timesteps,
                                noise_offset=offset, cnn_cache=c["estimator_cnn_cache"],
                                att_cache=c["estimator_att_cache"])
        self.cache = dict(conformer_cnn_cache=cnn, conformer_att_cache=att,
                          estimator_cnn_cache=ecnn, estimator_att_cache=eatt)
        self._trim()
        return mel

    def vocode_chunk(self, chunk_mel, last_chunk=False):
        """1.0.1 HiFT streaming (A.4): mel = mel_cache(8) ‖ chunk; source cache overwrites the first
        3840 source samples; Hamming cross-fade of the first 3840 samples with the speech cache;
        emit speech[:-3840] (first chunk: zeros(3840) ‖ speech[:-3840]) or all of it when last."""
        hc = self.hift_cache
        mel = np.concatenate([hc["mel"], np.asarray(chunk_mel, self.flow.dtype)], 1)
        n = self.source_cache_len
        first = hc["speech"].shape[0] == 0
        if first and not last_chunk and mel.shape[1] < self.mel_cache_frames:
            raise ValueError(f"the first streamed chunk needs at least {self.mel_cache_frames} mel frames "
                             f"(the {n}-sample cross-fade), got {mel.shape[1]}")
        speech, source = self._hift(mel, hc["source"])
        if not first:
            sp = speech.copy()
            # float32 speech x float64 window promotes to float64, stored back as the speech dtype
            sp[:n] = (speech[:n] * self.window[:n] + hc["speech"][-n:] * self.window[n:]).astype(speech.dtype)
            speech = sp
        self.hift_cache = dict(mel=mel[:, -self.mel_cache_frames:], source=source[-n:], speech=speech[-n:])
        if not last_chunk:
            speech = np.concatenate([np.zeros(n, speech.dtype), speech[:-n]]) if first else speech[:-n]
        return speech

    def stream(self, window_tokens, last_chunk=False):
        """Token2wav.stream for one window: 28 tokens (25 fresh + 3 look-ahead) -> 24000 samples;
        the final window (any length, or empty to only flush HiFT) -> the rest."""
        tok = np.asarray(window_tokens)
        if last_chunk and tok.size == 0:
            if self.hift_cache is None:
                raise RuntimeError("call set_stream_cache(...) before streaming")
            mel = np.zeros((self.flow.cfg.output_size, 0), self.flow.dtype)
        else:
            mel = self.flow_chunk(window_tokens, last_chunk)
        return self.vocode_chunk(mel, last_chunk)


class TokenStreamer:
    """The caller of Token2wav.stream (MiniCPM-o streaming / duplex): buffer = [4218]*3 + speech
    tokens; while len(buffer) >= chunk + look-ahead: stream(buffer[:28]); buffer = buffer[25:];
    ``finish()`` streams the rest with last_chunk=True."""

    def __init__(self, t2w: Token2WavReference, chunk_tokens: int = STREAM_CHUNK_TOKENS):
        if not isinstance(chunk_tokens, (int, np.integer)) or chunk_tokens < 2:
            raise ValueError("chunk_tokens must be an integer >= 2")
        self.t2w = t2w
        self.chunk = int(chunk_tokens)
        self.lookahead = t2w.flow.cfg.pre_lookahead_len
        self.buffer = [SILENCE_TOKEN] * self.lookahead
        self.finished = False

    def push(self, tokens):
        """Append speech tokens; returns the list of waveform chunks released (each 2*chunk*hop
        samples, i.e. 24000 for 25 tokens)."""
        if self.finished:
            raise RuntimeError("the stream is finished")
        tok = _check_tokens(tokens, self.t2w.flow.cfg.vocab_size)
        self.buffer.extend(int(t) for t in tok)
        out = []
        while len(self.buffer) >= self.chunk + self.lookahead:
            out.append(self.t2w.stream(self.buffer[: self.chunk + self.lookahead], last_chunk=False))
            self.buffer = self.buffer[self.chunk:]
        return out

    def finish(self):
        if self.finished:
            raise RuntimeError("the stream is finished")
        self.finished = True
        return self.t2w.stream(self.buffer, last_chunk=True)
