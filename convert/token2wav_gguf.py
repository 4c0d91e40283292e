"""The Token2Wav component of the companion GGUF: the flow (speech-token embedding, upsampling
Conformer encoder, DiT conditional-flow-matching decoder) and the HiFT vocoder, from the release's
`assets/token2wav/` folder (spec §5.2, §9; the speech contract §2).

check_token2wav() reads flow.yaml (and an optional hift.yaml; the release has none and uses
HiFTGenerator's defaults), opens flow.pt / hift.pt (or .safetensors) without torch, folds every
weight norm and checks every tensor against the hyper-parameters, so a bad asset folder fails before
any output is written. token2wav_component() is the omni_gguf hook.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType

from .asset_yaml import load_plain_yaml
from .errors import ConversionError
from .gguf_write import PlannedTensor, Writer
from .layout import Shape
from .outtypes import table_type, tensor_type
from .tensor_sources import FLOAT_DTYPES, ArraySource, RenamedSource, fold_weight_norm, float64, \
    open_tensor_file, weight_norm_pair

KEY = "minicpmo.token2wav."
SILENCE_TOKEN = 4218  # S3 tokenizer v2 id of silence (spec §5)
# the reference's prompt mel (spec §5.2.1): STFT of 1920 points (4 hops) at 24 kHz, Slaney mel 0..8000 Hz
PROMPT_MEL_N_FFT = 1920
PROMPT_MEL_F_MIN = 0.0
PROMPT_MEL_F_MAX = 8000.0
TOKEN_RATE_HZ = 25  # S3 tokenizer v2 frame rate
STREAM_CACHE_TAIL_FRAMES = 100  # estimator/conformer caches keep the prompt + this many frames
CFM_NOISE_FRAMES = 30000  # the reference's fixed noise buffer randn(1, 80, 50 * 600)
POS_MAX_LEN = 5000  # EspnetRelPositionalEncoding max_len
HIFT_MEL_CACHE_FRAMES = 8
F0_N_CONV = 5  # ConvRNNF0Predictor: 5 x (weight-normed Conv1d k3 + ELU)

# HiFTGenerator's defaults in stepaudio2 (the release builds it with no arguments)
HIFT_DEFAULTS: dict[str, Any] = dict(
    in_channels=80, base_channels=512, nb_harmonics=8, sampling_rate=24000, nsf_alpha=0.1, nsf_sigma=0.003,
    nsf_voiced_threshold=10, upsample_rates=[8, 5, 3], upsample_kernel_sizes=[16, 11, 7],
    istft_params={"n_fft": 16, "hop_len": 4}, resblock_kernel_sizes=[3, 7, 11],
    resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], source_resblock_kernel_sizes=[7, 7, 11],
    source_resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], lrelu_slope=0.1, audio_limit=0.99,
)
F0_DEFAULTS: dict[str, Any] = dict(num_class=1, in_channels=80, cond_channels=512)


# ------------------------------------------------------------------------------------------------
# config values
# ------------------------------------------------------------------------------------------------

class _Section:
    """A mapping of a YAML file with typed, defaulted getters whose errors name file and key."""

    def __init__(self, data: Any, file: str, path: str = ""):
        self.file, self.path = file, path
        self.where = f"{file}: {path}" if path else file  # e.g. "flow.yaml: flow.encoder"
        if not isinstance(data, dict):
            raise ConversionError(f"{self.where} must be a mapping, got {type(data).__name__}")
        self.data = data

    def sub(self, key: str) -> "_Section":
        if key not in self.data:
            raise ConversionError(f"{self.where}: missing '{key}'")
        return _Section(self.data[key], self.file, f"{self.path}.{key}" if self.path else key)

    def int(self, key: str, default: int | None = None, minimum: int = 1) -> int:
        v = self.data.get(key, default)
        if v is None:
            raise ConversionError(f"{self.where}: missing '{key}'")
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ConversionError(f"{self.where}: '{key}' must be an integer >= {minimum}, got {v!r}")
        return v

    def num(self, key: str, default: float, positive: bool = True) -> float:
        v = self.data.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
            raise ConversionError(f"{self.where}: '{key}' must be a {'positive ' if positive else ''}number, got {v!r}")
        return float(v)

    def flag(self, key: str, default: bool) -> bool:
        v = self.data.get(key, default)
        if not isinstance(v, bool):
            raise ConversionError(f"{self.where}: '{key}' must be true or false, got {v!r}")
        return v

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        v = self.data.get(key, default)
        if v not in allowed:
            raise ConversionError(f"{self.where}: '{key}' {v!r} is not supported (only {', '.join(map(repr, allowed))})")
        return v

    def int_list(self, key: str, default: list[int]) -> list[int]:
        v = self.data.get(key, default)
        if not isinstance(v, list) or not v or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                                      for x in v):
            raise ConversionError(f"{self.where}: '{key}' must be a non-empty list of positive integers, got {v!r}")
        return list(v)

    def int_rows(self, key: str, default: list[list[int]], rows: int) -> list[list[int]]:
        v = self.data.get(key, default)
        ok = isinstance(v, list) and len(v) == rows and all(
            isinstance(r, list) and r and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in r)
            for r in v)
        if not ok or len({len(r) for r in v}) != 1:
            raise ConversionError(
                f"{self.where}: '{key}' must be {rows} lists of positive integers of equal length, got {v!r}")
        return [list(r) for r in v]


@dataclass(frozen=True)
class FlowConfig:
    input_size: int
    n_mel: int
    spk_dim: int
    vocab: int
    enc_dim: int
    enc_heads: int
    enc_ff: int
    enc_blocks: int
    enc_up_blocks: int
    pre_lookahead: int
    up_stride: int
    up_scale: float
    key_bias: bool
    cfg_rate: float
    dit_in: int
    dit_out: int
    dit_dim: int
    dit_layers: int
    dit_heads: int
    dit_head_dim: int
    dit_ff: int


def read_flow_config(path: Path) -> FlowConfig:
    top = _Section(load_plain_yaml(path), path.name)
    flow = top.sub("flow")
    enc, dec = flow.sub("encoder"), flow.sub("decoder")
    est = dec.sub("estimator")
    flow.choice("output_type", "mel", ("mel",))
    enc.choice("input_layer", "linear", ("linear",))
    enc.choice("pos_enc_layer_type", "rel_pos_espnet", ("rel_pos_espnet",))
    enc.choice("selfattention_layer_type", "rel_selfattn", ("rel_selfattn",))
    enc.choice("activation_type", "swish", ("swish",))
    if not enc.flag("normalize_before", True):
        raise ConversionError(f"{enc.where}: 'normalize_before' false is not supported (pre-norm Conformer only)")
    input_size, n_mel = flow.int("input_size", 512), flow.int("output_size", 80)
    enc_in, enc_dim = enc.int("input_size"), enc.int("output_size", 256)
    if enc_in != input_size or enc_dim != enc_in:
        raise ConversionError(
            f"{enc.where}: input_size {enc_in} and output_size {enc_dim} must both equal flow.input_size "
            f"{input_size} (the token embedding feeds the encoder, and up_embed re-embeds its own output)")
    heads = enc.int("attention_heads", 4)
    if enc_dim % heads:
        raise ConversionError(f"{enc.where}: output_size {enc_dim} is not a multiple of attention_heads {heads}")
    up_stride, up_scale = enc.int("up_stride", 2), enc.num("up_scale_factor", 2.0)
    if up_scale != up_stride:
        raise ConversionError(f"{enc.where}: up_scale_factor {up_scale} must equal up_stride {up_stride} "
                              "(mel frames = up_stride x tokens)")
    dit_in, dit_out = est.int("in_channels"), est.int("out_channels")
    if dit_out != n_mel or dit_in != 4 * n_mel:
        raise ConversionError(f"{est.where}: in_channels {dit_in} / out_channels {dit_out} must be 4 x / 1 x "
                              f"flow.output_size {n_mel} ([x, mu, spk, cond] -> velocity)")
    dit_dim = est.int("hidden_size", 256)
    mlp_ratio = est.num("mlp_ratio", 4.0)
    return FlowConfig(
        input_size=input_size, n_mel=n_mel, spk_dim=flow.int("spk_embed_dim", 192),
        vocab=flow.int("vocab_size", 5121), enc_dim=enc_dim, enc_heads=heads,
        enc_ff=enc.int("linear_units", 2048), enc_blocks=enc.int("num_blocks", 6),
        enc_up_blocks=enc.int("num_up_blocks", 4), pre_lookahead=enc.int("pre_lookahead_len", 3),
        up_stride=up_stride, up_scale=up_scale, key_bias=enc.flag("key_bias", True),
        cfg_rate=dec.num("inference_cfg_rate", 0.7), dit_in=dit_in, dit_out=dit_out, dit_dim=dit_dim,
        dit_layers=est.int("depth", 28), dit_heads=est.int("num_heads", 8), dit_head_dim=est.int("head_dim", 64),
        dit_ff=int(dit_dim * mlp_ratio),
    )


@dataclass(frozen=True)
class HiftConfig:
    in_channels: int
    base: int
    harmonics: int
    sample_rate: int
    nsf_alpha: float
    nsf_sigma: float
    voiced_threshold: float
    up_rates: list[int]
    up_kernels: list[int]
    n_fft: int
    hop: int
    res_kernels: list[int]
    res_dilations: list[list[int]]
    src_kernels: list[int]
    src_dilations: list[list[int]]
    lrelu_slope: float
    audio_limit: float
    f0_channels: int

    @property
    def mel_hop(self) -> int:
        return int(np.prod(self.up_rates)) * self.hop

    def channels(self, i: int) -> int:
        """Channels after upsampling stage i (base / 2^(i+1)); i = -1: conv_pre's base."""
        return self.base // (2 ** (i + 1))

    def down_rates(self) -> list[int]:
        """source_downs[i] stride: cumulative products of the reversed upsample rates, reversed."""
        rates = [1] + self.up_rates[::-1][:-1]
        return [int(x) for x in np.cumprod(rates)[::-1]]


