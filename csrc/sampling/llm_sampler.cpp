#include "sampling/llm_sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "core/uniform_random.h"
#include "sampling/logits_ops.h"
#include "sampling/pick.h"

namespace minicpmo {

void validate_sampling_params(const SamplingParams & p) {
    if (!std::isfinite(p.temperature) || p.temperature < 0.0f) {
        fail(Status::invalid_argument, "temperature must be >= 0, got " + std::to_string(p.temperature));
    }
    if (!std::isfinite(p.top_p) || p.top_p <= 0.0f || p.top_p > 1.0f) {
        fail(Status::invalid_argument, "top_p must be in (0, 1], got " + std::to_string(p.top_p));
    }
    if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0.0f) {
        fail(Status::invalid_argument, "repetition_penalty must be > 0, got " + std::to_string(p.repetition_penalty));
    }
    if (p.repetition_window < 0) {
        fail(Status::invalid_argument, "repetition_window must be >= 0");
    }
}

Sampler::Sampler(const SamplingParams & params, int n_vocab)
    : params_(params), n_vocab_(n_vocab), rng_(params.seed) {
    validate_sampling_params(params);
    // temperature 0 means greedy, as in most runtimes (HF would reject it)
    if (params_.temperature == 0.0f) params_.do_sample = false;
}

double Sampler::uniform() { return uniform_unit(rng_()); }

llama_token Sampler::sample(const float * logits, const std::vector<llama_token> & history) {
    const size_t n = static_cast<size_t>(n_vocab_);
    const bool penalise = params_.repetition_penalty != 1.0f && !history.empty();
    if (!params_.do_sample && !penalise) {
        // plain greedy reads the logits in place: this runs once per generated token
        if (any_nan(logits, n)) fail(Status::internal, "the model produced NaN logits");
        return static_cast<llama_token>(argmax(logits, n));
    }
    work_.assign(logits, logits + n);
    if (any_nan(work_.data(), n)) fail(Status::internal, "the model produced NaN logits");

    if (penalise) {
        const size_t window = static_cast<size_t>(params_.repetition_window);
        const size_t from = window > 0 ? window_start(history.size(), window) : 0;
        penalise_ids(work_, distinct_ids(history, from), params_.repetition_penalty);
    }
    if (!params_.do_sample) return static_cast<llama_token>(argmax(work_));

    divide_by_temperature(work_, params_.temperature);
    // HF keeps every token whose logit is >= the k-th largest (ties at the boundary survive)
    const size_t k = params_.top_k > 0 ? static_cast<size_t>(params_.top_k) : n;
    std::vector<int32_t> ids = ids_at_least(work_, k < n ? kth_largest(work_, k) : kMasked);
    sort_by_logit_desc(ids, work_);
    const std::vector<float> sorted = logits_at(work_, ids);
    if (!std::isfinite(sorted[0])) fail(Status::internal, "no finite logit to sample from");

    std::vector<double> weights = exp_weights(sorted, sorted[0]);
    // top-p: the shortest head whose mass reaches top_p (HF drops tokens whose ascending
    // cumulative mass is <= 1 - top_p, always keeping at least one)
    weights.resize(nucleus_size(weights, params_.top_p, NucleusEnd::reaches));
    const size_t i = pick_inverse_cdf(weights, uniform());
    return ids[std::min(i, weights.size() - 1)];  // past the end: u * mass rounded up to the mass
}

}  // namespace minicpmo
