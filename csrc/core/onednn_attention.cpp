#include "core/onednn_attention.h"

#ifdef MINICPMO_ONEDNN

#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>

#include "core/bf16_convert.h"
#include "core/error.h"
#include "core/softmax_rows.h"

namespace minicpmo {

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

// shapes kept (image grids vary the key count): past this the caches start again
constexpr size_t kMaxShapes = 64;

// query rows per block: the block's F32 scores and BF16 probabilities (Lk = 1024: 512 + 256 KiB), or
// its F32 probabilities written over the scores, stay in a core's L2 cache between the two products
constexpr int64_t kBlock = 128;

// every head's F32 scores at once (compute_batched) up to this size, about what two cores' L2 caches
// hold (a streamed DiT window's 16 x 50 x 256 scores are 0.8 MiB, its voice prompt's 16 x 100 x 256 1.6 MiB)
constexpr int64_t kBatchedScoreBytes = 2 << 20;

size_t aligned(size_t n) { return (n + 63) / 64 * 64; }

// ggml's F32 or BF16 tensor t as oneDNN dims `dims` whose strides are the element strides of ggml dims `axes`
memory::desc operand_view(const ggml_tensor * t, const memory::dims & dims, std::initializer_list<int> axes) {
    memory::dims strides;
    for (int a : axes) strides.push_back(static_cast<memory::dim>(t->nb[a] / ggml_type_size(t->type)));
    return memory::desc(dims, t->type == GGML_TYPE_BF16 ? dt::bf16 : dt::f32, strides);
}

// An F16 operand `t` (a key / value cache) as F32 (oneDNN 2.6 has no F16 reorder): `wide` gets t's
// arrangement with every stride doubled, over `buffer`, as long as the span of memory the view covers;
// only the view's own elements are converted (a cache view skips the cache's other rows), on
// `n_threads`, a run along its contiguous axis at a time. The other axes are walked from the largest
// stride down, the two outer ones shared among the threads, so that each thread reads memory front
// to back: head by head through a cache whose rows hold every head, a thread would read 128-byte runs
// a row apart, which the prefetcher missed (the F16 loads then waited on memory: 7 % of a streamed
// flow window on AMD Zen 3). Returns t itself when it is not F16, else `wide`.
const ggml_tensor * widened(const ggml_tensor * t, std::vector<float> & buffer, ggml_tensor & wide, int n_threads) {
    if (t->type != GGML_TYPE_F16) return t;
    int64_t st[GGML_MAX_DIMS];  // in elements
    size_t span = 1;
    int run = -1;  // the axis whose elements are adjacent, if any
    for (int d = 0; d < GGML_MAX_DIMS; ++d) {
        st[d] = static_cast<int64_t>(t->nb[d] / sizeof(uint16_t));
        span += static_cast<size_t>((t->ne[d] - 1) * st[d]);
        if (st[d] == 1 && t->ne[d] > 1 && run < 0) run = d;
    }
    if (buffer.size() < span) buffer.resize(span);
    std::array<int, GGML_MAX_DIMS> axes{0, 1, 2, 3};  // the run axis last, the others by stride, largest first
    std::stable_sort(axes.begin(), axes.end(), [&](int a, int b) {
        if ((a == run) != (b == run)) return b == run;
        return st[a] > st[b];
    });
    const int64_t run_len = run >= 0 ? t->ne[run] : 1;
    const int a0 = axes[0], a1 = axes[1], a2 = axes[2], a3 = axes[3];  // a3: the run axis (or the smallest stride)
    const int64_t n3 = run >= 0 ? 1 : t->ne[a3];
    const auto * src = static_cast<const uint16_t *>(t->data);
    float * dst = buffer.data();
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t outer = 0; outer < t->ne[a0] * t->ne[a1]; ++outer) {
        const int64_t o01 = (outer / t->ne[a1]) * st[a0] + (outer % t->ne[a1]) * st[a1];
        for (int64_t i2 = 0; i2 < t->ne[a2]; ++i2) {
            for (int64_t i3 = 0; i3 < n3; ++i3) {
                const int64_t o = o01 + i2 * st[a2] + i3 * st[a3];
                f16_to_f32(src + o, dst + o, run_len);
            }
        }
    }
    wide = *t;
    wide.type = GGML_TYPE_F32;
    for (int d = 0; d < GGML_MAX_DIMS; ++d) wide.nb[d] = t->nb[d] * 2;
    wide.data = buffer.data();
    return &wide;
}

}  // namespace

