// Small in-place operations on one row of logits, the pieces the samplers in this folder are
// composed of (llm_sampler: Hugging Face generate(); tts_sampler: the speech-token decoder;
// duplex_decode: the duplex text decision). Each op states its exact arithmetic (float or double,
// order, ties) because the samplers are compared token for token with numpy / torch references:
// where two references differ, there are two ops, named after the rule, not one with a hidden mode.
//
// A masked logit is -inf (kMasked): it has probability 0 and never wins an argmax against a
// finite logit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace minicpmo {

constexpr float kMasked = -std::numeric_limits<float>::infinity();

// ---- scaling ----

// x[i] /= temperature, in float (torch's logits / T).
void divide_by_temperature(std::vector<float> & x, float temperature);

// Hugging Face's repetition-penalty rule on one logit: a positive logit is divided by `penalty`, a
// negative (or zero) one multiplied, so a penalty > 1 always makes the token less likely.
inline float penalise_logit(float v, float penalty) { return v > 0.0f ? v / penalty : v * penalty; }

// x[id] *= factor unless x[id] is masked (a -inf logit stays -inf whatever the factor's sign).
void scale_unmasked(std::vector<float> & x, int32_t id, float factor);

// ---- repetition penalties ----

// Where a window of the last `window` entries of a history of n entries starts (0: none of them).
inline size_t window_start(size_t n, size_t window) { return n > window ? n - window : 0; }

// The ids of history[from..], sorted, each once.
std::vector<int32_t> distinct_ids(const std::vector<int32_t> & history, size_t from);

// Hugging Face RepetitionPenaltyLogitsProcessor: penalise_logit on every id of `ids` (distinct);
// ids outside the row are ignored.
void penalise_ids(std::vector<float> & x, const std::vector<int32_t> & ids, float penalty);

// The duplex reference's penalty: x[id] / penalty whatever the sign of x[id] (a negative logit
// moves up); ids outside the row are ignored.
void divide_ids(std::vector<float> & x, const std::vector<int32_t> & ids, float penalty);

// The speech decoder's count-based penalty: c = occurrences of each id in history[from..],
// penalise_logit with penalty^c (float pow). Throws invalid_argument for an id outside the row.
void penalise_by_count(std::vector<float> & x, const std::vector<int32_t> & history, size_t from, float penalty);

// ---- masks ----

// x[id] = -inf; an id outside the row is ignored.
void mask_id(std::vector<float> & x, int32_t id);

// Every logit below `threshold` to -inf (equal ones stay).
void mask_below(std::vector<float> & x, float threshold);

// True when every logit is -inf.
bool all_masked(const std::vector<float> & x);

// How many logits are strictly greater than `value`.
size_t count_above(const std::vector<float> & x, float value);

// ---- top-k ----

// The k-th largest logit (1 <= k <= size); the value, so ties do not matter.
float kth_largest(const std::vector<float> & x, size_t k);

// Top-k keeping ties: every logit below the k-th largest to -inf, so more than k may survive
// (torch.topk's k-th value as the threshold, as transformers' TopKLogitsWarper and the duplex
// reference do). k >= size keeps everything.
void mask_outside_top_k(std::vector<float> & x, size_t k);

// ---- candidate lists (ids in a sampling order) ----

// The ids whose logit is >= threshold, in id order.
std::vector<int32_t> ids_at_least(const std::vector<float> & x, float threshold);

// The ids whose logit is not masked, in id order.
std::vector<int32_t> unmasked_ids(const std::vector<float> & x);

// Sorts `ids` by logit, largest first, equal logits by lower id (a stable descending sort).
void sort_by_logit_desc(std::vector<int32_t> & ids, const std::vector<float> & x);

// x[ids[0]], x[ids[1]], ...
std::vector<float> logits_at(const std::vector<float> & x, const std::vector<int32_t> & ids);

// ---- top-p ----

// How the nucleus ends: the first token whose cumulative probability reaches top_p (>=, the
// Hugging Face sampler as this runtime's LLM path has always done it) or passes it (>, the duplex
// reference).
enum class NucleusEnd { reaches, passes };

// The length of the nucleus of `weights` (unnormalised probabilities, largest first): the
// cumulative sum of weights[i] / total (total summed in order, in double) is compared with top_p
// after each token; the head up to and including the first token that ends it is kept. top_p >= 1
// keeps all.
size_t nucleus_size(const std::vector<double> & weights, float top_p, NucleusEnd end);

// Top-p over the unmasked logits, largest first (ties by id): exp_weights shifted by the largest,
// nucleus_size with `end`, every id after the nucleus to -inf. top_p >= 1 keeps all.
void mask_outside_top_p_descending(std::vector<float> & x, float top_p, NucleusEnd end);

// transformers' TopPLogitsWarper: sort ascending (ties by id), softmax_float_shift of the sorted
// row, and mask each token whose ascending cumulative probability is <= 1 - top_p, never the
// min_keep largest.
void mask_outside_top_p_ascending(std::vector<float> & x, float top_p, int min_keep);

}  // namespace minicpmo
