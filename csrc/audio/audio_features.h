// The chat path's audio features (spec §3.1, §3.3): a signal longer than the feature extractor's
// piece (30 s) is split into pieces, each turned into log-mel frames and encoded on its own
// (positions restart), and the placeholder count is computed from the sample count the same way.
//
// The official chat() encodes all pieces of all audios of one call as a zero-padded batch whose
// padding mask compares encoder-frame keys with the piece's mel-frame count, so unmasked padding
// reaches the last partial 1-s block of a shorter piece. We reproduce that within one audio (the
// last piece of a >30-s audio is padded to the longest piece of that audio) but encode each audio
// on its own, so its embedding does not depend on the other audios of the conversation (which
// also lets the KV cache keep it across turns).
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
std::vector<MelPiece> chat_mel_pieces(const AudioModel & model, const float * pcm, size_t n_samples);

}  // namespace minicpmo
