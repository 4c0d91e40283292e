// _testing binding of the duplex two-stage decision function (csrc/sampling/duplex_decode.h) on one
// logits row, so tests can compare it with the official sampler.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "core/error.h"
#include "python/duplex_args.h"
#include "python/numpy_arrays.h"
#include "sampling/duplex_decode.h"

namespace py = pybind11;
using namespace minicpmo;
using minicpmo_py::checked_f32;
using minicpmo_py::decode_params;
using minicpmo_py::F32Array;

void bind_duplex_decode(py::module_ & m) {
    m.def("duplex_decode",
          [](const py::object & logits, const std::vector<int32_t> & history, const std::vector<int32_t> & forbidden,
             int32_t chunk_eos, int32_t turn_eos, int32_t eos, bool greedy, float temperature, int top_k, float top_p,
             float repetition_penalty, int repetition_window, float length_penalty, float listen_prob_scale,
             const std::vector<double> & uniforms, int32_t listen, int listen_top_k) {
              const F32Array l = checked_f32(logits, 1, "logits");
              DuplexDecodeIds ids;
              ids.chunk_eos = chunk_eos;
              ids.turn_eos = turn_eos;
              ids.eos = eos;
              ids.listen = listen;
              ids.forbidden = forbidden;
              const DuplexDecodeParams p = decode_params(greedy, temperature, top_k, top_p, repetition_penalty,
                                                         repetition_window, length_penalty, listen_prob_scale,
                                                         listen_top_k);
              size_t next = 0;
              auto draw = [&]() {
                  if (next >= uniforms.size()) fail(Status::invalid_argument, "ran out of uniform draws");
                  return uniforms[next++];
              };
              DuplexDecision dec;
              {
                  py::gil_scoped_release release;
                  dec = duplex_decode(l.data(), static_cast<int>(l.shape(0)), ids, history, p, draw);
              }
              return py::make_tuple(dec.token, dec.stage);
          },
          py::arg("logits"), py::arg("history"), py::arg("forbidden"), py::arg("chunk_eos"), py::arg("turn_eos"),
          py::arg("eos"), py::arg("greedy") = false, py::arg("temperature") = 0.7f, py::arg("top_k") = 20,
          py::arg("top_p") = 0.8f, py::arg("repetition_penalty") = 1.05f, py::arg("repetition_window") = 512,
          py::arg("length_penalty") = 1.1f, py::arg("listen_prob_scale") = 1.0f,
          py::arg("uniforms") = std::vector<double>(), py::arg("listen") = -1, py::arg("listen_top_k") = 0,
          "the duplex two-stage decision on one logits row: (token, stage); uniforms feed the draws in order");
}
