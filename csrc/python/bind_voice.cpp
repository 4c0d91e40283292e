// Voices cloned at run time (session/cloned_voice.h): Model.clone_voice(pcm, sample_rate) gives a
// Voice whose name every speaking call of the model's sessions takes, until it is released or
// garbage-collected.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <memory>

#include "python/numpy_arrays.h"
#include "session/cloned_voice.h"
#include "session/omni_model.h"
#include "voice/voice_clone.h"

namespace py = pybind11;
using namespace minicpmo;

void bind_voice(py::module_ & m) {
    py::class_<ClonedVoice, std::shared_ptr<ClonedVoice>>(m, "Voice")
        .def_property_readonly("name", &ClonedVoice::name)
        .def_property_readonly("tokens",
                               [](const ClonedVoice & v) {
                                   const auto & t = v.prompt().tokens;
                                   py::array_t<int32_t> a(static_cast<py::ssize_t>(t.size()));
                                   std::memcpy(a.mutable_data(), t.data(), t.size() * sizeof(int32_t));
                                   return a;
                               })
        .def_property_readonly("spk",
                               [](const ClonedVoice & v) {
                                   const auto & s = v.prompt().spk;
                                   py::array_t<float> a(static_cast<py::ssize_t>(s.size()));
                                   std::memcpy(a.mutable_data(), s.data(), s.size() * sizeof(float));
                                   return a;
                               })
        .def_property_readonly("mel", [](const ClonedVoice & v) {
            const VoicePrompt & p = v.prompt();
            const py::ssize_t n_mel = p.n_mel, frames = static_cast<py::ssize_t>(p.mel.size()) / n_mel;
            py::array_t<float> a({frames, n_mel});
            std::memcpy(a.mutable_data(), p.mel.data(), p.mel.size() * sizeof(float));
            return a;
        });
    m.def(
        "clone_voice",
        [](const std::shared_ptr<OmniModel> & model, const py::object & pcm, int sample_rate, int n_threads) {
            const auto x = minicpmo_py::checked_f32(pcm, 1, "pcm");
            py::gil_scoped_release release;
            return std::make_shared<ClonedVoice>(*model, x.data(), static_cast<size_t>(x.size()), sample_rate, n_threads);
        },
        py::arg("model"), py::arg("pcm"), py::arg("sample_rate"), py::arg("n_threads") = 0,
        "a voice cloned from mono float32 PCM at sample_rate with the omni file's voice encoders");
    m.def(
        "clone_voice_prompt",
        [](const std::string & omni_path, const py::object & pcm, int sample_rate, int n_threads) {
            const auto x = minicpmo_py::checked_f32(pcm, 1, "pcm");
            VoicePrompt p;
            {
                py::gil_scoped_release release;
                p = VoiceCloner(omni_path, nullptr, true).clone(x.data(), static_cast<size_t>(x.size()), sample_rate, n_threads);
            }
            py::array_t<int32_t> tokens(static_cast<py::ssize_t>(p.tokens.size()));
            std::memcpy(tokens.mutable_data(), p.tokens.data(), p.tokens.size() * sizeof(int32_t));
            py::array_t<float> spk(static_cast<py::ssize_t>(p.spk.size()));
            std::memcpy(spk.mutable_data(), p.spk.data(), p.spk.size() * sizeof(float));
            py::array_t<float> mel({static_cast<py::ssize_t>(p.mel.size() / p.n_mel), static_cast<py::ssize_t>(p.n_mel)});
            std::memcpy(mel.mutable_data(), p.mel.data(), p.mel.size() * sizeof(float));
            return py::make_tuple(tokens, spk, mel);
        },
        py::arg("omni_path"), py::arg("pcm"), py::arg("sample_rate"), py::arg("n_threads") = 0,
        "(tokens, spk, mel) of a voice cloned on the CPU with an omni file's voice encoders, no LLM loaded "
        "(the converter's --add-voice)");
}
