// The chat path's audio features (spec §3.1, §3.3): a signal longer than the feature extractor's
// piece (30 s) is split into pieces, each turned into log-mel frames and encoded on its own, and
// the placeholder count is computed from the sample count the same way.
#pragma once

#include <cstddef>
#include <vector>

#include "audio/audio_model.h"

namespace minicpmo {

struct MelPiece {
    std::vector<float> data;  // n_mel rows of n_frames values (time fastest)
    int n_frames = 0;
};

// Samples of each piece: chunk_seconds * sample_rate each, the last one shorter.
std::vector<size_t> audio_piece_lengths(const AudioHparams & hp, size_t n_samples);

// LLM tokens of a signal: per piece, mel frames ceil(n / hop), encoder frames (F - 1) / 2 + 1,
// pooled (T' - pool) / pool + 1 (0 when T' < pool).
int audio_tokens_for_samples(const AudioHparams & hp, size_t n_samples);

// Log-mel of every piece as the batch feature extractor computes it.
std::vector<MelPiece> chat_mel_pieces(const AudioHparams & hp, const std::vector<float> & mel_filters, const float * pcm,
                                      size_t n_samples);

}  // namespace minicpmo
