// _core.defaults(): the default settings of sessions, replies and duplex conversations, read from
// the C++ structs' initializers -- the one table every front end takes its defaults from (the C
// API's *_default_params, the CLI, the Python signatures).
#include <pybind11/pybind11.h>

#include "session/duplex_session.h"
#include "session/reply_stream.h"

namespace py = pybind11;
using namespace minicpmo;

void bind_defaults(py::module_ & m) {
    m.def("defaults", [] {
        const LlmContextParams session;
        const GenerateParams reply;
        const DuplexOptions duplex;
        const DuplexGenerateParams unit;
        py::dict d;
        d["session"] = py::dict(py::arg("n_ctx") = session.n_ctx, py::arg("n_threads") = session.n_threads,
                                py::arg("n_batch") = session.n_batch, py::arg("kv_cache_type") = session.kv_cache_type);
        d["reply"] = py::dict(py::arg("do_sample") = reply.sampling.do_sample,
                              py::arg("temperature") = reply.sampling.temperature, py::arg("top_p") = reply.sampling.top_p,
                              py::arg("top_k") = reply.sampling.top_k,
                              py::arg("repetition_penalty") = reply.sampling.repetition_penalty,
                              py::arg("max_new_tokens") = reply.max_new_tokens);
        d["duplex"] = py::dict(py::arg("window_high") = duplex.window_high, py::arg("window_low") = duplex.window_low,
                               py::arg("context_max_units") = duplex.context.max_units,
                               py::arg("context_previous_max_tokens") = duplex.context.previous_max_tokens,
                               py::arg("context_previous_marker") = duplex.context.previous_marker);
        d["duplex_unit"] = py::dict(
            py::arg("greedy") = unit.decode.greedy, py::arg("max_new_speak_tokens") = unit.max_new_speak_tokens,
            py::arg("temperature") = unit.decode.temperature, py::arg("top_k") = unit.decode.top_k,
            py::arg("top_p") = unit.decode.top_p, py::arg("repetition_penalty") = unit.decode.repetition_penalty,
            py::arg("repetition_window") = unit.decode.repetition_window,
            py::arg("length_penalty") = unit.decode.length_penalty,
            py::arg("listen_prob_scale") = unit.decode.listen_prob_scale,
            py::arg("listen_top_k") = unit.decode.listen_top_k);
        return d;
    }, "default settings: {'session', 'reply', 'duplex', 'duplex_unit'} -> {name: value}");
}
