#include "vision/vision_encoder.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <utility>

#include "core/error.h"
#include "vision/navit_positions.h"
#include "vision/resampler_positions.h"
#include "vision/vision_graph.h"

namespace minicpmo {

namespace {

// Upper bound on the F32 attention-score tensor of one ViT batch: 9 slices of 1024 patches
// at 16 heads need 576 MiB, so they run in batches of 4.
constexpr size_t kScoreBudgetBytes = size_t(256) << 20;

size_t graph_nodes(const VisionHparams & hp) {
    return static_cast<size_t>(hp.n_layer) * 64 + 256;
}

}  // namespace

VisionEncoder::VisionEncoder(std::shared_ptr<const VisionModel> model, ComputeDevice device, int n_threads,
                             ComputeType compute)
    : model_(std::move(model)), backend_(device, n_threads, compute, &model_->weights()), runner_(backend_, graph_nodes(model_->hparams())) {}

VisionEncoder::BatchGraph VisionEncoder::build_batch(const GraphContext & graph, int grid_h, int grid_w, int64_t n_slices) const {
    const VisionHparams & hp = model_->hparams();
    const int64_t L = int64_t(grid_h) * grid_w;
    ggml_context * ctx = graph.get();
    BatchGraph g;
    g.patches = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, hp.patch_dim(), L, n_slices);
    ggml_set_input(g.patches);
    g.pos_ids = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, L);
    ggml_set_input(g.pos_ids);
    g.key_pos = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.n_embd_out, L);
    ggml_set_input(g.key_pos);

    g.vit = build_siglip(ctx, *model_, g.patches, g.pos_ids, model_->weights_f32(), backend_.onednn_attention());
    ggml_set_output(g.vit);
    g.emb = build_resampler(ctx, *model_, g.vit, g.key_pos);
    ggml_set_output(g.emb);

    g.graph = graph.new_graph();
    ggml_build_forward_expand(g.graph, g.emb);
    return g;
}

void VisionEncoder::prepare(int grid_h, int grid_w) {
    if (grid_h <= 0 || grid_w <= 0) fail(Status::invalid_argument, "vision prepare: the patch grid must not be empty");
    const GraphContext graph = runner_.new_context("vision");
    backend_.prepare_products(build_batch(graph, grid_h, grid_w, 1).graph);
}

std::vector<float> VisionEncoder::encode(const PreprocessedImage & image, std::vector<std::vector<float>> * vit_features) {
    const VisionHparams & hp = model_->hparams();
    const size_t n = image.slices.size();
    if (n == 0) fail(Status::invalid_argument, "image has no slices to encode");
    for (const PreprocessedSlice & s : image.slices) {
        const size_t L = static_cast<size_t>(s.grid_h) * s.grid_w;
        if (s.grid_h <= 0 || s.grid_w <= 0 || s.patches.size() != L * hp.patch_dim()) {
            fail(Status::invalid_argument, "preprocessed slice does not match the vision model's patch size");
        }
    }
    std::vector<float> out(n * hp.n_query * hp.n_embd_out);
    if (vit_features) vit_features->assign(n, {});

    // group slices by grid size (keeping order inside a group), then split by the memory budget
    std::map<std::pair<int, int>, std::vector<size_t>> groups;
    for (size_t i = 0; i < n; ++i) groups[{image.slices[i].grid_h, image.slices[i].grid_w}].push_back(i);
    for (const auto & [grid, members] : groups) {
        const size_t L = static_cast<size_t>(grid.first) * grid.second;
        const size_t per_slice = L * L * hp.n_head * sizeof(float);
        const size_t cap = std::clamp<size_t>(kScoreBudgetBytes / std::max<size_t>(per_slice, 1), 1, hp.batch_size);
        for (size_t b0 = 0; b0 < members.size(); b0 += cap) {
            std::vector<size_t> batch(members.begin() + b0, members.begin() + std::min(members.size(), b0 + cap));
            encode_batch(image, batch, out.data(), vit_features);
        }
    }
    return out;
}

void VisionEncoder::encode_batch(const PreprocessedImage & image, const std::vector<size_t> & batch, float * out,
                                 std::vector<std::vector<float>> * vit_features) {
    const VisionHparams & hp = model_->hparams();
    const PreprocessedSlice & first = image.slices[batch[0]];
    const int gh = first.grid_h, gw = first.grid_w;
    const int64_t L = int64_t(gh) * gw, B = static_cast<int64_t>(batch.size());

    const GraphContext graph = runner_.new_context("vision");
    const BatchGraph g = build_batch(graph, gh, gw, B);
    runner_.allocate(g.graph);

    const size_t slice_floats = static_cast<size_t>(L) * hp.patch_dim();
    for (int64_t b = 0; b < B; ++b) {
        ggml_backend_tensor_set(g.patches, image.slices[batch[b]].patches.data(), b * slice_floats * sizeof(float),
                                slice_floats * sizeof(float));
    }
    const std::vector<int32_t> ids = navit_position_ids(gh, gw, hp.pos_side);
    ggml_backend_tensor_set(g.pos_ids, ids.data(), 0, ids.size() * sizeof(int32_t));
    const std::vector<float> kp = resampler_key_positions(gh, gw, hp.n_embd_out);
    ggml_backend_tensor_set(g.key_pos, kp.data(), 0, kp.size() * sizeof(float));

    runner_.compute(g.graph);

    const size_t rows = static_cast<size_t>(hp.n_query) * hp.n_embd_out;
    for (int64_t b = 0; b < B; ++b) {
        ggml_backend_tensor_get(g.emb, out + batch[b] * rows, b * rows * sizeof(float), rows * sizeof(float));
        if (vit_features) {
            std::vector<float> & f = (*vit_features)[batch[b]];
            f.resize(static_cast<size_t>(L) * hp.n_embd);
            ggml_backend_tensor_get(g.vit, f.data(), b * f.size() * sizeof(float), f.size() * sizeof(float));
        }
    }
}

}  // namespace minicpmo
