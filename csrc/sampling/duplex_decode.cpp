#include "sampling/duplex_decode.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <unordered_set>

#include "core/error.h"

namespace minicpmo {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

size_t argmax(const std::vector<float> & v) {
    // the first of equal maxima, as torch.argmax
    return static_cast<size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Inverse-CDF draw over softmax(v) in index order; -inf entries have probability 0.
size_t draw_from(const std::vector<float> & v, double u) {
    const float top = *std::max_element(v.begin(), v.end());
    std::vector<double> cum(v.size());
    double total = 0.0;
    for (size_t i = 0; i < v.size(); ++i) {
        total += v[i] == kNegInf ? 0.0 : std::exp(static_cast<double>(v[i]) - top);
        cum[i] = total;
    }
    const double target = u * total;
    size_t i = static_cast<size_t>(std::upper_bound(cum.begin(), cum.end(), target) - cum.begin());
    if (i >= v.size()) i = v.size() - 1;
    while (i > 0 && v[i] == kNegInf) --i;  // u rounding at the very top lands on the last real entry
    return i;
}

double next_uniform(const std::function<double()> & draw) {
    if (!draw) fail(Status::invalid_argument, "duplex sampling needs a random source");
    const double u = draw();
    if (!(u >= 0.0 && u < 1.0)) fail(Status::invalid_argument, "uniform draw outside [0, 1)");
    return u;
}

// top-k then top-p on temperature-scaled logits (in place)
void filter_top_k_top_p(std::vector<float> & v, int top_k, float top_p) {
    const size_t n = v.size();
    if (top_k > 0 && static_cast<size_t>(top_k) < n) {
        std::vector<float> tmp(v);
        std::nth_element(tmp.begin(), tmp.begin() + (top_k - 1), tmp.end(), std::greater<float>());
        const float kth = tmp[top_k - 1];
        for (float & x : v) {
            if (x < kth) x = kNegInf;  // values equal to the k-th stay
        }
    }
    if (top_p < 1.0f) {
        std::vector<int32_t> order;
        for (size_t i = 0; i < n; ++i) {
            if (v[i] != kNegInf) order.push_back(static_cast<int32_t>(i));
        }
        std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return v[a] > v[b]; });
        if (order.empty()) return;
        const double top = v[order[0]];
        double total = 0.0;
        for (int32_t i : order) total += std::exp(v[i] - top);
        // drop every token after the first whose cumulative probability passes top_p
        double cum = 0.0;
        bool drop = false;
        for (int32_t i : order) {
            if (drop) {
                v[i] = kNegInf;
                continue;
            }
            cum += std::exp(v[i] - top) / total;
            if (cum > top_p) drop = true;
        }
    }
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
                             const std::function<double()> & draw) {
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
    for (llama_token t : ids.forbidden) {
        if (t >= 0 && t < n_vocab) v[t] = kNegInf;
    }
    v[ids.chunk_eos] = kNegInf;
    if (p.repetition_penalty != 1.0f && !history.empty()) {
        const size_t from = history.size() > static_cast<size_t>(p.repetition_window)
                                ? history.size() - static_cast<size_t>(p.repetition_window)
                                : 0;
        std::unordered_set<llama_token> seen(history.begin() + from, history.end());
        for (llama_token t : seen) {
            if (t < 0 || t >= n_vocab) continue;
            // the reference divides for a penalty > 1 and multiplies by 1/penalty below 1: both
            // are v / penalty, whatever the sign of v
            v[t] = v[t] / p.repetition_penalty;
        }
    }
    if (p.length_penalty != 1.0f) {
        float & x = v[ids.turn_eos];
        x = x > 0 ? x / p.length_penalty : x * p.length_penalty;
    }
    if (p.listen_prob_scale != 1.0f && v[ids.eos] != kNegInf) v[ids.eos] *= p.listen_prob_scale;
    if (p.listen_top_k > 0) {
        if (ids.listen < 0 || ids.listen >= n_vocab) fail(Status::invalid_argument, "listen_top_k needs the <|listen|> id");
        const float l = v[ids.listen];
        const auto above = std::count_if(v.begin(), v.end(), [l](float x) { return x > l; });
        if (above < p.listen_top_k) return {ids.listen, 3};
    }

    if (p.greedy) return {static_cast<llama_token>(argmax(v)), 2};
    for (float & x : v) x /= p.temperature;
    filter_top_k_top_p(v, p.top_k, p.top_p);
    if (*std::max_element(v.begin(), v.end()) == kNegInf) {
        fail(Status::invalid_argument, "every token is forbidden: nothing left to sample");
    }
    return {static_cast<llama_token>(draw_from(v, next_uniform(draw))), 2};
}

}  // namespace minicpmo
