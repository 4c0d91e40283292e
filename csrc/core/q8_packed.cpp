#include "core/q8_packed.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/compute_backend.h"
#include "core/error.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MINICPMO_Q8_X86 1
#include <immintrin.h>
#endif

namespace minicpmo {

namespace {

constexpr int64_t kGroupRows = 16;
constexpr int64_t kBlock = 32;
constexpr int64_t kBlockBytes = kGroupRows * kBlock + kGroupRows * 2;  // the weights, then the F16 scales

struct Q8Block {  // ggml's block_q8_0
    uint16_t d;
    int8_t qs[kBlock];
};
static_assert(sizeof(Q8Block) == 34, "ggml's Q8_0 block is an F16 scale and 32 bytes");

// One activation row quantized as ggml quantizes it for Q8_0 products: per block of 32 values
// d = max|x| / 127 (kept as F16) and q = round-to-nearest-even(x * 127 / max|x|). `bias` holds
// 128 * sum(q) per block: the VNNI kernel multiplies unsigned bytes w + 128, and takes it back off.
struct QuantizedRow {
    int8_t * q;
    float * d;
    int32_t * bias;
};

#ifdef MINICPMO_Q8_X86

__attribute__((target("avx2,fma,f16c"))) void quantize_row(const float * x, int64_t n_blocks, QuantizedRow out) {
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n_blocks; ++b) {
        const float * xb = x + b * kBlock;
        __m256 v[4];
        __m256 amax = _mm256_setzero_ps();
        for (int i = 0; i < 4; ++i) {
            v[i] = _mm256_loadu_ps(xb + 8 * i);
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_bit, v[i]));
        }
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(amax, 1), _mm256_castps256_ps128(amax));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float max_abs = _mm_cvtss_f32(m4);
        // the scale the products use is the F16 one ggml stores
        out.d[b] = _cvtsh_ss(_cvtss_sh(max_abs / 127.0f, _MM_FROUND_TO_NEAREST_INT));
        const __m256 inv = _mm256_set1_ps(max_abs != 0.0f ? 127.0f / max_abs : 0.0f);
        __m256i q32[4];
        for (int i = 0; i < 4; ++i) {
            q32[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        }
        // int32 -> int8 in order: the packs interleave 128-bit lanes, the permute puts them back
        const __m256i q16a = _mm256_packs_epi32(q32[0], q32[1]);
        const __m256i q16b = _mm256_packs_epi32(q32[2], q32[3]);
        __m256i q8 = _mm256_packs_epi16(q16a, q16b);
        q8 = _mm256_permutevar8x32_epi32(q8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(out.q + b * kBlock), q8);
        const __m256i s16 = _mm256_madd_epi16(_mm256_add_epi16(q16a, q16b), _mm256_set1_epi16(1));
        __m128i s4 = _mm_add_epi32(_mm256_extracti128_si256(s16, 1), _mm256_castsi256_si128(s16));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        out.bias[b] = 128 * _mm_cvtsi128_si32(s4);
    }
}

// 16 rows of one group against one quantized activation row: VNNI multiplies the unsigned stored
// bytes (w + 128) by the signed activations, 4 pairs per 32-bit lane; the 128 * sum(q) is subtracted
// exactly in integers before the block's two scales apply.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c"))) void group_avx512_vnni(
    const uint8_t * p, int64_t n_blocks, const QuantizedRow & x, float * out16) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t b = 0; b < n_blocks; ++b, p += kBlockBytes) {
        const int8_t * xb = x.q + b * kBlock;
        int32_t xw[8];
        std::memcpy(xw, xb, sizeof(xw));
        __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
        for (int j = 0; j < 8; j += 2) {
            s0 = _mm512_dpbusd_epi32(s0, _mm512_loadu_si512(p + 64 * j), _mm512_set1_epi32(xw[j]));
            s1 = _mm512_dpbusd_epi32(s1, _mm512_loadu_si512(p + 64 * (j + 1)), _mm512_set1_epi32(xw[j + 1]));
        }
        const __m512i sum = _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_set1_epi32(x.bias[b]));
        const __m512 scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(x.d[b]));
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p + kGroupRows * kBlock)));
        acc = _mm512_fmadd_ps(scaled, dw, acc);
    }
    _mm512_storeu_ps(out16, acc);
}

