// Token sampling with the semantics of Hugging Face generate() as MiniCPM-o uses it (spec §4.5):
// repetition penalty over the ids generated so far, then temperature, top-k, top-p, multinomial.
// Own implementation (not llama.cpp's chain) so the order and tie rules match the reference.
// Composed of sampling/logits_ops: penalise_ids (HF's sign-aware rule) on the distinct ids of the
// window, divide_by_temperature, top-k keeping ties at the k-th value, the candidates sorted
// largest first (ties by id), top-p ending at the first token that *reaches* top_p, one uniform
// draw through the inverse CDF of the sorted nucleus.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "llama.h"

namespace minicpmo {

struct SamplingParams {
    bool do_sample = true;
    float temperature = 0.7f;
    float top_p = 0.8f;
    int top_k = 100;                   // <= 0: no top-k
    float repetition_penalty = 1.02f;  // 1 = off
    int repetition_window = 0;         // penalise only the last N ids; 0 = all of them
    uint64_t seed = 0;
};

class Sampler {
public:
    Sampler(const SamplingParams & params, int n_vocab);
    // `history`: ids generated so far in this reply (what HF's processors see when the prompt is
    // passed as embeddings). Throws invalid_argument on non-finite logits.
    llama_token sample(const float * logits, const std::vector<llama_token> & history);

private:
    double uniform();  // [0, 1), identical on every platform for a given seed

    SamplingParams params_;
    int n_vocab_;
    std::mt19937_64 rng_;
    std::vector<float> work_;
};

// Throws invalid_argument naming the bad field when params are out of range.
void validate_sampling_params(const SamplingParams & params);

}  // namespace minicpmo