bool OnednnAttention::supports(const ggml_tensor * op) {
    if (op->op != GGML_OP_FLASH_ATTN_EXT || op->type != GGML_TYPE_F32 || !ggml_is_contiguous(op)) return false;
    const ggml_tensor *q = op->src[0], *k = op->src[1], *v = op->src[2];
    if (op->src[4]) return false;  // sinks
    if (const ggml_tensor * mask = op->src[3]) {  // additive F16, one row per query, shared by heads or one per head
        if (mask->type != GGML_TYPE_F16 || !ggml_is_contiguous(mask) || mask->ne[0] != op->src[1]->ne[1] ||
            mask->ne[1] < op->src[0]->ne[1] || (mask->ne[2] != 1 && mask->ne[2] != op->src[0]->ne[2]) ||
            (mask->ne[3] != 1 && mask->ne[3] != op->src[0]->ne[3])) {
            return false;
        }
    }
    float max_bias = 0.0f, softcap = 0.0f;
    std::memcpy(&max_bias, reinterpret_cast<const float *>(op->op_params) + 1, sizeof(float));
    std::memcpy(&softcap, reinterpret_cast<const float *>(op->op_params) + 2, sizeof(float));
    if (max_bias != 0.0f || softcap != 0.0f) return false;
    for (const ggml_tensor * t : {q, k, v}) {
        // queries F32; keys and values F32, F16 or BF16 (a cache), in element strides
        if (t->type != GGML_TYPE_F32 && (t == q || (t->type != GGML_TYPE_F16 && t->type != GGML_TYPE_BF16))) return false;
        for (int d = 0; d < GGML_MAX_DIMS; ++d) {
            if (t->nb[d] % ggml_type_size(t->type) != 0) return false;
        }
    }
    return k->ne[0] == q->ne[0] && v->ne[1] == k->ne[1] && k->ne[2] == q->ne[2] && v->ne[2] == q->ne[2] &&
           k->ne[3] == q->ne[3] && v->ne[3] == q->ne[3] && q->ne[1] >= 1 && k->ne[1] >= 1;
}

const OnednnAttention::Layouts & OnednnAttention::layouts(int64_t D, int64_t Lk, int64_t Dv) {
    auto it = layouts_.find({D, Lk, Dv});
    if (it != layouts_.end()) return it->second;
    Layouts l;
    if (operand_ == dt::f32) {
        // oneDNN's F32 GEMM reads K^T as plain rows; with a row stride of a multiple of 256 floats its
        // reads down a column fall into the same few cache sets: 1024 keys of D = 72 ran at 39 GFLOP/s
        // on a core of AMD Zen 3, the same keys with a row stride of 1040 at 83
        int64_t ld = (Lk + 15) / 16 * 16;
        if (ld % 256 == 0) ld += 16;
        l.key = memory::desc({D, Lk}, dt::f32, memory::dims{ld, 1});
    } else {
        memory::desc src({kBlock, D}, operand_, tag::ab), wei({D, Lk}, operand_, tag::any), dst({kBlock, Lk}, dt::f32, tag::ab);
        l.key = dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, dst), engine_).weights_desc();
    }
    {
        memory::desc src({kBlock, Lk}, operand_, tag::ab), wei({Lk, Dv}, operand_, tag::any), dst({kBlock, Dv}, dt::f32, tag::ab);
        l.value = dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, dst), engine_).weights_desc();
    }
    return layouts_.emplace(std::array<int64_t, 3>{D, Lk, Dv}, l).first->second;
}

