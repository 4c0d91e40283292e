// pybind11 module minicpmo_cpp._testing: the per-stage entry points the tests and benchmarks need and
// the package does not (image preprocessing steps, log-mel, the speech components on their own, the
// duplex decision, the session's encoder / decoder / KV-cache hooks). Built and installed with _core;
// imported only by tests/ and bench/. Its functions take and return _core's types (Session, Model,
// ...), which pybind11 shares between the two modules, so _core is imported first.
#include <pybind11/pybind11.h>

#include <string>

#include "core/llama_log.h"
#include "llama.h"

namespace py = pybind11;

void bind_hooks(py::module_ & m);                        // hooks.cpp (SessionHooks, ..., hooks())
void bind_testing_image_preprocess(py::module_ & m);     // bind_image_preprocess.cpp
void bind_audio_frontend(py::module_ & m);               // bind_audio_frontend.cpp (log-mel, StreamingMel)
void bind_flow(py::module_ & m);                         // bind_flow.cpp (Token2Wav flow)
void bind_speech(py::module_ & m);                       // bind_speech.cpp (HiFT vocoder)
void bind_speech_stream(py::module_ & m);                // bind_speech_stream.cpp (streaming Token2Wav)
void bind_tts_stream(py::module_ & m);                   // bind_tts_stream.cpp (simplex / duplex speech tokens)
void bind_duplex_decode(py::module_ & m);                // bind_duplex_decode.cpp (duplex decision)
void bind_cpu_kernels(py::module_ & m);                  // bind_cpu_kernels.cpp (vectorised sine, exp, softmax)
void bind_voice_frontend(py::module_ & m);               // bind_voice_frontend.cpp (voice resampler, prompt mel)
void bind_speech_tokenizer(py::module_ & m);             // bind_speech_tokenizer.cpp (S3 speech tokenizer v2)
void bind_speaker_encoder(py::module_ & m);              // bind_speaker_encoder.cpp (CAM++, Kaldi fbank)

PYBIND11_MODULE(_testing, m) {
    m.doc() = "minicpmo-cpp test hooks (not public API)";
    // registers Session, Model, ... and the MinicpmoError translation this module's functions rely on
    const py::module_ core = py::module_::import("minicpmo_cpp._core");
    m.attr("MinicpmoError") = core.attr("MinicpmoError");
    bind_hooks(m);
    bind_testing_image_preprocess(m);
    bind_audio_frontend(m);
    bind_flow(m);
    bind_speech(m);
    bind_speech_stream(m);
    bind_tts_stream(m);
    bind_duplex_decode(m);
    bind_cpu_kernels(m);
    bind_voice_frontend(m);
    bind_speech_tokenizer(m);
    bind_speaker_encoder(m);
    m.def("system_info", [] {
        minicpmo::ensure_llama_initialized();
        return std::string(llama_print_system_info());
    }, "ggml CPU features and backends of this build (which kernels run)");
}