def read_hift_config(path: Path | None) -> HiftConfig:
    data = load_plain_yaml(path) if path is not None else {"hift": {}}
    where = path.name if path is not None else "HiFTGenerator defaults"
    h = _Section(data, where).sub("hift")
    ups = h.int_list("upsample_rates", HIFT_DEFAULTS["upsample_rates"])
    kernels = h.int_list("upsample_kernel_sizes", HIFT_DEFAULTS["upsample_kernel_sizes"])
    if len(kernels) != len(ups):
        raise ConversionError(f"{h.where}: upsample_kernel_sizes {kernels} and upsample_rates {ups} differ in length")
    for u, k in zip(ups, kernels):
        if k < u or (k - u) % 2:
            raise ConversionError(f"{h.where}: upsample kernel {k} with rate {u} needs k >= u and even k - u "
                                  "(padding (k - u) / 2 keeps lengths exact)")
    istft = _Section(h.data.get("istft_params", HIFT_DEFAULTS["istft_params"]), h.file, f"{h.path}.istft_params")
    res_k = h.int_list("resblock_kernel_sizes", HIFT_DEFAULTS["resblock_kernel_sizes"])
    src_k = h.int_list("source_resblock_kernel_sizes", HIFT_DEFAULTS["source_resblock_kernel_sizes"])
    if len(src_k) != len(ups):
        raise ConversionError(f"{h.where}: source_resblock_kernel_sizes needs one entry per upsampling stage "
                              f"({len(ups)}), got {src_k}")
    base = h.int("base_channels", HIFT_DEFAULTS["base_channels"])
    if base % (2 ** len(ups)):
        raise ConversionError(f"{h.where}: base_channels {base} must be divisible by 2^{len(ups)}")
    rate = h.int("sampling_rate", HIFT_DEFAULTS["sampling_rate"])
    if rate == 22050:
        raise ConversionError(f"{h.where}: the 22050 Hz HiFT variant (SourceModuleHnNSF) is not supported")
    f0 = _Section(h.data.get("f0_predictor", {}), h.file, f"{h.path}.f0_predictor")
    if f0.int("num_class", 1) != 1:
        raise ConversionError(f"{f0.where}: num_class must be 1 (one F0 value per frame)")
    in_ch = h.int("in_channels", HIFT_DEFAULTS["in_channels"])
    if f0.int("in_channels", in_ch) != in_ch:
        raise ConversionError(f"{f0.where}: in_channels must equal hift in_channels {in_ch}")
    return HiftConfig(
        in_channels=in_ch, base=base, harmonics=h.int("nb_harmonics", 8), sample_rate=rate,
        nsf_alpha=h.num("nsf_alpha", 0.1), nsf_sigma=h.num("nsf_sigma", 0.003),
        voiced_threshold=h.num("nsf_voiced_threshold", 10, positive=False), up_rates=ups, up_kernels=kernels,
        n_fft=istft.int("n_fft", 16), hop=istft.int("hop_len", 4), res_kernels=res_k,
        res_dilations=h.int_rows("resblock_dilation_sizes", HIFT_DEFAULTS["resblock_dilation_sizes"], len(res_k)),
        src_kernels=src_k,
        src_dilations=h.int_rows("source_resblock_dilation_sizes", HIFT_DEFAULTS["source_resblock_dilation_sizes"],
                                 len(src_k)),
        lrelu_slope=h.num("lrelu_slope", 0.1), audio_limit=h.num("audio_limit", 0.99),
        f0_channels=f0.int("cond_channels", F0_DEFAULTS["cond_channels"]),
    )


