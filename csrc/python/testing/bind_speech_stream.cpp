// Python binding of the session's Token2Wav synthesizer with its streaming protocol
// (csrc/token2wav/token2wav.h, speech_stream.h): `_testing.SpeechSynthesizer(omni_path)` loads the
// flow, HiFT and voices of an omni file on their own, so tests can stream speech tokens with the CFM
// noise and the NSF source randomness injected and compare with the numpy reference. Waveforms are
// float32 numpy arrays; the GIL is released around every computation.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/compute_backend.h"
#include "core/error.h"
#include "python/numpy_arrays.h"
#include "python/speech_args.h"
#include "token2wav/flow_model.h"
#include "token2wav/hift_model.h"
#include "token2wav/token2wav.h"
#include "token2wav/voice_bank.h"

namespace py = pybind11;
using namespace minicpmo;

namespace {

using minicpmo_py::F32Array;
using minicpmo_py::checked_f32;
using minicpmo_py::checked_source_random;
using minicpmo_py::checked_speech_tokens;
using minicpmo_py::shape_text;
using minicpmo_py::to_f32_array;
using minicpmo_py::to_f32_arrays;

class PySpeech {
public:
    PySpeech(const std::string & omni_path, int n_threads, const std::string & device, uint64_t seed,
             const std::string & compute_type)
        : flow_(std::make_shared<const FlowModel>(omni_path, resolve_device(device))),
          hift_(std::make_shared<const HiftModel>(omni_path, resolve_device(device))),
          voices_(std::make_shared<const VoiceBank>(omni_path)),
          synth_(flow_, hift_, voices_, resolve_device(device), n_threads, seed, resolve_compute_type(compute_type)) {}

    Token2Wav & synth() { return synth_; }
    int vocab() const { return flow_->hparams().vocab; }
    int n_mel() const { return flow_->hparams().n_mel; }
    int n_sines() const { return hift_->hparams().n_harmonic_sines(); }

    // A Python callable n_samples -> (phases (H+1,), noise (n_samples, H+1)), both float32; None
    // goes back to the seeded generator. Called from the stream with the GIL released.
    void set_source_random(const py::object & fn) {
        if (fn.is_none()) {
            synth_.set_source_random(nullptr);
            return;
        }
        if (!PyCallable_Check(fn.ptr())) {
            fail(Status::invalid_argument, "source_random must be callable: n_samples -> (phases, noise), or None");
        }
        // the py::object is released with the GIL held, whichever thread drops the last copy
        std::shared_ptr<py::object> holder(new py::object(fn), [](py::object * p) {
            py::gil_scoped_acquire gil;
            delete p;
        });
        const int nh = n_sines();
        synth_.set_source_random([holder, nh](int64_t n_samples) {
            py::gil_scoped_acquire gil;
            py::object r;
            try {
                r = (*holder)(n_samples);
            } catch (py::error_already_set & e) {
                fail(Status::invalid_argument, std::string("source_random raised: ") + e.what());
            }
            if (!py::isinstance<py::tuple>(r) || py::len(r) != 2) {
                fail(Status::invalid_argument, "source_random must return a (phases, noise) tuple");
            }
            const py::tuple t = r.cast<py::tuple>();
            return checked_source_random(t[0], t[1], nh, n_samples, "this HiFT pass");
        });
    }

private:
    std::shared_ptr<const FlowModel> flow_;
    std::shared_ptr<const HiftModel> hift_;
    std::shared_ptr<const VoiceBank> voices_;
    Token2Wav synth_;
};

}  // namespace