const OnednnAttention::OperandReorders & OnednnAttention::reorders(const ggml_tensor * q, const ggml_tensor * k,
                                                                   const ggml_tensor * v, const Layouts & l) {
    const int64_t D = q->ne[0], Lq = q->ne[1], H = q->ne[2], Lk = k->ne[1], Dv = v->ne[0];
    const std::array<int64_t, 13> key{D, Lq, H, Lk, Dv, int64_t(q->nb[0]), int64_t(q->nb[1]), int64_t(q->nb[2]),
                                      int64_t(k->nb[0]), int64_t(k->nb[1]), int64_t(v->nb[0]), int64_t(v->nb[1]), k->type};
    auto it = reorders_.find(key);
    if (it != reorders_.end()) return it->second;
    auto make = [this](const memory::desc & from, const memory::desc & to) {
        return dnnl::reorder(dnnl::reorder::primitive_desc(engine_, from, engine_, to));
    };
    OperandReorders r;
    r.query = make(operand_view(q, {Lq, D}, {1, 0}), memory::desc({Lq, D}, operand_, tag::ab));
    r.key = make(operand_view(k, {D, Lk}, {0, 1}), l.key);
    r.value = make(operand_view(v, {Lk, Dv}, {1, 0}), l.value);
    return reorders_.emplace(key, std::move(r)).first->second;
}

const OnednnAttention::BlockProducts & OnednnAttention::products(int64_t rows, int64_t D, int64_t Lk, int64_t Dv) {
    auto it = products_.find({rows, D, Lk, Dv});
    if (it != products_.end()) return it->second;
    const Layouts & l = layouts(D, Lk, Dv);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // each thread passes its own
    BlockProducts p;
    dnnl::matmul::primitive_desc scores(
        dnnl::matmul::desc(memory::desc({rows, D}, operand_, tag::ab), l.key, memory::desc({rows, Lk}, dt::f32, tag::ab)),
        attr, engine_);
    dnnl::matmul::primitive_desc weighted(
        dnnl::matmul::desc(memory::desc({rows, Lk}, operand_, tag::ab), l.value,
                           memory::desc({rows, Dv}, dt::f32, tag::ab)),
        attr, engine_);
    p.scores = dnnl::matmul(scores);
    p.weighted = dnnl::matmul(weighted);
    p.scores_pad = scores.scratchpad_desc();
    p.weighted_pad = weighted.scratchpad_desc();
    return products_.emplace(std::array<int64_t, 4>{rows, D, Lk, Dv}, std::move(p)).first->second;
}

bool OnednnAttention::batched_fits(int64_t B, int64_t H, int64_t Lq, int64_t Lk) {
    return Lq <= kBlock && B * H * Lq * Lk * static_cast<int64_t>(sizeof(float)) <= kBatchedScoreBytes;
}

// The primitives of one attention shape: every operand as oneDNN dims (batch, head, rows, cols)
const OnednnAttention::Batched & OnednnAttention::batched(const ggml_tensor * q, const ggml_tensor * k,
                                                          const ggml_tensor * v) {
    std::vector<int64_t> key;
    for (const ggml_tensor * t : {q, k, v}) {
        key.insert(key.end(), t->ne, t->ne + GGML_MAX_DIMS);
        key.insert(key.end(), t->nb, t->nb + GGML_MAX_DIMS);
        key.push_back(t->type);
    }
    auto it = batched_.find(key);
    if (it != batched_.end()) return it->second;
    if (batched_.size() >= kMaxShapes) batched_.clear();
    const int64_t D = q->ne[0], Lq = q->ne[1], H = q->ne[2], B = q->ne[3], Lk = k->ne[1], Dv = v->ne[0];
    Batched b;
    b.q_desc = memory::desc({B, H, Lq, D}, operand_, tag::abcd);
    b.scores_desc = memory::desc({B, H, Lq, Lk}, dt::f32, tag::abcd);
    b.probs_desc = memory::desc({B, H, Lq, Lk}, operand_, tag::abcd);
    b.out_desc = memory::desc({B, H, Lq, Dv}, dt::f32, tag::abcd);
    const dnnl::matmul::primitive_desc scores(
        dnnl::matmul::desc(b.q_desc, memory::desc({B, H, D, Lk}, operand_, tag::any), b.scores_desc), engine_);
    const dnnl::matmul::primitive_desc weighted(
        dnnl::matmul::desc(b.probs_desc, memory::desc({B, H, Lk, Dv}, operand_, tag::any), b.out_desc), engine_);
    b.k_desc = scores.weights_desc();
    b.v_desc = weighted.weights_desc();
    b.scores = dnnl::matmul(scores);
    b.weighted = dnnl::matmul(weighted);
    const auto make = [this](const memory::desc & from, const memory::desc & to) {
        return dnnl::reorder(dnnl::reorder::primitive_desc(engine_, from, engine_, to));
    };
    // ggml's q is (D, Lq, H, B) [FLASH_ATTN_EXT permutes heads and rows], k (D, Lk, H, B), v (Dv, Lk, H, B)
    b.q_from = operand_view(q, {B, H, Lq, D}, {3, 2, 1, 0});
    b.k_from = operand_view(k, {B, H, D, Lk}, {3, 2, 0, 1});
    b.v_from = operand_view(v, {B, H, Lk, Dv}, {3, 2, 1, 0});
    b.query = make(b.q_from, b.q_desc);
    b.key = make(b.k_from, b.k_desc);
    b.value = make(b.v_from, b.v_desc);
    return batched_.emplace(std::move(key), std::move(b)).first->second;
}