// The same with AVX2's vpmaddubsw, which needs an unsigned operand too: |w| times x carrying w's sign
// (w recovered from the stored w + 128 by flipping the top bit; |-128| = 128 read unsigned, as ggml
// does). |w| <= 128 and |x| <= 127 keep each pair sum within int16. Rows 0-7 and 8-15 in two registers.
__attribute__((target("avx2,fma,f16c"))) void group_avx2(const uint8_t * p, int64_t n_blocks, const QuantizedRow & x,
                                                         float * out16) {
    const __m256i top = _mm256_set1_epi8(static_cast<char>(0x80));
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc_lo = _mm256_setzero_ps(), acc_hi = _mm256_setzero_ps();
    for (int64_t b = 0; b < n_blocks; ++b, p += kBlockBytes) {
        const int8_t * xb = x.q + b * kBlock;
        __m256i s_lo = _mm256_setzero_si256(), s_hi = _mm256_setzero_si256();
        for (int j = 0; j < 8; ++j) {
            int32_t x4;
            std::memcpy(&x4, xb + 4 * j, sizeof(x4));
            const __m256i xv = _mm256_set1_epi32(x4);
            const __m256i w_lo = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p + 64 * j)), top);
            const __m256i w_hi = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p + 64 * j + 32)), top);
            s_lo = _mm256_add_epi32(s_lo, _mm256_madd_epi16(
                _mm256_maddubs_epi16(_mm256_sign_epi8(w_lo, w_lo), _mm256_sign_epi8(xv, w_lo)), ones));
            s_hi = _mm256_add_epi32(s_hi, _mm256_madd_epi16(
                _mm256_maddubs_epi16(_mm256_sign_epi8(w_hi, w_hi), _mm256_sign_epi8(xv, w_hi)), ones));
        }
        const __m256 dx = _mm256_set1_ps(x.d[b]);
        const uint8_t * scales = p + kGroupRows * kBlock;
        const __m256 dw_lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(scales)));
        const __m256 dw_hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(scales + 16)));
        acc_lo = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(s_lo), dx), dw_lo, acc_lo);
        acc_hi = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(s_hi), dx), dw_hi, acc_hi);
    }
    _mm256_storeu_ps(out16, acc_lo);
    _mm256_storeu_ps(out16 + 8, acc_hi);
}

#endif  // MINICPMO_Q8_X86

// one activation row quantized (QuantizedRow), optionally RMS-normalised first; on the stack for the
// TTS's widths, else on the heap
class ActivationRow {
public:
    ActivationRow(const ActivationRow &) = delete;
    ActivationRow & operator=(const ActivationRow &) = delete;
    explicit ActivationRow(int64_t cols) : cols_(cols), n_blocks_(cols / kBlock) {
        row_ = QuantizedRow{q_stack_, d_stack_, bias_stack_};
        normed_ = normed_stack_;
        if (n_blocks_ > kStackBlocks) {
            q_heap_.resize(static_cast<size_t>(cols));
            d_heap_.resize(static_cast<size_t>(n_blocks_));
            bias_heap_.resize(static_cast<size_t>(n_blocks_));
            normed_heap_.resize(static_cast<size_t>(cols));
            row_ = QuantizedRow{q_heap_.data(), d_heap_.data(), bias_heap_.data()};
            normed_ = normed_heap_.data();
        }
    }
    // `rms_weight` null: x as it is; else x / sqrt(mean(x^2) + eps) * rms_weight, as ggml's RMS_NORM
    // (the sum of squares in double) and MUL compute it
    void quantize(const float * x, const float * rms_weight = nullptr, float eps = 0.0f) {
        if (rms_weight) {
            double sum = 0.0;
            for (int64_t i = 0; i < cols_; ++i) sum += static_cast<double>(x[i] * x[i]);
            const float scale = 1.0f / std::sqrt(static_cast<float>(sum / static_cast<double>(cols_)) + eps);
            for (int64_t i = 0; i < cols_; ++i) normed_[i] = x[i] * scale * rms_weight[i];
            x = normed_;
        }
#ifdef MINICPMO_Q8_X86
        quantize_row(x, n_blocks_, row_);
#else
        (void)x;
#endif
    }
    const QuantizedRow & row() const { return row_; }

private:
    static constexpr int64_t kStackBlocks = 128;
    int64_t cols_, n_blocks_;
    int8_t q_stack_[kStackBlocks * kBlock];
    float d_stack_[kStackBlocks];
    int32_t bias_stack_[kStackBlocks];
    float normed_stack_[kStackBlocks * kBlock];
    std::vector<int8_t> q_heap_;
    std::vector<float> d_heap_;
    std::vector<int32_t> bias_heap_;
    std::vector<float> normed_heap_;
    QuantizedRow row_;
    float * normed_;
};

