#include "sampling/duplex_decode.h"

#include <cmath>
#include <string>

#include "core/error.h"
#include "sampling/logits_ops.h"

namespace minicpmo {

namespace {

// Inverse-CDF draw over softmax(v) in id order, the weights shifted in double by the largest
// logit; -inf entries have probability 0. u rounding at the very top lands on the last real entry.
size_t draw_from(const std::vector<float> & v, double u) {
    size_t i = pick_inverse_cdf(exp_weights(v, v[argmax(v)]), u);
    if (i >= v.size()) i = v.size() - 1;
    while (i > 0 && v[i] == kMasked) --i;
    return i;
}

double next_uniform(const UniformDraw & draw) {
    if (!draw) fail(Status::invalid_argument, "duplex sampling needs a random source");
    const double u = draw();
    if (!(u >= 0.0 && u < 1.0)) fail(Status::invalid_argument, "uniform draw outside [0, 1)");
    return u;
}

}  // namespace

void validate_duplex_decode_params(const DuplexDecodeParams & p) {
    if (!(p.temperature > 0.0f) || !std::isfinite(p.temperature)) {
        fail(Status::invalid_argument, "temperature must be a positive number, got " + std::to_string(p.temperature));
    }
    if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
        fail(Status::invalid_argument, "top_p must be in (0, 1], got " + std::to_string(p.top_p));
    }
    if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty)) {
        fail(Status::invalid_argument, "repetition_penalty must be positive, got " + std::to_string(p.repetition_penalty));
    }
    if (p.repetition_window < 0) fail(Status::invalid_argument, "repetition_window must be >= 0");
    if (!(p.length_penalty > 0.0f) || !std::isfinite(p.length_penalty)) {
        fail(Status::invalid_argument, "length_penalty must be positive, got " + std::to_string(p.length_penalty));
    }
    if (!std::isfinite(p.listen_prob_scale)) fail(Status::invalid_argument, "listen_prob_scale must be finite");
    if (p.listen_top_k < 0) fail(Status::invalid_argument, "listen_top_k must be >= 0 (0 = off)");
}

DuplexDecision duplex_decode(const float * logits, int n_vocab, const DuplexDecodeIds & ids,
                             const std::vector<llama_token> & history, const DuplexDecodeParams & p,
                             const UniformDraw & draw) {
    validate_duplex_decode_params(p);
    if (!logits || n_vocab <= 0) fail(Status::invalid_argument, "no logits to decode");
    for (llama_token t : {ids.chunk_eos, ids.turn_eos, ids.eos}) {
        if (t < 0 || t >= n_vocab) fail(Status::invalid_argument, "duplex special token id outside the vocabulary");
    }
    std::vector<float> v(logits, logits + n_vocab);
    for (float x : v) {
        if (!std::isfinite(x)) fail(Status::invalid_argument, "the logits hold a NaN or infinite value");
    }

    // stage 1: does the raw distribution end the unit?
    const size_t first = p.greedy ? argmax(v) : draw_from(v, next_uniform(draw));
    if (static_cast<llama_token>(first) == ids.chunk_eos) return {ids.chunk_eos, 1};

    // stage 2
    for (llama_token t : ids.forbidden) mask_id(v, t);
    mask_id(v, ids.chunk_eos);
    if (p.repetition_penalty != 1.0f && !history.empty()) {
        // the reference divides for a penalty > 1 and multiplies by 1/penalty below 1: both are
        // v / penalty, whatever the sign of v
        const size_t from = window_start(history.size(), static_cast<size_t>(p.repetition_window));
        divide_ids(v, distinct_ids(history, from), p.repetition_penalty);
    }
    if (p.length_penalty != 1.0f) v[ids.turn_eos] = penalise_logit(v[ids.turn_eos], p.length_penalty);
    if (p.listen_prob_scale != 1.0f) scale_unmasked(v, ids.eos, p.listen_prob_scale);
    if (p.listen_top_k > 0) {
        if (ids.listen < 0 || ids.listen >= n_vocab) fail(Status::invalid_argument, "listen_top_k needs the <|listen|> id");
        if (count_above(v, v[ids.listen]) < static_cast<size_t>(p.listen_top_k)) return {ids.listen, 3};
    }

    if (p.greedy) return {static_cast<llama_token>(argmax(v)), 2};
    divide_by_temperature(v, p.temperature);
    if (p.top_k > 0 && p.top_k < n_vocab) mask_outside_top_k(v, static_cast<size_t>(p.top_k));
    mask_outside_top_p_descending(v, p.top_p, NucleusEnd::passes);
    if (all_masked(v)) fail(Status::invalid_argument, "every token is forbidden: nothing left to sample");
    return {static_cast<llama_token>(draw_from(v, next_uniform(draw))), 2};
}

}  // namespace minicpmo