void OnednnAttention::compute_batched(ggml_tensor * op, const ggml_tensor * q, const ggml_tensor * k,
                                      const ggml_tensor * v, const ggml_tensor * mask, float scale, int n_threads) {
    const int64_t Lq = q->ne[1], H = q->ne[2], B = q->ne[3], Lk = k->ne[1], Dv = v->ne[0];
    const Batched & p = batched(q, k, v);
    dnnl::stream & s = streams_.front();
    q_ops_.resize(p.q_desc.get_size());
    k_ops_.resize(p.k_desc.get_size());
    v_ops_.resize(p.v_desc.get_size());
    scores_.resize(static_cast<size_t>(B * H * Lq * Lk));
    probs_.resize(p.probs_desc.get_size());
    out_.resize(static_cast<size_t>(B * H * Lq * Dv));
    const auto converted = [&](const ggml_tensor * t, const dnnl::reorder & to, const memory::desc & from,
                               const memory::desc & desc, std::vector<uint8_t> & buf) {
        memory src(from, engine_, t->data), dst(desc, engine_, buf.data());
        to.execute(s, src, dst);
        return dst;
    };
    const memory qm = converted(q, p.query, p.q_from, p.q_desc, q_ops_);
    const memory km = converted(k, p.key, p.k_from, p.k_desc, k_ops_);
    const memory vm = converted(v, p.value, p.v_from, p.v_desc, v_ops_);
    memory sm(p.scores_desc, engine_, scores_.data());
    p.scores.execute(s, {{DNNL_ARG_SRC, qm}, {DNNL_ARG_WEIGHTS, km}, {DNNL_ARG_DST, sm}});
    s.wait();
    const bool bf16 = operand_ == dt::bf16;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        const float * rows = scores_.data() + bh * Lq * Lk;
        const float * mask_rows =
            mask ? mask_f32_.data() + ((b % mask->ne[3]) * mask->ne[2] + h % mask->ne[2]) * Lq * Lk : nullptr;
        if (bf16) {
            softmax_rows_to_bf16(rows, Lk, mask_rows, Lk, reinterpret_cast<uint16_t *>(probs_.data()) + bh * Lq * Lk, Lk,
                                 Lq, Lk, scale);
        } else {
            softmax_rows_to_f32(rows, Lk, mask_rows, Lk, reinterpret_cast<float *>(probs_.data()) + bh * Lq * Lk, Lk, Lq,
                                Lk, scale);
        }
    }
    memory pm(p.probs_desc, engine_, probs_.data()), om(p.out_desc, engine_, out_.data());
    p.weighted.execute(s, {{DNNL_ARG_SRC, pm}, {DNNL_ARG_WEIGHTS, vm}, {DNNL_ARG_DST, om}});
    s.wait();
    // (B, H, Lq, Dv) into op ne (Dv, H, Lq, B): oneDNN's kernels write dense rows only
    const float * out = out_.data();
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t row = 0; row < B * H * Lq; ++row) {
        const int64_t b = row / (H * Lq), h = (row / Lq) % H, r = row % Lq;
        std::memcpy(static_cast<char *>(op->data) + b * op->nb[3] + h * op->nb[1] + r * op->nb[2], out + row * Dv,
                    static_cast<size_t>(Dv) * sizeof(float));
    }
}

