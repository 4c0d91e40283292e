#include "sampling/tts_sampler.h"

#include <algorithm>

#include "core/error.h"
#include "sampling/logits_ops.h"

namespace minicpmo {

int tts_sample(std::vector<float> & x, const std::vector<int32_t> & history, const TtsSampling & s, const TtsStep & step,
               const UniformDraw & draw) {
    if (x.empty()) fail(Status::internal, "no logits to sample from");
    divide_by_temperature(x, s.temperature);
    if (step.apply_processors) {
        if (s.repetition_penalty != 1.0f) {
            const size_t from = window_start(history.size(), static_cast<size_t>(s.repetition_window));
            penalise_by_count(x, history, from, s.repetition_penalty);
        }
        if (s.top_p < 1.0f) mask_outside_top_p_ascending(x, s.top_p, s.min_keep);
        if (s.top_k > 0) mask_outside_top_k(x, std::min(x.size(), static_cast<size_t>(std::max(s.top_k, s.min_keep))));
    }
    if (step.mask_eos) mask_id(x, step.eos);
    if (!draw) return static_cast<int>(argmax(x));  // first on ties
    const double u = draw();
    if (!(u >= 0.0 && u < 1.0)) fail(Status::invalid_argument, "a uniform draw must be in [0, 1)");
    const std::vector<double> p = softmax_float_shift(x);
    const size_t i = pick_inverse_cdf(p, u);
    if (i < p.size()) return static_cast<int>(i);
    // u * total rounded up to the total: the last token with any probability (-1 if none)
    for (size_t j = p.size(); j-- > 0;) {
        if (p[j] > 0.0) return static_cast<int>(j);
    }
    return -1;
}

}  // namespace minicpmo
