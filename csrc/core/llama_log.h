// Routing of llama.cpp / ggml log output. llama.cpp's logger is process-wide; we install one
// stateless filter (idempotent) and keep per-thread capture so errors can quote llama's reason.
#pragma once

#include <functional>
#include <string>

namespace minicpmo {

// Installs the filter and initialises the llama backend once per process (both idempotent).
// Quiet unless MINICPMO_VERBOSE=1; errors are always printed to stderr.
void ensure_llama_initialized();

// The last error line llama.cpp logged on this thread ("" if none); cleared by the call.
std::string take_llama_error();

// While alive, INFO lines logged on this thread are handed to `sink` (progress of quantization).
class LlamaLogCapture {
public:
    explicit LlamaLogCapture(std::function<void(const std::string &)> sink);
    ~LlamaLogCapture();
    LlamaLogCapture(const LlamaLogCapture &) = delete;
    LlamaLogCapture & operator=(const LlamaLogCapture &) = delete;

private:
    std::function<void(const std::string &)> previous_;
};

}  // namespace minicpmo
