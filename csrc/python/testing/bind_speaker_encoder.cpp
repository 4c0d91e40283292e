// Python bindings of the CAM++ speaker encoder (csrc/voice/speaker_encoder.h) and its Kaldi fbank
// front end, loaded from an omni file on their own so tests compare them with onnxruntime and numpy.
// The GIL is released around every computation.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <string>
#include <vector>

#include "core/compute_backend.h"
#include "core/error.h"
#include "python/numpy_arrays.h"
#include "voice/kaldi_fbank.h"
#include "voice/speaker_encoder.h"

namespace py = pybind11;
using namespace minicpmo;

namespace {

using minicpmo_py::F32Array;
using minicpmo_py::checked_f32;
using minicpmo_py::shape_text;

py::array_t<float> frames_array(const std::vector<float> & v, int n_mel) {
    const py::ssize_t frames = static_cast<py::ssize_t>(v.size() / n_mel);
    py::array_t<float> out({frames, static_cast<py::ssize_t>(n_mel)});
    std::copy(v.begin(), v.end(), out.mutable_data());
    return out;
}

}  // namespace

void bind_speaker_encoder(py::module_ & m) {
    m.def("kaldi_fbank", [](const py::object & pcm, int sample_rate, int n_mel) {
              F32Array a = checked_f32(pcm, 1, "pcm");
              KaldiFbankConfig c;
              c.sample_rate = sample_rate;
              c.n_mel = n_mel;
              std::vector<float> out;
              {
                  py::gil_scoped_release release;
                  out = KaldiFbank(c).compute(a.data(), static_cast<size_t>(a.shape(0)));
              }
              return frames_array(out, n_mel);
          }, py::arg("pcm"), py::arg("sample_rate") = 16000, py::arg("n_mel") = 80,
          "Kaldi fbank (25/10 ms, povey, pre-emphasis 0.97, 20 Hz..Nyquist, dither 0): (T, n_mel) float32.");

    py::class_<SpeakerEncoder>(m, "SpeakerEncoder",
                               "CAM++ speaker encoder of an omni file's speaker_encoder component: 16 kHz mono "
                               "float32 audio -> the speaker x-vector.")
        .def(py::init([](const std::string & omni_path, const std::string & device) {
                 py::gil_scoped_release release;
                 return std::make_unique<SpeakerEncoder>(omni_path, resolve_device(device));
             }),
             py::arg("omni_path"), py::arg("device") = "cpu")
        .def_property_readonly("sample_rate", [](const SpeakerEncoder & e) { return e.hparams().fbank.sample_rate; })
        .def_property_readonly("n_mel", [](const SpeakerEncoder & e) { return e.hparams().fbank.n_mel; })
        .def_property_readonly("embedding_length", [](const SpeakerEncoder & e) { return e.hparams().embedding_length; })
        .def_property_readonly("min_samples", &SpeakerEncoder::min_samples)
        .def_property_readonly("max_samples", &SpeakerEncoder::max_samples)
        .def("features", [](const SpeakerEncoder & e, const py::object & pcm) {
                 F32Array a = checked_f32(pcm, 1, "pcm");
                 std::vector<float> out;
                 {
                     py::gil_scoped_release release;
                     out = e.features(a.data(), static_cast<size_t>(a.shape(0)));
                 }
                 return frames_array(out, e.hparams().fbank.n_mel);
             }, py::arg("pcm"), "The network's input: the fbank minus its per-utterance mean, (T, n_mel).")
        .def("embed", [](const SpeakerEncoder & e, const py::object & pcm, int n_threads) {
                 F32Array a = checked_f32(pcm, 1, "pcm");
                 std::vector<float> out;
                 {
                     py::gil_scoped_release release;
                     out = e.embed(a.data(), static_cast<size_t>(a.shape(0)), n_threads);
                 }
                 return minicpmo_py::to_f32_array(out);
             }, py::arg("pcm"), py::arg("n_threads") = 1, "The x-vector (embedding_length,) of 16 kHz audio.")
        .def("embed_features", [](const SpeakerEncoder & e, const py::object & feats, int n_threads) {
                 F32Array a = checked_f32(feats, 2, "feats");
                 if (a.shape(1) != e.hparams().fbank.n_mel) {
                     fail(Status::invalid_argument, "feats must have shape (T, " + std::to_string(e.hparams().fbank.n_mel) +
                                                        "), got " + shape_text(a));
                 }
                 std::vector<float> out;
                 {
                     py::gil_scoped_release release;
                     out = e.embed_features(a.data(), a.shape(0), n_threads);
                 }
                 return minicpmo_py::to_f32_array(out);
             }, py::arg("feats"), py::arg("n_threads") = 1, "The x-vector from ready features (T, n_mel).");
}
