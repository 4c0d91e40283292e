// Python bindings of the incremental speech-token layouts (csrc/tts/tts_stream.h): a simplex
// stream per assistant turn and a duplex unit stream, both driving a session's TTS decoder (the
// session is kept alive by the stream). Draws are a list of uniform floats (one per sampling step,
// in order) or None = greedy. The GIL is released around every computation.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "python/numpy_arrays.h"
#include "python/speech_args.h"
#include "python/testing/hooks.h"
#include "session/omni_session.h"
#include "tts/tts_stream.h"

namespace py = pybind11;
using namespace minicpmo;

namespace {

using minicpmo_py::F32Array;
using minicpmo_py::checked_f32;
using minicpmo_py::make_uniform_draw;
using minicpmo_py::shape_text;

using Draws = std::optional<std::vector<double>>;

// hidden rows (n, n_embd_llm) float32 for n text ids; None only when there are no ids
std::optional<F32Array> checked_hidden(const TtsDecoder & d, const std::vector<int32_t> & ids, const py::object & hidden) {
    const int width = d.model().hparams().n_embd_llm;
    if (hidden.is_none()) {
        if (!ids.empty()) fail(Status::invalid_argument, "hidden rows are required for the text ids");
        return std::nullopt;
    }
    F32Array h = checked_f32(hidden, 2, "hidden");
    if (h.shape(0) != static_cast<py::ssize_t>(ids.size()) || h.shape(1) != width) {
        fail(Status::invalid_argument, "hidden must have shape (" + std::to_string(ids.size()) + ", " +
                                           std::to_string(width) + ") (one LLM final-norm row per text id), got " +
                                           shape_text(h));
    }
    return h;
}

TtsSampling with_overrides(TtsSampling s, std::optional<float> temperature, std::optional<float> top_p,
                           std::optional<int> top_k, std::optional<float> repetition_penalty) {
    if (temperature) {
        if (!(*temperature > 0.0f)) fail(Status::invalid_argument, "temperature must be > 0");
        s.temperature = *temperature;
    }
    if (top_p) s.top_p = *top_p;
    if (top_k) s.top_k = *top_k;
    if (repetition_penalty) {
        if (!(*repetition_penalty > 0.0f)) fail(Status::invalid_argument, "repetition_penalty must be > 0");
        s.repetition_penalty = *repetition_penalty;
    }
    return s;
}

py::tuple steps_tuple(const TtsStepLog & log, int n_vocab) {
    py::array_t<float> a({static_cast<py::ssize_t>(log.logits.size()), static_cast<py::ssize_t>(n_vocab)});
    for (size_t i = 0; i < log.logits.size(); ++i) {
        std::memcpy(a.mutable_data(static_cast<py::ssize_t>(i)), log.logits[i].data(), n_vocab * sizeof(float));
    }
    return py::make_tuple(a, log.sampled);
}

int vocab(OmniSession & s) { return s.tts_decoder().model().hparams().n_vocab_audio; }

// The stream keeps a reference to the session's decoder; the session is kept alive alongside.
struct SimplexHandle {
    OmniSession * session;
    TtsSimplexStream stream;
};

struct DuplexHandle {
    OmniSession * session;
    TtsDuplexStream stream;
};

}  // namespace

