"""Vision, audio and TTS of the official llama.cpp-omni set: their tensors under the checkpoint's
names (added to an OfficialSource) and the config.json / preprocessor_config.json values the
component plans read, recovered from the official files' keys and tensor shapes.

Official names (llama.cpp-omni's converters):
  vision (convert_vpm.py, arch clip): v.patch_embd, v.position_embd, v.blk.N.{attn_q,attn_k,attn_v,
    attn_out,ln1,ln2,ffn_down (= fc1),ffn_up (= fc2)}, v.post_ln; resampler.{query,kv,attn.q/k/v/out,
    ln_q,ln_kv,ln_post,proj (stored transposed),pos_embed_k (recomputed by us, not read)}
  audio (convert_apm.py, arch whisper): encoder.conv1/conv2 (bias squeezed to [n,1]),
    encoder.positional_embedding, encoder.blocks.N.{attn.query,attn.key,attn.value,attn.out,attn_ln,
    mlp.0,mlp.2,mlp_ln}, encoder.ln_post, audio_projector.linear1/2
  tts (convert_hf_to_gguf.py, arch llama): emb_text, emb_code.0, blk.N.{attn_norm,attn_q,attn_k
    (rows permuted for llama rope),attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down},
    output_norm, head_code.0.weight (weight norm folded, stored transposed), projector_semantic.*;
    token_embd (zero-padded, unused) and projector_spk (unused) are not read
  projector (convert_projector.py): linear1/linear2 = the TTS's projector_semantic
"""

from __future__ import annotations

import math
import re
from typing import Any

from .errors import ConversionError
from .omni_names import OfficialSource, unpermute_rope_rows
from .omni_set import GGUFTensors, kv

_VISION_LAYER = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                 "attn_out": "self_attn.out_proj", "ln1": "layer_norm1", "ln2": "layer_norm2",
                 "ffn_down": "mlp.fc1", "ffn_up": "mlp.fc2"}
_AUDIO_LAYER = {"attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj", "attn.value": "self_attn.v_proj",
                "attn.out": "self_attn.out_proj", "attn_ln": "self_attn_layer_norm", "mlp.0": "fc1",
                "mlp.2": "fc2", "mlp_ln": "final_layer_norm"}
_TTS_LAYER = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
              "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
              "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
              "ffn_down": "mlp.down_proj"}


def _layers(f: GGUFTensors, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for n in f.by_name if (m := pat.match(n))}
    if idx != set(range(len(idx))):
        raise ConversionError(f"{f.path}: layers {sorted(idx)} are not 0..{len(idx) - 1}")
    return len(idx)


def _linear_pair(src: OfficialSource, f: GGUFTensors, hf: str, official: str, bias: bool = True) -> None:
    src.add(hf + ".weight", f, official + ".weight")
    if bias:
        src.add(hf + ".bias", f, official + ".bias")


