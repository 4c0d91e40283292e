// Choosing one id from a row of logits: the argmax, or a distribution (weights) and one uniform
// draw through its inverse CDF. The samplers in this folder end with one of these; the uniform
// numbers themselves come from core/uniform_random.h.
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

namespace minicpmo {

// Returns a uniform number in [0, 1). Empty = greedy where a sampler allows it.
using UniformDraw = std::function<double()>;

// The first of equal maxima, as torch.argmax.
size_t argmax(const float * x, size_t n);
inline size_t argmax(const std::vector<float> & x) { return argmax(x.data(), x.size()); }

// True when any value is NaN. Two simple passes (this, then argmax) vectorise; one loop with both
// tests does not, and the plain greedy path runs this once per generated token.
bool any_nan(const float * x, size_t n);

// Unnormalised probabilities exp(x[i] - max) with the shift done in double (double(x[i]) -
// double(max)); a masked (-inf) logit gets exactly 0.
std::vector<double> exp_weights(const std::vector<float> & x, float max);

// torch.softmax on float32 logits as the speech decoder's reference computes it: max-subtracted
// in float (x[i] - max rounded to float, then widened), exp and the sum in double, then each
// divided by the sum; a masked (-inf) logit gets exactly 0.
std::vector<double> softmax_float_shift(const std::vector<float> & x);

// Inverse-CDF draw: the first index whose running sum of weights (in index order, from 0, in
// double) exceeds u * total, where total is the whole running sum. Returns weights.size() when
// none does (u * total rounded up to total, or NaN weights): each sampler has its own fallback.
// A zero weight is never chosen (its running sum equals the previous one).
size_t pick_inverse_cdf(const std::vector<double> & weights, double u);

}  // namespace minicpmo
