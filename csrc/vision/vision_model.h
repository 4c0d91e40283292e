// The vision component of the omni file: SigLIP NaViT tower + resampler weights and every
// hyper-parameter, read once (spec §1.1, §2). Shared read-only by all sessions of a model.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "core/compute_backend.h"
#include "core/gguf_weights.h"
#include "core/pre_ln_block.h"

namespace minicpmo {

struct VisionHparams {
    int n_layer = 0;         // encoder layers run
    int n_embd = 0;          // SigLIP width D (1152)
    int n_ff = 0;            // MLP width (4304)
    int n_head = 0;          // (16)
    float eps = 1e-6f;
    int patch_size = 0;      // (14)
    int pos_side = 0;        // position table side = image_size / patch_size (70)
    int n_channels = 3;
    std::array<float, 3> mean{0.5f, 0.5f, 0.5f};
    std::array<float, 3> std{0.5f, 0.5f, 0.5f};
    int scale_resolution = 448;
    int max_slice_nums = 9;  // chat default
    bool use_image_id = true;
    int batch_size = 16;     // slices per graph at most

    int n_query = 0;         // resampler queries = LLM tokens per slice (64)
    int n_embd_out = 0;      // resampler / LLM width E
    int n_head_resampler = 0;
    float eps_resampler = 1e-6f;

    int patch_dim() const { return n_channels * patch_size * patch_size; }
};

struct ResamplerWeights {
    ggml_tensor *query, *kv_proj;
    ggml_tensor *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b;
    ggml_tensor *ln_q_w, *ln_q_b, *ln_kv_w, *ln_kv_b, *ln_post_w, *ln_post_b;
    ggml_tensor * proj;  // stored as a Linear weight (y = proj x)
};

class VisionModel {
public:
    // Throws bad_model naming the file when the vision component is absent or inconsistent.
    // map_file: CPU weights are the file's mapped pages (false: read into memory; GgufWeights)
    VisionModel(const std::string & omni_path, ComputeDevice device, bool map_file = true);

    const VisionHparams & hparams() const { return hp_; }
    // the stored tensors (the BF16 products pack their matrices once, for every session)
    const GgufWeights & weights() const { return *w_; }
    const std::vector<PreLnLayer> & layers() const { return layers_; }
    const ResamplerWeights & resampler() const { return rs_; }
    ggml_tensor * patch_w() const { return patch_w_; }
    ggml_tensor * patch_b() const { return patch_b_; }
    ggml_tensor * pos_embd() const { return pos_embd_; }
    ggml_tensor * post_ln_w() const { return post_ln_w_; }
    ggml_tensor * post_ln_b() const { return post_ln_b_; }
    bool weights_f32() const { return weights_f32_; }

private:
    std::unique_ptr<GgufWeights> w_;
    VisionHparams hp_;
    std::vector<PreLnLayer> layers_;
    ResamplerWeights rs_{};
    ggml_tensor *patch_w_, *patch_b_, *pos_embd_, *post_ln_w_, *post_ln_b_;
    bool weights_f32_ = false;
};

}  // namespace minicpmo