def add_vision(src: OfficialSource, f: GGUFTensors, llm_hidden: int, resampler_heads: int | None,
               cfg: dict[str, Any], pre: dict[str, Any]) -> None:
    if f.arch != "clip" or not f.info.kv.get("clip.has_minicpmv_projector", False):
        raise ConversionError(f"{f.path}: not a MiniCPM-V vision file (architecture {f.arch!r}, "
                              "expected clip with a minicpmv projector)")
    n_layers = _layers(f, "v.blk.")
    hidden = int(kv(f, "clip.vision.embedding_length"))
    patch = int(kv(f, "clip.vision.patch_size"))
    positions = f.shape("v.position_embd.weight")[0]
    side = math.isqrt(positions)
    if side * side != positions:
        raise ConversionError(f"{f.path}: v.position_embd.weight has {positions} rows, not a square grid")
    embed = f.shape("resampler.query")[-1]
    if embed != llm_hidden:
        raise ConversionError(f"{f.path}: resampler width {embed} differs from the LLM's hidden size {llm_hidden}")
    src.add("vpm.embeddings.patch_embedding.weight", f, "v.patch_embd.weight", (hidden, 3, patch, patch))
    src.add("vpm.embeddings.patch_embedding.bias", f, "v.patch_embd.bias")
    src.add("vpm.embeddings.position_embedding.weight", f, "v.position_embd.weight")
    for i in range(n_layers):
        for off, hf in _VISION_LAYER.items():
            _linear_pair(src, f, f"vpm.encoder.layers.{i}.{hf}", f"v.blk.{i}.{off}")
    _linear_pair(src, f, "vpm.post_layernorm", "v.post_ln")
    src.add("resampler.query", f, "resampler.query", tuple(f.shape("resampler.query")[-2:]))
    src.add("resampler.kv_proj.weight", f, "resampler.kv.weight")
    src.add("resampler.attn.in_proj_weight", f, tuple(f"resampler.attn.{p}.weight" for p in "qkv"))
    src.add("resampler.attn.in_proj_bias", f, tuple(f"resampler.attn.{p}.bias" for p in "qkv"))
    _linear_pair(src, f, "resampler.attn.out_proj", "resampler.attn.out")
    for ln in ("ln_q", "ln_kv", "ln_post"):
        _linear_pair(src, f, f"resampler.{ln}", f"resampler.{ln}")
    # convert_vpm.py stores the raw `proj` parameter transposed as a Linear weight: turned back
    src.add("resampler.proj", f, "resampler.proj.weight", f.shape("resampler.proj.weight")[::-1], lambda a: a.T)

    heads = resampler_heads or embed // 128  # the reference's embed_dim // 128 unless told
    if heads <= 0 or embed % heads:
        raise ConversionError(f"resampler width {embed}: cannot derive its attention heads (the reference uses "
                              "width // 128); give --resampler-heads N")
    cfg.update(
        init_vision=True, drop_vision_last_layer=False, query_num=int(kv(f, "clip.minicpmv_query_num")),
        resampler_num_heads=heads,
        vision_config=dict(hidden_size=hidden, num_attention_heads=int(kv(f, "clip.vision.attention.head_count")),
                           num_hidden_layers=n_layers,
                           intermediate_size=int(kv(f, "clip.vision.feed_forward_length")),
                           patch_size=patch, image_size=side * patch,
                           layer_norm_eps=float(kv(f, "clip.vision.attention.layer_norm_epsilon")),
                           hidden_act="gelu_pytorch_tanh", num_channels=3),
        slice_config=dict(max_slice_nums=_RELEASE_MAX_SLICE_NUMS, patch_size=patch,
                          scale_resolution=int(kv(f, "clip.vision.image_size"))),
    )
    pre.update(norm_mean=list(kv(f, "clip.vision.image_mean")), norm_std=list(kv(f, "clip.vision.image_std")))


_RELEASE_MAX_SLICE_NUMS = 9  # preprocessor_config.json of the release; the official file has no key


