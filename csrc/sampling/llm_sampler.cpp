#include "sampling/llm_sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/uniform_random.h"

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
    const bool penalise = params_.repetition_penalty != 1.0f && !history.empty();
    if (!params_.do_sample && !penalise) {
        // plain greedy reads the logits in place: this runs once per generated token
        // two simple passes vectorise; one loop with both tests does not
        bool nan = false;
        for (size_t i = 0; i < static_cast<size_t>(n_vocab_); ++i) nan |= logits[i] != logits[i];
        if (nan) fail(Status::internal, "the model produced NaN logits");
        return static_cast<llama_token>(std::max_element(logits, logits + n_vocab_) - logits);
    }
    work_.assign(logits, logits + n_vocab_);
    for (float v : work_) {
        if (std::isnan(v)) fail(Status::internal, "the model produced NaN logits");
    }

    if (penalise) {
        const size_t start = params_.repetition_window > 0 && history.size() > static_cast<size_t>(params_.repetition_window)
                                 ? history.size() - static_cast<size_t>(params_.repetition_window)
                                 : 0;
        std::vector<llama_token> seen(history.begin() + static_cast<std::ptrdiff_t>(start), history.end());
        std::sort(seen.begin(), seen.end());
        seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
        for (llama_token t : seen) {
            if (t < 0 || t >= n_vocab_) continue;
            float & v = work_[static_cast<size_t>(t)];
            v = v > 0.0f ? v / params_.repetition_penalty : v * params_.repetition_penalty;
        }
    }

    if (!params_.do_sample) {
        // first maximum, like torch.argmax
        return static_cast<llama_token>(std::max_element(work_.begin(), work_.end()) - work_.begin());
    }

    for (float & v : work_) v /= params_.temperature;

    // candidates sorted by logit, descending; ties by lower id first (stable, deterministic)
    order_.resize(static_cast<size_t>(n_vocab_));
    std::iota(order_.begin(), order_.end(), 0);
    auto by_logit = [&](int32_t a, int32_t b) {
        return work_[static_cast<size_t>(a)] > work_[static_cast<size_t>(b)] ||
               (work_[static_cast<size_t>(a)] == work_[static_cast<size_t>(b)] && a < b);
    };
    size_t n_keep = order_.size();
    if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < order_.size()) {
        // HF keeps every token whose logit is >= the k-th largest (ties at the boundary survive)
        const size_t k = static_cast<size_t>(params_.top_k);
        std::nth_element(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(k - 1), order_.end(), by_logit);
        const float kth = work_[static_cast<size_t>(order_[k - 1])];
        auto mid = std::partition(order_.begin(), order_.end(),
                                  [&](int32_t t) { return work_[static_cast<size_t>(t)] >= kth; });
        n_keep = static_cast<size_t>(mid - order_.begin());
    }
    std::sort(order_.begin(), order_.begin() + static_cast<std::ptrdiff_t>(n_keep), by_logit);
    const float max_logit = work_[static_cast<size_t>(order_[0])];
    if (!std::isfinite(max_logit)) fail(Status::internal, "no finite logit to sample from");

    std::vector<double> probs(n_keep);
    double sum = 0.0;
    for (size_t i = 0; i < n_keep; ++i) {
        probs[i] = std::exp(static_cast<double>(work_[static_cast<size_t>(order_[i])]) - max_logit);
        sum += probs[i];
    }
    // top-p: keep the shortest head whose mass reaches top_p (HF drops tokens whose ascending
    // cumulative mass is <= 1 - top_p, always keeping at least one)
    size_t n_top_p = n_keep;
    if (params_.top_p < 1.0f) {
        double cum = 0.0;
        for (size_t i = 0; i < n_keep; ++i) {
            cum += probs[i] / sum;
            if (cum >= params_.top_p) {
                n_top_p = i + 1;
                break;
            }
        }
    }
    double mass = 0.0;
    for (size_t i = 0; i < n_top_p; ++i) mass += probs[i];
    const double u = uniform() * mass;
    double acc = 0.0;
    for (size_t i = 0; i < n_top_p; ++i) {
        acc += probs[i];
        if (u < acc) return order_[i];
    }
    return order_[n_top_p - 1];
}

}  // namespace minicpmo
