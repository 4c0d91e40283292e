"""Random Token2Wav weights for tests: numpy state dicts under the flow.pt / hift.pt names (spec §9)
for the tiny configs of spec §8, drawn from a seeded numpy RNG.

Scales keep every activation O(1) (Linear ~ N(0, 1/fan_in), LayerNorm ~ 1 ± 0.1, non-zero adaLN
gates so every DiT branch matters) and put the HiFT F0 mostly above the 10 Hz voiced threshold with
some unvoiced frames, so both source branches are exercised.
"""

from __future__ import annotations

import numpy as np

from reference.token2wav import FlowConfig, HiFTConfig

# spec §8: flow encoder 64-d, 2 heads, linear_units 128, 2+2 blocks; DiT hidden 64, depth 2, 2 x 32
FLOW_TINY = FlowConfig(input_size=64, encoder_output_size=64, attention_heads=2, linear_units=128,
                       num_blocks=2, num_up_blocks=2, dit_hidden_size=64, dit_depth=2, dit_num_heads=2,
                       dit_head_dim=32)
# spec §8: HiFT base 32 (-> 16, 8, 4), F0 cond channels 32, everything else as released
HIFT_TINY = HiFTConfig(base_channels=32, f0_cond_channels=32)


def _lin(rng, sd, name, n_out, n_in, bias=True, gain=1.0):
    sd[name + ".weight"] = (rng.standard_normal((n_out, n_in)) * gain / np.sqrt(n_in)).astype(np.float32)
    if bias:
        sd[name + ".bias"] = (0.1 * rng.standard_normal(n_out)).astype(np.float32)


