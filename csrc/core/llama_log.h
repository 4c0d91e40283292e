// Routing of llama.cpp / ggml log output. llama.cpp's logger is process-wide (llama_log_set takes
// one callback for the whole process); we install one stateless filter once and keep all capture
// state per thread, so two loads on two threads each see only their own messages.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace minicpmo {

// Installs the filter and initialises the llama backend once per process (both idempotent).
// Quiet unless MINICPMO_VERBOSE=1; errors are always printed to stderr (unless captured, below).
void ensure_llama_initialized();

// The last error line llama.cpp logged on this thread ("" if none); cleared by the call.
std::string take_llama_error();

// A warning of ours for the user of the C library and the CLI: printed to stderr as
// "minicpmo: warning: <message>" through the same channel as libllama's errors.
void log_warning(const std::string & message);

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

// While alive, ERROR lines libllama logs on this thread are collected here instead of printed, so
// that the caller can put libllama's reason into its own error (one message, not two). libllama
// reports load failures on the calling thread, so a per-thread capture sees exactly this load's
// messages even when other threads load other files at the same time.
class LlamaErrorCapture {
public:
    LlamaErrorCapture();
    ~LlamaErrorCapture();
    LlamaErrorCapture(const LlamaErrorCapture &) = delete;
    LlamaErrorCapture & operator=(const LlamaErrorCapture &) = delete;

    const std::vector<std::string> & lines() const { return lines_; }
    // The most specific reason: the first error line, without libllama's "function: " prefixes
    // ("tensor 'output.weight' data is not within the file bounds, ..."); "" when none was logged.
    std::string reason() const;

private:
    std::vector<std::string> lines_;
    std::vector<std::string> * previous_;
};

}  // namespace minicpmo
