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

std::vector<MelPiece> chat_mel_pieces(const AudioModel & model, const float * pcm, size_t n_samples) {
    const LogMelSpectrogram mel = log_mel_spectrogram(model.mel_analyzer(), pcm, n_samples);
    std::vector<MelPiece> out;
    int64_t first = 0;
    for (int64_t frames : mel.piece_frames) {
        MelPiece p;
        p.n_frames = static_cast<int>(frames);
        p.data.resize(static_cast<size_t>(mel.n_mel) * frames);
        for (int b = 0; b < mel.n_mel; ++b) {
            std::copy_n(mel.data.data() + static_cast<size_t>(b) * mel.n_frames + first, frames,
                        p.data.data() + static_cast<size_t>(b) * frames);
        }
        out.push_back(std::move(p));
        first += frames;
    }
    return out;
}

}  // namespace minicpmo
