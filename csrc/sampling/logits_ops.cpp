#include "sampling/logits_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "sampling/pick.h"

namespace minicpmo {

namespace {

bool in_row(const std::vector<float> & x, int32_t id) { return id >= 0 && static_cast<size_t>(id) < x.size(); }

// The ids in ascending order of their logits, equal logits in id order (a stable sort): one sort of
// 64-bit keys, the logit's bits mapped to an unsigned order above the id, several times faster than a
// stable sort through the ids (this runs for every speech token over 6562 logits)
std::vector<int32_t> ids_by_logit_ascending(const std::vector<float> & x) {
    std::vector<uint64_t> keys(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
        uint32_t bits;
        const float v = x[i] + 0.0f;  // -0 -> +0: they compare equal
        std::memcpy(&bits, &v, sizeof(bits));
        bits = (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;  // negative: reversed, below the positive
        keys[i] = static_cast<uint64_t>(bits) << 32 | static_cast<uint32_t>(i);
    }
    std::sort(keys.begin(), keys.end());
    std::vector<int32_t> order(x.size());
    for (size_t i = 0; i < x.size(); ++i) order[i] = static_cast<int32_t>(keys[i] & 0xffffffffu);
    return order;
}

}  // namespace

void divide_by_temperature(std::vector<float> & x, float temperature) {
    for (float & v : x) v /= temperature;
}

void scale_unmasked(std::vector<float> & x, int32_t id, float factor) {
    if (in_row(x, id) && x[static_cast<size_t>(id)] != kMasked) x[static_cast<size_t>(id)] *= factor;
}

std::vector<int32_t> distinct_ids(const std::vector<int32_t> & history, size_t from) {
    const auto first = history.begin() + static_cast<std::ptrdiff_t>(std::min(from, history.size()));
    std::vector<int32_t> ids(first, history.end());
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    return ids;
}

void penalise_ids(std::vector<float> & x, const std::vector<int32_t> & ids, float penalty) {
    for (int32_t t : ids) {
        if (in_row(x, t)) x[static_cast<size_t>(t)] = penalise_logit(x[static_cast<size_t>(t)], penalty);
    }
}

void divide_ids(std::vector<float> & x, const std::vector<int32_t> & ids, float penalty) {
    for (int32_t t : ids) {
        if (in_row(x, t)) x[static_cast<size_t>(t)] = x[static_cast<size_t>(t)] / penalty;
    }
}

void penalise_by_count(std::vector<float> & x, const std::vector<int32_t> & history, size_t from, float penalty) {
    std::vector<int> count(x.size(), 0);
    for (size_t i = from; i < history.size(); ++i) {
        if (!in_row(x, history[i])) fail(Status::invalid_argument, "penalty history holds an invalid token");
        ++count[static_cast<size_t>(history[i])];
    }
    for (size_t i = 0; i < x.size(); ++i) {
        // float pow, as the reference's float32 tensor power; penalty^1 is the penalty exactly
        if (count[i]) x[i] = penalise_logit(x[i], std::pow(penalty, static_cast<float>(count[i])));
    }
}

void mask_id(std::vector<float> & x, int32_t id) {
    if (in_row(x, id)) x[static_cast<size_t>(id)] = kMasked;
}

void mask_below(std::vector<float> & x, float threshold) {
    for (float & v : x) {
        if (v < threshold) v = kMasked;
    }
}

bool all_masked(const std::vector<float> & x) { return x.empty() || *std::max_element(x.begin(), x.end()) == kMasked; }

size_t count_above(const std::vector<float> & x, float value) {
    return static_cast<size_t>(std::count_if(x.begin(), x.end(), [value](float v) { return v > value; }));
}

float kth_largest(const std::vector<float> & x, size_t k) {
    std::vector<float> v = x;
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() - k), v.end());
    return v[v.size() - k];
}

void mask_outside_top_k(std::vector<float> & x, size_t k) { mask_below(x, kth_largest(x, std::min(k, x.size()))); }

std::vector<int32_t> ids_at_least(const std::vector<float> & x, float threshold) {
    std::vector<int32_t> ids;
    for (size_t i = 0; i < x.size(); ++i) {
        if (x[i] >= threshold) ids.push_back(static_cast<int32_t>(i));
    }
    return ids;
}

std::vector<int32_t> unmasked_ids(const std::vector<float> & x) {
    std::vector<int32_t> ids;
    for (size_t i = 0; i < x.size(); ++i) {
        if (x[i] != kMasked) ids.push_back(static_cast<int32_t>(i));
    }
    return ids;
}

void sort_by_logit_desc(std::vector<int32_t> & ids, const std::vector<float> & x) {
    // the id tie-break makes the order total, so std::sort gives the stable sort's result
    std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
        const float va = x[static_cast<size_t>(a)], vb = x[static_cast<size_t>(b)];
        return va > vb || (va == vb && a < b);
    });
}

std::vector<float> logits_at(const std::vector<float> & x, const std::vector<int32_t> & ids) {
    std::vector<float> v(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) v[i] = x[static_cast<size_t>(ids[i])];
    return v;
}

size_t nucleus_size(const std::vector<double> & weights, float top_p, NucleusEnd end) {
    if (!(top_p < 1.0f)) return weights.size();
    double total = 0.0;
    for (double w : weights) total += w;
    double cum = 0.0;
    for (size_t i = 0; i < weights.size(); ++i) {
        cum += weights[i] / total;
        if (end == NucleusEnd::reaches ? cum >= top_p : cum > top_p) return i + 1;
    }
    return weights.size();
}

void mask_outside_top_p_descending(std::vector<float> & x, float top_p, NucleusEnd end) {
    if (!(top_p < 1.0f)) return;
    std::vector<int32_t> ids = unmasked_ids(x);
    if (ids.empty()) return;
    sort_by_logit_desc(ids, x);
    const std::vector<float> sorted = logits_at(x, ids);
    const size_t keep = nucleus_size(exp_weights(sorted, sorted[0]), top_p, end);
    for (size_t i = keep; i < ids.size(); ++i) x[static_cast<size_t>(ids[i])] = kMasked;
}

void mask_outside_top_p_ascending(std::vector<float> & x, float top_p, int min_keep) {
    const std::vector<int32_t> order = ids_by_logit_ascending(x);
    const std::vector<double> p = softmax_float_shift(logits_at(x, order));
    const double limit = 1.0 - static_cast<double>(top_p);
    const size_t keep_from = x.size() > static_cast<size_t>(min_keep) ? x.size() - static_cast<size_t>(min_keep) : 0;
    double cum = 0.0;
    for (size_t i = 0; i < keep_from; ++i) {
        cum += p[i];
        if (cum <= limit) x[static_cast<size_t>(order[i])] = kMasked;
    }
}

}  // namespace minicpmo
