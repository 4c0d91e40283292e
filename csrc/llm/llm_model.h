// The Qwen3 LLM file, loaded through libllama: weights, vocabulary and metadata. Shared (read-only)
// by every session made from it.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/compute_backend.h"
#include "llama.h"
#include "llm/special_tokens.h"

namespace minicpmo {

struct LlmModelParams {
    int n_gpu_layers = -1;  // -1 = all layers on the device when there is one
    bool use_mmap = true;
    // Where the model computes: "" or "auto" = the first GPU when there is one, "cpu", or a ggml device
    // name ("Vulkan0", "CUDA0", "MTL0"; see resolve_device). The encoders, TTS and Token2Wav run there
    // too; with "auto", n_gpu_layers = 0 keeps everything on the CPU.
    std::string device;
};

class LlmModel {
public:
    // Throws naming `path` when the file is missing, not a GGUF, not a qwen3 LLM (e.g. the omni
    // companion passed by mistake), truncated, or lacks the MiniCPM-o special tokens. Its layers
    // (params.n_gpu_layers of them) go to `device`; none when it is the CPU (nullptr).
    LlmModel(const std::string & path, const LlmModelParams & params, ComputeDevice device);
    ~LlmModel();
    LlmModel(const LlmModel &) = delete;
    LlmModel & operator=(const LlmModel &) = delete;

    llama_model * get() const { return model_; }
    const llama_vocab * vocab() const { return vocab_; }
    const std::string & path() const { return path_; }
    int n_embd() const;
    int n_vocab() const;
    int n_ctx_train() const;
    std::string meta(const char * key) const;  // "" when absent

    // Text must be valid UTF-8 (throws invalid_argument naming the byte offset otherwise).
    std::vector<llama_token> tokenize(std::string_view text, bool parse_special) const;
    // Raw bytes of one token (special tokens rendered as their text); may be a partial UTF-8 char.
    std::string token_bytes(llama_token token) const;
    // Bytes shown to a user for a generated token: control tokens (<|im_end|>, <|tts_eos|>, ...) are empty.
    std::string token_text(llama_token token) const;
    std::string detokenize(const std::vector<llama_token> & tokens) const;  // raw bytes
    bool is_eog(llama_token token) const;
    // Id of a MiniCPM-o special token (resolved at load), throwing bad_model if the vocabulary lacks it.
    llama_token special_token(Special s) const;
    // Where libllama put the weights: (buffer type name, bytes) per buffer it allocated, as it
    // reported them at load ("Vulkan0", "CPU_Mapped", ...). The token embedding always stays on the
    // CPU (libllama keeps the input layer there: a row lookup gains nothing from a device).
    const std::vector<std::pair<std::string, double>> & weight_buffers() const { return weight_buffers_; }
    // whether any transformer layer computes on a device (GPU); false: the whole LLM is on the CPU
    bool layers_on_device() const { return layers_on_device_; }

private:
    std::string piece(llama_token token, bool special) const;

    std::string path_;
    llama_model * model_ = nullptr;
    const llama_vocab * vocab_ = nullptr;
    SpecialTokenIds specials_{};
    std::vector<std::pair<std::string, double>> weight_buffers_;
    bool layers_on_device_ = false;
};

}  // namespace minicpmo
