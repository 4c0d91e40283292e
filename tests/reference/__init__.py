"""Independent numpy reference implementations of the MiniCPM-o 4.5 components.

Written from shared/spec/MODEL_SPEC.md, not from the C++ runtime, transformers or llama.cpp.
They are deliberately simple (no batching, float64 by default) so that they serve as an oracle.
"""

from .qwen3 import KVCache, Qwen3Reference, load_hf_checkpoint, round_weights

__all__ = ["KVCache", "Qwen3Reference", "load_hf_checkpoint", "round_weights"]

from .vision import (VisionReference, encode_image, image_placeholder_text, navit_position_ids,
                     preprocess, vision_features)

__all__ += ["VisionReference", "encode_image", "image_placeholder_text", "navit_position_ids",
            "preprocess", "vision_features"]

from .audio import (AudioReference, ProjectorReference, StreamingWhisperReference, audio_placeholder_count,
                    chat_audio_embedding, project_and_pool, whisper_encode)

__all__ += ["AudioReference", "ProjectorReference", "StreamingWhisperReference", "audio_placeholder_count",
            "chat_audio_embedding", "project_and_pool", "whisper_encode"]

from .tts import DuplexTTS, StreamingTTS, TTSConfig, TTSReference, TTSSampling, generate_chat

__all__ += ["DuplexTTS", "StreamingTTS", "TTSConfig", "TTSReference", "TTSSampling", "generate_chat"]

from .token2wav import (FlowConfig, FlowReference, HiFTConfig, HiFTReference, Token2WavReference,
                        TokenStreamer)

__all__ += ["FlowConfig", "FlowReference", "HiFTConfig", "HiFTReference", "Token2WavReference", "TokenStreamer"]
