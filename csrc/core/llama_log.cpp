#include "core/llama_log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "llama.h"

namespace minicpmo {

namespace {

thread_local std::string t_last_error;
thread_local std::string t_line;  // llama logs a line in several pieces
thread_local std::function<void(const std::string &)> t_info_sink;

bool verbose_from_env() {
    const char * v = std::getenv("MINICPMO_VERBOSE");
    return v && *v && std::strcmp(v, "0") != 0;
}

void log_filter(ggml_log_level level, const char * text, void * user_data) {
    const bool verbose = user_data != nullptr;
    if (level == GGML_LOG_LEVEL_CONT) {
        t_line += text;
    } else {
        t_line = text;
    }
    if (level == GGML_LOG_LEVEL_ERROR) {
        t_last_error = t_line;
        while (!t_last_error.empty() && (t_last_error.back() == '\n' || t_last_error.back() == ' ')) {
            t_last_error.pop_back();
        }
    }
    if ((level == GGML_LOG_LEVEL_INFO || level == GGML_LOG_LEVEL_CONT) && t_info_sink) {
        if (!t_line.empty() && t_line.back() == '\n') t_info_sink(t_line);
    }
    if (verbose || level == GGML_LOG_LEVEL_ERROR) {
        std::fputs(text, stderr);
    }
}

}  // namespace

void ensure_llama_initialized() {
    static std::once_flag once;
    std::call_once(once, [] {
        // non-null user_data = verbose; the flag is read once, never mutated afterwards
        static int verbose_marker = 1;
        llama_log_set(log_filter, verbose_from_env() ? &verbose_marker : nullptr);
        llama_backend_init();
    });
}

std::string take_llama_error() {
    std::string e;
    e.swap(t_last_error);
    return e;
}

LlamaLogCapture::LlamaLogCapture(std::function<void(const std::string &)> sink) : previous_(t_info_sink) {
    t_info_sink = std::move(sink);
}

LlamaLogCapture::~LlamaLogCapture() { t_info_sink = std::move(previous_); }

}  // namespace minicpmo
