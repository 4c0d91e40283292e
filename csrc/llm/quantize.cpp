#include "llm/quantize.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <utility>

#include "core/error.h"
#include "core/gguf_header.h"
#include "core/llama_log.h"
#include "llama.h"

namespace minicpmo {

namespace {

const std::vector<std::pair<std::string, llama_ftype>> & type_table() {
    static const std::vector<std::pair<std::string, llama_ftype>> table = {
        // largest first (nominal bits per weight); BF16/F16 and Q5_K_S/Q5_0 have equal nominal sizes
        {"BF16", LLAMA_FTYPE_MOSTLY_BF16},     {"F16", LLAMA_FTYPE_MOSTLY_F16},
        {"Q8_0", LLAMA_FTYPE_MOSTLY_Q8_0},     {"Q6_K", LLAMA_FTYPE_MOSTLY_Q6_K},
        {"Q5_1", LLAMA_FTYPE_MOSTLY_Q5_1},     {"Q5_K_M", LLAMA_FTYPE_MOSTLY_Q5_K_M},
        {"Q5_K_S", LLAMA_FTYPE_MOSTLY_Q5_K_S}, {"Q5_0", LLAMA_FTYPE_MOSTLY_Q5_0},
        {"Q4_1", LLAMA_FTYPE_MOSTLY_Q4_1},     {"Q4_K_M", LLAMA_FTYPE_MOSTLY_Q4_K_M},
        {"Q4_K_S", LLAMA_FTYPE_MOSTLY_Q4_K_S}, {"Q4_0", LLAMA_FTYPE_MOSTLY_Q4_0},
        {"Q3_K_L", LLAMA_FTYPE_MOSTLY_Q3_K_L}, {"Q3_K_M", LLAMA_FTYPE_MOSTLY_Q3_K_M},
        {"Q3_K_S", LLAMA_FTYPE_MOSTLY_Q3_K_S}, {"Q2_K", LLAMA_FTYPE_MOSTLY_Q2_K},
    };
    return table;
}

// libllama reports a failed write only as "iostream error"; the usual cause is a full disk, so the
// error says how much room the output's folder had when that room was less than the input's size
// (an upper bound of every size made from an F16/BF16/F32 input).
std::string room_note(const std::string & in_path, const std::string & out_path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path parent = fs::absolute(fs::path(out_path), ec).parent_path();
    const fs::space_info room = fs::space(parent, ec);
    if (ec) return "";
    const std::uintmax_t need = fs::file_size(in_path, ec);
    if (ec || room.available >= need) return "";
    const auto mib = [](std::uintmax_t b) { return std::to_string(b >> 20) + " MiB"; };
    return " (the output's folder '" + parent.string() + "' has " + mib(room.available) +
           " free; this size can need up to " + mib(need) + ")";
}

std::string upper(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return s;
}

}  // namespace

const std::vector<std::string> & quantize_type_names() {
    static const std::vector<std::string> names = [] {
        std::vector<std::string> n;
        for (const auto & e : type_table()) n.push_back(e.first);
        return n;
    }();
    return names;
}

void quantize_llm(const std::string & in_path, const std::string & out_path, const std::string & type,
                  int n_threads, const std::function<void(const std::string &)> & progress) {
    const std::string want = upper(type);
    const auto & table = type_table();
    const auto it = std::find_if(table.begin(), table.end(), [&](const auto & e) { return e.first == want; });
    if (it == table.end()) {
        std::string known;
        for (const auto & e : table) known += (known.empty() ? "" : ", ") + e.first;
        fail(Status::invalid_argument, "unknown quantization type '" + type + "' (known: " + known + ")");
    }
    {
        GgufHeader h(in_path, "model file");  // clear errors for missing / non-GGUF input
        if (h.architecture() != "qwen3") {
            fail(Status::bad_model, "model file '" + in_path + "' has architecture '" + h.architecture() +
                                        "'; only the qwen3 LLM file is quantized this way");
        }
    }
    if (out_path.empty() || out_path == in_path) {
        fail(Status::invalid_argument, "the output path must differ from the input '" + in_path + "'");
    }
    llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.ftype = it->second;
    qp.nthread = n_threads;
    LlamaLogCapture capture(progress ? progress : [](const std::string &) {});
    LlamaErrorCapture errors;  // libllama's reason goes into our error (printed once)
    // every metadata key of the input is copied, minicpmo.llm_fingerprint included (see omni_file.h)
    const uint32_t rc = llama_model_quantize(in_path.c_str(), out_path.c_str(), &qp);
    if (rc != 0) {
        const std::string why = errors.reason();
        fail(Status::internal, "quantizing '" + in_path + "' to " + want + " into '" + out_path + "' failed" +
                                   (why.empty() ? "" : ": " + why) + room_note(in_path, out_path));
    }
}

}  // namespace minicpmo
