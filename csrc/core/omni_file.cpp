#include "core/omni_file.h"

#include <cstdint>

#include "core/error.h"
#include "core/gguf_header.h"

namespace minicpmo {

namespace {

void check_same_conversion(OmniInfo & info, const LlmIdentity & llm) {
    if (!info.llm_fingerprint.empty() && !llm.fingerprint.empty()) {
        if (info.llm_fingerprint != llm.fingerprint) {
            fail(Status::bad_model, "omni file '" + info.path + "' does not belong to model file '" + llm.path +
                                        "': they come from different conversions (" + kLlmFingerprintKey + " " +
                                        info.llm_fingerprint.substr(0, 16) + "... vs " +
                                        llm.fingerprint.substr(0, 16) +
                                        "...); use the companion converted together with this LLM file");
        }
        return;
    }
    std::string which;
    if (info.llm_fingerprint.empty()) which = "omni file '" + info.path + "'";
    if (llm.fingerprint.empty()) which += (which.empty() ? "" : " and ") + ("model file '" + llm.path + "'");
    info.warnings.push_back(which + (info.llm_fingerprint.empty() && llm.fingerprint.empty() ? " carry" : " carries") +
                            " no " + kLlmFingerprintKey + " (made by an older converter), so whether the two files "
                            "belong together cannot be checked; convert again to get the check");
}

}  // namespace

OmniInfo load_omni_info(const std::string & path, const LlmIdentity & llm) {
    const int64_t expected_llm_n_embd = llm.n_embd;
    GgufHeader h(path, "omni file");
    const std::string arch = h.architecture();
    if (arch != kOmniArchitecture) {
        fail(Status::bad_model, "omni file '" + path + "' has architecture '" + arch + "', expected '" +
                                    kOmniArchitecture + "'");
    }
    h.check_tensor_bounds();
    OmniInfo info;
    info.path = path;
    info.version = h.get_str("minicpmo.version").value_or("");
    info.llm_embedding_length = h.get_int("minicpmo.llm.embedding_length").value_or(0);
    info.components = h.get_str_array("minicpmo.components");
    if (const auto bad = h.get_int_array("minicpmo.bad_token_ids")) {
        for (int64_t id : *bad) {
            if (id < 0 || id > INT32_MAX) fail(Status::bad_model, "omni file '" + path + "': bad_token_ids holds the invalid id " + std::to_string(id));
            info.bad_token_ids.push_back(static_cast<int32_t>(id));
        }
    } else if (h.has("minicpmo.bad_token_ids")) {
        // the ids the reply must never contain: a malformed list is refused, not ignored
        fail(Status::bad_model, "omni file '" + path + "': minicpmo.bad_token_ids is not an array of integers");
    }
    if (expected_llm_n_embd > 0 && info.llm_embedding_length > 0 && info.llm_embedding_length != expected_llm_n_embd) {
        fail(Status::bad_model, "omni file '" + path + "' was made for an LLM of width " +
                                    std::to_string(info.llm_embedding_length) + ", but the LLM has width " +
                                    std::to_string(expected_llm_n_embd));
    }
    info.llm_fingerprint = h.get_str(kLlmFingerprintKey).value_or("");
    check_same_conversion(info, llm);
    return info;
}

std::string resolve_omni_path(const std::string & llm_path, const std::string & key_value) {
    if (key_value.empty()) return "";
    if (key_value.find('/') != std::string::npos || key_value.find('\\') != std::string::npos) {
        // the key names a file beside the LLM, never a path elsewhere (a hostile file could point anywhere)
        return "";
    }
    const size_t slash = llm_path.find_last_of("/\\");
    const std::string dir = slash == std::string::npos ? std::string() : llm_path.substr(0, slash + 1);
    return dir + key_value;
}

}  // namespace minicpmo