void bind_tts_stream(py::module_ & m) {
    py::class_<SimplexHandle>(m, "TtsSimplexStream",
                              "Streaming simplex speech tokens for one assistant turn (spec §5.1): feed LLM text "
                              "chunks, get 25-token blocks. Starts from an empty TTS cache of the session.")
        .def(py::init([](const py::object & session, int block, int max_new_per_chunk, std::optional<float> temperature,
                         std::optional<float> top_p, std::optional<int> top_k, std::optional<float> repetition_penalty,
                         bool keep_steps) {
                 OmniSession & s = minicpmo_testing::native_session(session);  // a _core.Session or its hooks
                 TtsDecoder & d = s.tts_decoder();
                 const TtsSampling sampling =
                     with_overrides(d.model().hparams().stream, temperature, top_p, top_k, repetition_penalty);
                 auto h = std::unique_ptr<SimplexHandle>(new SimplexHandle{&s, TtsSimplexStream(d, sampling, block, max_new_per_chunk)});
                 h->stream.keep_steps(keep_steps);
                 return h;
             }),
             py::arg("session"), py::arg("block") = 25, py::arg("max_new_per_chunk") = 0,
             py::arg("temperature") = py::none(), py::arg("top_p") = py::none(), py::arg("top_k") = py::none(),
             py::arg("repetition_penalty") = py::none(), py::arg("keep_steps") = false, py::keep_alive<1, 2>(),
             "sampling defaults to the model's stream settings; max_new_per_chunk 0 = the model's limit; top_p >= 1 "
             "or top_k <= 0 switch that warper off; keep_steps records each step's raw logits and sample")
        .def("feed_text",
             [](SimplexHandle & h, const std::vector<int32_t> & ids, const py::object & hidden, bool text_finished,
                const Draws & draws) {
                 const auto hid = checked_hidden(h.session->tts_decoder(), ids, hidden);
                 const UniformDraw draw = make_uniform_draw(draws);
                 std::vector<TtsReleased> out;
                 {
                     py::gil_scoped_release release;
                     out = h.stream.feed_text(ids.data(), hid ? hid->data() : nullptr, static_cast<int>(ids.size()),
                                              text_finished, draw);
                 }
                 std::vector<std::pair<std::vector<int32_t>, bool>> blocks;
                 for (auto & b : out) blocks.emplace_back(std::move(b.tokens), b.last);
                 return blocks;
             },
             py::arg("ids"), py::arg("hidden"), py::arg("text_finished") = false, py::arg("draws") = py::none(),
             "one text chunk (ids, hidden rows (n, n_embd_llm) float32): the released blocks [(tokens, last)]")
        .def("flush", [](SimplexHandle & h) { return h.stream.flush(); }, "the unreleased rest of the turn")
        .def_property_readonly("text_finished", [](const SimplexHandle & h) { return h.stream.text_finished(); })
        .def_property_readonly("generated", [](const SimplexHandle & h) { return h.stream.generated(); })
        .def_property_readonly("next_position", [](const SimplexHandle & h) { return h.stream.next_position(); })
        .def_property_readonly("last_steps",
                               [](SimplexHandle & h) { return steps_tuple(h.stream.last_steps(), vocab(*h.session)); },
                               "(raw logits (steps, n_vocab_audio), samples) of the latest feed_text with keep_steps");

    py::class_<DuplexHandle>(m, "TtsDuplexStream",
                             "Duplex speech tokens per 1-s unit (spec §5.1): the TTS cache and positions persist "
                             "within a turn and are cleared at its end.")
        .def(py::init([](const py::object & session, int tokens_per_unit, std::optional<float> temperature,
                         std::optional<float> repetition_penalty, bool keep_steps) {
                 OmniSession & s = minicpmo_testing::native_session(session);  // a _core.Session or its hooks
                 TtsDecoder & d = s.tts_decoder();
                 const TtsSampling sampling =
                     with_overrides(d.model().hparams().duplex, temperature, std::nullopt, std::nullopt, repetition_penalty);
                 auto h = std::unique_ptr<DuplexHandle>(new DuplexHandle{&s, TtsDuplexStream(d, sampling, tokens_per_unit)});
                 h->stream.keep_steps(keep_steps);
                 return h;
             }),
             py::arg("session"), py::arg("tokens_per_unit") = 25, py::arg("temperature") = py::none(),
             py::arg("repetition_penalty") = py::none(), py::arg("keep_steps") = false, py::keep_alive<1, 2>())
        .def("unit",
             [](DuplexHandle & h, const std::vector<int32_t> & ids, const py::object & hidden, bool end_of_turn,
                const Draws & draws) {
                 const auto hid = checked_hidden(h.session->tts_decoder(), ids, hidden);
                 const UniformDraw draw = make_uniform_draw(draws);
                 std::vector<int32_t> tokens;
                 bool finished = false;
                 {
                     py::gil_scoped_release release;
                     tokens = h.stream.unit(ids.data(), hid ? hid->data() : nullptr, static_cast<int>(ids.size()),
                                            end_of_turn, draw, &finished);
                 }
                 return std::make_pair(tokens, finished);
             },
             py::arg("ids"), py::arg("hidden") = py::none(), py::arg("end_of_turn") = false, py::arg("draws") = py::none(),
             "one unit's tokens after its decision token (may be empty, hidden None): (speech tokens, EOS sampled)")
        .def("reset_turn", [](DuplexHandle & h) { h.stream.reset_turn(); })
        .def_property_readonly("next_position", [](const DuplexHandle & h) { return h.stream.next_position(); })
        .def_property_readonly("last_steps",
                               [](DuplexHandle & h) { return steps_tuple(h.stream.last_steps(), vocab(*h.session)); });
}
