// The duplex decision parameters from Python arguments, shared by _core.DuplexSession.generate_unit
// and _testing.duplex_decode.
#pragma once

#include "sampling/duplex_decode.h"

namespace minicpmo_py {

inline minicpmo::DuplexDecodeParams decode_params(bool greedy, float temperature, int top_k, float top_p,
                                                 float repetition_penalty, int repetition_window, float length_penalty,
                                                 float listen_prob_scale, int listen_top_k) {
    minicpmo::DuplexDecodeParams p;
    p.greedy = greedy;
    p.temperature = temperature;
    p.top_k = top_k;
    p.top_p = top_p;
    p.repetition_penalty = repetition_penalty;
    p.repetition_window = repetition_window;
    p.length_penalty = length_penalty;
    p.listen_prob_scale = listen_prob_scale;
    p.listen_top_k = listen_top_k;
    return p;
}

}  // namespace minicpmo_py