void OnednnAttention::mask_to_f32(const ggml_tensor * mask, int64_t Lq, int64_t Lk, int n_threads) {
    // the mask rows in F32, once for every head and batch that shares them: [ne3][ne2][Lq][Lk]
    const int64_t planes = mask->ne[3] * mask->ne[2];
    mask_f32_.resize(static_cast<size_t>(planes * Lq * Lk));
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int64_t row = 0; row < planes * Lq; ++row) {
        const int64_t plane = row / Lq, r = row % Lq, m3 = plane / mask->ne[2], m2 = plane % mask->ne[2];
        const char * m = static_cast<const char *>(mask->data) + m2 * mask->nb[2] + m3 * mask->nb[3] + r * mask->nb[1];
        f16_to_f32(reinterpret_cast<const uint16_t *>(m), mask_f32_.data() + row * Lk, Lk);
    }
}

void OnednnAttention::compute(ggml_tensor * op, int n_threads) {
    ggml_tensor k_wide, v_wide;
    const ggml_tensor *q = op->src[0], *mask = op->src[3];
    n_threads = std::max(1, n_threads);
    const ggml_tensor *k = widened(op->src[1], k_f32_, k_wide, n_threads);
    const ggml_tensor *v = widened(op->src[2], v_f32_, v_wide, n_threads);
    const int64_t D = q->ne[0], Lq = q->ne[1], H = q->ne[2], B = q->ne[3], Lk = k->ne[1], Dv = v->ne[0];
    float scale = 1.0f;
    std::memcpy(&scale, op->op_params, sizeof(float));

    while (static_cast<int>(streams_.size()) < n_threads) streams_.emplace_back(engine_);
    if (mask) mask_to_f32(mask, Lq, Lk, n_threads);
    if (batched_fits(B, H, Lq, Lk)) {
        compute_batched(op, q, k, v, mask, scale, n_threads);
        return;
    }
    // emptied here only, before any reference into them is taken
    if (layouts_.size() >= kMaxShapes || products_.size() >= kMaxShapes || reorders_.size() >= kMaxShapes) {
        layouts_.clear();
        products_.clear();
        reorders_.clear();
    }
    const Layouts & l = layouts(D, Lk, Dv);
    const OperandReorders & to_operands = reorders(q, k, v, l);
    const size_t k_size = l.key.get_size(), v_size = l.value.get_size();
    const bool bf16 = operand_ == dt::bf16;
    const size_t q_row = static_cast<size_t>(D) * memory::data_type_size(operand_);  // bytes of one dense query row
    q_ops_.resize(static_cast<size_t>(B * H * Lq) * q_row);
    k_ops_.resize(static_cast<size_t>(B * H) * k_size);
    v_ops_.resize(static_cast<size_t>(B * H) * v_size);

    // the block shapes (made here: the parallel region below only reads the caches)
    const int64_t full_rows = std::min(kBlock, Lq), tail_rows = Lq > kBlock ? Lq % kBlock : 0;
    const BlockProducts & full = products(full_rows, D, Lk, Dv);
    const BlockProducts * tail = tail_rows ? &products(tail_rows, D, Lk, Dv) : nullptr;
    const size_t scores_bytes = aligned(static_cast<size_t>(kBlock * Lk) * sizeof(float));
    // BF16 probabilities need their own rows; F32 ones are written over the scores
    const size_t probs_bytes = bf16 ? aligned(static_cast<size_t>(kBlock * Lk) * 2) : 0;
    const size_t out_bytes = aligned(static_cast<size_t>(kBlock * Dv) * sizeof(float));
    size_t pad_bytes = 0;
    for (const BlockProducts * p : {&full, tail}) {
        if (p) pad_bytes = std::max({pad_bytes, p->scores_pad.get_size(), p->weighted_pad.get_size()});
    }
    pad_bytes = aligned(pad_bytes);
    thread_scratch_.resize(static_cast<size_t>(n_threads));
    for (auto & s : thread_scratch_) s.resize(scores_bytes + probs_bytes + out_bytes + pad_bytes + 64);

    // every batch's and head's operands, a head per thread: Q as [B][H][Lq][D] dense rows, K^T and V
    // in the packed layouts
    std::exception_ptr error;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1)
    for (int64_t bh = 0; bh < B * H; ++bh) {
        try {
            const int64_t b = bh / H, h = bh % H;
            dnnl::stream & s = streams_[static_cast<size_t>(omp_get_thread_num())];
            memory qs(operand_view(q, {Lq, D}, {1, 0}), engine_, static_cast<char *>(q->data) + b * q->nb[3] + h * q->nb[2]);
            memory qd(memory::desc({Lq, D}, operand_, tag::ab), engine_, q_ops_.data() + bh * Lq * q_row);
            to_operands.query.execute(s, qs, qd);
            memory ks(operand_view(k, {D, Lk}, {0, 1}), engine_, static_cast<char *>(k->data) + b * k->nb[3] + h * k->nb[2]);
            memory kd(l.key, engine_, k_ops_.data() + bh * k_size);
            to_operands.key.execute(s, ks, kd);
            memory vs(operand_view(v, {Lk, Dv}, {1, 0}), engine_, static_cast<char *>(v->data) + b * v->nb[3] + h * v->nb[2]);
            memory vd(l.value, engine_, v_ops_.data() + bh * v_size);
            to_operands.value.execute(s, vs, vd);
            s.wait();
        } catch (...) {
#pragma omp critical(minicpmo_onednn_attention_error)
            if (!error) error = std::current_exception();
        }
    }
    if (error) std::rethrow_exception(error);

    const int64_t n_blocks = (Lq + kBlock - 1) / kBlock;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1)
    for (int64_t item = 0; item < B * H * n_blocks; ++item) {
        try {
            const int tid = omp_get_thread_num();
            const int64_t bh = item / n_blocks, b = bh / H, h = bh % H;
            const int64_t r0 = (item % n_blocks) * kBlock, rows = std::min(kBlock, Lq - r0);
            const BlockProducts & p = rows == full_rows ? full : *tail;
            uint8_t * base = thread_scratch_[static_cast<size_t>(tid)].data();
            base += (64 - reinterpret_cast<uintptr_t>(base) % 64) % 64;
            float * scores = reinterpret_cast<float *>(base);
            base += scores_bytes;
            void * probs = bf16 ? static_cast<void *>(base) : static_cast<void *>(scores);
            float * out = reinterpret_cast<float *>(base + probs_bytes);
            uint8_t * pad = base + probs_bytes + out_bytes;
            dnnl::stream & s = streams_[static_cast<size_t>(tid)];

            memory qm(memory::desc({rows, D}, operand_, tag::ab), engine_, q_ops_.data() + (bh * Lq + r0) * q_row);
            memory km(l.key, engine_, k_ops_.data() + bh * k_size);
            memory sm(memory::desc({rows, Lk}, dt::f32, tag::ab), engine_, scores);
            p.scores.execute(s, {{DNNL_ARG_SRC, qm}, {DNNL_ARG_WEIGHTS, km}, {DNNL_ARG_DST, sm},
                                {DNNL_ARG_SCRATCHPAD, memory(p.scores_pad, engine_, pad)}});
            s.wait();
            const float * mask_rows =
                mask ? mask_f32_.data() + (((b % mask->ne[3]) * mask->ne[2] + h % mask->ne[2]) * Lq + r0) * Lk : nullptr;
            if (bf16) {
                softmax_rows_to_bf16(scores, Lk, mask_rows, Lk, static_cast<uint16_t *>(probs), Lk, rows, Lk, scale);
            } else {
                softmax_rows_to_f32(scores, Lk, mask_rows, Lk, scores, Lk, rows, Lk, scale);
            }
            memory pm(memory::desc({rows, Lk}, operand_, tag::ab), engine_, probs);
            memory vm(l.value, engine_, v_ops_.data() + bh * v_size);
            memory om(memory::desc({rows, Dv}, dt::f32, tag::ab), engine_, out);
            p.weighted.execute(s, {{DNNL_ARG_SRC, pm}, {DNNL_ARG_WEIGHTS, vm}, {DNNL_ARG_DST, om},
                                  {DNNL_ARG_SCRATCHPAD, memory(p.weighted_pad, engine_, pad)}});
            s.wait();
            // into op [Dv, H, Lq, B] (oneDNN's kernels write dense rows only; a strided output
            // would send the product to its reference code)
            char * dst = static_cast<char *>(op->data) + b * op->nb[3] + h * op->nb[1] + r0 * op->nb[2];
            for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * op->nb[2], out + r * Dv, Dv * sizeof(float));
        } catch (...) {
#pragma omp critical(minicpmo_onednn_attention_error)
            if (!error) error = std::current_exception();
        }
    }
    if (error) std::rethrow_exception(error);
}

}  // namespace minicpmo

#endif
