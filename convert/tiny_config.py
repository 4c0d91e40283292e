"""config.json / generation_config.json / preprocessor_config.json for the tiny test checkpoint.

Key structure follows spec §0.2 (the official MiniCPMOConfig); dimensions follow spec §8. Keys that
only matter for training get their library defaults. One non-standard key is added:
`resampler_num_heads` (the reference derives heads as hidden_size // 128, which is 0 at hidden 64).
"""

from __future__ import annotations

from typing import Any

from .tokens import VOCAB_SIZE

TINY_LLM = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                head_dim=16, intermediate_size=128)
# vision_config dims (num_hidden_layers 3 with drop_vision_last_layer -> 2 layers stored and run,
# exercising spec gap G1) and the resampler's head count (top-level key resampler_num_heads)
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=3,
                   resampler_num_heads=2)
# audio_config dims of the Whisper encoder; encoder_ffn_dim follows d_model (4x: the projector's input
# width is encoder_ffn_dim // 4) unless it is overridden too
TINY_AUDIO = dict(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=256)
COMPONENTS = ("vision", "audio", "tts")  # the init_* flags of config.json
# Token2Wav assets (spec §8): flow encoder / DiT / HiFT dims; the interface constants (vocab 6561,
# 80 mels, spk 192, DiT in 320, HiFT rates [8,5,3] + iSTFT 16/4) stay real
TINY_TOKEN2WAV = dict(enc_dim=64, enc_heads=2, enc_ff=128, enc_blocks=2, enc_up_blocks=2,
                      dit_dim=64, dit_layers=2, dit_heads=2, dit_head_dim=32,
                      hift_base=32, hift_f0_channels=32, n_timesteps=3)
# tts_config backbone dims (the release: hidden 768, 20 layers, 12 heads, kv 12, intermediate 3072)
TINY_TTS = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=4,
                num_hidden_layers=2)


def _override(defaults: dict[str, int], over: dict[str, int] | None, what: str) -> dict[str, int]:
    out = dict(defaults, **(over or {}))
    unknown = set(out) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {what} dimension(s): {', '.join(sorted(unknown))}")
    return out


