// Python binding of the S3 speech tokenizer (csrc/voice/speech_tokenizer), so tests and benchmarks can
// compare its log-mel, FSQ values and ids with numpy and onnxruntime. The runtime itself needs no Python.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <memory>
#include <string>

#include "python/numpy_arrays.h"
#include "voice/speech_tokenizer.h"

namespace py = pybind11;
using namespace minicpmo;

void bind_speech_tokenizer(py::module_ & m) {
    py::class_<SpeechTokenizer, std::shared_ptr<SpeechTokenizer>>(m, "SpeechTokenizer")
        .def(py::init([](const std::string & omni_path) {
                 py::gil_scoped_release release;
                 return std::make_shared<SpeechTokenizer>(omni_path);
             }),
             py::arg("omni_path"), "the speech_tokenizer component of an omni file, on the CPU")
        .def(
            "log_mel",
            [](const SpeechTokenizer & t, const py::object & pcm) {
                const minicpmo_py::F32Array x = minicpmo_py::checked_f32(pcm, 1, "pcm");
                LogMelSpectrogram mel;
                {
                    py::gil_scoped_release release;
                    mel = t.log_mel(x.data(), size_t(x.size()));
                }
                py::array_t<float> a({py::ssize_t(mel.n_mel), py::ssize_t(mel.n_frames)});
                std::memcpy(a.mutable_data(), mel.data.data(), mel.data.size() * sizeof(float));
                return a;
            },
            py::arg("pcm"), "float32 (n_mel, n_frames) log-mel of 16 kHz PCM")
        .def(
            "tokenize",
            [](const SpeechTokenizer & t, const py::object & pcm, int n_threads) {
                const minicpmo_py::F32Array x = minicpmo_py::checked_f32(pcm, 1, "pcm");
                SpeechTokens r;
                {
                    py::gil_scoped_release release;
                    r = t.tokenize(x.data(), size_t(x.size()), n_threads);
                }
                const int d = t.hparams().fsq_dim;
                py::array_t<int32_t> ids(py::ssize_t(r.ids.size()));
                std::memcpy(ids.mutable_data(), r.ids.data(), r.ids.size() * sizeof(int32_t));
                py::array_t<float> values({py::ssize_t(r.ids.size()), py::ssize_t(d)});
                std::memcpy(values.mutable_data(), r.fsq_values.data(), r.fsq_values.size() * sizeof(float));
                return py::make_tuple(ids, values);
            },
            py::arg("pcm"), py::arg("n_threads") = 1,
            "(ids int32 (T,), FSQ values before rounding float32 (T, fsq_dim)) of 16 kHz PCM");
}
