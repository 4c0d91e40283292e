#include "session/reply_stream.h"

#include "core/error.h"
#include "session/spoken_reply_stream.h"
#include "token2wav/token2wav.h"
#include "token2wav/voice_bank.h"

namespace minicpmo {

void ReplyStream::check_options(OmniSession & session, const ReplyOptions & options) {
    const auto hold = session.enter("reply");
    validate_sampling_params(options.generate.sampling);
    if (options.generate.max_new_tokens < 0) {
        fail(Status::invalid_argument, "max_new_tokens must be >= 0, got " + std::to_string(options.generate.max_new_tokens));
    }
    if (options.max_speech_tokens < 0) {
        fail(Status::invalid_argument, "max_speech_tokens must be >= 0 (0 = the model's), got " +
                                           std::to_string(options.max_speech_tokens));
    }
    if (options.speech != ReplySpeech::none) {
        session.require_speech_free("spoken reply");
        session.token2wav().voices().get(options.voice);  // an unknown voice fails before any work
    }
}

ReplyStream::ReplyStream(OmniSession & session, const ReplyOptions & options, ReplyEnding ending)
    : session_(session), options_(options), ending_(ending) {
    const auto hold = session.enter("reply");
    check_options(session, options);
    const LlmModel & m = session.model();
    tts_eos_ = m.special_token(Special::tts_eos);
    unk_ = m.special_token(Special::unk);
    if (options.speech != ReplySpeech::none) {
        Token2Wav & synth = session.token2wav();
        const std::vector<llama_token> & kv = session.kv_tokens();
        if (kv.empty() || kv.back() != m.special_token(Special::tts_bos)) {
            fail(Status::invalid_argument,
                 "a spoken reply needs a prompt ending with <|tts_bos|> (the spoken-reply template)");
        }
        if (options.noise_seed) synth.reseed(*options.noise_seed);
        sample_rate_ = synth.sample_rate();
    }
    if (options.speech == ReplySpeech::streamed) {
        spoken_ = std::make_unique<SpokenReplyStream>(session, options.generate, options.voice, options.speech_draw,
                                                      options.max_speech_tokens);
    } else {
        GenerateParams g = options.generate;
        // the speech decoder conditions on them (kept for a later speak_reply when asked)
        g.capture_hidden = g.capture_hidden || options.speech == ReplySpeech::whole;
        session.begin_generation(g);
    }
    epoch_ = session.epoch();
}

ReplyStream::~ReplyStream() = default;

const std::vector<int32_t> & ReplyStream::speech_tokens() const {
    return spoken_ ? spoken_->speech_tokens() : whole_tokens_;
}

void ReplyStream::check_current(const char * what) const {
    if (session_.epoch() != epoch_) {
        fail(Status::invalid_argument, std::string(what) + ": this reply was abandoned: the session started another request");
    }
}

bool ReplyStream::text_step(std::string & piece) {
    const bool more = session_.step(piece);
    if (ending_ == ReplyEnding::streaming && more) {
        const std::vector<llama_token> & reply = session_.last_generated();
        if (!reply.empty() && (reply.back() == tts_eos_ || reply.back() == unk_)) {
            session_.end_generation(FinishReason::stop);  // the official streaming reply ends here (the token was fed)
            return !piece.empty();
        }
    }
    return more;
}

void ReplyStream::end_text() {
    finish_ = session_.finish_reason();
    phase_ = options_.speech == ReplySpeech::whole ? Phase::speech_tokens : Phase::done;
}

bool ReplyStream::next(ReplyChunk & out) {
    const auto hold = session_.enter("reply step");
    out.text.clear();
    out.audio.clear();
    if (phase_ == Phase::done) return false;
    check_current("reply step");
    if (stop_requested_.exchange(false)) {
        if (phase_ != Phase::text) {
            finish_ = FinishReason::cancelled;
            phase_ = Phase::done;
            return false;
        }
        session_.cancel();  // the text ends here; what was said is still spoken
    }
    switch (phase_) {
        case Phase::text: {
            if (spoken_) {
                SpokenPiece piece;
                const bool more = spoken_->next(piece);
                out.text = std::move(piece.text);
                out.audio = std::move(piece.audio);
                text_ += out.text;
                if (!more) end_text();
                return more;
            }
            const bool more = text_step(out.text);
            text_ += out.text;
            if (more) return true;
            end_text();
            return phase_ != Phase::done;
        }
        case Phase::speech_tokens:
            whole_tokens_ = session_.reply_speech_tokens(options_.speech_draw, options_.max_speech_tokens);
            phase_ = Phase::synthesis;
            return true;
        case Phase::synthesis:
            out.audio.push_back(session_.token2wav().synthesize(whole_tokens_, options_.voice));
            phase_ = Phase::done;
            return false;
        case Phase::done: break;
    }
    return false;
}

void ReplyStream::cancel() {
    const auto hold = session_.enter("reply cancel");
    if (phase_ == Phase::done) return;
    if (session_.epoch() == epoch_) {  // else another request owns the generation now
        if (spoken_) {
            spoken_->cancel();
        } else {
            session_.cancel();
        }
    }
    finish_ = FinishReason::cancelled;
    phase_ = Phase::done;
}

void ReplyStream::abandon() noexcept {
    try {
        cancel();
    } catch (...) {
        // busy in another thread or closed: that call owns the session (or nothing can run)
    }
}

std::string render_request(const ChatRequest & request, bool speaks) {
    ChatTemplateOptions t;
    t.add_generation_prompt = request.add_generation_prompt;
    t.enable_thinking = request.enable_thinking;
    // the official chat() switches to the spoken-reply template when any message holds audio
    t.use_tts_template = speaks || request.use_tts_template.value_or(!request.audios.empty());
    return render_chat(request.messages, t);
}

std::unique_ptr<ReplyStream> start_reply(OmniSession & session, const ChatRequest & request, const ReplyOptions & options) {
    const auto hold = session.enter("chat");
    ReplyStream::check_options(session, options);
    const std::string prompt = render_request(request, options.speech != ReplySpeech::none);
    // the media prompt counts the markers against the media (a marker without its medium is an error)
    session.prefill_media(prompt, request.images, request.audios, request.media);
    return std::make_unique<ReplyStream>(session, options, ReplyEnding::chat);
}

}  // namespace minicpmo