def tiny_config(llm_dims: dict[str, int] | None = None, vision_dims: dict[str, int] | None = None,
                components: tuple[str, ...] = COMPONENTS,
                audio_dims: dict[str, int] | None = None,
                token2wav_dims: dict[str, int] | None = None,
                tts_dims: dict[str, int] | None = None) -> dict[str, Any]:
    """llm_dims overrides TINY_LLM keys (e.g. a 256-wide LLM for K-quant tests, a 0.6B shape for
    benchmarks); the TTS llm_dim follows the LLM width. vision_dims overrides TINY_VISION keys (e.g.
    the real 1152/4304/16/27 tower with resampler_num_heads 32 for an LLM width of 4096).
    audio_dims overrides TINY_AUDIO keys (e.g. Whisper-medium: d_model 1024, 24 layers, 16 heads).
    tts_dims overrides TINY_TTS keys (e.g. the release's 768-wide, 20-layer speech-token LM).
    components: which of vision/audio/tts the checkpoint has (init_vision/init_audio/init_tts)."""
    llm = _override(TINY_LLM, llm_dims, "LLM")
    vis = _override(TINY_VISION, vision_dims, "vision")
    aud = _override(TINY_AUDIO, audio_dims, "audio")
    t2w = _override(TINY_TOKEN2WAV, token2wav_dims, "Token2Wav")
    tdim = _override(TINY_TTS, tts_dims, "TTS")
    if "encoder_ffn_dim" not in (audio_dims or {}):
        aud["encoder_ffn_dim"] = 4 * aud["d_model"]
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown component(s): {', '.join(sorted(unknown))} (choose from {', '.join(COMPONENTS)})")
    vision = {
        "attention_dropout": 0.0, "hidden_act": "gelu_pytorch_tanh", "hidden_size": vis["hidden_size"],
        "image_size": 980, "intermediate_size": vis["intermediate_size"], "layer_norm_eps": 1e-6,
        "model_type": "siglip_vision_model", "num_attention_heads": vis["num_attention_heads"],
        "num_channels": 3, "num_hidden_layers": vis["num_hidden_layers"], "patch_size": 14,
    }
    audio = {
        "activation_dropout": 0.0, "activation_function": "gelu", "apply_spec_augment": False,
        "attention_dropout": 0.0, "classifier_proj_size": 256, "d_model": aud["d_model"],
        "decoder_attention_heads": 4, "decoder_ffn_dim": 256, "decoder_layerdrop": 0.0,
        "decoder_layers": 2, "dropout": 0.0, "encoder_attention_heads": aud["encoder_attention_heads"],
        "encoder_ffn_dim": aud["encoder_ffn_dim"],  # must be 4 * d_model: the projector input is ffn // 4
        "encoder_layerdrop": 0.0, "encoder_layers": aud["encoder_layers"], "init_std": 0.02,
        "mask_feature_length": 10, "mask_feature_min_masks": 0, "mask_feature_prob": 0.0,
        "mask_time_length": 10, "mask_time_min_masks": 2, "mask_time_prob": 0.05,
        "max_source_positions": 1500, "max_target_positions": 448, "median_filter_width": 7,
        "model_type": "whisper", "num_hidden_layers": aud["encoder_layers"], "num_mel_bins": 80,
        "scale_embedding": False, "use_cache": True, "use_weighted_layer_sum": False,
        "vocab_size": 51865,
    }
    tts = {
        "attention_type": "full_attention", "attn_implementation": "sdpa",
        "audio_bos_token_id": 151687, "audio_tokenizer_sample_rate": 16000,
        "audio_tokenizer_type": "s3tokenizer_step_audio", "aug_layer_loss_weight": False,
        "aug_loss_weight": False, "backbone_model": "llama", "condition_type": "hidden_text_merge",
        "filter_tts_loss": False, "hidden_act": "silu", "hidden_size": tdim["hidden_size"],
        "interleaved": False, "intermediate_size": tdim["intermediate_size"], "llm_dim": llm["hidden_size"], "llm_dim_model_base": 64, "llm_down_scale": False,
        "llm_hidden_size": 64, "llm_intermediate_size": 128, "long_weight": 0.1,
        "max_position_embeddings": 4096, "model_type": "minicpmtts",
        "normalize_projected_hidden": True, "num_attention_heads": tdim["num_attention_heads"],
        "num_audio_tokens": 6562, "num_hidden_layers": tdim["num_hidden_layers"],
        "num_key_value_heads": tdim["num_key_value_heads"], "num_mel_bins": 100,
        "num_text_tokens": 152064, "num_vq": 1, "projector_type": "mlp", "recomputed_chunks": 1,
        "s3_stream_chunk_size": 25, "s3_stream_generate": False,
        "s3_stream_n_timesteps": t2w["n_timesteps"],  # tiny: few CFM steps (spec §8); the release has 10
        "s3_stream_prelook_size": 3, "short_weight": 0.1, "streaming": False,
        "streaming_audio_chunk_size": 50, "streaming_sliding_window": False,
        "streaming_sliding_window_audio_frame_rate": 50,
        "streaming_sliding_window_audio_init_text_length": 10,
        "streaming_sliding_window_audio_window_size": 300,
        "streaming_sliding_window_average_speed": 5, "streaming_sliding_window_fast_speed": 7,
        "streaming_sliding_window_max_text_len": 500, "streaming_sliding_window_slow_speed": 3,
        "streaming_text_chunk_max": 7, "streaming_text_chunk_min": 3,
        "streaming_text_reserved_len": 300, "text_eos_token_id": 151692,
        "tts_filter_loss_fix": False, "use_llm_hidden_state": False, "use_text": True,
        "window_size": 2,
    }
    return {
        "architectures": ["MiniCPMO"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "audio_chunk_length": 1.0,
        "audio_config": audio,
        "audio_pool_step": 5,
        "auto_map": {
            "AutoConfig": "configuration_minicpmo.MiniCPMOConfig",
            "AutoModel": "modeling_minicpmo.MiniCPMO",
            "AutoModelForCausalLM": "modeling_minicpmo.MiniCPMO",
        },
        "batch_vision_input": True,
        "bos_token_id": 151643,
        "drop_vision_last_layer": True,
        "eos_token_id": 151645,
        "hidden_act": "silu",
        "image_size": 448,
        "init_audio": "audio" in components,
        "init_tts": "tts" in components,
        "init_vision": "vision" in components,
        "initializer_range": 0.02,
        "listen_speak_type": "asr",
        "max_position_embeddings": 40960,
        "max_window_layers": llm["num_hidden_layers"],
        "model_type": "minicpmo",
        "pad_token_id": 151643,
        "patch_size": 14,
        "query_num": 64,
        "resampler_num_heads": vis["resampler_num_heads"],
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "slice_config": {"max_slice_nums": 9, "model_type": "minicpmv", "patch_size": 14,
                         "scale_resolution": 448},
        "slice_mode": True,
        "sliding_window": None,
        "stream_input": True,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.51.0",
        "tts_config": tts,
        "use_cache": True,
        "use_image_id": True,
        "use_sliding_window": False,
        "version": 4.5,
        "vision_batch_size": 16,
        "vision_config": vision,
        "vocab_size": VOCAB_SIZE,
        **llm,
    }


def generation_config() -> dict[str, Any]:
    return {"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
            "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 100,
            "transformers_version": "4.51.0"}


def preprocessor_config() -> dict[str, Any]:
    return {
        "image_processor_type": "MiniCPMVImageProcessor",
        "feature_extractor_type": "MiniCPMAAudioProcessor",
        "processor_class": "MiniCPMOProcessor",
        "auto_map": {
            "AutoProcessor": "processing_minicpmo.MiniCPMOProcessor",
            "AutoImageProcessor": "processing_minicpmo.MiniCPMVImageProcessor",
            "AutoFeatureExtractor": "processing_minicpmo.MiniCPMAAudioProcessor",
        },
        "max_slice_nums": 9, "scale_resolution": 448, "patch_size": 14, "slice_mode": True,
        "use_image_id": True, "image_feature_size": 64,
        "im_start": "<image>", "im_end": "</image>", "slice_start": "<slice>",
        "slice_end": "</slice>", "unk": "<unk>", "im_id_start": "<image_id>",
        "im_id_end": "</image_id>",
        "norm_mean": [0.5, 0.5, 0.5], "norm_std": [0.5, 0.5, 0.5],
        "feature_size": 80, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30,
        "n_fft": 400, "n_samples": 480000, "nb_max_frames": 3000, "padding_side": "right",
        "padding_value": 0.0, "return_attention_mask": True, "audio_pool_step": 5,
        "version": 4.5,
    }


def flow_yaml(token2wav_dims: dict[str, int] | None = None) -> str:
    """flow.yaml in the release's HyperPyYAML form (the `!new:` tags are read as plain markers)."""
    d = _override(TINY_TOKEN2WAV, token2wav_dims, "Token2Wav")
    return f"""# tiny Token2Wav flow (MODEL_SPEC.md §8)
flow: !new:cosyvoice2.flow.flow.CausalMaskedDiffWithXvec
    input_size: {d["enc_dim"]}
    output_size: 80
    spk_embed_dim: 192
    output_type: 'mel'
    vocab_size: 6561
    encoder: !new:cosyvoice2.transformer.upsample_encoder_v2.UpsampleConformerEncoderV2
        input_size: {d["enc_dim"]}
        output_size: {d["enc_dim"]}
        input_layer: 'linear'
        pre_lookahead_len: 3
        num_blocks: {d["enc_blocks"]}
        num_up_blocks: {d["enc_up_blocks"]}
        up_stride: 2
        up_scale_factor: 2
        attention_heads: {d["enc_heads"]}
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        key_bias: true
        linear_units: {d["enc_ff"]}
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
    decoder: !new:cosyvoice2.flow.flow_matching.CausalConditionalCFM
        inference_cfg_rate: 0.7
        estimator: !new:cosyvoice2.flow.decoder_dit.DiT
            in_channels: 320
            out_channels: 80
            mlp_ratio: 4.0
            depth: {d["dit_layers"]}
            num_heads: {d["dit_heads"]}
            head_dim: {d["dit_head_dim"]}
            hidden_size: {d["dit_dim"]}
"""


def hift_yaml(token2wav_dims: dict[str, int] | None = None) -> str:
    """hift.yaml (not in the release, whose HiFT is built with its defaults): the tiny widths."""
    d = _override(TINY_TOKEN2WAV, token2wav_dims, "Token2Wav")
    return f"""# tiny HiFT vocoder (MODEL_SPEC.md §8); keys are HiFTGenerator's arguments
hift: !new:flashcosyvoice.modules.hifigan.HiFTGenerator
    in_channels: 80
    base_channels: {d["hift_base"]}
    nb_harmonics: 8
    sampling_rate: 24000
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 5, 3]
    upsample_kernel_sizes: [16, 11, 7]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:flashcosyvoice.modules.hifigan.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: {d["hift_f0_channels"]}
"""
