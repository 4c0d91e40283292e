// The S3 speech tokenizer v2 (25 Hz, spec §5.2.1): 16 kHz PCM -> 128-bin Whisper log-mel -> two
// stride-2 GELU convolutions -> Whisper-like pre-LN blocks whose attention adds rotary positions and
// an FSMN memory (a depthwise convolution over the values) -> FSQ (a projection to fsq_dim values,
// tanh, scale, rounded to fsq_levels levels each) -> one id in [0, fsq_levels^fsq_dim) per 40 ms.
//
// Every hyper-parameter is a `minicpmo.speech_tokenizer.*` key and every weight a shape-checked
// `stok.*` tensor of the omni file (convert/speech_tokenizer_gguf.py writes them from the release's
// ONNX). The model is immutable after loading: sessions share it, and each tokenize() call computes
// on its own backend and scratch.
//
// One pass covers at most max_mel_frames (30 s): s3tokenizer encodes longer audio in overlapping 30-s
// windows and merges their ids, which a voice prompt (at most ~17 s, the Token2Wav cache bound) never
// needs, so longer input is refused with an error saying so.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "audio/log_mel.h"
#include "core/compute_backend.h"
#include "core/gguf_weights.h"

namespace minicpmo {

struct SpeechTokenizerHparams {
    int sample_rate = 0;     // 16000
    int n_fft = 0;           // 400
    int hop = 0;             // 160 (100 mel frames per second)
    int n_mel = 0;           // 128
    float log_range = 0.0f;  // lower clip of the log10 mel: max - log_range (8)
    int max_mel_frames = 0;  // longest input in one pass (3000 = 30 s, s3tokenizer's window)
    int n_embd = 0;          // 1280
    int n_ff = 0;            // 5120
    int n_layer = 0;         // 6
    int n_head = 0;          // 20
    float eps = 0.0f;        // LayerNorm epsilon
    int conv_kernel[2] = {0, 0}, conv_stride[2] = {0, 0}, conv_pad[2] = {0, 0};
    int fsmn_kernel = 0;     // 31 (padded (k-1)/2 left, the rest right)
    int rope_dim = 0;        // 64: the head width, rotated NeoX-style (halves)
    float rope_theta = 0.0f; // 10000
    int rope_positions = 0;  // 2048
    int fsq_dim = 0;         // 8 values per frame
    int fsq_levels = 0;      // 3 levels each
    float fsq_scale = 0.0f;  // 0.999 after tanh

    int head_dim() const { return n_embd / n_head; }
    // token frames of `mel_frames` mel frames (after both convolutions)
    int64_t n_tokens(int64_t mel_frames) const;
};

struct SpeechTokenizerLayer {
    ggml_tensor *attn_ln_w, *attn_ln_b;
    ggml_tensor *q_w, *q_b, *k_w, *v_w, *v_b;  // the key projection has no bias
    ggml_tensor *fsmn_w;                       // ne (fsmn_kernel, n_embd) F32: one filter per channel
    ggml_tensor *out_w, *out_b;
    ggml_tensor *mlp_ln_w, *mlp_ln_b;
    ggml_tensor *fc1_w, *fc1_b, *fc2_w, *fc2_b;
};

// The ids of one recording and, for checks near FSQ rounding boundaries, the values rounded.
struct SpeechTokens {
    std::vector<int32_t> ids;         // one per 40-ms frame
    std::vector<float> fsq_values;    // ids.size() x fsq_dim: scale * tanh(projection), before rounding
};

class SpeechTokenizer {
public:
    // Throws bad_model naming the file when the speech_tokenizer component is absent or inconsistent.
    SpeechTokenizer(const std::string & omni_path, ComputeDevice device = nullptr, bool map_file = true);
    ~SpeechTokenizer();
    SpeechTokenizer(const SpeechTokenizer &) = delete;
    SpeechTokenizer & operator=(const SpeechTokenizer &) = delete;

    const SpeechTokenizerHparams & hparams() const { return hp_; }
    const std::string & path() const { return w_->path(); }

    // The front end: (n_mel x n_frames) log-mel of 16 kHz mono PCM, n_frames = n / hop. Throws
    // invalid_argument for empty, too short (<= n_fft / 2 samples), too long (more than
    // max_mel_frames frames) or non-finite input.
    LogMelSpectrogram log_mel(const float * pcm16k, size_t n) const;

    // Speech token ids of 16 kHz mono PCM (the same errors as log_mel). Safe from several threads.
    SpeechTokens tokenize(const float * pcm16k, size_t n, int n_threads) const;
    // Encoder + FSQ on a ready log-mel (n_mel x n_frames as log_mel returns it).
    SpeechTokens tokenize_mel(const LogMelSpectrogram & mel, int n_threads) const;

    // weights, for the graph builder
    ggml_tensor * conv_w(int i) const { return conv_w_[i]; }  // ne (c_in * kernel, n_embd)
    ggml_tensor * conv_b(int i) const { return conv_b_[i]; }
    const std::vector<SpeechTokenizerLayer> & layers() const { return layers_; }
    ggml_tensor * fsq_w() const { return fsq_w_; }  // ne (n_embd, fsq_dim)
    ggml_tensor * fsq_b() const { return fsq_b_; }

private:
    std::unique_ptr<GgufWeights> w_;
    ComputeDevice device_ = nullptr;
    SpeechTokenizerHparams hp_;
    std::unique_ptr<MelFrameAnalyzer> mel_;
    ggml_tensor *conv_w_[2] = {nullptr, nullptr}, *conv_b_[2] = {nullptr, nullptr};
    std::vector<SpeechTokenizerLayer> layers_;
    ggml_tensor *fsq_w_ = nullptr, *fsq_b_ = nullptr;
};

}  // namespace minicpmo
