// Python binding of the Token2Wav flow runner (csrc/token2wav/flow_decoder.h) for tests and tools:
// `_testing.Flow(omni_path)` loads the flow weights and voices of an omni file and runs the encoder,
// the DiT, the CFM and the streaming windows. Mel arrays use the reference's layout (n_mel, frames);
// encoder states are (frames, D).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "python/numpy_arrays.h"
#include "python/speech_args.h"
#include "token2wav/flow_decoder.h"
#include "token2wav/flow_model.h"
#include "token2wav/voice_bank.h"

namespace py = pybind11;
using namespace minicpmo;

namespace {

using F32C = py::array_t<float, py::array::c_style | py::array::forcecast>;
using minicpmo_py::shape_text;
using minicpmo_py::checked_speech_tokens;

// A float array of rank `ndim` (any float dtype, converted to float32); ints are refused rather
// than silently reinterpreted as values.
F32C float_array(const py::object & obj, int ndim, const char * what) {
    if (!py::isinstance<py::array>(obj)) {
        fail(Status::invalid_argument, std::string(what) + " must be a numpy float array, got " +
                                           std::string(py::str(py::type::of(obj))));
    }
    const py::array a = py::reinterpret_borrow<py::array>(obj);
    if (a.dtype().kind() != 'f') {
        fail(Status::invalid_argument, std::string(what) + " must be a float array, got dtype " + std::string(py::str(a.dtype())));
    }
    if (a.ndim() != ndim) {
        fail(Status::invalid_argument, std::string(what) + " must have " + std::to_string(ndim) +
                                           " dimension(s), got shape " + shape_text(a));
    }
    return F32C::ensure(a);
}

// (n_mel, T) channels-first -> frame-major T x n_mel; T == frames when frames >= 0.
std::vector<float> mel_frames(const py::object & obj, int n_mel, int frames, const char * what, int * n_out = nullptr) {
    const F32C a = float_array(obj, 2, what);
    if (a.shape(0) != n_mel || (frames >= 0 && a.shape(1) != frames)) {
        fail(Status::invalid_argument, std::string(what) + " must have shape (" + std::to_string(n_mel) + ", " +
                                           (frames >= 0 ? std::to_string(frames) : std::string("frames")) + "), got " +
                                           shape_text(a));
    }
    const int T = static_cast<int>(a.shape(1));
    std::vector<float> out(static_cast<size_t>(T) * n_mel);
    const float * p = a.data();
    for (int c = 0; c < n_mel; ++c) {
        for (int t = 0; t < T; ++t) out[static_cast<size_t>(t) * n_mel + c] = p[static_cast<size_t>(c) * T + t];
    }
    if (n_out) *n_out = T;
    return out;
}

py::array_t<float> mel_array(const std::vector<float> & frames, int n_mel) {
    const size_t T = frames.size() / n_mel;
    py::array_t<float> a({static_cast<size_t>(n_mel), T});
    float * p = a.mutable_data();
    for (size_t t = 0; t < T; ++t) {
        for (int c = 0; c < n_mel; ++c) p[static_cast<size_t>(c) * T + t] = frames[t * n_mel + c];
    }
    return a;
}

py::array_t<float> rows_array(const std::vector<float> & v, size_t width) {
    py::array_t<float> a({v.size() / width, width});
    std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(float));
    return a;
}

std::vector<float> vector_of(const py::object & obj, int n, const char * what) {
    const F32C a = float_array(obj, 1, what);
    if (a.shape(0) != n) {
        fail(Status::invalid_argument, std::string(what) + " must have shape (" + std::to_string(n) + ",), got " + shape_text(a));
    }
    return std::vector<float>(a.data(), a.data() + n);
}

class PyFlow {
public:
    PyFlow(const std::string & omni_path, int n_threads, const std::string & device, uint64_t seed,
           const std::string & compute_type)
        : model_(std::make_shared<const FlowModel>(omni_path, resolve_device(device))), voices_(omni_path),
          decoder_(model_, resolve_device(device), n_threads, seed, resolve_compute_type(compute_type)) {}

    const FlowHparams & hp() const { return model_->hparams(); }
    FlowDecoder & decoder() { return decoder_; }
    const VoiceBank & voices() const { return voices_; }

