#include "tts/tts_attention.h"

#include <algorithm>
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

// The custom op carries the softmax scale in its user-data pointer's bits (a pointer-sized integer).
void * scale_as_userdata(float scale) {
    uint32_t bits;
    std::memcpy(&bits, &scale, sizeof(bits));
    return reinterpret_cast<void *>(static_cast<uintptr_t>(bits));
}

float scale_of(void * userdata) {
    const auto bits = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(userdata));
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return scale;
}

// Tasks (head h, row i) split between the threads in contiguous runs: scores over the S slots, their
// softmax (core/softmax_rows, in place), then each output channel as the probabilities' dot product
// with that channel's row of the transposed values.
void attend(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const ggml_tensor * q = dst->src[0];
    const ggml_tensor * k = dst->src[1];
    const ggml_tensor * v = dst->src[2];
    const ggml_tensor * mask = dst->src[3];
    const int64_t hd = q->ne[0], H = q->ne[1], n = q->ne[2], S = k->ne[1];
    const int64_t group = H / (k->ne[0] / hd);
    const bool f16 = k->type == GGML_TYPE_F16;
    const size_t es = ggml_type_size(k->type);
    const int64_t tasks = H * n, per = (tasks + nth - 1) / nth;
    const int64_t begin = std::min(tasks, per * ith), end = std::min(tasks, begin + per);
    constexpr int64_t kStackSlots = 4096;
    float stack[kStackSlots];
    std::vector<float> heap;
    float * p = stack;
    if (S > kStackSlots) {
        heap.resize(static_cast<size_t>(S));
        p = heap.data();
    }
    for (int64_t t = begin; t < end; ++t) {
        const int64_t i = t / H, h = t % H, kv = h / group;
        const float * qi = reinterpret_cast<const float *>(static_cast<const char *>(q->data) + i * q->nb[2] + h * q->nb[1]);
        const char * k_head = static_cast<const char *>(k->data) + kv * hd * es;
        if (hd % 8 != 0) {
            for (int64_t j = 0; j < S; ++j) p[j] = dot(k_head + j * k->nb[1], f16, qi, hd);
        } else if (f16) {
            key_scores<true>(k_head, k->nb[1], S, qi, hd, p);
        } else {
            key_scores<false>(k_head, k->nb[1], S, qi, hd, p);
        }
        const float * mi = reinterpret_cast<const float *>(static_cast<const char *>(mask->data) + i * mask->nb[1]);
        softmax_rows_to_f32(p, S, mi, S, p, S, 1, S, scale_of(userdata));
        float * out = reinterpret_cast<float *>(static_cast<char *>(dst->data) + i * dst->nb[1]) + h * hd;
        const char * v_head = static_cast<const char *>(v->data) + kv * hd * v->nb[1];
        for (int64_t c = 0; c < hd; ++c) out[c] = dot(v_head + c * v->nb[1], f16, p, S);
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

ggml_tensor * tts_cached_attention(ggml_context * ctx, ggml_tensor * q, ggml_tensor * all_k, ggml_tensor * all_v,
                                   ggml_tensor * mask, float scale) {
#ifdef MINICPMO_TTS_ATTENTION_X86
    const int64_t hd = q->ne[0], S = all_k->ne[1];
    const bool shapes_ok = q->type == GGML_TYPE_F32 && ggml_is_contiguous(q) && all_k->ne[0] % hd == 0 &&
                           q->ne[1] % (all_k->ne[0] / hd) == 0 && all_v->ne[0] == S && all_v->ne[1] == all_k->ne[0] &&
                           all_k->type == all_v->type && (all_k->type == GGML_TYPE_F16 || all_k->type == GGML_TYPE_F32) &&
                           all_k->nb[0] == ggml_type_size(all_k->type) && all_v->nb[0] == ggml_type_size(all_v->type) &&
                           mask->type == GGML_TYPE_F32 && mask->ne[0] == S && mask->ne[1] == q->ne[2];
    if (!shapes_ok) fail(Status::internal, "the TTS attention node got operands of unexpected shapes");
    ggml_tensor * args[] = {q, all_k, all_v, mask};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, hd * q->ne[1], q->ne[2], 1, 1, args, 4, attend, GGML_N_TASKS_MAX,
                          scale_as_userdata(scale));
#else
    (void)ctx; (void)q; (void)all_k; (void)all_v; (void)mask; (void)scale;
    fail(Status::unsupported, "the TTS attention node exists only on x86-64");
#endif
}

}  // namespace minicpmo