// the 16 products of group g with the quantized row
void group_product(const PackedQ8Matrix & w, int64_t g, const ActivationRow & x, Q8Isa isa, float * out16) {
#ifdef MINICPMO_Q8_X86
    if (isa == Q8Isa::avx512_vnni) {
        group_avx512_vnni(w.group(g), w.cols() / kBlock, x.row(), out16);
    } else {
        group_avx2(w.group(g), w.cols() / kBlock, x.row(), out16);
    }
#else
    (void)w; (void)g; (void)x; (void)isa; (void)out16;
    fail(Status::unsupported, "the packed Q8_0 kernels exist only on x86-64");
#endif
}

bool module_has(const std::vector<std::string> & features, const char * name) {
    return std::find(features.begin(), features.end(), name) != features.end();
}

// the contiguous run of `n` tasks thread `ith` of `nth` takes
std::pair<int64_t, int64_t> share(int64_t n, int ith, int nth) {
    const int64_t per = (n + nth - 1) / nth;
    const int64_t begin = std::min<int64_t>(n, per * ith);
    return {begin, std::min<int64_t>(n, begin + per)};
}

// row m of an F32 tensor
float * row_of(const ggml_tensor * t, int64_t m) {
    return reinterpret_cast<float *>(static_cast<char *>(t->data) + m * t->nb[1]);
}

// The products of w with every row of x (RMS-normalised by `rms` when given) for the row groups of
// thread ith: emit(m, g, out16) receives the 16 products of group g for row m
template <typename Emit>
void products(const PackedQ8Matrix & w, const ggml_tensor * x, const ggml_tensor * rms, int64_t n_groups, int ith,
              int nth, Emit emit) {
    const auto [begin, end] = share(n_groups, ith, nth);
    if (begin >= end) return;
    ActivationRow qx(w.cols());
    for (int64_t m = 0; m < x->ne[1]; ++m) {
        qx.quantize(row_of(x, m), rms ? static_cast<const float *>(rms->data) : nullptr, w.rms_eps());
        for (int64_t g = begin; g < end; ++g) emit(m, g, qx);
    }
}

// dst = w . src[0] (+ src[1])
void custom_product(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const auto & w = *static_cast<const PackedQ8Matrix *>(userdata);
    const ggml_tensor * residual = dst->src[1];
    alignas(64) float out16[kGroupRows];
    products(w, dst->src[0], nullptr, w.groups(), ith, nth, [&](int64_t m, int64_t g, const ActivationRow & qx) {
        group_product(w, g, qx, w.isa(), out16);
        float * ym = row_of(dst, m);
        const float * rm = residual ? row_of(residual, m) : nullptr;
        const int64_t first = g * kGroupRows, n = std::min(kGroupRows, w.rows() - first);
        for (int64_t r = 0; r < n; ++r) ym[first + r] = rm ? rm[first + r] + out16[r] : out16[r];
    });
}

