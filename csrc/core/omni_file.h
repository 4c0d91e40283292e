// The `minicpmo-omni` companion GGUF (vision, audio, speech components and voices). For now the
// runtime reads and checks its header; components are loaded by their own modules as they land.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace minicpmo {

inline constexpr const char * kOmniArchitecture = "minicpmo-omni";
inline constexpr const char * kOmniFileKey = "minicpmo.omni_file";  // key in the LLM GGUF

struct OmniInfo {
    std::string path;
    std::string version;                  // minicpmo.version, e.g. "4.5"
    int64_t llm_embedding_length = 0;     // LLM width the components project into
    std::vector<std::string> components;  // e.g. {"vision", "audio", "tts", "token2wav"}
    // tokenizer_config.bad_token_ids: ids streaming / duplex decoding never emits (spec §4.2)
    std::vector<int32_t> bad_token_ids;
};

// Reads and validates the companion's header; throws naming the file when it is missing, corrupt,
// of another architecture, or built for an LLM of a different width (expected_llm_n_embd > 0).
OmniInfo load_omni_info(const std::string & path, int64_t expected_llm_n_embd);

// Where the companion of `llm_path` is: explicit path if given, else the directory of the LLM file
// joined with the name in its `minicpmo.omni_file` key; "" when neither exists.
std::string resolve_omni_path(const std::string & llm_path, const std::string & key_value);

}  // namespace minicpmo
