// Cloning a voice at run time (spec §5.2.1): from a reference recording, the three parts of a voice
// prompt the flow is conditioned on, made natively as the reference makes them with its ONNX models:
//   - prompt speech tokens: the 16 kHz signal through the S3 speech tokenizer (25 Hz ids);
//   - speaker x-vector: the 16 kHz signal through CAM++ (Kaldi fbank front end);
//   - prompt mel: the 24 kHz signal's log-mel, replicate-padded or cut to token_mel_ratio frames per token.
// Both rates are made from the input with the reference's resampler (voice/sinc_resample.h). Shared
// by the sessions of a model; clone() is thread-safe (one clone at a time: cloning is rare).
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "core/compute_backend.h"
#include "token2wav/voice_bank.h"
#include "voice/prompt_mel.h"

namespace minicpmo {

class SpeechTokenizer;
class SpeakerEncoder;

constexpr int kVoiceRate = 16000;           // the rate both voice encoders take
constexpr double kMinVoiceSeconds = 0.5;    // shorter references give too few tokens to condition on
// the reference's streaming buffers bound the prompt: estimator cache 1000 frames - 100 kept - 50 per chunk
constexpr int kMaxVoicePromptFrames = 850;

class VoiceCloner {
public:
    // Loads the omni file's speech_tokenizer and speaker_encoder components and the Token2Wav
    // dimensions a voice must fit; throws unsupported naming what the file lacks.
    VoiceCloner(const std::string & omni_path, ComputeDevice device, bool map_file);
    ~VoiceCloner();
    VoiceCloner(const VoiceCloner &) = delete;
    VoiceCloner & operator=(const VoiceCloner &) = delete;

    // A voice from mono PCM at `sample_rate` (any rate in [1, 768000]): checks the samples (finite,
    // at least 0.5 s, at most what the caches allow) and throws invalid_argument saying what is wrong.
    // The returned prompt has no name (VoiceBank::add_cloned gives it one).
    VoicePrompt clone(const float * pcm, size_t n, int sample_rate, int n_threads) const;

private:
    std::string path_;
    std::unique_ptr<SpeechTokenizer> tokenizer_;
    std::unique_ptr<SpeakerEncoder> speaker_;
    std::unique_ptr<PromptMel> mel_;
    int vocab_ = 0, spk_dim_ = 0, token_mel_ratio_ = 0;
    mutable std::mutex mutex_;
};

}  // namespace minicpmo
