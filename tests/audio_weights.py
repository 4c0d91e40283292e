"""Random Whisper-encoder + audio-projector weights under the HF checkpoint names (apm.*,
audio_projection_layer.*) and smooth random log-mel inputs, for the audio reference tests.

Made here with numpy's RNG (not by the converter) so the reference checks depend on nothing else.
"""

from __future__ import annotations

import numpy as np


def random_audio_weights(seed=0, d_model=64, n_layers=2, ffn=256, n_mel=80, n_positions=1500, d_out=64):
    """Scales keep every part visible: 1/sqrt(fan_in) matrices, norm weights 1 +- 0.2, biases ~0.1,
    unit-ish position rows (so a position off by one is an O(1) change)."""
    rng = np.random.default_rng(seed)

    def mat(*shape):
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    def vec(n, scale=0.1):
        return (scale * rng.standard_normal(n)).astype(np.float32)

    def norm_w(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    w = {
        "apm.conv1.weight": mat(d_model, n_mel, 3), "apm.conv1.bias": vec(d_model),
        "apm.conv2.weight": mat(d_model, d_model, 3), "apm.conv2.bias": vec(d_model),
        "apm.embed_positions.weight": (0.5 * rng.standard_normal((n_positions, d_model))).astype(np.float32),
    }
    for i in range(n_layers):
        p = f"apm.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = mat(d_model, d_model)
        w[p + "self_attn.q_proj.bias"] = vec(d_model)
        w[p + "self_attn.k_proj.weight"] = mat(d_model, d_model)
        w[p + "self_attn.v_proj.weight"] = mat(d_model, d_model)
        w[p + "self_attn.v_proj.bias"] = vec(d_model)
        w[p + "self_attn.out_proj.weight"] = mat(d_model, d_model)
        w[p + "self_attn.out_proj.bias"] = vec(d_model)
        w[p + "self_attn_layer_norm.weight"] = norm_w(d_model)
        w[p + "self_attn_layer_norm.bias"] = vec(d_model)
        w[p + "final_layer_norm.weight"] = norm_w(d_model)
        w[p + "final_layer_norm.bias"] = vec(d_model)
        w[p + "fc1.weight"] = mat(ffn, d_model)
        w[p + "fc1.bias"] = vec(ffn)
        w[p + "fc2.weight"] = mat(d_model, ffn)
        w[p + "fc2.bias"] = vec(d_model)
    w["apm.layer_norm.weight"] = norm_w(d_model)
    w["apm.layer_norm.bias"] = vec(d_model)
    d_in = ffn // 4  # the official projector input is encoder_ffn_dim // 4 (= d_model for Whisper)
    w["audio_projection_layer.linear1.weight"] = mat(d_out, d_in)
    w["audio_projection_layer.linear1.bias"] = vec(d_out)
    w["audio_projection_layer.linear2.weight"] = mat(d_out, d_out)
    w["audio_projection_layer.linear2.bias"] = vec(d_out)
    return w


def smooth_mel(seed, n_frames, n_mel=80):
    """(n_mel, T) float32 in the Whisper log-mel range (about -0.5 .. 1.5): smooth in time and
    frequency plus a little noise, like real speech features."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames)[None, :]
    f = np.arange(n_mel)[:, None]
    phase = rng.uniform(0, 2 * np.pi, 3)
    base = (np.sin(t / 7.0 + phase[0]) * np.cos(f / 9.0 + phase[1]) + 0.5 * np.sin(t / 23.0 + f / 5.0 + phase[2]))
    return (0.5 + 0.4 * base + 0.1 * rng.standard_normal((n_mel, n_frames))).astype(np.float32)
