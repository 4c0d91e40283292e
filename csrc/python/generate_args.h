// The generation settings the Python bindings take as plain arguments, shared by the binding files.
#pragma once

#include <cstdint>

#include "session/session.h"

namespace minicpmo_py {

inline minicpmo::GenerateParams make_generate_params(bool do_sample, float temperature, float top_p, int top_k,
                                                     float repetition_penalty, uint64_t seed, int max_new_tokens) {
    minicpmo::GenerateParams g;
    g.sampling.do_sample = do_sample;
    g.sampling.temperature = temperature;
    g.sampling.top_p = top_p;
    g.sampling.top_k = top_k;
    g.sampling.repetition_penalty = repetition_penalty;
    g.sampling.seed = seed;
    g.max_new_tokens = max_new_tokens;
    return g;
}

}  // namespace minicpmo_py
