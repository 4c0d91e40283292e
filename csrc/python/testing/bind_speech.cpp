// Python bindings of the speech-output components that tests drive directly: the HiFT vocoder
// (csrc/token2wav/hift_vocoder.h), loaded from an omni file on its own so it can be compared with the
// numpy reference with injected source randomness. The GIL is released around every computation.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/compute_backend.h"
#include "core/error.h"
#include "python/numpy_arrays.h"
#include "python/speech_args.h"
#include "token2wav/hift_model.h"
#include "token2wav/hift_vocoder.h"

namespace py = pybind11;
using namespace minicpmo;

namespace {

using minicpmo_py::F32Array;
using minicpmo_py::checked_f32;
using minicpmo_py::checked_source_random;
using minicpmo_py::shape_text;
using minicpmo_py::to_f32_array;

// mel as (n_mel, T) float32; T = 0 only where `allow_empty`
F32Array checked_mel(const HiftVocoder & v, const py::object & obj, bool allow_empty) {
    F32Array a = checked_f32(obj, 2, "mel");
    const int n_mel = v.model().hparams().n_mel;
    if (a.shape(0) != n_mel || (a.shape(1) == 0 && !allow_empty) || a.shape(1) > INT32_MAX) {
        fail(Status::invalid_argument, "mel must have shape (" + std::to_string(n_mel) + ", T) with T > 0, got " +
                                           shape_text(a));
    }
    return a;
}

// The injected source randomness: both or neither of phases (H+1,) and noise (n_samples, H+1).
std::optional<HiftSourceRandom> checked_random(const HiftVocoder & v, const py::object & phases,
                                               const py::object & noise, int64_t n_samples) {
    if (phases.is_none() && noise.is_none()) return std::nullopt;
    if (phases.is_none() || noise.is_none()) fail(Status::invalid_argument, "give both phases and noise, or neither");
    return checked_source_random(phases, noise, v.model().hparams().n_harmonic_sines(), n_samples, "this call");
}

HiftMel mel_view(const F32Array & a) { return HiftMel{a.data(), static_cast<int>(a.shape(1))}; }

}  // namespace

void bind_speech(py::module_ & m) {
    py::class_<HiftVocoder>(m, "HiftVocoder",
                            "HiFT vocoder of an omni file's token2wav component: 80-bin log-mel (n_mel, T) at "
                            "50 Hz -> 24 kHz float32 samples.")
        .def(py::init([](const std::string & omni_path, int n_threads, const std::string & device, uint64_t seed,
                         const std::string & compute_type) {
                 py::gil_scoped_release release;
                 auto model = std::make_shared<const HiftModel>(omni_path, resolve_device(device));
                 return std::make_unique<HiftVocoder>(std::move(model), resolve_device(device), n_threads, seed,
                                                      resolve_compute_type(compute_type));
             }),
             py::arg("omni_path"), py::arg("n_threads") = 0, py::arg("device") = "cpu", py::arg("seed") = 0,
             py::arg("compute_type") = "f32",
             "compute_type \"bf16\" (as a BF16 session): the products through oneDNN's F32 kernels; \"f32\" "
             "(the default here): ggml's. F32 arithmetic either way.")
        .def_property_readonly("sample_rate", [](const HiftVocoder & v) { return v.model().hparams().sample_rate; })
        .def_property_readonly("hop_samples", [](const HiftVocoder & v) { return v.model().hparams().hop_samples(); })
        .def_property_readonly("n_mel", [](const HiftVocoder & v) { return v.model().hparams().n_mel; })
        .def_property_readonly("n_sines", [](const HiftVocoder & v) { return v.model().hparams().n_harmonic_sines(); })
        .def_property_readonly("weights_f32", [](const HiftVocoder & v) { return v.model().weights_f32(); })
        .def("set_n_threads", &HiftVocoder::set_n_threads, py::arg("n_threads"))
        .def("reseed", &HiftVocoder::reseed, py::arg("seed"))
        .def("f0", [](HiftVocoder & v, const py::object & mel) {
                 F32Array a = checked_mel(v, mel, false);
                 std::vector<float> out;
                 {
                     py::gil_scoped_release release;
                     out = v.f0(mel_view(a));
                 }
                 return to_f32_array(out);
             }, py::arg("mel"), "Frame-rate F0 (Hz), shape (T,).")
        .def("forward", [](HiftVocoder & v, const py::object & mel, const py::object & phases, const py::object & noise,
                           const py::object & cache_source, const py::object & f0) {
                 F32Array a = checked_mel(v, mel, false);
                 const int64_t L = a.shape(1) * static_cast<int64_t>(v.model().hparams().hop_samples());
                 auto random = checked_random(v, phases, noise, L);
                 std::optional<F32Array> cache;
                 if (!cache_source.is_none()) cache = checked_f32(cache_source, 1, "cache_source");
                 std::optional<F32Array> f0_in;
                 if (!f0.is_none()) {
                     f0_in = checked_f32(f0, 1, "f0");
                     if (f0_in->shape(0) != a.shape(1)) {
                         fail(Status::invalid_argument, "f0 must have one value per mel frame (" +
                                                            std::to_string(a.shape(1)) + "), got " + shape_text(*f0_in));
                     }
                 }
                 HiftForward r;
                 {
                     py::gil_scoped_release release;
                     r = v.forward(mel_view(a), cache ? cache->data() : nullptr,
                                   cache ? static_cast<int>(std::min<py::ssize_t>(cache->shape(0), INT32_MAX)) : 0,
                                   random ? &*random : nullptr, f0_in ? f0_in->data() : nullptr);
                 }
                 return py::make_tuple(to_f32_array(r.audio), to_f32_array(r.source));
             }, py::arg("mel"), py::arg("phases") = py::none(), py::arg("noise") = py::none(),
             py::arg("cache_source") = py::none(), py::arg("f0") = py::none(),
             "One HiFT pass -> (audio, source); cache_source replaces the first source samples, f0 (T,) the "
             "predicted F0.")
        .def("synthesize", [](HiftVocoder & v, const py::object & mel, const py::object & phases,
                              const py::object & noise) {
                 F32Array a = checked_mel(v, mel, false);
                 const int64_t L = a.shape(1) * static_cast<int64_t>(v.model().hparams().hop_samples());
                 auto random = checked_random(v, phases, noise, L);
                 std::vector<float> out;
                 {
                     py::gil_scoped_release release;
                     out = v.synthesize(mel_view(a), random ? &*random : nullptr);
                 }
                 return to_f32_array(out);
             }, py::arg("mel"), py::arg("phases") = py::none(), py::arg("noise") = py::none(),
             "A whole utterance: T * hop_samples samples.")
        .def("stream", [](HiftVocoder & v, const py::object & mel, bool last, const py::object & phases,
                          const py::object & noise) {
                 F32Array a = checked_mel(v, mel, last);
                 auto random = checked_random(v, phases, noise, v.stream_pass_samples(static_cast<int>(a.shape(1))));
                 std::vector<float> out;
                 {
                     py::gil_scoped_release release;
                     out = v.stream(mel_view(a), last, random ? &*random : nullptr);
                 }
                 return to_f32_array(out);
             }, py::arg("mel"), py::arg("last") = false, py::arg("phases") = py::none(), py::arg("noise") = py::none(),
             "One streaming chunk (minicpmo-utils 1.0.1 protocol); last=True flushes and ends the stream.")
        .def("stream_pass_samples", &HiftVocoder::stream_pass_samples, py::arg("n_frames"),
             "Samples the HiFT pass of the next stream() call covers (the noise rows it takes).")
        .def("reset_stream", &HiftVocoder::reset_stream);
}
