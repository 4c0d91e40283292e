#include "tts/tts_stream.h"

#include <numeric>
#include <string>

#include "core/error.h"

namespace minicpmo {

namespace {

void check_text_ids(const TtsHparams & hp, const int32_t * ids, const float * hidden, int n) {
    if (n < 0) fail(Status::invalid_argument, "the number of text tokens must be >= 0, got " + std::to_string(n));
    if (n > 0 && (!ids || !hidden)) fail(Status::invalid_argument, "text tokens need their ids and LLM hidden rows");
    for (int i = 0; i < n; ++i) {
        if (ids[i] < 0 || ids[i] >= hp.n_vocab_text) {
            fail(Status::invalid_argument, "text token id " + std::to_string(ids[i]) + " (position " + std::to_string(i) +
                                               ") is outside the TTS text table [0, " + std::to_string(hp.n_vocab_text) +
                                               ")");
        }
    }
}

// A condition block of L rows must fit before any sample can follow it.
void check_room(const TtsDecoder & d, int L) {
    if (d.n_cached() + L > d.capacity()) {
        fail(Status::context_full, "the speech decoder's context (" + std::to_string(d.capacity()) +
                                       " rows) cannot take " + std::to_string(L) + " more condition rows after " +
                                       std::to_string(d.n_cached()) + " cached ones; start a new turn");
    }
}

// The decoder belongs to the session; a stream must be its only user between two calls.
void check_untouched(const TtsDecoder & d, int expected) {
    if (d.n_cached() != expected) {
        fail(Status::invalid_argument, "the session's speech decoder was used by something else during this speech "
                                       "stream (its cache changed); start a new stream");
    }
}

// Condition rows + the extra emb_text rows (text_eos / audio_bos) after them.
std::vector<float> condition_block(TtsDecoder & d, const int32_t * ids, const float * hidden, int n, bool normalize,
                                   const std::vector<int32_t> & extra) {
    std::vector<float> rows;
    if (n > 0) rows = d.condition_rows(ids, hidden, n, normalize);
    const std::vector<float> tail = d.text_rows(extra.data(), static_cast<int>(extra.size()));
    rows.insert(rows.end(), tail.begin(), tail.end());
    return rows;
}

std::vector<int32_t> positions_from(int start, int L) {
    std::vector<int32_t> pos(L);
    std::iota(pos.begin(), pos.end(), start);
    return pos;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// streaming simplex

TtsSimplexStream::TtsSimplexStream(TtsDecoder & decoder, const TtsSampling & sampling, int block, int max_new_per_chunk)
    : decoder_(decoder), sampling_(sampling), block_(block),
      max_new_(max_new_per_chunk > 0 ? max_new_per_chunk : sampling.max_new_tokens) {
    if (block < 1) fail(Status::invalid_argument, "the speech block size must be >= 1, got " + std::to_string(block));
    if (max_new_per_chunk < 0 || max_new_ < 1) {
        fail(Status::invalid_argument, "the per-chunk speech token limit must be >= 1, got " + std::to_string(max_new_));
    }
    decoder_.reset();
}

std::vector<TtsReleased> TtsSimplexStream::feed_text(const int32_t * ids, const float * hidden, int n,
                                                     bool text_finished, const UniformDraw & draw) {
    const TtsHparams & hp = decoder_.model().hparams();
    if (broken_) fail(Status::invalid_argument, "this speech stream failed earlier; start a new one for the turn");
    if (text_finished_) fail(Status::invalid_argument, "the speech stream already received its final text chunk");
    check_untouched(decoder_, cached_);
    if (n <= 0) fail(Status::invalid_argument, "a streaming text chunk needs at least one text token (empty chunk)");
    check_text_ids(hp, ids, hidden, n);
    std::vector<int32_t> extra;
    if (text_finished) extra.push_back(hp.text_eos_id);
    extra.push_back(hp.audio_bos_id);
    const int L = n + static_cast<int>(extra.size());
    check_room(decoder_, L);

    std::vector<TtsReleased> released;
    if (keep_steps_) steps_ = TtsStepLog{};
    int kept = 0;
    try {
        const std::vector<float> cond =
            condition_block(decoder_, ids, hidden, n, hp.normalize_projected_hidden, extra);
        const std::vector<int32_t> pos = positions_from(start_, L);
        bool finished = false;
        for (int t = 0; t < max_new_; ++t) {
            std::vector<float> logits = t == 0 ? decoder_.forward_rows(cond.data(), pos.data(), L)
                                               : decoder_.forward_code(generated_.back(), start_ + L + t - 1);
            if (keep_steps_) steps_.logits.push_back(logits);
            TtsStep step;
            step.apply_processors = !(generated_.empty() && t == 0);  // only the stream's very first sample is plain
            step.mask_eos = false;  // the official stream loop never masks EOS (stream min_new_tokens 0)
            step.eos = hp.audio_eos;
            const int s = tts_sample(logits, generated_, sampling_, step, draw);
            if (keep_steps_) steps_.sampled.push_back(s);
            if (s == hp.audio_eos) {
                finished = true;  // EOS is never fed nor kept
            } else {
                generated_.push_back(s);
                buffer_.push_back(s);
                ++kept;
            }
            // release as the official buffer loop: full blocks as they fill, the rest at the final EOS
            if (buffer_.empty()) {
                if (text_finished) released.push_back(TtsReleased{{}, true});
                break;
            }
            if (static_cast<int>(buffer_.size()) >= block_) {
                released.push_back(TtsReleased{std::vector<int32_t>(buffer_.begin(), buffer_.begin() + block_), false});
                buffer_.erase(buffer_.begin(), buffer_.begin() + block_);
            } else if (finished) {
                if (text_finished) {
                    released.push_back(TtsReleased{buffer_, true});
                    buffer_.clear();
                }
                break;
            }
        }
    } catch (...) {
        broken_ = true;
        throw;
    }
    // counts a sample taken at the per-chunk limit that was never fed (official bookkeeping)
    start_ += L + kept;
    cached_ = decoder_.n_cached();
    text_finished_ = text_finished;
    return released;
}

std::vector<int32_t> TtsSimplexStream::flush() {
    std::vector<int32_t> rest;
    rest.swap(buffer_);
    return rest;
}

// ---------------------------------------------------------------------------------------------
// duplex

TtsDuplexStream::TtsDuplexStream(TtsDecoder & decoder, const TtsSampling & sampling, int tokens_per_unit)
    : decoder_(decoder), sampling_(sampling), per_unit_(tokens_per_unit) {
    if (tokens_per_unit < 1) {
        fail(Status::invalid_argument, "tokens_per_unit must be >= 1, got " + std::to_string(tokens_per_unit));
    }
    // the official unit call builds top-p/top-k warpers but never applies them
    sampling_.top_p = 1.0f;
    sampling_.top_k = 0;
    decoder_.reset();
}

void TtsDuplexStream::reset_turn() {
    decoder_.reset();
    start_ = 0;
    cached_ = 0;
    broken_ = false;
}

std::vector<int32_t> TtsDuplexStream::unit(const int32_t * ids, const float * hidden, int n, bool end_of_turn,
                                           const UniformDraw & draw, bool * finished) {
    const TtsHparams & hp = decoder_.model().hparams();
    if (broken_) fail(Status::invalid_argument, "this duplex speech turn failed earlier; call reset_turn() first");
    check_untouched(decoder_, cached_);
    check_text_ids(hp, ids, hidden, n);
    const int L = n + 1;
    check_room(decoder_, L);

    const int max_new = per_unit_ + 1;
    // EOS may end a turn's first unit or the unit that ends the turn; mid-turn units are full
    const int min_new = (end_of_turn || start_ == 0) ? 0 : max_new;
    if (keep_steps_) steps_ = TtsStepLog{};
    std::vector<int32_t> sampled;
    bool eos = false;
    try {
        // the duplex path always normalises the projected hidden (whatever the model flag says)
        const std::vector<float> cond = condition_block(decoder_, ids, hidden, n, true, {hp.audio_bos_id});
        const std::vector<int32_t> pos = positions_from(start_, L);
        for (int t = 0; t < max_new; ++t) {
            std::vector<float> logits = t == 0 ? decoder_.forward_rows(cond.data(), pos.data(), L)
                                               : decoder_.forward_code(sampled.back(), start_ + L + t - 1);
            if (keep_steps_) steps_.logits.push_back(logits);
            TtsStep step;
            step.apply_processors = t > 0;
            step.mask_eos = t < min_new;
            step.eos = hp.audio_eos;
            const int s = tts_sample(logits, sampled, sampling_, step, draw);
            sampled.push_back(s);
            if (keep_steps_) steps_.sampled.push_back(s);
            if (s == hp.audio_eos) {
                eos = true;
                break;
            }
        }
    } catch (...) {
        broken_ = true;
        throw;
    }
    // EOS is not a speech token; without EOS the (per_unit + 1)-th sample is discarded, never fed
    sampled.pop_back();
    if (finished) *finished = eos;
    if (end_of_turn) {
        reset_turn();
    } else {
        start_ += L + static_cast<int>(sampled.size());
    }
    cached_ = decoder_.n_cached();
    return sampled;
}

}  // namespace minicpmo
