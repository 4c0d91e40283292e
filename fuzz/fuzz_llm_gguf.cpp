// GGUF files that reach libllama through our LLM loader (LlmModel: our header check, then
// llama_model_load_from_file without mmap, then the special-token lookups). Covers the shapes of
// past llama.cpp GGUF CVEs (huge key / tensor counts, string lengths, tensor offsets and sizes that
// overflow, n_dims > 4) as seeds (fuzz/make_seeds.py). Any input must load or fail with
// minicpmo::Error.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "fuzz_input.h"
#include "llm/llm_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    static const fuzz::ScratchFile file(".gguf");
    const std::string & path = file.write(data, size);
    minicpmo::LlmModelParams params;
    params.n_gpu_layers = 0;
    params.use_mmap = false;
    try {
        minicpmo::LlmModel model(path, params, nullptr);  // the CPU
        (void) model.n_vocab();
        (void) model.meta("general.name");
    } catch (const minicpmo::Error &) {
    }
    return 0;
}
