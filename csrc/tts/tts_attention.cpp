#include "tts/tts_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/softmax_rows.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MINICPMO_TTS_ATTENTION_X86 1
#include <immintrin.h>
#endif

namespace minicpmo {

namespace {

#ifdef MINICPMO_TTS_ATTENTION_X86

__attribute__((target("avx2,fma"))) float horizontal_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// sum_i a[i] * b[i], a stored as F16 (widened exactly) or F32
__attribute__((target("avx2,fma,f16c"))) float dot(const void * a, bool a_f16, const float * b, int64_t n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    if (a_f16) {
        const auto * h = static_cast<const uint16_t *>(a);
        for (; i + 16 <= n; i += 16) {
            acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(h + i))),
                                   _mm256_loadu_ps(b + i), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(h + i + 8))),
                                   _mm256_loadu_ps(b + i + 8), acc1);
        }
        float tail = 0.0f;
        for (; i < n; ++i) tail += _cvtsh_ss(h[i]) * b[i];
        return horizontal_sum(_mm256_add_ps(acc0, acc1)) + tail;
    }
    const auto * f = static_cast<const float *>(a);
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(f + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(f + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    float tail = 0.0f;
    for (; i < n; ++i) tail += f[i] * b[i];
    return horizontal_sum(_mm256_add_ps(acc0, acc1)) + tail;
}

template <bool kF16>
__attribute__((target("avx2,fma,f16c"))) __m256 load8(const void * row, int64_t d) {
    if constexpr (kF16) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(static_cast<const uint16_t *>(row) + d)));
    } else {
        return _mm256_loadu_ps(static_cast<const float *>(row) + d);
    }
}

// scores[j] = k_j . q for the S keys at k + j * ld (bytes), hd a multiple of 8: eight keys at a time,
// their eight sums reduced together
template <bool kF16>
__attribute__((target("avx2,fma,f16c"))) void key_scores(const char * k, size_t ld, int64_t S, const float * q,
                                                         int64_t hd, float * scores) {
    int64_t j = 0;
    for (; j + 8 <= S; j += 8) {
        __m256 acc[8];
        for (int s = 0; s < 8; ++s) acc[s] = _mm256_setzero_ps();
        for (int64_t d = 0; d < hd; d += 8) {
            const __m256 qv = _mm256_loadu_ps(q + d);
            for (int s = 0; s < 8; ++s) acc[s] = _mm256_fmadd_ps(load8<kF16>(k + (j + s) * ld, d), qv, acc[s]);
        }
        const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
        const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
        _mm256_storeu_ps(scores + j, _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31)));
    }
    for (; j < S; ++j) scores[j] = dot(k + j * ld, kF16, q, hd);
}

// The custom op carries the RoPE base in its user-data pointer's bits (a pointer-sized integer).
void * float_as_userdata(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof(bits));
    return reinterpret_cast<void *>(static_cast<uintptr_t>(bits));
}

float float_of(void * userdata) {
    const auto bits = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(userdata));
    float value;
    std::memcpy(&value, &bits, sizeof(value));
    return value;
}

// The rotation of rotate-half RoPE at one position, as ggml's NEOX mode computes it: pair (i, i + hd/2)
// turned by pos * base^(-2i/hd), the angle advanced by repeated multiplication in float; cos in
// [0, hd/2), sin in [hd/2, hd)
void rope_angles(float * cos_sin, int64_t hd, int32_t pos, float theta_scale) {
    float theta = static_cast<float>(pos);
    const int64_t half = hd / 2;
    for (int64_t i = 0; i < half; ++i) {
        cos_sin[i] = std::cos(theta);
        cos_sin[half + i] = std::sin(theta);
        theta *= theta_scale;
    }
}

// One head rotated in place by a row's angles (rope_angles)
void rope_head(float * x, int64_t hd, const float * cos_sin) {
    const int64_t half = hd / 2;
    for (int64_t i = 0; i < half; ++i) {
        const float c = cos_sin[i], s = cos_sin[half + i];
        const float x0 = x[i], x1 = x[i + half];
        x[i] = x0 * c - x1 * s;
        x[i + half] = x0 * s + x1 * c;
    }
}

template <typename T>
T * at(const ggml_tensor * t, int64_t i1, int64_t i2 = 0) {
    return reinterpret_cast<T *>(static_cast<char *>(t->data) + i1 * t->nb[1] + i2 * t->nb[2]);
}

__attribute__((target("f16c"))) void store(void * cache_row, bool f16, int64_t i, float value) {
    if (f16) {
        static_cast<uint16_t *>(cache_row)[i] = _cvtss_sh(value, _MM_FROUND_TO_NEAREST_INT);
    } else {
        static_cast<float *>(cache_row)[i] = value;
    }
}

