#include "sampling/pick.h"

#include <algorithm>
#include <cmath>

#include "sampling/logits_ops.h"

namespace minicpmo {

size_t argmax(const float * x, size_t n) { return static_cast<size_t>(std::max_element(x, x + n) - x); }

bool any_nan(const float * x, size_t n) {
    bool nan = false;
    for (size_t i = 0; i < n; ++i) nan |= x[i] != x[i];
    return nan;
}

std::vector<double> exp_weights(const std::vector<float> & x, float max) {
    std::vector<double> w(x.size());
    for (size_t i = 0; i < x.size(); ++i) w[i] = x[i] == kMasked ? 0.0 : std::exp(static_cast<double>(x[i]) - max);
    return w;
}

std::vector<double> softmax_float_shift(const std::vector<float> & x) {
    const float m = *std::max_element(x.begin(), x.end());
    std::vector<double> p(x.size());
    double sum = 0.0;
    for (size_t i = 0; i < x.size(); ++i) sum += p[i] = x[i] == kMasked ? 0.0 : std::exp(static_cast<double>(x[i] - m));
    for (double & v : p) v /= sum;
    return p;
}

size_t pick_inverse_cdf(const std::vector<double> & weights, double u) {
    if (weights.empty()) return 0;
    std::vector<double> cum(weights.size());
    double total = 0.0;
    for (size_t i = 0; i < weights.size(); ++i) cum[i] = total += weights[i];
    const double target = u * total;
    // the running sums never decrease, so a binary search finds the first one above the target
    return static_cast<size_t>(std::upper_bound(cum.begin(), cum.end(), target) - cum.begin());
}

}  // namespace minicpmo
