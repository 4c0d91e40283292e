// The `minicpmo-omni` companion GGUF (vision, audio, speech components and voices). For now the
// runtime reads and checks its header; components are loaded by their own modules as they land.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace minicpmo {

inline constexpr const char * kOmniArchitecture = "minicpmo-omni";
inline constexpr const char * kOmniFileKey = "minicpmo.omni_file";  // key in the LLM GGUF
// In both files: a hash of the LLM the converter wrote (convert/llm_fingerprint.py), so a companion
// from another conversion is refused. libllama's quantizer copies every key, so it survives.
inline constexpr const char * kLlmFingerprintKey = "minicpmo.llm_fingerprint";

// The LLM a companion is loaded for.
struct LlmIdentity {
    std::string path;
    int64_t n_embd = 0;       // > 0: the companion must project into this width
    std::string fingerprint;  // the LLM file's kLlmFingerprintKey ("" when it has none)
};

struct OmniInfo {
    std::string path;
    std::string version;                  // minicpmo.version, e.g. "4.5"
    int64_t llm_embedding_length = 0;     // LLM width the components project into
    std::vector<std::string> components;  // e.g. {"vision", "audio", "tts", "token2wav"}
    // tokenizer_config.bad_token_ids: ids streaming / duplex decoding never emits (spec §4.2)
    std::vector<int32_t> bad_token_ids;
    std::string llm_fingerprint;  // kLlmFingerprintKey ("" in files of older converters)
    // Problems that do not stop the load (files without fingerprints), for the front ends to show.
    std::vector<std::string> warnings;
};

// Reads and validates the companion's header and tensor table; throws naming the file when it is
// missing, corrupt or truncated (every tensor's data range is checked), of another architecture,
// built for an LLM of a different width, or made by another conversion than `llm` (fingerprints
// differ; the error names both files). A pair where either file lacks the fingerprint loads with a
// warning in OmniInfo::warnings.
OmniInfo load_omni_info(const std::string & path, const LlmIdentity & llm);

// Where the companion of `llm_path` is: explicit path if given, else the directory of the LLM file
// joined with the name in its `minicpmo.omni_file` key; "" when neither exists.
std::string resolve_omni_path(const std::string & llm_path, const std::string & key_value);

}  // namespace minicpmo