void bind_speech_stream(py::module_ & m) {
    py::class_<PySpeech>(m, "SpeechSynthesizer",
                         "Token2Wav of an omni file (flow + HiFT + voices) for one session: whole utterances and "
                         "the streaming protocol (25-token chunks, duplex units).")
        .def(py::init([](const std::string & omni_path, int n_threads, const std::string & device, uint64_t seed,
                         const std::string & compute_type) {
                 py::gil_scoped_release release;
                 return std::make_unique<PySpeech>(omni_path, n_threads, device, seed, compute_type);
             }),
             py::arg("omni_path"), py::arg("n_threads") = 0, py::arg("device") = "cpu", py::arg("seed") = 0,
             py::arg("compute_type") = "f32",
             "compute_type: the flow's products, \"f32\" (exact, the default here), \"bf16\" or \"auto\" (as "
             "OmniSession); HiFT computes in F32 either way.")
        .def_property_readonly("sample_rate", [](PySpeech & s) { return s.synth().sample_rate(); })
        .def_property_readonly("unit_samples", [](PySpeech & s) { return s.synth().stream().unit_samples(); })
        .def_property_readonly("voice_names", [](PySpeech & s) { return s.synth().voices().names(); })
        .def_property_readonly("stream_active", [](PySpeech & s) { return s.synth().stream_active(); })
        .def_property_readonly("buffered_tokens", [](PySpeech & s) { return s.synth().stream().buffered_tokens(); })
        .def_property_readonly("voice_setups", [](PySpeech & s) { return s.synth().stream().voice_setups(); },
                               "how many times a voice prompt ran through the flow (not restored from a snapshot)")
        .def("set_n_threads", [](PySpeech & s, int n) { s.synth().set_n_threads(n); }, py::arg("n_threads"))
        .def("reseed", [](PySpeech & s, uint64_t seed) { s.synth().reseed(seed); }, py::arg("seed"))
        .def("set_cfm_noise",
             [](PySpeech & s, const py::object & noise) {
                 F32Array a = checked_f32(noise, 2, "noise");
                 if (a.shape(0) != s.n_mel() || a.shape(1) == 0 || a.shape(1) > INT32_MAX) {
                     fail(Status::invalid_argument, "noise must have shape (" + std::to_string(s.n_mel()) +
                                                        ", N) with N > 0, got " + shape_text(a));
                 }
                 const int M = s.n_mel(), N = static_cast<int>(a.shape(1));
                 std::vector<float> frames(static_cast<size_t>(M) * N);  // (n_mel, N) -> frame-major
                 for (int c = 0; c < M; ++c) {
                     for (int t = 0; t < N; ++t) frames[static_cast<size_t>(t) * M + c] = a.data()[static_cast<size_t>(c) * N + t];
                 }
                 s.synth().set_cfm_noise(frames.data(), N);
             },
             py::arg("noise"), "injects the CFM noise buffer (n_mel, N), float32")
        .def("set_source_random", &PySpeech::set_source_random, py::arg("source_random"),
             "callable n_samples -> (phases (H+1,), noise (n_samples, H+1)) float32 for every streamed HiFT pass; None "
             "= the seeded generator")
        .def("synthesize",
             [](PySpeech & s, const std::vector<int64_t> & tokens, const std::string & voice) {
                 const std::vector<int32_t> ids = checked_speech_tokens(tokens, s.vocab(), "tokens");
                 std::vector<float> out;
                 {
                     py::gil_scoped_release release;
                     out = s.synth().synthesize(ids, voice);
                 }
                 return to_f32_array(out);
             },
             py::arg("tokens"), py::arg("voice") = "", "a whole utterance")
        .def("stream_begin",
             [](PySpeech & s, const std::string & voice) {
                 py::gil_scoped_release release;
                 s.synth().stream_begin(voice);
             },
             py::arg("voice") = "", "starts an utterance / turn with a stored voice ('' = default)")
        .def("stream_push",
             [](PySpeech & s, const std::vector<int64_t> & tokens) {
                 const std::vector<int32_t> ids = checked_speech_tokens(tokens, s.vocab(), "tokens");
                 std::vector<std::vector<float>> out;
                 {
                     py::gil_scoped_release release;
                     out = s.synth().stream_push(ids.data(), static_cast<int>(ids.size()));
                 }
                 return to_f32_arrays(out);
             },
             py::arg("tokens"), "appends speech tokens -> list of released chunks (each unit_samples long)")
        .def("stream_flush_turn_start",
             [](PySpeech & s) {
                 std::vector<std::vector<float>> out;
                 {
                     py::gil_scoped_release release;
                     out = s.synth().stream_flush_turn_start();
                 }
                 return to_f32_arrays(out);
             },
             "duplex forced flush of the buffer -> list of chunks (windows down to look-ahead + 5 tokens)")
        .def("stream_push_duplex",
             [](PySpeech & s, const std::vector<int64_t> & tokens, bool turn_end, bool force_flush) {
                 const std::vector<int32_t> ids = checked_speech_tokens(tokens, s.vocab(), "tokens");
                 std::vector<float> out;
                 {
                     py::gil_scoped_release release;
                     out = s.synth().stream_push_duplex(ids.data(), static_cast<int>(ids.size()), force_flush, turn_end);
                 }
                 return to_f32_array(out);
             },
             py::arg("tokens"), py::arg("turn_end") = false, py::arg("force_flush") = true,
             "one duplex unit's tokens -> the unit's waveform (left-padded to unit_samples unless turn_end)")
        .def("stream_finish",
             [](PySpeech & s) {
                 std::vector<float> out;
                 {
                     py::gil_scoped_release release;
                     out = s.synth().stream_finish();
                 }
                 return to_f32_array(out);
             },
             "ends the utterance: the remaining samples");
}
