// The speech-token decoder (MiniCPMTTS, spec §5.1) of the omni file: a 20-layer Llama over
// condition rows (text embedding + projected LLM hidden state) and speech-token embeddings, with a
// weight-normed head over 6561 speech tokens + EOS. Shared read-only by all sessions of a model.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/compute_backend.h"
#include "core/gguf_weights.h"
#include "core/q8_packed.h"

namespace minicpmo {

// Sampling of one TTS mode (spec §5.1 table). top_p >= 1 or top_k <= 0 switch that warper off.
struct TtsSampling {
    float temperature = 0.8f;
    float repetition_penalty = 1.05f;
    int repetition_window = 16;
    float top_p = 0.85f;
    int top_k = 25;
    int min_keep = 3;
    int min_new_tokens = 0;
    int max_new_tokens = 2048;
};

struct TtsHparams {
    int n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_ff = 0, n_ctx_train = 0;
    float rms_eps = 1e-6f;
    float rope_theta = 10000.0f;
    int n_embd_llm = 0;     // LLM hidden width the projector reads
    int n_vocab_text = 0;   // rows of emb_text (indexed with LLM token ids)
    int n_vocab_audio = 0;  // speech tokens + EOS
    int audio_eos = 0;      // = n_vocab_audio - 1
    int audio_bos_id = 0;   // emb_text rows of the extra condition rows
    int text_eos_id = 0;
    bool normalize_projected_hidden = true;
    float normalize_eps = 1e-12f;
    TtsSampling chat, stream, duplex;
};

struct TtsLayer {
    ggml_tensor *attn_norm, *q, *k, *v, *o, *ffn_norm, *gate, *up, *down;
};

// A layer's Q8_0 matrices packed for the CPU's byte dot products (core/q8_packed): q, k and v stacked
// into one product, gate and up into one gated product.
struct TtsPackedLayer {
    std::shared_ptr<const PackedQ8Matrix> qkv, o, gate_up, down;
};

class TtsModel {
public:
    // Throws naming the file when the tts component is absent or inconsistent.
    // map_file: CPU weights are the file's mapped pages (false: read into memory; GgufWeights)
    TtsModel(const std::string & omni_path, ComputeDevice device, bool map_file = true);

    const TtsHparams & hparams() const { return hp_; }
    const std::vector<TtsLayer> & layers() const { return layers_; }
    ggml_tensor * emb_text() const { return emb_text_; }
    ggml_tensor * emb_code() const { return emb_code_; }
    ggml_tensor * head_code() const { return head_code_; }
    ggml_tensor * output_norm() const { return output_norm_; }
    ggml_tensor * proj1_w() const { return proj1_w_; }
    ggml_tensor * proj1_b() const { return proj1_b_; }
    ggml_tensor * proj2_w() const { return proj2_w_; }
    ggml_tensor * proj2_b() const { return proj2_b_; }
    bool weights_f32() const { return weights_f32_; }
    // On an x86 CPU with AVX2 or better the decode, which reads every matrix once per speech token,
    // runs Q8_0 matrices packed: the code head when it is Q8_0, the layers when all their matrices
    // are (null: ggml's mul_mat)
    const TtsPackedLayer * packed_layer(size_t il) const;
    const PackedQ8Matrix * packed_head() const { return packed_head_.get(); }
    // whether the decoder's graphs take the attention over the cache as one node (tts/tts_attention:
    // on an x86 CPU; ggml's ops elsewhere)
    bool cpu_attention() const { return cpu_attention_; }

private:
    void pack_q8_0_matrices();

    std::unique_ptr<GgufWeights> w_;
    TtsHparams hp_;
    std::vector<TtsLayer> layers_;
    ggml_tensor *emb_text_, *emb_code_, *head_code_, *output_norm_, *proj1_w_, *proj1_b_, *proj2_w_, *proj2_b_;
    bool weights_f32_ = false;
    bool cpu_attention_ = false;
    std::vector<TtsPackedLayer> packed_layers_;
    std::shared_ptr<const PackedQ8Matrix> packed_head_;
};

}  // namespace minicpmo