# ------------------------------------------------------------------------------------------------
# expected tensors
# ------------------------------------------------------------------------------------------------

# storage kinds: "matrix" (outtype matrices), "table" (F32/F16), "f32"
@dataclass(frozen=True)
class _Want:
    gguf: str
    name: str  # name in the asset file (after hift.pt's `generator.` prefix is stripped)
    shape: Shape
    kind: str


def _lin(out: list[_Want], gguf: str, name: str, o: int, i: int, bias: bool = True, kind: str = "matrix") -> None:
    out.append(_Want(gguf + ".weight", name + ".weight", (o, i), kind))
    if bias:
        out.append(_Want(gguf + ".bias", name + ".bias", (o,), "f32"))


def _norm(out: list[_Want], gguf: str, name: str, n: int) -> None:
    out.append(_Want(gguf + ".weight", name + ".weight", (n,), "f32"))
    out.append(_Want(gguf + ".bias", name + ".bias", (n,), "f32"))


def _conv(out: list[_Want], gguf: str, name: str, shape: Shape) -> None:
    out.append(_Want(gguf + ".weight", name + ".weight", shape, "table"))
    out.append(_Want(gguf + ".bias", name + ".bias", (shape[0],), "f32"))


def flow_tensors(c: FlowConfig) -> list[_Want]:
    D, H, M = c.enc_dim, c.dit_dim, c.n_mel
    w: list[_Want] = [_Want("t2w.flow.tok_embd.weight", "input_embedding.weight", (c.vocab, c.input_size), "table")]
    _lin(w, "t2w.flow.spk_proj", "spk_embed_affine_layer", M, c.spk_dim)
    _lin(w, "t2w.flow.enc.embed", "encoder.embed.out.0", D, c.input_size)
    _norm(w, "t2w.flow.enc.embed_norm", "encoder.embed.out.1", D)
    _conv(w, "t2w.flow.enc.la_conv1", "encoder.pre_lookahead_layer.conv1", (D, D, c.pre_lookahead + 1))
    _conv(w, "t2w.flow.enc.la_conv2", "encoder.pre_lookahead_layer.conv2", (D, D, 3))

    def conformer(gguf: str, name: str) -> None:
        a = name + ".self_attn."
        _lin(w, gguf + ".attn_q", a + "linear_q", D, D)
        _lin(w, gguf + ".attn_k", a + "linear_k", D, D, bias=c.key_bias)
        _lin(w, gguf + ".attn_v", a + "linear_v", D, D)
        _lin(w, gguf + ".attn_out", a + "linear_out", D, D)
        _lin(w, gguf + ".attn_pos", a + "linear_pos", D, D, bias=False)
        w.append(_Want(gguf + ".pos_bias_u", a + "pos_bias_u", (c.enc_heads, D // c.enc_heads), "f32"))
        w.append(_Want(gguf + ".pos_bias_v", a + "pos_bias_v", (c.enc_heads, D // c.enc_heads), "f32"))
        _norm(w, gguf + ".attn_norm", name + ".norm_mha", D)
        _norm(w, gguf + ".ffn_norm", name + ".norm_ff", D)
        _lin(w, gguf + ".ffn_up", name + ".feed_forward.w_1", c.enc_ff, D)
        _lin(w, gguf + ".ffn_down", name + ".feed_forward.w_2", D, c.enc_ff)

    for i in range(c.enc_blocks):
        conformer(f"t2w.flow.enc.blk.{i}", f"encoder.encoders.{i}")
    _conv(w, "t2w.flow.enc.up_conv", "encoder.up_layer.conv", (D, D, 2 * c.up_stride + 1))
    _lin(w, "t2w.flow.enc.up_embed", "encoder.up_embed.out.0", D, c.input_size)
    _norm(w, "t2w.flow.enc.up_embed_norm", "encoder.up_embed.out.1", D)
    for i in range(c.enc_up_blocks):
        conformer(f"t2w.flow.enc.up_blk.{i}", f"encoder.up_encoders.{i}")
    _norm(w, "t2w.flow.enc.out_norm", "encoder.after_norm", D)
    _lin(w, "t2w.flow.enc_proj", "encoder_proj", M, D)

    e = "decoder.estimator."
    inner = c.dit_heads * c.dit_head_dim
    _lin(w, "t2w.flow.dit.t_mlp1", e + "t_embedder.mlp.0", H, 256)
    _lin(w, "t2w.flow.dit.t_mlp2", e + "t_embedder.mlp.2", H, H)
    _lin(w, "t2w.flow.dit.in_proj", e + "in_proj", H, c.dit_in)
    for i in range(c.dit_layers):
        g, b = f"t2w.flow.dit.blk.{i}", f"{e}blocks.{i}"
        _lin(w, g + ".attn_q", b + ".attn.to_q", inner, H)
        _lin(w, g + ".attn_k", b + ".attn.to_k", inner, H)
        _lin(w, g + ".attn_v", b + ".attn.to_v", inner, H)
        _norm(w, g + ".attn_q_norm", b + ".attn.q_norm", c.dit_head_dim)
        _norm(w, g + ".attn_k_norm", b + ".attn.k_norm", c.dit_head_dim)
        _lin(w, g + ".attn_out", b + ".attn.proj", H, inner)
        _conv(w, g + ".conv1", b + ".conv.block.1", (H, H, 3))
        _norm(w, g + ".conv_norm", b + ".conv.block.3", H)
        _conv(w, g + ".conv2", b + ".conv.block.6", (H, H, 3))
        _lin(w, g + ".ffn_up", b + ".mlp.fc1", c.dit_ff, H)
        _lin(w, g + ".ffn_down", b + ".mlp.fc2", H, c.dit_ff)
        _lin(w, g + ".adaln", b + ".adaLN_modulation.1", 9 * H, H)
    _lin(w, "t2w.flow.dit.final_adaln", e + "final_layer.adaLN_modulation.1", 2 * H, H)
    _lin(w, "t2w.flow.dit.final_proj", e + "final_layer.linear", M, H)
    return w


def hift_tensors(c: HiftConfig) -> list[_Want]:
    w: list[_Want] = []

    def conv(gguf: str, name: str, shape: Shape, bias_len: int | None = None) -> None:
        w.append(_Want(gguf + ".weight", name + ".weight", shape, "table"))
        w.append(_Want(gguf + ".bias", name + ".bias", (shape[0] if bias_len is None else bias_len,), "f32"))

    def resblock(gguf: str, name: str, ch: int, k: int, dilations: list[int]) -> None:
        for j in range(len(dilations)):
            conv(f"{gguf}.c1.{j}", f"{name}.convs1.{j}", (ch, ch, k))
            conv(f"{gguf}.c2.{j}", f"{name}.convs2.{j}", (ch, ch, k))
            w.append(_Want(f"{gguf}.a1.{j}.alpha", f"{name}.activations1.{j}.alpha", (ch,), "f32"))
            w.append(_Want(f"{gguf}.a2.{j}.alpha", f"{name}.activations2.{j}.alpha", (ch,), "f32"))

    for j in range(F0_N_CONV):
        conv(f"t2w.hift.f0.conv{j}", f"f0_predictor.condnet.{2 * j}",
             (c.f0_channels, c.in_channels if j == 0 else c.f0_channels, 3))
    w.append(_Want("t2w.hift.f0.proj.weight", "f0_predictor.classifier.weight", (1, c.f0_channels), "table"))
    w.append(_Want("t2w.hift.f0.proj.bias", "f0_predictor.classifier.bias", (1,), "f32"))
    w.append(_Want("t2w.hift.source.weight", "m_source.l_linear.weight", (1, c.harmonics + 1), "table"))
    w.append(_Want("t2w.hift.source.bias", "m_source.l_linear.bias", (1,), "f32"))
    conv("t2w.hift.conv_pre", "conv_pre", (c.base, c.in_channels, 7))
    nf = c.n_fft + 2
    for i, (u, k) in enumerate(zip(c.up_rates, c.up_kernels)):
        # ConvTranspose1d kernel: torch's (in, out, k); the bias has `out` entries
        conv(f"t2w.hift.up.{i}", f"ups.{i}", (c.channels(i - 1), c.channels(i), k), bias_len=c.channels(i))
    for i, (u, k, d) in enumerate(zip(c.down_rates(), c.src_kernels, c.src_dilations)):
        ch = c.channels(i)
        conv(f"t2w.hift.src_down.{i}", f"source_downs.{i}", (ch, nf, 1 if u == 1 else 2 * u))
        resblock(f"t2w.hift.src_res.{i}", f"source_resblocks.{i}", ch, k, d)
    for i in range(len(c.up_rates)):
        for kk, (k, d) in enumerate(zip(c.res_kernels, c.res_dilations)):
            r = i * len(c.res_kernels) + kk
            resblock(f"t2w.hift.res.{r}", f"resblocks.{r}", c.channels(i), k, d)
    conv("t2w.hift.conv_post", "conv_post", (nf, c.channels(len(c.up_rates) - 1), 7))
    return w


# ------------------------------------------------------------------------------------------------
# resolving expected tensors in a file
# ------------------------------------------------------------------------------------------------

@dataclass
class _Resolved:
    want: _Want
    source: Any
    name: str


@dataclass
class _AssetFile:
    path: Path
    source: Any
    display_prefix: str = ""  # prepended to names in messages (hift.pt's `generator.`)
    folded: ArraySource = field(default_factory=ArraySource)
    used: set[str] = field(default_factory=set)

    def label(self, name: str) -> str:
        return f"{self.path.name}: tensor {self.display_prefix}{name}"

    def take(self, want: _Want) -> _Resolved:
        src, name = self.source, want.name
        pair = weight_norm_pair(src, name[: -len(".weight")], self.label) if name.endswith(".weight") else None
        if pair is not None:
            if name in src:
                raise ConversionError(f"{self.label(name)} is stored both plain and weight-normed")
            for n in pair:
                if src.dtype(n) not in FLOAT_DTYPES:
                    raise ConversionError(f"{self.label(n)}: unsupported dtype {src.dtype(n)}")
            values = fold_weight_norm(float64(src, pair[0]), float64(src, pair[1]), self.label(name))
            if values.shape != tuple(want.shape):
                raise ConversionError(f"{self.label(name)} (weight norm): expected shape {tuple(want.shape)}, "
                                      f"got {values.shape}")
            self.folded.add(name, values)
            self.used.update(pair)
            return _Resolved(want, self.folded, name)
        if name not in src:
            raise ConversionError(f"{self.label(name)} is missing")
        got = tuple(src.shape(name))
        if got != tuple(want.shape):
            raise ConversionError(f"{self.label(name)}: expected shape {tuple(want.shape)}, got {got}")
        if src.dtype(name) not in FLOAT_DTYPES:
            raise ConversionError(f"{self.label(name)}: unsupported dtype {src.dtype(name)}")
        self.used.add(name)
        return _Resolved(want, src, name)

    def check_all_used(self, what: str) -> None:
        extra = [n for n in self.source.names() if n not in self.used]
        if extra:
            raise ConversionError(f"{self.label(extra[0])} is unexpected ({what}; {len(extra)} unknown tensor(s))")


def _asset(d: Path, stem: str) -> Path:
    """<stem>.safetensors when present (no pickle to read), else <stem>.pt."""
    st, pt = d / f"{stem}.safetensors", d / f"{stem}.pt"
    if st.is_file():
        return st
    if pt.is_file():
        return pt
    raise ConversionError(f"missing {pt.name} (or {st.name}) in {d}")


def _hift_source(path: Path) -> tuple[Any, str]:
    """hift.pt names carry a `generator.` prefix (all or none); seen here without it."""
    src = open_tensor_file(path)
    names = src.names()
    prefixed = [n.startswith("generator.") for n in names]
    if all(prefixed) and names:
        return RenamedSource(src, {n[len("generator."):]: n for n in names}, path.name), "generator."
    if any(prefixed):
        first = names[prefixed.index(False)]
        raise ConversionError(f"{path.name}: tensor {first} lacks the 'generator.' prefix the others carry")
    return src, ""


@dataclass
class Token2WavPlan:
    dir: Path
    flow: FlowConfig
    hift: HiftConfig
    n_timesteps: int
    chunk_tokens: int
    tensors: list[_Resolved]


def check_token2wav(t2w_dir: Path, tts_config: Mapping[str, Any]) -> Token2WavPlan:
    """Validate the asset folder against its configs and tts_config; see the module docstring."""
    if not t2w_dir.is_dir():
        raise ConversionError(f"Token2Wav asset folder not found: {t2w_dir}")
    flow_yaml = t2w_dir / "flow.yaml"
    if not flow_yaml.is_file():
        raise ConversionError(f"missing flow.yaml in {t2w_dir}")
    flow = read_flow_config(flow_yaml)
    hift_yaml = t2w_dir / "hift.yaml"
    hift = read_hift_config(hift_yaml if hift_yaml.is_file() else None)
    if hift.in_channels != flow.n_mel:
        raise ConversionError(f"HiFT in_channels {hift.in_channels} differs from the flow's {flow.n_mel} mel bins")
    mel_rate = TOKEN_RATE_HZ * flow.up_stride
    if hift.sample_rate != mel_rate * hift.mel_hop:
        raise ConversionError(
            f"HiFT makes {hift.mel_hop} samples per mel frame (prod(upsample_rates) x hop_len) at {hift.sample_rate} Hz, "
            f"but the flow emits {mel_rate} mel frames per second ({TOKEN_RATE_HZ} Hz tokens x up_stride {flow.up_stride})")
    t = tts_config
    look = t.get("s3_stream_prelook_size", flow.pre_lookahead)
    if look != flow.pre_lookahead:
        raise ConversionError(f"config.json tts_config: s3_stream_prelook_size {look!r} differs from flow.yaml "
                              f"pre_lookahead_len {flow.pre_lookahead}")
    n_steps, chunk = t.get("s3_stream_n_timesteps", 10), t.get("s3_stream_chunk_size", 25)
    for key, v in (("s3_stream_n_timesteps", n_steps), ("s3_stream_chunk_size", chunk)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConversionError(f"config.json tts_config: '{key}' must be a positive integer, got {v!r}")
    if SILENCE_TOKEN >= flow.vocab:
        raise ConversionError(f"flow.yaml: vocab_size {flow.vocab} lacks the silence token {SILENCE_TOKEN}")

    resolved: list[_Resolved] = []
    fpath = _asset(t2w_dir, "flow")
    flow_file = _AssetFile(fpath, open_tensor_file(fpath))
    resolved += [flow_file.take(w) for w in flow_tensors(flow)]
    flow_file.check_all_used("flow.yaml describes no such tensor")
    hpath = _asset(t2w_dir, "hift")
    hsrc, prefix = _hift_source(hpath)
    hift_file = _AssetFile(hpath, hsrc, prefix)
    resolved += [hift_file.take(w) for w in hift_tensors(hift)]
    hift_file.check_all_used("the HiFT configuration describes no such tensor")
    return Token2WavPlan(t2w_dir, flow, hift, n_steps, chunk, resolved)


def token2wav_component(plan: Token2WavPlan | None, w: Writer, outtype: str) -> list[PlannedTensor]:
    """omni_gguf hook: keys + tensors of the flow and the vocoder ([] without the asset folder)."""
    if plan is None:
        return []
    _add_keys(w, plan)
    out = []
    for r in plan.tensors:
        shape = tuple(r.want.shape)
        if r.want.kind == "f32":
            qtype = GGMLQuantizationType.F32
        elif r.want.kind == "table" or r.want.gguf.startswith("t2w.hift."):
            qtype = table_type(outtype) if len(shape) > 1 else GGMLQuantizationType.F32
        else:
            qtype = tensor_type(outtype, shape)
        out.append(PlannedTensor(r.want.gguf, r.name, qtype, shape, source=r.source))
    return out


def _add_keys(w: Writer, p: Token2WavPlan) -> None:
    f, h = p.flow, p.hift
    u = lambda k, v: w.add_uint32(KEY + k, int(v))  # noqa: E731
    fl = lambda k, v: w.add_float32(KEY + k, float(v))  # noqa: E731
    s = lambda k, v: w.add_string(KEY + k, v)  # noqa: E731
    arr = lambda k, v: w.add_typed_array(KEY + k, [int(x) for x in v], GGUFValueType.UINT32)  # noqa: E731
    u("sample_rate", h.sample_rate)
    u("n_mel", f.n_mel)
    u("mel_hop", h.mel_hop)
    u("token_mel_ratio", f.up_stride)
    u("token_rate_hz", TOKEN_RATE_HZ)
    u("mel_rate_hz", TOKEN_RATE_HZ * f.up_stride)
    # the voice prompt's mel (spec §5.2.1), for voices cloned at run time
    u("prompt_mel.n_fft", PROMPT_MEL_N_FFT)
    fl("prompt_mel.f_min", PROMPT_MEL_F_MIN)
    fl("prompt_mel.f_max", PROMPT_MEL_F_MAX)
    u("vocab_size", f.vocab)
    u("silence_token_id", SILENCE_TOKEN)
    u("chunk_tokens", p.chunk_tokens)
    u("lookahead_tokens", f.pre_lookahead)
    u("n_timesteps", p.n_timesteps)
    u("stream_cache_tail_frames", STREAM_CACHE_TAIL_FRAMES)
    u("flow.input_size", f.input_size)
    u("flow.spk_embed_dim", f.spk_dim)
    fl("flow.spk_norm_eps", 1e-12)
    u("enc.n_embd", f.enc_dim)
    u("enc.n_head", f.enc_heads)
    u("enc.n_ff", f.enc_ff)
    u("enc.n_block", f.enc_blocks)
    u("enc.n_up_block", f.enc_up_blocks)
    u("enc.pre_lookahead", f.pre_lookahead)
    u("enc.up_stride", f.up_stride)
    fl("enc.up_scale_factor", f.up_scale)
    w.add_bool(KEY + "enc.key_bias", f.key_bias)
    fl("enc.embed_norm_eps", 1e-5)
    fl("enc.block_norm_eps", 1e-12)
    fl("enc.after_norm_eps", 1e-5)
    s("enc.activation", "silu")
    s("enc.pos_enc", "rel_pos_espnet")
    u("enc.pos_max_len", POS_MAX_LEN)
    fl("enc.lookahead_slope", 0.01)
    fl("cfm.cfg_rate", f.cfg_rate)
    fl("cfm.temperature", 1.0)
    s("cfm.t_scheduler", "cosine")
    u("cfm.noise_frames", CFM_NOISE_FRAMES)
    u("dit.n_embd", f.dit_dim)
    u("dit.n_layer", f.dit_layers)
    u("dit.n_head", f.dit_heads)
    u("dit.head_dim", f.dit_head_dim)
    u("dit.n_ff", f.dit_ff)
    u("dit.in_channels", f.dit_in)
    u("dit.out_channels", f.dit_out)
    u("dit.t_freq_dim", 256)
    fl("dit.t_scale", 1000.0)
    fl("dit.t_max_period", 10000.0)
    fl("dit.norm_eps", 1e-6)
    fl("dit.qk_norm_eps", 1e-5)
    fl("dit.conv_norm_eps", 1e-5)
    u("dit.conv_kernel", 3)
    s("dit.mlp_act", "gelu_tanh")
    u("hift.in_channels", h.in_channels)
    u("hift.base_channels", h.base)
    u("hift.nb_harmonics", h.harmonics)
    fl("hift.nsf_alpha", h.nsf_alpha)
    fl("hift.nsf_sigma", h.nsf_sigma)
    fl("hift.voiced_threshold", h.voiced_threshold)
    arr("hift.upsample_rates", h.up_rates)
    arr("hift.upsample_kernels", h.up_kernels)
    u("hift.istft_n_fft", h.n_fft)
    u("hift.istft_hop", h.hop)
    arr("hift.resblock_kernels", h.res_kernels)
    arr("hift.resblock_dilations", [x for row in h.res_dilations for x in row])
    arr("hift.source_resblock_kernels", h.src_kernels)
    arr("hift.source_resblock_dilations", [x for row in h.src_dilations for x in row])
    fl("hift.lrelu_slope", h.lrelu_slope)
    fl("hift.post_lrelu_slope", 0.01)
    fl("hift.audio_limit", h.audio_limit)
    fl("hift.magnitude_max", 100.0)
    fl("hift.snake_eps", 1e-9)
    u("hift.f0_channels", h.f0_channels)
    u("hift.f0_n_conv", F0_N_CONV)
    u("hift.stream_mel_cache_frames", HIFT_MEL_CACHE_FRAMES)
    u("hift.stream_source_cache_samples", HIFT_MEL_CACHE_FRAMES * h.mel_hop)
    s("hift.crossfade_window", "hamming")
