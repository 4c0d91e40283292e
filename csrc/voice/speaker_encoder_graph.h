// The CAM++ forward pass as one ggml graph (weights of voice/speaker_encoder.h). Activations are
// ne (channels, frequency, frames) in the head and ne (channels, frames) after it, channels fastest,
// so every conv is a sum of one matrix product per tap and a BatchNorm a per-channel multiply-add;
// the segment pooling of the masking layers is a product with a pooling matrix the caller fills
// (speaker_encoder_pooling).
#pragma once

#include <cstdint>
#include <vector>

#include "ggml.h"
#include "voice/speaker_encoder.h"

namespace minicpmo {

struct SpeakerEncoderGraphInputs {
    ggml_tensor * feats = nullptr;    // ne (n_mel, n_frames): mean-subtracted fbank
    ggml_tensor * pooling = nullptr;  // ne (frames, n_seg + 1): segment averages, then the whole-utterance mean
    ggml_tensor * segment = nullptr;  // I32 (frames): the segment of each frame
};

// Creates the inputs for `n_frames` fbank frames and returns the x-vector, ne (embedding_length, 1).
ggml_tensor * build_speaker_encoder(ggml_context * ctx, const SpeakerEncoder & model, int64_t n_frames,
                                    SpeakerEncoderGraphInputs & in);

// Host values of the pooling inputs for `frames` frames after the TDNN: a (n_seg + 1, frames)
// row-major matrix (row s: 1/len over the frames of segment s; the last row 1/frames everywhere), the
// transposed layout of ne (frames, n_seg + 1); and each frame's segment. A last partial segment
// averages only the frames it holds (avg_pool1d with ceil_mode, as torch and onnxruntime do).
void speaker_encoder_pooling(int64_t frames, int seg_len, std::vector<float> & pooling, std::vector<int32_t> & segment);

// Upper bound of the graph's nodes.
size_t speaker_encoder_graph_nodes(const SpeakerEncoder & model);

}  // namespace minicpmo