// dst = w . rms_norm(src[0]) * src[1]
void custom_normed_product(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const auto & w = *static_cast<const PackedQ8Matrix *>(userdata);
    alignas(64) float out16[kGroupRows];
    products(w, dst->src[0], dst->src[1], w.groups(), ith, nth, [&](int64_t m, int64_t g, const ActivationRow & qx) {
        group_product(w, g, qx, w.isa(), out16);
        const int64_t first = g * kGroupRows, n = std::min(kGroupRows, w.rows() - first);
        std::memcpy(row_of(dst, m) + first, out16, static_cast<size_t>(n) * sizeof(float));
    });
}

// dst = silu(gate . x') * (up . x'), gate the first half of w's rows, up the second; x' = src[0] or
// its RMS norm times src[1]
void custom_gated(ggml_tensor * dst, int ith, int nth, void * userdata) {
    const auto & w = *static_cast<const PackedQ8Matrix *>(userdata);
    const int64_t half = w.groups() / 2;
    alignas(64) float gate[kGroupRows], up[kGroupRows];
    products(w, dst->src[0], dst->src[1], half, ith, nth, [&](int64_t m, int64_t g, const ActivationRow & qx) {
        group_product(w, g, qx, w.isa(), gate);
        group_product(w, half + g, qx, w.isa(), up);
        float * ym = row_of(dst, m) + g * kGroupRows;
        for (int64_t r = 0; r < kGroupRows; ++r) ym[r] = gate[r] / (1.0f + std::exp(-gate[r])) * up[r];
    });
}

}  // namespace

const char * q8_isa_name(Q8Isa isa) { return isa == Q8Isa::avx512_vnni ? "avx512_vnni" : "avx2"; }

bool q8_isa_supported(Q8Isa isa) {
#ifdef MINICPMO_Q8_X86
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (isa == Q8Isa::avx2) return avx2;
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
    (void)isa;
    return false;
#endif
}

std::optional<Q8Isa> best_q8_isa() {
    const std::vector<std::string> module = cpu_features();
    if (q8_isa_supported(Q8Isa::avx512_vnni) && module_has(module, "AVX512_VNNI")) return Q8Isa::avx512_vnni;
    if (q8_isa_supported(Q8Isa::avx2) && module_has(module, "AVX2") && module_has(module, "FMA") &&
        module_has(module, "F16C")) {
        return Q8Isa::avx2;
    }
    return std::nullopt;
}

PackedQ8Matrix::PackedQ8Matrix(const std::vector<Part> & parts, int64_t cols, Q8Isa isa, float rms_eps)
    : rows_(0), cols_(cols), bytes_(0), isa_(isa), rms_eps_(rms_eps), data_(nullptr, std::free) {
    for (const Part & part : parts) {
        if (!part.q8_0 || part.rows <= 0) fail(Status::invalid_argument, "a Q8_0 matrix part needs rows");
        rows_ += part.rows;
    }
    if (rows_ <= 0 || cols <= 0 || cols % kBlock != 0) {
        fail(Status::invalid_argument, "a Q8_0 matrix needs rows and a multiple of 32 columns, got " +
                                           std::to_string(rows_) + " x " + std::to_string(cols));
    }
    const int64_t n_blocks = cols / kBlock;
    bytes_ = static_cast<size_t>(groups() * n_blocks * kBlockBytes);
    data_.reset(static_cast<uint8_t *>(std::aligned_alloc(64, (bytes_ + 63) / 64 * 64)));
    if (!data_) fail(Status::internal, "out of memory packing a Q8_0 matrix");
    // the stacked rows' blocks, in order
    std::vector<const Q8Block *> row_blocks;
    row_blocks.reserve(static_cast<size_t>(rows_));
    for (const Part & part : parts) {
        for (int64_t r = 0; r < part.rows; ++r) row_blocks.push_back(static_cast<const Q8Block *>(part.q8_0) + r * n_blocks);
    }
    for (int64_t g = 0; g < groups(); ++g) {
        for (int64_t b = 0; b < n_blocks; ++b) {
            uint8_t * p = data_.get() + (g * n_blocks + b) * kBlockBytes;
            uint16_t * scales = reinterpret_cast<uint16_t *>(p + kGroupRows * kBlock);
            for (int64_t r = 0; r < kGroupRows; ++r) {
                const int64_t row = g * kGroupRows + r;
                const Q8Block * blk = row < rows_ ? row_blocks[static_cast<size_t>(row)] + b : nullptr;
                scales[r] = blk ? blk->d : 0;  // a padding row: zero weights, zero scale
                for (int64_t k = 0; k < kBlock; ++k) {
                    // lane (k / 4) * 16 + r holds values 4 * (k / 4) .. + 3 of row r
                    const int8_t v = blk ? blk->qs[k] : 0;
                    p[(k / 4) * 64 + r * 4 + k % 4] = static_cast<uint8_t>(v) ^ 0x80u;
                }
            }
        }
    }
}

