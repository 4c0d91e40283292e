// Python bindings of the voice-cloning front ends (csrc/voice): the reference's sinc resampler and
// the prompt mel, so tests can compare them with the numpy and torch formulas. The runtime itself
// needs no Python.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <vector>

#include "python/numpy_arrays.h"
#include "voice/prompt_mel.h"
#include "voice/sinc_resample.h"

namespace py = pybind11;
using namespace minicpmo;

namespace {

py::array_t<float> to_array(const std::vector<float> & v, py::ssize_t rows, py::ssize_t cols) {
    py::array_t<float> a(rows < 0 ? std::vector<py::ssize_t>{cols} : std::vector<py::ssize_t>{rows, cols});
    if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(float));
    return a;
}

}  // namespace

void bind_voice_frontend(py::module_ & m) {
    m.def(
        "voice_resample",
        [](const py::object & pcm, int orig_rate, int new_rate) {
            const auto x = minicpmo_py::checked_f32(pcm, 1, "pcm");
            std::vector<float> y;
            {
                py::gil_scoped_release release;
                y = sinc_hann_resample(x.data(), size_t(x.size()), orig_rate, new_rate);
            }
            return to_array(y, -1, py::ssize_t(y.size()));
        },
        py::arg("pcm"), py::arg("orig_rate"), py::arg("new_rate"),
        "torchaudio's sinc_interp_hann resampling of float32 PCM (csrc/voice/sinc_resample.h)");
    m.def(
        "voice_prompt_mel",
        [](const py::object & pcm, int sample_rate, int n_fft, int hop, int n_mel, double f_min, double f_max) {
            const auto x = minicpmo_py::checked_f32(pcm, 1, "pcm");
            PromptMelConfig c;
            c.sample_rate = sample_rate;
            c.n_fft = n_fft;
            c.hop = hop;
            c.n_mel = n_mel;
            c.f_min = f_min;
            c.f_max = f_max;
            std::vector<float> mel;
            {
                py::gil_scoped_release release;
                mel = PromptMel(c).compute(x.data(), size_t(x.size()));
            }
            return to_array(mel, py::ssize_t(mel.size() / size_t(n_mel)), n_mel);
        },
        py::arg("pcm"), py::arg("sample_rate") = 24000, py::arg("n_fft") = 1920, py::arg("hop") = 480,
        py::arg("n_mel") = 80, py::arg("f_min") = 0.0, py::arg("f_max") = 8000.0,
        "the voice prompt's log-mel (frames, n_mel) of float32 PCM (csrc/voice/prompt_mel.h)");
    m.def(
        "voice_fit_mel_frames",
        [](const py::object & mel, size_t n_frames) {
            const auto a = minicpmo_py::checked_f32(mel, 2, "mel");
            const int n_mel = int(a.shape(1));
            std::vector<float> out = fit_mel_frames(std::vector<float>(a.data(), a.data() + a.size()), n_mel, n_frames);
            return to_array(out, py::ssize_t(n_frames), n_mel);
        },
        py::arg("mel"), py::arg("n_frames"), "replicate-pad or cut a (frames, n_mel) mel to n_frames");
}
