#include "llm/llm_model.h"

#include "core/error.h"
#include "core/gguf_header.h"
#include "core/llama_log.h"
#include "core/omni_file.h"
#include "core/utf8.h"

#include <cstdlib>
#include <cstring>
#include <string_view>
#include <unordered_map>

namespace minicpmo {

namespace {

// The vocabulary as libllama's loader needs it: MiniCPM-o 4.5's LLM uses a byte-level BPE ("gpt2")
// tokenizer, and libllama aborts the process (GGML_ASSERT in llama_vocab::load) when two entries
// of tokenizer.ggml.tokens are the same string (fuzz_llm_gguf).
void check_vocabulary(const GgufHeader & h) {
    const std::string & path = h.path();
    const std::string model = h.get_str("tokenizer.ggml.model").value_or("");
    if (model != "gpt2") {
        fail(Status::bad_model, "model file '" + path + "' has tokenizer.ggml.model '" +
                                    (model.empty() ? "<none>" : model) +
                                    "', expected 'gpt2' (the byte-level BPE tokenizer of MiniCPM-o 4.5)");
    }
    const std::vector<std::string> tokens = h.get_str_array("tokenizer.ggml.tokens");
    std::unordered_map<std::string_view, size_t> first_id;
    first_id.reserve(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
        const auto [it, fresh] = first_id.emplace(tokens[i], i);
        if (!fresh) {
            fail(Status::bad_model, "model file '" + path + "' has the same vocabulary entry twice in tokenizer.ggml.tokens"
                                    " (token ids " + std::to_string(it->second) + " and " + std::to_string(i) + ")");
        }
    }
}

void check_llm_header(const std::string & path) {
    GgufHeader h(path, "model file");
    const std::string arch = h.architecture();
    if (arch == kOmniArchitecture) {
        fail(Status::bad_model, "model file '" + path +
                                    "' is a MiniCPM-o omni companion file; pass the LLM file "
                                    "(MiniCPM-o-4_5-<QTYPE>.gguf) and give the companion as the omni file");
    }
    if (arch != "qwen3") {
        fail(Status::bad_model, "model file '" + path + "' has architecture '" + (arch.empty() ? "<none>" : arch) +
                                    "', expected 'qwen3' (the MiniCPM-o 4.5 LLM)");
    }
    // every tensor's type and shape, before libllama's loader (which aborts on some bad shapes)
    h.check_tensor_bounds(/*data_ranges=*/false);
    // libllama aborts the process (GGML_ASSERT) on a layer count outside 1 .. LLAMA_MAX_LAYERS (fuzz_llm_gguf)
    if (const auto layers = h.get_int("qwen3.block_count"); layers && (*layers < 1 || *layers > 512)) {
        fail(Status::bad_model, "model file '" + path + "' has qwen3.block_count " + std::to_string(*layers) +
                                    ", expected 1 .. 512");
    }
    check_vocabulary(h);
}

}  // namespace

LlmModel::LlmModel(const std::string & path, const LlmModelParams & params, ComputeDevice device) : path_(path) {
    check_llm_header(path);
    llama_model_params mp = llama_model_default_params();
    // an explicit device list: libllama would otherwise spread the layers over every GPU it finds
    ggml_backend_dev_t devices[2] = {device, nullptr};
    mp.devices = devices;
    mp.n_gpu_layers = device ? params.n_gpu_layers : 0;
    layers_on_device_ = mp.n_gpu_layers != 0;
    if (!params.use_mmap) mp.load_mode = LLAMA_LOAD_MODE_NONE;  // default: auto (mmap where possible)
    {
        // libllama logs why a load fails and returns only null; quote its reason in our error
        LlamaErrorCapture errors;
        // libllama reports each weight buffer at load: "<fn>: <buffer type> model buffer size = <x> MiB"
        LlamaLogCapture buffers([this](const std::string & line) {
            const size_t at = line.find(" model buffer size = ");
            const size_t colon = line.find(": ");
            if (at == std::string::npos || colon == std::string::npos || colon > at) return;
            const size_t name_start = line.find_first_not_of(' ', colon + 2);
            const double mib = std::atof(line.c_str() + at + std::strlen(" model buffer size = "));
            weight_buffers_.emplace_back(line.substr(name_start, at - name_start), mib * 1024.0 * 1024.0);
        });
        model_ = llama_model_load_from_file(path.c_str(), mp);
        if (!model_) {
            const std::string why = errors.reason();
            fail(Status::bad_model, "failed to load model file '" + path + "'" + (why.empty() ? "" : ": " + why));
        }
    }
    vocab_ = llama_model_get_vocab(model_);
    try {
        for (size_t i = 0; i < kSpecialCount; ++i) {
            const std::vector<llama_token> ids = tokenize(special_text(static_cast<Special>(i)), true);
            specials_[i] = ids.size() == 1 ? ids[0] : -1;
        }
        // the chat protocol needs these; a plain Qwen3 file without them would silently misbehave
        special_token(Special::im_start);
        special_token(Special::im_end);
    } catch (...) {
        llama_model_free(model_);
        throw;
    }
}

LlmModel::~LlmModel() {
    if (model_) llama_model_free(model_);
}

int LlmModel::n_embd() const { return llama_model_n_embd(model_); }
int LlmModel::n_vocab() const { return llama_vocab_n_tokens(vocab_); }
int LlmModel::n_ctx_train() const { return llama_model_n_ctx_train(model_); }

std::string LlmModel::meta(const char * key) const {
    char small[256];
    const int32_t n = llama_model_meta_val_str(model_, key, small, sizeof(small));
    if (n < 0) return "";
    if (static_cast<size_t>(n) < sizeof(small)) return std::string(small, static_cast<size_t>(n));
    std::string big(static_cast<size_t>(n) + 1, '\0');
    llama_model_meta_val_str(model_, key, big.data(), big.size());
    big.resize(static_cast<size_t>(n));
    return big;
}

std::vector<llama_token> LlmModel::tokenize(std::string_view text, bool parse_special) const {
    const size_t bad = utf8_invalid_offset(text);
    if (bad != std::string_view::npos) {
        fail(Status::invalid_argument, "text is not valid UTF-8 (invalid byte at offset " + std::to_string(bad) + ")");
    }
    if (text.size() > static_cast<size_t>(INT32_MAX / 2)) {
        fail(Status::invalid_argument, "text is too long to tokenize (" + std::to_string(text.size()) + " bytes)");
    }
    std::vector<llama_token> out(text.size() + 2);
    int32_t n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), out.data(),
                               static_cast<int32_t>(out.size()), /*add_special*/ false, parse_special);
    if (n < 0) {
        out.resize(static_cast<size_t>(-n));
        n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), out.data(),
                           static_cast<int32_t>(out.size()), false, parse_special);
    }
    if (n < 0) fail(Status::internal, "tokenization failed");
    out.resize(static_cast<size_t>(n));
    return out;
}