// Tasks = key/value heads, split between the threads in contiguous runs: a task stores its head's new
// keys (rotated) and values, then runs its query heads (scores over the slots, their softmax by
// core/softmax_rows in place, each output channel as the probabilities' dot product with that
// channel's row of the transposed values). No two threads write or read the same head.
void attend(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor *q = dst->src[0], *k = dst->src[1], *v = dst->src[2], *pos = dst->src[3], *mask = dst->src[4];
    const ggml_tensor *ck = dst->src[5], *cv = dst->src[6];
    const int64_t hd = q->ne[0], H = q->ne[1], n = q->ne[2], Hkv = k->ne[1], S = mask->ne[0], first = S - n;
    const int64_t group = H / Hkv;
    const bool f16 = ck->type == GGML_TYPE_F16;
    const size_t es = ggml_type_size(ck->type);
    const float theta_scale = std::pow(float_of(userdata), -2.0f / static_cast<float>(hd));
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const int32_t * positions = static_cast<const int32_t *>(pos->data);
    const int64_t per = (Hkv + nth - 1) / nth;
    const int64_t begin = std::min(Hkv, per * ith), end = std::min(Hkv, begin + per);
    constexpr int64_t kStackSlots = 4096, kStackHead = 1024;
    float p_stack[kStackSlots], row_stack[kStackHead];
    std::vector<float> p_heap, row_heap;
    float * p = p_stack;
    float * row = row_stack;
    if (S > kStackSlots) {
        p_heap.resize(static_cast<size_t>(S));
        p = p_heap.data();
    }
    if (hd > kStackHead) {
        row_heap.resize(static_cast<size_t>(hd));
        row = row_heap.data();
    }
    if (begin >= end) return;
    // every new row's angles once, for its key heads and query heads alike
    std::vector<float> angles(static_cast<size_t>(n * hd));
    for (int64_t i = 0; i < n; ++i) rope_angles(angles.data() + i * hd, hd, positions[i], theta_scale);
    for (int64_t kv = begin; kv < end; ++kv) {
        for (int64_t i = 0; i < n; ++i) {
            std::memcpy(row, static_cast<const char *>(k->data) + i * k->nb[2] + kv * k->nb[1],
                        static_cast<size_t>(hd) * sizeof(float));
            rope_head(row, hd, angles.data() + i * hd);
            void * k_slot = static_cast<char *>(ck->data) + (first + i) * ck->nb[1] + kv * hd * es;
            const float * v_row = at<const float>(v, i) + kv * hd;
            for (int64_t c = 0; c < hd; ++c) {
                store(k_slot, f16, c, row[c]);
                store(static_cast<char *>(cv->data) + (kv * hd + c) * cv->nb[1], f16, first + i, v_row[c]);
            }
        }
        const char * k_head = static_cast<const char *>(ck->data) + kv * hd * es;
        const char * v_head = static_cast<const char *>(cv->data) + kv * hd * cv->nb[1];
        for (int64_t h = kv * group; h < (kv + 1) * group; ++h) {
            for (int64_t i = 0; i < n; ++i) {
                std::memcpy(row, reinterpret_cast<const char *>(q->data) + i * q->nb[2] + h * q->nb[1],
                            static_cast<size_t>(hd) * sizeof(float));
                rope_head(row, hd, angles.data() + i * hd);
                if (hd % 8 != 0) {
                    for (int64_t j = 0; j < S; ++j) p[j] = dot(k_head + j * ck->nb[1], f16, row, hd);
                } else if (f16) {
                    key_scores<true>(k_head, ck->nb[1], S, row, hd, p);
                } else {
                    key_scores<false>(k_head, ck->nb[1], S, row, hd, p);
                }
                softmax_rows_to_f32(p, S, at<const float>(mask, i), S, p, S, 1, S, scale);
                float * out = at<float>(dst, i) + h * hd;
                for (int64_t c = 0; c < hd; ++c) out[c] = dot(v_head + c * cv->nb[1], f16, p, S);
            }
        }
    }
}

#endif  // MINICPMO_TTS_ATTENTION_X86

}  // namespace

bool tts_cached_attention_supported() {
#ifdef MINICPMO_TTS_ATTENTION_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
    return false;
#endif
}

ggml_tensor * tts_cached_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v,
                                   ggml_tensor * pos, ggml_tensor * mask, const TtsAttentionCache & cache,
                                   float rope_theta) {
#ifdef MINICPMO_TTS_ATTENTION_X86
    const int64_t hd = q->ne[0], H = q->ne[1], n = q->ne[2], Hkv = k->ne[1], width = hd * Hkv;
    const ggml_type type = cache.k->type;
    const int64_t S = cache.n_cached + n;
    const auto f32_rows = [](const ggml_tensor * t) { return t->type == GGML_TYPE_F32 && t->nb[0] == sizeof(float); };
    const bool shapes_ok =
        f32_rows(q) && f32_rows(k) && f32_rows(v) && hd % 2 == 0 && k->ne[0] == hd && k->ne[2] == n && Hkv > 0 &&
        H % Hkv == 0 && v->ne[0] == width && v->ne[1] == n && pos->type == GGML_TYPE_I32 && pos->ne[0] == n &&
        (type == GGML_TYPE_F16 || type == GGML_TYPE_F32) && cache.v->type == type && cache.k->ne[0] == width &&
        cache.v->ne[1] == width && cache.v->ne[0] == cache.k->ne[1] && cache.n_cached >= 0 && S <= cache.k->ne[1] &&
        mask->type == GGML_TYPE_F32 && mask->ne[0] == S && mask->ne[1] == n && ggml_is_contiguous(mask) &&
        q->nb[1] == hd * sizeof(float) && k->nb[1] == hd * sizeof(float);
    if (!shapes_ok) fail(Status::internal, "the TTS attention node got operands of unexpected shapes");
    ggml_tensor * args[] = {q, k, v, pos, mask, cache.k, cache.v};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, hd * H, n, 1, 1, args, 7, attend, GGML_N_TASKS_MAX,
                          float_as_userdata(rope_theta));
#else
    (void)ctx; (void)q; (void)k; (void)v; (void)pos; (void)mask; (void)cache; (void)rope_theta;
    fail(Status::unsupported, "the TTS attention node exists only on x86-64");
#endif
}

}  // namespace minicpmo
