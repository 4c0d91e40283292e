// Runs the vision graphs for one session: preprocessed slices in, LLM embeddings out. Slices of
// the same patch grid are encoded together in one graph (bounded by a memory budget for the
// attention scores); the scheduler's buffers are reused from call to call.
#pragma once

#include <memory>
#include <vector>

#include "core/compute_backend.h"
#include "vision/image_preprocess.h"
#include "vision/vision_model.h"

namespace minicpmo {

class VisionEncoder {
public:
    // Where this component's graphs ran so far (device vs CPU nodes, scheduler splits).
    const GraphPlacement & placement() const { return runner_.placement(); }
    VisionEncoder(std::shared_ptr<const VisionModel> model, ComputeDevice device, int n_threads,
                  ComputeType compute = ComputeType::f32);

    const VisionModel & model() const { return *model_; }
    void set_n_threads(int n_threads) { backend_.set_n_threads(n_threads); }

    // Returns slices.size() * n_query rows of n_embd_out floats, in the order of `image.slices`.
    // When `vit_features` is given it receives each slice's post-LayerNorm ViT output (L x D).
    std::vector<float> encode(const PreprocessedImage & image, std::vector<std::vector<float>> * vit_features = nullptr);

    // Packs the weights of the products that a slice of grid_h x grid_w patches runs and makes their
    // kernels, computing nothing (a no-op at compute f32 and on a device): the first image of that
    // size then encodes as fast as the next ones. The packed weights serve every session of the model.
    void prepare(int grid_h, int grid_w);

private:
    struct BatchGraph {
        ggml_tensor *patches, *pos_ids, *key_pos, *vit, *emb;
        ggml_cgraph * graph;
    };
    // the ViT + resampler graph of n_slices slices of grid_h x grid_w patches (not allocated)
    BatchGraph build_batch(const GraphContext & graph, int grid_h, int grid_w, int64_t n_slices) const;
    void encode_batch(const PreprocessedImage & image, const std::vector<size_t> & batch, float * out,
                      std::vector<std::vector<float>> * vit_features);

    std::shared_ptr<const VisionModel> model_;
    ComputeBackend backend_;
    GraphRunner runner_;
};

}  // namespace minicpmo
