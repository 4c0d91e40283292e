// LLM quantization through libllama's quantizer (the 16 sizes of DESIGN §2).
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace minicpmo {

// The 16 supported type names, largest first.
const std::vector<std::string> & quantize_type_names();

// Writes `out_path` as `type` (case-insensitive name from quantize_type_names()). Lines of
// libllama's progress go to `progress` when given. Throws naming the file or the type on failure.
void quantize_llm(const std::string & in_path, const std::string & out_path, const std::string & type,
                  int n_threads, const std::function<void(const std::string &)> & progress);

}  // namespace minicpmo
