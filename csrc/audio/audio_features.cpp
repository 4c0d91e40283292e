#include "audio/audio_features.h"

#include <algorithm>

#include "core/error.h"

namespace minicpmo {

std::vector<size_t> audio_piece_lengths(const AudioHparams & hp, size_t n_samples) {
    const size_t piece = static_cast<size_t>(hp.chunk_seconds) * hp.sample_rate;
    std::vector<size_t> out;
    for (size_t at = 0; at < n_samples; at += piece) out.push_back(std::min(piece, n_samples - at));
    return out;
}

int audio_tokens_for_samples(const AudioHparams & hp, size_t n_samples) {
    long long total = 0;
    for (size_t n : audio_piece_lengths(hp, n_samples)) {
        const long long frames = static_cast<long long>((n + hp.hop_length - 1) / hp.hop_length);
        const long long enc = (frames - 1) / 2 + 1;
        if (enc >= hp.pool_step) total += (enc - hp.pool_step) / hp.pool_step + 1;
    }
    return static_cast<int>(std::min<long long>(total, 1 << 30));
}

std::vector<MelPiece> chat_mel_pieces(const AudioHparams &, const std::vector<float> &, const float *, size_t) {
    fail(Status::internal, "TEMPORARY: log-mel front end not merged yet");
}

}  // namespace minicpmo