const uint8_t * PackedQ8Matrix::group(int64_t g) const {
    return data_.get() + static_cast<size_t>(g * (cols_ / kBlock) * kBlockBytes);
}

namespace {

void check_input(const PackedQ8Matrix & w, const ggml_tensor * x, const ggml_tensor * rms_weight) {
    if (x->type != GGML_TYPE_F32 || x->ne[0] != w.cols() || x->nb[0] != sizeof(float) || x->ne[2] != 1 || x->ne[3] != 1) {
        fail(Status::internal, "a packed Q8_0 product needs F32 rows of " + std::to_string(w.cols()) + " values");
    }
    if (rms_weight && (rms_weight->type != GGML_TYPE_F32 || ggml_nelements(rms_weight) != w.cols() ||
                       !ggml_is_contiguous(rms_weight))) {
        fail(Status::internal, "a packed Q8_0 product's norm weight must be " + std::to_string(w.cols()) + " F32 values");
    }
}

}  // namespace

ggml_tensor * q8_packed_product_node(ggml_context * ctx, const PackedQ8Matrix & w, ggml_tensor * x, ggml_tensor * residual) {
    check_input(w, x, nullptr);
    if (residual && (residual->type != GGML_TYPE_F32 || residual->ne[0] != w.rows() || residual->ne[1] != x->ne[1] ||
                     residual->nb[0] != sizeof(float))) {
        fail(Status::internal, "a packed Q8_0 product's residual must be F32 rows of its output's shape");
    }
    ggml_tensor * args[] = {x, residual};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w.rows(), x->ne[1], 1, 1, args, residual ? 2 : 1, custom_product,
                          GGML_N_TASKS_MAX, const_cast<PackedQ8Matrix *>(&w));
}

ggml_tensor * q8_packed_normed_product_node(ggml_context * ctx, const PackedQ8Matrix & w, ggml_tensor * x,
                                            ggml_tensor * rms_weight) {
    check_input(w, x, rms_weight);
    ggml_tensor * args[] = {x, rms_weight};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w.rows(), x->ne[1], 1, 1, args, 2, custom_normed_product,
                          GGML_N_TASKS_MAX, const_cast<PackedQ8Matrix *>(&w));
}

ggml_tensor * q8_packed_gated_node(ggml_context * ctx, const PackedQ8Matrix & w, ggml_tensor * x, ggml_tensor * rms_weight) {
    check_input(w, x, rms_weight);
    if (w.rows() % (2 * kGroupRows) != 0) {
        fail(Status::internal, "a packed gated product needs two halves of whole row groups");
    }
    ggml_tensor * args[] = {x, rms_weight};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w.rows() / 2, x->ne[1], 1, 1, args, rms_weight ? 2 : 1, custom_gated,
                          GGML_N_TASKS_MAX, const_cast<PackedQ8Matrix *>(&w));
}

}  // namespace minicpmo