def _ln(rng, sd, name, n):
    sd[name + ".weight"] = (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    sd[name + ".bias"] = (0.1 * rng.standard_normal(n)).astype(np.float32)


def _conv(rng, sd, name, c_out, c_in, k, bias=True):
    sd[name + ".weight"] = (rng.standard_normal((c_out, c_in, k)) / np.sqrt(c_in * k)).astype(np.float32)
    if bias:
        sd[name + ".bias"] = (0.1 * rng.standard_normal(c_out)).astype(np.float32)


def random_flow_state(cfg: FlowConfig = FLOW_TINY, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    sd = {}
    D, E, h = cfg.encoder_output_size, cfg.input_size, cfg.attention_heads
    sd["input_embedding.weight"] = rng.standard_normal((cfg.vocab_size, E)).astype(np.float32)
    _lin(rng, sd, "spk_embed_affine_layer", cfg.output_size, cfg.spk_embed_dim, gain=4.0)
    for emb in ("encoder.embed.out", "encoder.up_embed.out"):
        _lin(rng, sd, emb + ".0", D, E)
        _ln(rng, sd, emb + ".1", D)
    _conv(rng, sd, "encoder.pre_lookahead_layer.conv1", D, D, cfg.pre_lookahead_len + 1)
    _conv(rng, sd, "encoder.pre_lookahead_layer.conv2", D, D, 3)
    layers = [f"encoder.encoders.{i}" for i in range(cfg.num_blocks)]
    layers += [f"encoder.up_encoders.{i}" for i in range(cfg.num_up_blocks)]
    for p in layers:
        a = p + ".self_attn."
        for n in ("linear_q", "linear_v", "linear_out"):
            _lin(rng, sd, a + n, D, D)
        _lin(rng, sd, a + "linear_k", D, D, bias=cfg.key_bias)
        _lin(rng, sd, a + "linear_pos", D, D, bias=False)
        sd[a + "pos_bias_u"] = (0.3 * rng.standard_normal((h, D // h))).astype(np.float32)
        sd[a + "pos_bias_v"] = (0.3 * rng.standard_normal((h, D // h))).astype(np.float32)
        _lin(rng, sd, p + ".feed_forward.w_1", cfg.linear_units, D)
        _lin(rng, sd, p + ".feed_forward.w_2", D, cfg.linear_units)
        _ln(rng, sd, p + ".norm_mha", D)
        _ln(rng, sd, p + ".norm_ff", D)
    _conv(rng, sd, "encoder.up_layer.conv", D, D, 2 * cfg.up_stride + 1)
    _ln(rng, sd, "encoder.after_norm", D)
    _lin(rng, sd, "encoder_proj", cfg.output_size, D)
    e = "decoder.estimator."
    H, nh, hd = cfg.dit_hidden_size, cfg.dit_num_heads, cfg.dit_head_dim
    inner = nh * hd
    mlp = int(H * cfg.dit_mlp_ratio)
    _lin(rng, sd, e + "t_embedder.mlp.0", H, cfg.t_freq_dim, gain=2.0)
    _lin(rng, sd, e + "t_embedder.mlp.2", H, H)
    _lin(rng, sd, e + "in_proj", H, cfg.dit_in_channels)
    for i in range(cfg.dit_depth):
        b = f"{e}blocks.{i}."
        for n in ("to_q", "to_k", "to_v"):
            _lin(rng, sd, b + "attn." + n, inner, H)
        _ln(rng, sd, b + "attn.q_norm", hd)
        _ln(rng, sd, b + "attn.k_norm", hd)
        _lin(rng, sd, b + "attn.proj", H, inner)
        _lin(rng, sd, b + "mlp.fc1", mlp, H)
        _lin(rng, sd, b + "mlp.fc2", H, mlp)
        _conv(rng, sd, b + "conv.block.1", H, H, 3)
        _ln(rng, sd, b + "conv.block.3", H)
        _conv(rng, sd, b + "conv.block.6", H, H, 3)
        _lin(rng, sd, b + "adaLN_modulation.1", 9 * H, H, gain=0.5)
    _lin(rng, sd, e + "final_layer.adaLN_modulation.1", 2 * H, H, gain=0.5)
    _lin(rng, sd, e + "final_layer.linear", cfg.dit_out_channels, H)
    return sd


def _wn_conv(rng, sd, name, shape, gain_range=(0.5, 1.2), style="parametrizations", n_bias=None):
    """A weight-normed conv as stored by torch (weight_norm dim=0): g (shape[0], 1, 1) and v;
    bias of n_bias values (default shape[0]; shape[1] for a ConvTranspose1d)."""
    v = rng.standard_normal(shape).astype(np.float32)
    g = rng.uniform(*gain_range, size=(shape[0], 1, 1)).astype(np.float32)
    if style == "parametrizations":
        sd[name + ".parametrizations.weight.original0"] = g
        sd[name + ".parametrizations.weight.original1"] = v
    elif style == "weight_g":
        sd[name + ".weight_g"] = g
        sd[name + ".weight_v"] = v
    else:
        raise ValueError(style)
    sd[name + ".bias"] = (0.1 * rng.standard_normal(n_bias or shape[0])).astype(np.float32)


def _resblock(rng, sd, p, ch, k, dilations, style):
    for j in range(len(dilations)):
        _wn_conv(rng, sd, f"{p}.convs1.{j}", (ch, ch, k), gain_range=(0.2, 0.5), style=style)
        _wn_conv(rng, sd, f"{p}.convs2.{j}", (ch, ch, k), gain_range=(0.2, 0.5), style=style)
        sd[f"{p}.activations1.{j}.alpha"] = rng.uniform(0.5, 1.5, ch).astype(np.float32)
        sd[f"{p}.activations2.{j}.alpha"] = rng.uniform(0.5, 1.5, ch).astype(np.float32)


def random_hift_state(cfg: HiFTConfig = HIFT_TINY, seed: int = 1, style: str = "parametrizations",
                      prefix: str = "") -> dict:
    """``style``: "parametrizations" (torch.nn.utils.parametrizations.weight_norm names) or
    "weight_g" (the older weight_g / weight_v names); ``prefix`` e.g. "generator." as in hift.pt."""
    rng = np.random.default_rng(seed)
    sd = {}
    C = cfg.f0_cond_channels
    for i in range(cfg.f0_num_layers):
        _wn_conv(rng, sd, f"f0_predictor.condnet.{2 * i}", (C, cfg.in_channels if i == 0 else C, 3),
                 gain_range=(1.0, 2.0), style=style)
    # F0 = |20 + spread ~100|: mostly voiced (> 10 Hz), about 10 % unvoiced frames
    sd["f0_predictor.classifier.weight"] = (rng.standard_normal((1, C)) * 100 / np.sqrt(C)).astype(np.float32)
    sd["f0_predictor.classifier.bias"] = np.array([20.0], np.float32)
    nh = cfg.nb_harmonics + 1
    sd["m_source.l_linear.weight"] = (rng.standard_normal((1, nh)) * 0.8).astype(np.float32)
    sd["m_source.l_linear.bias"] = (0.05 * rng.standard_normal(1)).astype(np.float32)
    B = cfg.base_channels
    _wn_conv(rng, sd, "conv_pre", (B, cfg.in_channels, 7), style=style)
    for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
        _wn_conv(rng, sd, f"ups.{i}", (B // 2 ** i, B // 2 ** (i + 1), k), gain_range=(0.5, 1.0), style=style,
                 n_bias=B // 2 ** (i + 1))
    n_stft = cfg.n_fft + 2
    down = np.cumprod([1] + list(cfg.upsample_rates[::-1][:-1]))[::-1]
    for i, (u, k, d) in enumerate(zip(down, cfg.source_resblock_kernel_sizes, cfg.source_resblock_dilation_sizes)):
        ch = B // 2 ** (i + 1)
        _conv(rng, sd, f"source_downs.{i}", ch, n_stft, 1 if u == 1 else 2 * int(u))
        _resblock(rng, sd, f"source_resblocks.{i}", ch, k, d, style)
    nk = len(cfg.resblock_kernel_sizes)
    for i in range(len(cfg.upsample_rates)):
        ch = B // 2 ** (i + 1)
        for j, (k, d) in enumerate(zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)):
            _resblock(rng, sd, f"resblocks.{i * nk + j}", ch, k, d, style)
    ch = B // 2 ** len(cfg.upsample_rates)
    _wn_conv(rng, sd, "conv_post", (n_stft, ch, 7), gain_range=(0.5, 1.0), style=style)
    return {prefix + k: v for k, v in sd.items()}


def smooth_mel(rng, n_frames, n_mels=80):
    """A log-mel-like (n_mels, T) array: smooth in time and frequency, range about [-8, 2]."""
    x = rng.standard_normal((n_mels, n_frames + 8))
    k = np.hanning(9)
    x = np.apply_along_axis(lambda r: np.convolve(r, k / k.sum(), mode="valid"), 1, x)
    return (x * 3 - 3).astype(np.float32)


class SourceRandomness:
    """Seeded SineGen randomness, handed out in call order: ``phases()`` -> (H+1,) uniform [0, 1)
    (element 0 is zeroed by the model), ``noise(n)`` -> (n, H+1) N(0, 1). Two streams, so that the
    numpy reference (``source_random(n)`` = both at once) and the patched torch.rand /
    torch.randn_like of the oracle (phases first, noise later) see identical numbers when each
    gets its own instance with the same seed."""

    def __init__(self, seed, n_harmonics=9):
        self.phase_rng = np.random.default_rng([seed, 0])
        self.noise_rng = np.random.default_rng([seed, 1])
        self.nh = n_harmonics
        self.calls = 0

    def phases(self):
        return self.phase_rng.uniform(0, 1, self.nh).astype(np.float32)

    def noise(self, n_samples):
        self.calls += 1
        return self.noise_rng.standard_normal((n_samples, self.nh)).astype(np.float32)

    def __call__(self, n_samples):
        return self.phases(), self.noise(n_samples)
