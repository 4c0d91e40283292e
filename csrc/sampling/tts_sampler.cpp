#include "sampling/tts_sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "core/error.h"

namespace minicpmo {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void repetition_penalty(std::vector<float> & x, const std::vector<int32_t> & history, float penalty, int window) {
    const size_t from = history.size() > static_cast<size_t>(window) ? history.size() - window : 0;
    std::vector<int> count(x.size(), 0);
    for (size_t i = from; i < history.size(); ++i) {
        const int32_t t = history[i];
        if (t < 0 || static_cast<size_t>(t) >= x.size()) fail(Status::invalid_argument, "penalty history holds an invalid token");
        ++count[t];
    }
    for (size_t i = 0; i < x.size(); ++i) {
        if (!count[i]) continue;
        const float alpha = std::pow(penalty, static_cast<float>(count[i]));
        x[i] = x[i] < 0.0f ? x[i] * alpha : x[i] / alpha;  // 0 is divided (no change)
    }
}

// softmax probabilities of x (in double, max-subtracted)
std::vector<double> softmax(const std::vector<float> & x) {
    const float m = *std::max_element(x.begin(), x.end());
    std::vector<double> p(x.size());
    double sum = 0.0;
    for (size_t i = 0; i < x.size(); ++i) sum += p[i] = x[i] == kNegInf ? 0.0 : std::exp(static_cast<double>(x[i] - m));
    for (double & v : p) v /= sum;
    return p;
}

// transformers TopPLogitsWarper: ascending sort, drop tokens whose cumulative probability is
// <= 1 - top_p, never the min_keep largest (ties in index order)
void top_p(std::vector<float> & x, float top_p_value, int min_keep) {
    std::vector<int> order(x.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return x[a] < x[b]; });
    std::vector<float> sorted(x.size());
    for (size_t i = 0; i < order.size(); ++i) sorted[i] = x[order[i]];
    const std::vector<double> p = softmax(sorted);
    const double limit = 1.0 - static_cast<double>(top_p_value);
    double cum = 0.0;
    const size_t keep_from = x.size() > static_cast<size_t>(min_keep) ? x.size() - min_keep : 0;
    for (size_t i = 0; i < keep_from; ++i) {
        cum += p[i];
        if (cum <= limit) x[order[i]] = kNegInf;
    }
}

// transformers TopKLogitsWarper: keep logits >= the k-th largest, k = max(top_k, min_keep)
void top_k(std::vector<float> & x, int k_value, int min_keep) {
    const size_t k = std::min(x.size(), static_cast<size_t>(std::max(k_value, min_keep)));
    std::vector<float> v = x;
    std::nth_element(v.begin(), v.begin() + (v.size() - k), v.end());
    const float kth = v[v.size() - k];
    for (float & f : x) {
        if (f < kth) f = kNegInf;
    }
}

}  // namespace

int tts_sample(std::vector<float> & x, const std::vector<int32_t> & history, const TtsSampling & s, const TtsStep & step,
               const UniformDraw & draw) {
    if (x.empty()) fail(Status::internal, "no logits to sample from");
    for (float & f : x) f /= s.temperature;
    if (step.apply_processors) {
        if (s.repetition_penalty != 1.0f) repetition_penalty(x, history, s.repetition_penalty, s.repetition_window);
        if (s.top_p < 1.0f) top_p(x, s.top_p, s.min_keep);
        if (s.top_k > 0) top_k(x, s.top_k, s.min_keep);
    }
    if (step.mask_eos && step.eos >= 0 && static_cast<size_t>(step.eos) < x.size()) x[step.eos] = kNegInf;
    if (!draw) return static_cast<int>(std::max_element(x.begin(), x.end()) - x.begin());  // first on ties
    const double u = draw();
    if (!(u >= 0.0 && u < 1.0)) fail(Status::invalid_argument, "a uniform draw must be in [0, 1)");
    const std::vector<double> p = softmax(x);
    double total = 0.0;
    for (double v : p) total += v;
    const double target = u * total;
    double cum = 0.0;
    int last_positive = -1;
    for (size_t i = 0; i < p.size(); ++i) {
        if (p[i] > 0.0) last_positive = static_cast<int>(i);
        cum += p[i];
        if (cum > target && p[i] > 0.0) return static_cast<int>(i);
    }
    return last_positive;  // rounding at the top end
}

}  // namespace minicpmo
