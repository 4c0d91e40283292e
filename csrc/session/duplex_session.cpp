#include "session/duplex_session.h"

#include <algorithm>
#include <optional>
#include <string>

#include "audio/audio_model.h"
#include "audio/streaming_mel.h"
#include "core/error.h"
#include "core/uniform_random.h"
#include "token2wav/token2wav.h"
#include "vision/vision_model.h"

namespace minicpmo {

namespace {

constexpr size_t kUnitSamples = 16000;       // chunk_ms 1000 at 16 kHz
constexpr size_t kFirstUnitMaxSamples = 16560;  // first_chunk_ms 1035: the reference front-pads up to it

bool has_component(const OmniModel & m, const char * name) {
    if (!m.omni()) return false;
    const auto & c = m.omni()->components;
    return std::find(c.begin(), c.end(), name) != c.end();
}

}  // namespace

DuplexSession::DuplexSession(OmniSession & session, const DuplexOptions & options, uint64_t seed)
    : session_(session), options_(options), rng_(seed) {
    const auto hold = session_.enter("duplex");
    if (options_.window_high <= 0 || options_.window_low < 0 || options_.window_low > options_.window_high) {
        fail(Status::invalid_argument, "sliding window marks must satisfy 0 <= low <= high and high > 0, got low " +
                                           std::to_string(options_.window_low) + ", high " +
                                           std::to_string(options_.window_high));
    }
    if (options_.effective_mode() == DuplexWindowMode::basic && options_.window_high >= session_.context().n_ctx()) {
        fail(Status::invalid_argument, "sliding window high mark " + std::to_string(options_.window_high) +
                                           " must be below the context size " +
                                           std::to_string(session_.context().n_ctx()));
    }
    const LlmModel & m = session_.model();
    unit_ = m.special_token(Special::unit);
    unit_end_ = m.special_token(Special::unit_end);
    image_ = m.special_token(Special::image);
    image_end_ = m.special_token(Special::image_end);
    slice_ = m.special_token(Special::slice);
    slice_end_ = m.special_token(Special::slice_end);
    listen_ = m.special_token(Special::listen);
    speak_ = m.special_token(Special::speak);
    tts_bos_ = m.special_token(Special::tts_bos);
    chunk_tts_eos_ = m.special_token(Special::chunk_tts_eos);
    if (options_.effective_mode() == DuplexWindowMode::context) {
        window_ = std::make_unique<DuplexContextWindow>(m, options_.context);
    }
    decode_ids_.chunk_eos = m.special_token(Special::chunk_eos);
    decode_ids_.turn_eos = m.special_token(Special::turn_eos);
    decode_ids_.eos = m.special_token(Special::im_end);
    decode_ids_.listen = listen_;
    decode_ids_.forbidden.push_back(m.special_token(Special::tts_pad));
    if (session_.omni_model().omni()) {
        const auto & bad = session_.omni_model().omni()->bad_token_ids;
        decode_ids_.forbidden.insert(decode_ids_.forbidden.end(), bad.begin(), bad.end());
    }
}

DuplexSession::~DuplexSession() = default;

void DuplexSession::require_prepared(const char * what) const {
    if (!prepared_) fail(Status::invalid_argument, std::string(what) + ": call prepare() first");
    if (session_.n_past() != expected_n_past_) {
        fail(Status::invalid_argument, std::string(what) + ": the session's cache was changed outside the duplex "
                                                           "conversation; call prepare() to start a new one");
    }
}

void DuplexSession::feed_token(llama_token t, bool want_hidden) { session_.append_tokens(&t, 1, want_hidden); }

void DuplexSession::prepare(const std::string & prefix, const std::string & suffix, const float * ref_pcm,
                            size_t n_ref) {
    const auto hold = session_.enter("duplex prepare");
    if (n_ref > 0 && !ref_pcm) fail(Status::invalid_argument, "reference audio: no sample buffer given");
    prepared_ = false;
    pending_ = false;
    pending_logits_.clear();
    history_.clear();
    unit_lengths_.clear();
    audio_chunks_ = 0;
    turn_ended_ = true;
    system_length_ = 0;
    units_generated_ = 0;
    mel_.reset();
    // speech of an earlier conversation is dropped (joins its thread); a new one starts primed
    speech_.reset();
    speech_closed_ = false;
    turns_.set_at_once(stages_at_once(session_.n_threads()));
    if (speech_on_) speech_ = std::make_unique<DuplexSpeech>(session_, turns_, voice_, speech_seed_);
    // a new conversation starts the Whisper context afresh (the reference keeps it, spec §3.4)
    if (has_component(session_.omni_model(), "audio")) session_.audio_encoder().reset_streaming();
    session_.reset();

    std::vector<float> ref_rows;
    if (n_ref > 0) {
        AudioInput a;
        a.pcm = ref_pcm;
        a.n_samples = n_ref;
        a.attention = AudioAttention::block_causal;
        ref_rows = session_.encode_audio(a);
    }
    const LlmModel & m = session_.model();
    if (!prefix.empty()) {
        const std::vector<llama_token> ids = m.tokenize(prefix, true);
        if (!ids.empty()) session_.append_tokens(ids.data(), ids.size());
    }
    if (!ref_rows.empty()) session_.append_embeddings(ref_rows.data(), ref_rows.size() / session_.context().n_embd());
    const int prefix_length = session_.n_past();  // the context window's "previous" goes here
    std::vector<llama_token> suffix_ids;
    if (!suffix.empty()) {
        suffix_ids = m.tokenize(suffix, true);
        if (!suffix_ids.empty()) session_.append_tokens(suffix_ids.data(), suffix_ids.size());
    }
    if (window_) window_->start(prefix_length, std::move(suffix_ids));
    system_length_ = session_.n_past();
    expected_n_past_ = system_length_;
    prepared_ = true;
}

void DuplexSession::prefill_unit(const DuplexUnitInput & in) {
    const auto hold = session_.enter("duplex prefill_unit");
    require_prepared("prefill_unit");
    if (pending_) fail(Status::invalid_argument, "prefill_unit: the previous unit is not generated yet (call generate_unit)");
    if (in.n_samples > 0 && !in.pcm) fail(Status::invalid_argument, "prefill_unit: audio has no sample buffer");
    const bool has_audio = in.n_samples > 0;
    const bool has_frames = !in.frames.empty();
    const bool has_text = !in.text.empty();
    if (!has_audio && !has_frames && !has_text) {
        fail(Status::invalid_argument, "prefill_unit needs audio, frames or text (all are empty)");
    }
    const size_t n_embd = static_cast<size_t>(session_.context().n_embd());

    // the encoders and the LLM compute in this stage's turn (stage_turns.h)
    const StageTurns::Turn turn(turns_);
    // everything is checked and encoded before the unit enters the cache
    std::vector<llama_token> text_ids;
    if (has_text) text_ids = session_.model().tokenize(in.text, true);

    std::vector<std::vector<float>> image_rows;
    int n_query = 0;
    for (size_t i = 0; i < in.frames.size(); ++i) {
        const ImageInput im = streaming_frame(in.frames[i]);
        if (!im.rgb || im.width <= 0 || im.height <= 0) {
            fail(Status::invalid_argument, "prefill_unit: frame " + std::to_string(i) + " has no pixels");
        }
        n_query = session_.omni_model().vision()->hparams().n_query;
        image_rows.push_back(session_.encode_image(im));
    }

    size_t n_positions = 1 + text_ids.size();  // <unit> and the text
    for (const auto & r : image_rows) n_positions += r.size() / n_embd + 2 * (r.size() / n_embd / n_query);

    AudioEncoding audio;
    if (has_audio) {
        const bool first = !mel_ || mel_->emitted_frames() == 0;
        if (first ? (in.n_samples < kUnitSamples || in.n_samples > kFirstUnitMaxSamples) : in.n_samples != kUnitSamples) {
            fail(Status::invalid_argument,
                 std::string("prefill_unit: a duplex unit takes 1 s of 16 kHz audio: ") +
                     (first ? "16000 to 16560 samples for the first unit (1.035 s, front-padded with zeros)"
                            : "16000 samples") +
                     ", got " + std::to_string(in.n_samples));
        }
        AudioEncoder & enc = session_.audio_encoder();
        if (!mel_) {
            StreamingMelOptions o;
            o.feed = StreamingFeed::duplex;
            o.redundancy_frames = 2;  // cnn_redundancy_ms 20
            const AudioModel & am = enc.model();
            mel_ = std::make_unique<StreamingMel>(am.mel_analyzer().config(), am.mel_filters(), o);
        }
        n_positions += 10;  // checked again below against what the encoder returns
        if (session_.n_past() + n_positions > static_cast<size_t>(session_.context().n_ctx())) {
            fail(Status::context_full, "prefill_unit: the unit does not fit in the context of " +
                                           std::to_string(session_.context().n_ctx()) +
                                           " positions (raise n_ctx or enable the sliding window)");
        }
        if (!mel_->push(in.pcm, in.n_samples)) fail(Status::internal, "the streaming mel emitted no chunk for a full unit");
        MelChunk c;
        mel_->next_chunk(c);
        audio = enc.encode_streaming(MelFrames{c.data.data(), static_cast<int>(c.n_frames)},
                                     static_cast<int>(c.prefix_frames), static_cast<int>(c.suffix_frames));
        if (audio.n_tokens <= 0) fail(Status::internal, "the audio chunk produced no embeddings");
    } else if (session_.n_past() + n_positions > static_cast<size_t>(session_.context().n_ctx())) {
        fail(Status::context_full, "prefill_unit: the unit does not fit in the context of " +
                                       std::to_string(session_.context().n_ctx()) + " positions");
    }

    unit_start_ = session_.n_past();
    const LlmContext & ctx = session_.context();
    auto keep_logits = [&] {
        const float * l = ctx.logits(-1);
        pending_logits_.assign(l, l + ctx.n_vocab());
    };
    feed_token(unit_);
    for (const auto & rows : image_rows) {
        const size_t block = static_cast<size_t>(n_query) * n_embd;
        const size_t n_blocks = rows.size() / block;
        for (size_t b = 0; b < n_blocks; ++b) {
            // the overview image first, then its slices
            feed_token(b == 0 ? image_ : slice_);
            session_.append_embeddings(rows.data() + b * block, static_cast<size_t>(n_query));
            feed_token(b == 0 ? image_end_ : slice_end_);
        }
    }
    if (has_frames && !has_audio) keep_logits();  // VISION mode decides after the last vision token
    if (has_audio) {
        session_.append_embeddings(audio.tokens.data(), static_cast<size_t>(audio.n_tokens));
        keep_logits();
    }
    if (!text_ids.empty()) {
        session_.append_tokens(text_ids.data(), text_ids.size());
        // text decides only when it is the unit's sole input (reference: the audio / vision logits
        // stay pending when text follows them)
        if (!has_audio && !has_frames) keep_logits();
    }
    if (has_audio || has_frames) ++audio_chunks_;
    pending_ = true;
    expected_n_past_ = session_.n_past();
}

DuplexUnitResult DuplexSession::generate_unit(const DuplexGenerateParams & params) {
    const auto hold = session_.enter("duplex generate_unit");
    if (speech_closed_) {
        fail(Status::invalid_argument, "generate_unit: the speech threads were stopped (close / as_simplex); call "
                                       "prepare() to start a new conversation");
    }
    require_prepared("generate_unit");
    if (!pending_) fail(Status::invalid_argument, "generate_unit: no prefilled unit (call prefill_unit first)");
    if (params.max_new_speak_tokens < 1) {
        fail(Status::invalid_argument, "max_new_speak_tokens_per_chunk must be >= 1, got " +
                                           std::to_string(params.max_new_speak_tokens));
    }
    validate_duplex_decode_params(params.decode);
    const int n_ctx = session_.context().n_ctx();
    if (session_.n_past() + params.max_new_speak_tokens + 1 > n_ctx) {
        fail(Status::context_full, "generate_unit: " + std::to_string(params.max_new_speak_tokens + 1) +
                                       " more positions do not fit in the context of " + std::to_string(n_ctx) +
                                       " (raise n_ctx or enable the sliding window)");
    }
    const LlmModel & m = session_.model();
    const int n_vocab = session_.context().n_vocab();
    const size_t n_embd = static_cast<size_t>(session_.context().n_embd());
    auto draw = [this]() { return uniform_unit(rng_()); };

    DuplexUnitResult r;
    r.current_time = audio_chunks_;
    // the LLM's decisions in this stage's turn, ended before the speech threads take over
    std::optional<StageTurns::Turn> turn;
    turn.emplace(turns_);
    std::vector<float> logits = std::move(pending_logits_);
    pending_logits_.clear();
    pending_ = false;
    size_t next_scripted = 0;

    for (int j = 0; j < params.max_new_speak_tokens; ++j) {
        if (j == params.max_new_speak_tokens - 1) {
            // forced unit end at the token limit
            feed_token(decode_ids_.chunk_eos);
            r.decided.push_back(decode_ids_.chunk_eos);
            break;
        }
        llama_token t;
        if (params.force_listen) {
            t = listen_;
        } else {
            if (!params.scripted.empty()) {
                if (next_scripted >= params.scripted.size()) fail(Status::invalid_argument, "scripted decisions ran out");
                t = params.scripted[next_scripted++];
                if (t < 0 || t >= n_vocab) fail(Status::invalid_argument, "scripted decision outside the vocabulary");
                if (t != decode_ids_.chunk_eos) history_.push_back(t);  // what a stage-2 pick would record
            } else {
                const DuplexDecision d = duplex_decode(logits.data(), n_vocab, decode_ids_, history_, params.decode, draw);
                t = d.token;
                if (d.stage == 2) history_.push_back(t);
            }
            // the model may not fall silent in the middle of a turn
            if (t == listen_ && !turn_ended_) t = tts_bos_;
        }
        r.decided.push_back(t);
        r.is_listen = t == listen_;
        if (t == listen_ || t == decode_ids_.chunk_eos || t == chunk_tts_eos_) {
            feed_token(t);
            break;
        }
        turn_ended_ = false;
        feed_token(t, true);
        const float * l = session_.context().logits(-1);
        logits.assign(l, l + n_vocab);
        r.end_of_turn = t == decode_ids_.turn_eos;  // the last fed token decides (reference)
        if (r.end_of_turn) turn_ended_ = true;
        if (j != 0) {
            // the unit's first token is the decision (<|speak|>), not speech
            const float * h = session_.context().hidden(0);
            r.speak_tokens.push_back(t);
            r.speak_hidden.insert(r.speak_hidden.end(), h, h + n_embd);
        }
    }
    feed_token(unit_end_);
    unit_lengths_.push_back(session_.n_past() - unit_start_);
    if (window_) window_->add_unit(unit_lengths_.back(), r.speak_tokens, r.is_listen);
    for (llama_token t : r.speak_tokens) r.text += m.token_text(t);
    if (r.is_listen) {
        // the reference reports a listening unit as silence, whatever it said before <|listen|>
        r.text.clear();
        r.end_of_turn = false;
    }
    r.n_dropped = enforce_window();
    expected_n_past_ = session_.n_past();
    r.unit = ++units_generated_;
    turn.reset();  // gives the LLM's idle OpenMP workers back: the speech threads take over
    if (speech_) {
        DuplexSpeechJob job;
        job.unit = r.unit;
        job.is_listen = r.is_listen;
        job.end_of_turn = r.end_of_turn;
        job.text_ids.assign(r.speak_tokens.begin(), r.speak_tokens.end());
        job.hidden = r.speak_hidden;
        speech_->submit(std::move(job));
        if (params.wait_audio) {
            // units handed over earlier without waiting stay for take_audio()
            DuplexSpeechResult done;
            speech_->take_unit(r.unit, done);
            r.has_audio = true;
            r.audio = std::move(done.audio);
            r.speech_tokens = std::move(done.speech_tokens);
        }
    }
    return r;
}

void DuplexSession::set_speech(bool on, const std::string & voice, uint64_t seed) {
    const auto hold = session_.enter("duplex set_speech");
    if (on) session_.token2wav().voices().get(voice);  // an unknown voice fails now
    speech_on_ = on;
    voice_ = voice;
    speech_seed_ = seed;
}

bool DuplexSession::take_audio(DuplexSpeechResult & out, bool wait) {
    const auto hold = session_.enter("duplex take_audio");
    if (!speech_) fail(Status::invalid_argument, "take_audio: speech is off (set_speech, then prepare)");
    return speech_->take(out, wait);
}

void DuplexSession::interrupt() {
    const auto hold = session_.enter("duplex interrupt");
    require_prepared("interrupt");
    if (pending_) fail(Status::invalid_argument, "interrupt: a unit is prefilled; generate it first");
    if (speech_) speech_->interrupt();
    if (!turn_ended_) {
        // close the speaking turn in the cache, as the official duplex stop does
        const StageTurns::Turn turn(turns_);
        feed_token(decode_ids_.turn_eos);
        if (!unit_lengths_.empty()) unit_lengths_.back() += 1;  // dropped with its unit by the window
        turn_ended_ = true;
        expected_n_past_ = session_.n_past();
    }
}

void DuplexSession::reseed(uint64_t seed) {
    const auto hold = session_.enter("duplex reseed");
    rng_.seed(seed);
}

void DuplexSession::close() {
    const auto hold = session_.enter("duplex close");
    if (speech_) speech_closed_ = true;
    speech_.reset();  // joins the speech threads and gives the speech components back
}

int DuplexSession::enforce_window() {
    if (window_) {
        const int dropped = window_->enforce(session_, unit_lengths_);
        system_length_ = window_->system_length();
        return dropped;
    }
    if (options_.effective_mode() != DuplexWindowMode::basic || session_.n_past() <= options_.window_high) return 0;
    int dropped = 0;
    while (session_.n_past() > options_.window_low && !unit_lengths_.empty()) {
        const int len = unit_lengths_.front();
        // libllama shifts the later positions left and re-rotates their keys (spec §6.5)
        session_.remove_range(system_length_, system_length_ + len);
        unit_lengths_.erase(unit_lengths_.begin());
        dropped += len;
    }
    return dropped;
}

}  // namespace minicpmo