std::string LlmModel::token_bytes(llama_token token) const { return piece(token, true); }
std::string LlmModel::token_text(llama_token token) const { return piece(token, false); }

std::string LlmModel::piece(llama_token token, bool special) const {
    if (token < 0 || token >= n_vocab()) {
        fail(Status::invalid_argument, "token id " + std::to_string(token) + " is outside the vocabulary (0.." +
                                           std::to_string(n_vocab() - 1) + ")");
    }
    char buf[128];
    int32_t n = llama_token_to_piece(vocab_, token, buf, sizeof(buf), 0, special);
    if (n >= 0) return std::string(buf, static_cast<size_t>(n));
    std::string big(static_cast<size_t>(-n), '\0');
    n = llama_token_to_piece(vocab_, token, big.data(), static_cast<int32_t>(big.size()), 0, special);
    big.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return big;
}

std::string LlmModel::detokenize(const std::vector<llama_token> & tokens) const {
    std::string out;
    for (llama_token t : tokens) out += token_bytes(t);
    return out;
}

bool LlmModel::is_eog(llama_token token) const { return llama_vocab_is_eog(vocab_, token); }

llama_token LlmModel::special_token(Special s) const {
    const llama_token id = specials_[static_cast<size_t>(s)];
    if (id < 0) {
        fail(Status::bad_model, "model file '" + path_ + "' has no single token for '" + special_text(s) +
                                    "': not a MiniCPM-o tokenizer");
    }
    return id;
}

}  // namespace minicpmo