    // A voice prompt: an explicit (tokens, mel, xvec) triple, or a stored voice by name ("" / None
    // = the default one). The returned FlowPrompt points into `keep`.
    struct Prompt {
        std::vector<int32_t> tokens;
        std::vector<float> mel, xvec;
        FlowPrompt view;
    };
    void prompt(const std::optional<std::vector<int64_t>> & tokens, const py::object & mel, const py::object & xvec,
                const std::optional<std::string> & voice, Prompt & out) {
        const bool explicit_parts = tokens || !mel.is_none() || !xvec.is_none();
        if (explicit_parts) {
            if (voice) fail(Status::invalid_argument, "give either a voice name or prompt_tokens/prompt_mel/xvec, not both");
            if (!tokens || mel.is_none() || xvec.is_none()) {
                fail(Status::invalid_argument, "an explicit voice needs prompt_tokens, prompt_mel and xvec together");
            }
            out.tokens = checked_speech_tokens(*tokens, hp().vocab, "prompt_tokens");
            if (out.tokens.empty()) fail(Status::invalid_argument, "the voice prompt needs at least one speech token");
            out.mel = mel_frames(mel, hp().n_mel, static_cast<int>(out.tokens.size()) * hp().token_mel_ratio, "prompt_mel");
            out.xvec = vector_of(xvec, hp().spk_dim, "xvec");
            out.view.tokens = out.tokens.data();
            out.view.n_tokens = static_cast<int>(out.tokens.size());
            out.view.mel = out.mel.data();
            out.view.xvec = out.xvec.data();
            return;
        }
        out.view = flow_prompt(*voices_.get(voice.value_or("")), hp());
    }

private:
    std::shared_ptr<const FlowModel> model_;
    VoiceBank voices_;
    FlowDecoder decoder_;
};

}  // namespace

