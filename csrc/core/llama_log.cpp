#include "core/llama_log.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "llama.h"

#include "core/backend_modules.h"

namespace minicpmo {

namespace {

thread_local std::string t_last_error;
thread_local std::string t_line;  // llama logs a line in several pieces
thread_local std::function<void(const std::string &)> t_info_sink;
thread_local std::vector<std::string> * t_error_lines = nullptr;  // of the innermost LlamaErrorCapture

bool verbose_from_env() {
    const char * v = std::getenv("MINICPMO_VERBOSE");
    return v && *v && std::strcmp(v, "0") != 0;
}

std::string trim_end(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

void log_filter(ggml_log_level level, const char * text, void * user_data) {
    const bool verbose = user_data != nullptr;
    if (level == GGML_LOG_LEVEL_CONT) {
        t_line += text;
    } else {
        t_line = text;
    }
    const bool error = level == GGML_LOG_LEVEL_ERROR;
    if (error) t_last_error = trim_end(t_line);
    if ((level == GGML_LOG_LEVEL_INFO || level == GGML_LOG_LEVEL_CONT) && t_info_sink) {
        if (!t_line.empty() && t_line.back() == '\n') t_info_sink(t_line);
    }
    if (error && t_error_lines) {
        // complete lines only; the caller quotes them in its error, so they are not printed here
        if (!t_line.empty() && t_line.back() == '\n') t_error_lines->push_back(trim_end(t_line));
        return;
    }
    if (verbose || error) {
        std::fputs(text, stderr);
    }
}

// Drops leading "identifier: " prefixes (libllama names the function that logged).
std::string strip_function_prefixes(std::string s) {
    for (;;) {
        size_t i = 0;
        while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_')) ++i;
        if (i == 0 || i + 1 >= s.size() || s[i] != ':' || s[i + 1] != ' ') return s;
        s.erase(0, i + 2);
    }
}

}  // namespace

void ensure_llama_initialized() {
    static std::once_flag once;
    std::call_once(once, [] {
        // non-null user_data = verbose; the flag is read once, never mutated afterwards
        static int verbose_marker = 1;
        llama_log_set(log_filter, verbose_from_env() ? &verbose_marker : nullptr);
        load_backend_modules();
        llama_backend_init();
    });
}

std::string take_llama_error() {
    std::string e;
    e.swap(t_last_error);
    return e;
}

void log_warning(const std::string & message) {
    std::fprintf(stderr, "minicpmo: warning: %s\n", message.c_str());
}

LlamaLogCapture::LlamaLogCapture(std::function<void(const std::string &)> sink) : previous_(t_info_sink) {
    t_info_sink = std::move(sink);
}

LlamaLogCapture::~LlamaLogCapture() { t_info_sink = std::move(previous_); }

LlamaErrorCapture::LlamaErrorCapture() : previous_(t_error_lines) { t_error_lines = &lines_; }

LlamaErrorCapture::~LlamaErrorCapture() { t_error_lines = previous_; }

std::string LlamaErrorCapture::reason() const {
    // libllama logs the cause first ("llama_model_load: error loading model: <cause>") and then a
    // generic line ("llama_model_load_from_file_impl: failed to load model")
    for (const std::string & line : lines_) {
        const std::string r = strip_function_prefixes(line);
        if (!r.empty()) return r;
    }
    return "";
}

}  // namespace minicpmo