def add_audio(src: OfficialSource, f: GGUFTensors, llm_hidden: int, cfg: dict[str, Any], pre: dict[str, Any]) -> None:
    if f.arch != "whisper":
        raise ConversionError(f"{f.path}: architecture {f.arch!r}, expected the whisper audio encoder")
    n_layers = _layers(f, "encoder.blocks.")
    d = int(kv(f, "d_model"))
    n_mel = int(kv(f, "n_mel"))
    for k in (1, 2):
        c = f"encoder.conv{k}"
        src.add(f"apm.conv{k}.weight", f, c + ".weight")
        src.add(f"apm.conv{k}.bias", f, c + ".bias", (d,))  # stored [d, 1]
    src.add("apm.embed_positions.weight", f, "encoder.positional_embedding")
    for i in range(n_layers):
        for off, hf in _AUDIO_LAYER.items():
            _linear_pair(src, f, f"apm.layers.{i}.{hf}", f"encoder.blocks.{i}.{off}", bias=off != "attn.key")
    _linear_pair(src, f, "apm.layer_norm", "encoder.ln_post")
    for k in (1, 2):
        _linear_pair(src, f, f"audio_projection_layer.linear{k}", f"audio_projector.linear{k}")
    out = f.shape("audio_projector.linear2.weight")[0]
    if out != llm_hidden:
        raise ConversionError(f"{f.path}: the audio projector emits {out} values, the LLM's hidden size is {llm_hidden}")
    cfg.update(init_audio=True, audio_pool_step=int(kv(f, "audio_pool_step")),
               audio_config=dict(d_model=d, encoder_layers=n_layers,
                                 encoder_attention_heads=int(kv(f, "encoder_attention_heads")),
                                 encoder_ffn_dim=int(kv(f, "encoder_ffn_dim")), num_mel_bins=n_mel,
                                 max_source_positions=f.shape("encoder.positional_embedding")[0],
                                 activation_function="gelu"))
    n_bins = int(kv(f, "n_fft"))  # convert_apm.py stores the filter bank's bin count (n_fft // 2 + 1)
    pre.update(feature_size=n_mel, n_fft=2 * (n_bins - 1), sampling_rate=16000)


def add_tts(src: OfficialSource, f: GGUFTensors, proj: GGUFTensors | None, llm_hidden: int,
            release_tts: dict[str, Any], cfg: dict[str, Any]) -> None:
    if f.arch != "llama":
        raise ConversionError(f"{f.path}: architecture {f.arch!r}, expected the TTS (llama)")
    n_layers = _layers(f, "blk.")
    heads = int(kv(f, "llama.attention.head_count"))
    kv_heads = int(kv(f, "llama.attention.head_count_kv", heads))
    hidden = int(kv(f, "llama.embedding_length"))
    head_dim = int(f.info.kv.get("llama.attention.key_length", hidden // heads))
    if "head_code.0.weight" not in f:
        raise ConversionError(f"{f.path}: missing tensor head_code.0.weight (the speech-code output head)")
    src.add("tts.emb_text.weight", f, "emb_text.weight")
    for i in range(n_layers):
        for off, hf in _TTS_LAYER.items():
            t = None
            if off == "attn_q":
                t = lambda a: unpermute_rope_rows(a, heads)  # noqa: E731
            elif off == "attn_k":
                t = lambda a: unpermute_rope_rows(a, kv_heads)  # noqa: E731
            src.add(f"tts.model.layers.{i}.{hf}.weight", f, f"blk.{i}.{off}.weight", transform=t)
    src.add("tts.model.norm.weight", f, "output_norm.weight")
    p_file, p_prefix = (proj, "") if proj is not None else (f, "projector_semantic.")
    for k in (1, 2):
        _linear_pair(src, p_file, f"tts.projector_semantic.linear{k}", f"{p_prefix}linear{k}")
    src.add("tts.emb_code.0.weight", f, "emb_code.0.weight")
    # stored as hidden x codes (transposed for the official runtime's matmul): turned back
    src.add("tts.head_code.0.weight", f, "head_code.0.weight", f.shape("head_code.0.weight")[::-1], lambda a: a.T)
    llm_dim = src.shape("tts.projector_semantic.linear1.weight")[1]
    if llm_dim != llm_hidden:
        raise ConversionError(f"{p_file.path}: the projector takes {llm_dim} values, the LLM's hidden size is {llm_hidden}")
    rope = f.info.kv.get("llama.rope.freq_base", 10000.0)
    cfg.update(init_tts=True, tts_config=dict(
        hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
        num_hidden_layers=n_layers, intermediate_size=int(kv(f, "llama.feed_forward_length")),
        max_position_embeddings=int(kv(f, "llama.context_length")),
        rms_norm_eps=float(kv(f, "llama.attention.layer_norm_rms_epsilon")), rope_theta=float(rope),
        llm_dim=llm_dim, num_text_tokens=src.shape("tts.emb_text.weight")[0],
        num_audio_tokens=src.shape("tts.emb_code.0.weight")[0], **release_tts))