void bind_flow(py::module_ & m) {
    py::class_<PyFlow>(m, "Flow", "Token2Wav flow runner (encoder, DiT, CFM, streaming windows) of an omni file")
        .def(py::init([](const std::string & path, int n_threads, const std::string & device, uint64_t seed,
                         const std::string & compute_type) {
                 py::gil_scoped_release release;
                 return std::make_unique<PyFlow>(path, n_threads, device, seed, compute_type);
             }),
             py::arg("omni_path"), py::arg("n_threads") = 0, py::arg("device") = "cpu", py::arg("seed") = 0,
             py::arg("compute_type") = "auto")
        .def_property_readonly("hparams",
                               [](const PyFlow & f) {
                                   const FlowHparams & h = f.hp();
                                   py::dict d;
                                   d["n_mel"] = h.n_mel;
                                   d["token_mel_ratio"] = h.token_mel_ratio;
                                   d["vocab"] = h.vocab;
                                   d["silence_token"] = h.silence_token;
                                   d["chunk_tokens"] = h.chunk_tokens;
                                   d["lookahead"] = h.lookahead;
                                   d["n_timesteps"] = h.n_timesteps;
                                   d["cache_tail_frames"] = h.cache_tail_frames;
                                   d["enc_dim"] = h.enc_dim;
                                   d["spk_dim"] = h.spk_dim;
                                   d["dit_dim"] = h.dit_dim;
                                   d["dit_layer"] = h.dit_layer;
                                   d["noise_frames"] = h.noise_frames;
                                   d["cfg_rate"] = h.cfg_rate;
                                   return d;
                               })
        .def_property_readonly("voice_names", [](const PyFlow & f) { return f.voices().names(); })
        .def_property_readonly("default_voice", [](const PyFlow & f) { return f.voices().default_name(); })
        .def("voice",
             [](const PyFlow & f, const std::string & name) {
                 const auto held = f.voices().get(name);
                 const VoicePrompt & v = *held;
                 py::array_t<int32_t> tok(static_cast<py::ssize_t>(v.tokens.size()));
                 std::memcpy(tok.mutable_data(), v.tokens.data(), v.tokens.size() * sizeof(int32_t));
                 py::array_t<float> spk(static_cast<py::ssize_t>(v.spk.size()));
                 std::memcpy(spk.mutable_data(), v.spk.data(), v.spk.size() * sizeof(float));
                 return py::make_tuple(tok, spk, mel_array(v.mel, v.n_mel));
             },
             py::arg("name") = "", "(tokens, xvec, mel (n_mel, frames)) of a stored voice ('' = default)")
        .def("set_n_threads", [](PyFlow & f, int n) { f.decoder().set_n_threads(n); })
        .def("set_noise",
             [](PyFlow & f, const py::object & noise) {
                 int n = 0;
                 const std::vector<float> frames = mel_frames(noise, f.hp().n_mel, -1, "noise", &n);
                 f.decoder().set_noise(frames.data(), n);
             },
             py::arg("noise"), "injects the CFM noise buffer (n_mel, N)")
        .def("reseed_noise", [](PyFlow & f, uint64_t seed) { f.decoder().reseed_noise(seed); }, py::arg("seed"))
        .def("speaker",
             [](PyFlow & f, const py::object & xvec) {
                 const std::vector<float> x = vector_of(xvec, f.hp().spk_dim, "xvec");
                 std::vector<float> spk;
                 {
                     py::gil_scoped_release release;
                     spk = f.decoder().speaker(x.data());
                 }
                 py::array_t<float> a(static_cast<py::ssize_t>(spk.size()));
                 std::memcpy(a.mutable_data(), spk.data(), spk.size() * sizeof(float));
                 return a;
             },
             py::arg("xvec"))
        .def("encode",
             [](PyFlow & f, const std::vector<int64_t> & tokens) {
                 const std::vector<int32_t> ids = checked_speech_tokens(tokens, f.hp().vocab, "tokens");
                 FlowEncoding e;
                 {
                     py::gil_scoped_release release;
                     e = f.decoder().encode(ids.data(), static_cast<int>(ids.size()));
                 }
                 return py::make_tuple(rows_array(e.h, f.hp().enc_dim), mel_array(e.mu, f.hp().n_mel));
             },
             py::arg("tokens"), "whole-utterance encoder: (h (frames, D), mu (n_mel, frames))")
        .def("velocity",
             [](PyFlow & f, const py::object & x, const py::object & mu, const py::object & spk, const py::object & cond,
                float t) {
                 const int M = f.hp().n_mel;
                 int T = 0;
                 const std::vector<float> xs = mel_frames(x, M, -1, "x", &T);
                 const std::vector<float> mus = mel_frames(mu, M, T, "mu");
                 const std::vector<float> conds = mel_frames(cond, M, T, "cond");
                 const std::vector<float> s = vector_of(spk, M, "spk");
                 std::vector<float> v;
                 {
                     py::gil_scoped_release release;
                     v = f.decoder().velocity(xs.data(), mus.data(), s.data(), conds.data(), T, t);
                 }
                 const size_t half = v.size() / 2;
                 return py::make_tuple(mel_array(std::vector<float>(v.begin(), v.begin() + half), M),
                                       mel_array(std::vector<float>(v.begin() + half, v.end()), M));
             },
             py::arg("x"), py::arg("mu"), py::arg("spk"), py::arg("cond"), py::arg("t"),
             "DiT velocity of both CFG branches in one batch: (conditional, unconditional)")
        .def("cfm",
             [](PyFlow & f, const py::object & mu, const py::object & spk, const py::object & cond, int noise_offset,
                int n_timesteps) {
                 const int M = f.hp().n_mel;
                 int T = 0;
                 const std::vector<float> mus = mel_frames(mu, M, -1, "mu", &T);
                 const std::vector<float> conds = mel_frames(cond, M, T, "cond");
                 const std::vector<float> s = vector_of(spk, M, "spk");
                 std::vector<float> mel;
                 {
                     py::gil_scoped_release release;
                     mel = f.decoder().cfm(mus.data(), s.data(), conds.data(), T, noise_offset, n_timesteps);
                 }
                 return mel_array(mel, M);
             },
             py::arg("mu"), py::arg("spk"), py::arg("cond"), py::arg("noise_offset") = 0, py::arg("n_timesteps") = 0)
        .def("inference",
             [](PyFlow & f, const std::vector<int64_t> & tokens, const std::optional<std::vector<int64_t>> & prompt_tokens,
                const py::object & prompt_mel, const py::object & xvec, const std::optional<std::string> & voice,
                int n_timesteps) {
                 const std::vector<int32_t> ids = checked_speech_tokens(tokens, f.hp().vocab, "tokens");
                 PyFlow::Prompt p;
                 f.prompt(prompt_tokens, prompt_mel, xvec, voice, p);
                 std::vector<float> mel;
                 {
                     py::gil_scoped_release release;
                     mel = f.decoder().inference(ids.data(), static_cast<int>(ids.size()), p.view, n_timesteps);
                 }
                 return mel_array(mel, f.hp().n_mel);
             },
             py::arg("tokens"), py::arg("prompt_tokens") = py::none(), py::arg("prompt_mel") = py::none(),
             py::arg("xvec") = py::none(), py::arg("voice") = py::none(), py::arg("n_timesteps") = 0,
             "whole utterance: mel (n_mel, ratio * len(tokens)); the voice is explicit or stored (None = default)")
        .def("stream_start",
             [](PyFlow & f, const std::optional<std::vector<int64_t>> & prompt_tokens, const py::object & prompt_mel,
                const py::object & xvec, const std::optional<std::string> & voice, int n_timesteps) {
                 PyFlow::Prompt p;
                 f.prompt(prompt_tokens, prompt_mel, xvec, voice, p);
                 py::gil_scoped_release release;
                 f.decoder().stream_start(p.view, n_timesteps);
             },
             py::arg("prompt_tokens") = py::none(), py::arg("prompt_mel") = py::none(), py::arg("xvec") = py::none(),
             py::arg("voice") = py::none(), py::arg("n_timesteps") = 0)
        .def("stream_chunk",
             [](PyFlow & f, const std::vector<int64_t> & tokens, bool last_chunk) {
                 const std::vector<int32_t> ids = checked_speech_tokens(tokens, f.hp().vocab, "window tokens");
                 std::vector<float> mel;
                 {
                     py::gil_scoped_release release;
                     mel = f.decoder().stream_chunk(ids.data(), static_cast<int>(ids.size()), last_chunk);
                 }
                 return mel_array(mel, f.hp().n_mel);
             },
             py::arg("tokens"), py::arg("last_chunk") = false,
             "one streaming window (chunk + look-ahead tokens): mel (n_mel, ratio * fresh tokens)")
        .def("stream_reset", [](PyFlow & f) { f.decoder().stream_reset(); })
        .def_property_readonly("stream_ready", [](PyFlow & f) { return f.decoder().stream_ready(); })
        .def_property_readonly("stream_estimator_frames", [](PyFlow & f) { return f.decoder().stream_estimator_frames(); })
        .def_property_readonly("stream_encoder_token_frames",
                               [](PyFlow & f) { return f.decoder().stream_encoder_token_frames(); });
}
