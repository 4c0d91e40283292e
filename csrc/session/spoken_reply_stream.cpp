#include "session/spoken_reply_stream.h"

#include "core/error.h"
#include "session/omni_session.h"
#include "token2wav/token2wav.h"
#include "tts/tts_decoder.h"
#include "tts/tts_stream.h"

namespace minicpmo {

SpokenReplyStream::SpokenReplyStream(OmniSession & session, const GenerateParams & params, const std::string & voice,
                                     const UniformDraw & draw, int max_speech_tokens_per_chunk)
    : session_(session), draw_(draw) {
    const auto hold = session.enter("spoken reply");
    session.require_speech_free("spoken reply");
    if (max_speech_tokens_per_chunk < 0) fail(Status::invalid_argument, "max_speech_tokens must be >= 0");
    const LlmModel & m = session.model();
    const llama_token tts_bos = m.special_token(Special::tts_bos);
    tts_eos_ = m.special_token(Special::tts_eos);
    unk_ = m.special_token(Special::unk);
    const std::vector<llama_token> & kv = session.kv_tokens();
    if (kv.empty() || kv.back() != tts_bos) {
        fail(Status::invalid_argument, "a spoken reply needs a prompt ending with <|tts_bos|> (the spoken-reply template)");
    }
    Token2Wav & synth = session.token2wav();
    synth.voices().get(voice);  // an unknown voice fails before any work
    TtsDecoder & decoder = session.tts_decoder();
    tts_ = std::make_unique<TtsSimplexStream>(decoder, decoder.model().hparams().stream, 25, max_speech_tokens_per_chunk);
    synth.stream_begin(voice);
    GenerateParams p = params;
    p.capture_hidden = true;
    session.begin_generation(p);
}

SpokenReplyStream::~SpokenReplyStream() = default;

int SpokenReplyStream::sample_rate() const { return session_.token2wav().sample_rate(); }

void SpokenReplyStream::cancel() {
    const auto hold = session_.enter("spoken reply cancel");
    session_.cancel();
    text_done_ = true;
    done_ = true;  // the next stream_begin() restarts Token2Wav from the voice prompt
}

void SpokenReplyStream::push_speech(const std::vector<int32_t> & tokens, SpokenPiece & out) {
    if (tokens.empty()) return;
    speech_tokens_.insert(speech_tokens_.end(), tokens.begin(), tokens.end());
    for (std::vector<float> & chunk : session_.token2wav().stream_push(tokens.data(), static_cast<int>(tokens.size()))) {
        out.audio.push_back(std::move(chunk));
    }
}

void SpokenReplyStream::feed_chunk(bool text_finished, SpokenPiece & out) {
    const std::vector<TtsReleased> blocks =
        tts_->feed_text(chunk_ids_.data(), chunk_hidden_.data(), static_cast<int>(chunk_ids_.size()), text_finished, draw_);
    chunk_ids_.clear();
    chunk_hidden_.clear();
    for (const TtsReleased & b : blocks) push_speech(b.tokens, out);
}

void SpokenReplyStream::finish(SpokenPiece & out) {
    // The final text chunk carries text_eos. When the reply ended right after a full chunk there is
    // no final chunk. Either way the speech decoder's unreleased rest is spoken, as the official
    // loop does when it ends.
    if (!chunk_ids_.empty()) feed_chunk(true, out);
    // what the decoder has not released yet (a final chunk cut at the token limit keeps its rest)
    push_speech(tts_->flush(), out);
    std::vector<float> rest = session_.token2wav().stream_finish();
    if (!rest.empty()) out.audio.push_back(std::move(rest));
    done_ = true;
}

bool SpokenReplyStream::next(SpokenPiece & out) {
    const auto hold = session_.enter("spoken reply step");
    out.text.clear();
    out.audio.clear();
    if (done_) return false;
    session_.require_speech_free("spoken reply step");
    if (!text_done_) {
        const bool more = session_.step(out.text);
        const std::vector<llama_token> & reply = session_.last_generated();
        const std::vector<float> & hidden = session_.generated_hidden();
        const size_t n_embd = static_cast<size_t>(session_.context().n_embd());
        for (; n_seen_ < reply.size() && !text_done_; ++n_seen_) {
            const llama_token t = reply[n_seen_];
            if (t == tts_eos_ || t == unk_) {
                session_.end_generation(FinishReason::stop);  // the official streaming reply ends here
                text_done_ = true;
            } else if (session_.model().is_eog(t)) {
                text_done_ = true;  // never fed: no hidden row
            } else {
                if ((n_seen_ + 1) * n_embd > hidden.size()) fail(Status::internal, "a spoken token has no hidden state");
                chunk_ids_.push_back(t);
                chunk_hidden_.insert(chunk_hidden_.end(), hidden.begin() + n_seen_ * n_embd,
                                     hidden.begin() + (n_seen_ + 1) * n_embd);
                if (static_cast<int>(chunk_ids_.size()) == kTextChunkTokens && more) feed_chunk(false, out);
            }
        }
        if (!more) text_done_ = true;
        if (!text_done_) return true;
    }
    finish(out);
    return true;
}

}  // namespace minicpmo
