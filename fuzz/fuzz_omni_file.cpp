// The omni companion loader: GGUF header (keys, tensor table), load_omni_info (architecture,
// version, components, bad_token_ids) and GgufWeights (every tensor's shape, type, offset and
// size, read into a CPU buffer). Any input must load or fail with minicpmo::Error.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "core/gguf_header.h"
#include "core/gguf_weights.h"
#include "core/omni_file.h"
#include "fuzz_input.h"
#include "ggml-backend.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    static const fuzz::ScratchFile file(".gguf");
    const std::string & path = file.write(data, size);
    try {
        const minicpmo::OmniInfo info = minicpmo::load_omni_info(path, minicpmo::LlmIdentity{});  // no LLM to match
        (void) info;
    } catch (const minicpmo::Error &) {
    }
    try {
        // every tensor (empty prefix), as the vision / audio / speech models load theirs
        minicpmo::GgufWeights w(path, "omni file", {""}, ggml_backend_cpu_buffer_type());
        if (w.n_bytes() == 0 && w.n_tensors() > 0) fuzz::violated("tensors loaded into an empty buffer");
        (void) w.header().get_float_array("minicpmo.audio.mel_filters");
        (void) w.header().get_int_array("minicpmo.bad_token_ids");
        (void) w.header().get_float("minicpmo.tts.temperature");
        (void) w.header().get_bool("minicpmo.vision.use_slices");
        try {
            (void) w.require_int("minicpmo.llm.embedding_length", 1, 1 << 20);
        } catch (const minicpmo::Error &) {
        }
    } catch (const minicpmo::Error &) {
    }
    return 0;
}
