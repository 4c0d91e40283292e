#include "session/simplex_stream.h"

#include <string_view>

#include "audio/audio_features.h"
#include "audio/audio_model.h"
#include "audio/streaming_mel.h"
#include "core/error.h"
#include "llm/chat_prompt.h"
#include "session/media_prompt.h"
#include "vision/vision_model.h"

namespace minicpmo {

namespace {

constexpr size_t kPieceSamples = 16000;      // later pieces: chunk_ms 1000 at 16 kHz
constexpr size_t kFirstPieceMaxSamples = 16560;  // first_chunk_ms 1035: shorter ones are front-padded

uint64_t fnv1a(const void * data, size_t n) {
    uint64_t h = 0xCBF29CE484222325ull;
    const auto * p = static_cast<const uint8_t *>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001B3ull;
    return h;
}

// The tokens, content keys and embedding spans of one message, built before anything is decoded.
struct Fragment {
    std::vector<llama_token> tokens;
    std::vector<uint64_t> keys;
    std::vector<EmbeddingSpan> spans;  // positions relative to the fragment start

    void text(const LlmModel & m, const std::string & s) {
        if (s.empty()) return;
        const std::vector<llama_token> ids = m.tokenize(s, true);
        tokens.insert(tokens.end(), ids.begin(), ids.end());
        keys.insert(keys.end(), ids.size(), 0);
    }
    void token(llama_token t) {
        tokens.push_back(t);
        keys.push_back(0);
    }
    void rows(llama_token open, llama_token unk, const float * data, size_t n, uint64_t hash, llama_token close) {
        token(open);
        spans.push_back(EmbeddingSpan{tokens.size(), n, data});
        for (size_t i = 0; i < n; ++i) {
            tokens.push_back(unk);
            keys.push_back(position_key(hash, i));
        }
        token(close);
    }
};

}  // namespace

SimplexStream::SimplexStream(OmniSession & session) : session_(session) {
    const LlmModel & m = session_.model();
    tts_bos_ = m.special_token(Special::tts_bos);
    tts_eos_ = m.special_token(Special::tts_eos);
    unk_ = m.special_token(Special::unk);
}

SimplexStream::~SimplexStream() = default;

void SimplexStream::restart_audio() {
    // the turn's first audio piece makes a new mel stream and restarts the Whisper context
    mel_.reset();
}

void SimplexStream::reset() {
    const auto hold = session_.enter("streaming reset");
    session_.reset();
    restart_audio();
    state_ = State::idle;
    expected_n_past_ = 0;
    reply_start_ = 0;
    last_audio_rows_.clear();
}

void SimplexStream::check_cache(const char * what) {
    // an emptied cache (Session::reset) starts a new conversation; so does the first message
    if (state_ != State::idle && session_.n_past() == 0) {
        restart_audio();
        state_ = State::idle;
    }
    if (state_ == State::idle) return;
    const int n = session_.n_past();
    const bool ok = state_ == State::reply
                        ? n >= reply_start_ && reply_start_ > 0 && session_.kv_tokens()[reply_start_ - 1] == tts_bos_
                        : n == expected_n_past_;
    if (!ok) {
        fail(Status::invalid_argument, std::string(what) + ": the session's cache was changed outside the streaming "
                                                           "conversation (e.g. by chat()); call reset() to start a new one");
    }
}

std::string SimplexStream::close_open_turn() const {
    switch (state_) {
        case State::idle:
        case State::closed: return "";
        case State::user: return "<|im_end|>\n";
        case State::reply: break;
    }
    const std::vector<llama_token> & kv = session_.kv_tokens();
    const bool has_reply = static_cast<int>(kv.size()) > reply_start_;
    if (has_reply && kv.back() == tts_eos_) return "<|im_end|>\n";  // the reply's own <|tts_eos|> is in the cache
    return "<|tts_eos|><|im_end|>\n";
}

void SimplexStream::drop_reply_unk() {
    // a reply stopped by <unk> (the official "</s>") fed it; the official cache never holds it
    if (state_ != State::reply) return;
    const std::vector<llama_token> & kv = session_.kv_tokens();
    const int n = static_cast<int>(kv.size());
    if (n > reply_start_ && kv.back() == unk_ && session_.kv_keys().back() == 0) session_.remove_range(n - 1, n);
}

std::string SimplexStream::next_user_prefix() const {
    if (state_ == State::user) return "";
    return close_open_turn() + "<|im_start|>user\n";
}

PrefillStats SimplexStream::prefill(const std::string & role, const std::string & text,
                                    const std::vector<ImageInput> & images, const std::vector<AudioInput> & audios) {
    const auto hold = session_.enter("streaming_prefill");
    check_cache("streaming_prefill");
    if (role != "system" && role != "user" && role != "assistant") {
        fail(Status::invalid_argument, "streaming_prefill: role must be 'system', 'user' or 'assistant', got '" + role + "'");
    }
    if (text.empty() && images.empty() && audios.empty()) {
        fail(Status::invalid_argument, "streaming_prefill: the " + role + " message is empty (no text, image or audio)");
    }
    if (role == "system" && state_ != State::idle) {
        fail(Status::invalid_argument, "streaming_prefill: a system message can only open the conversation; "
                                       "call reset() to start a new one");
    }
    if (role == "assistant" && (!images.empty() || !audios.empty())) {
        fail(Status::invalid_argument, "streaming_prefill: an assistant message takes text only");
    }
    if (role == "user" && audios.size() > 1) {
        fail(Status::invalid_argument, "streaming_prefill: a user piece holds at most one audio (one second), got " +
                                           std::to_string(audios.size()));
    }
    for (size_t i = 0; i < images.size(); ++i) {
        const ImageInput & im = images[i];
        if (!im.rgb || im.width <= 0 || im.height <= 0) {
            fail(Status::invalid_argument, "streaming_prefill: image " + std::to_string(i) + " has no pixels");
        }
        if (im.max_slice_nums > 1) {
            fail(Status::invalid_argument, "streaming_prefill: streaming images are not sliced (max_slice_nums 1), got " +
                                               std::to_string(im.max_slice_nums));
        }
    }
    for (size_t i = 0; i < audios.size(); ++i) {
        if (!audios[i].pcm || audios[i].n_samples == 0) {
            fail(Status::invalid_argument, "streaming_prefill: audio " + std::to_string(i) + " is empty (no samples)");
        }
    }
    const bool fresh = state_ == State::idle;  // the first message of a conversation
    const bool opens_user_turn = role == "user" && state_ != State::user;
    // no audio pushed in this turn yet: the mel stream starts afresh (the reference makes a new one per turn)
    const bool first_audio = role == "user" && !audios.empty() && (opens_user_turn || !mel_);
    if (role == "user" && !audios.empty()) {
        const size_t n = audios[0].n_samples;
        if (first_audio ? n > kFirstPieceMaxSamples : n != kPieceSamples) {
            fail(Status::invalid_argument,
                 std::string("streaming_prefill: a user audio piece is 1 s of 16 kHz audio: ") +
                     (first_audio ? "at most 16560 samples for the turn's first (1.035 s; shorter ones are front-padded "
                                    "with zeros)"
                                  : "16000 samples after the turn's first") +
                     ", got " + std::to_string(n));
        }
    }

    // the message's text with its turn prefix / suffix; markers stand for the media
    std::string full;
    if (role == "user") {
        full = (opens_user_turn ? close_open_turn() + "<|im_start|>user\n" : std::string()) + text;
    } else {
        ChatTemplateOptions o;
        o.add_generation_prompt = false;
        full = close_open_turn() + render_chat({ChatMessage{role, text}}, o);
    }

    // split at the markers, checking the counts
    struct Item {
        std::string text;
        int media = 0;  // 0 none (last text), 1 image, 2 audio
    };
    std::vector<Item> items;
    size_t n_img = 0, n_aud = 0;
    {
        std::string_view rest(full);
        for (;;) {
            const size_t pi = rest.find(kImageMarker), pa = rest.find(kAudioMarker);
            if (pi == std::string_view::npos && pa == std::string_view::npos) {
                items.push_back(Item{std::string(rest), 0});
                break;
            }
            const bool image = pi < pa;
            const size_t p = image ? pi : pa;
            items.push_back(Item{std::string(rest.substr(0, p)), image ? 1 : 2});
            (image ? n_img : n_aud) += 1;
            rest.remove_prefix(p + (image ? kImageMarker.size() : kAudioMarker.size()));
        }
    }
    if (n_img != images.size() || n_aud != audios.size()) {
        fail(Status::invalid_argument, "streaming_prefill: the message has " + std::to_string(n_img) + " image and " +
                                           std::to_string(n_aud) + " audio markers but " +
                                           std::to_string(images.size()) + " images and " +
                                           std::to_string(audios.size()) + " audios were given");
    }

    const LlmModel & m = session_.model();
    const size_t n_embd = static_cast<size_t>(session_.context().n_embd());
    const int n_query = images.empty() ? 0 : session_.omni_model().vision()->hparams().n_query;
    // positions needed, checked before anything (the audio streams included) changes
    size_t n_new = 0;
    for (const Item & it : items) n_new += it.text.empty() ? 0 : m.tokenize(it.text, true).size();
    n_new += images.size() * static_cast<size_t>(n_query + 2);
    std::vector<int> audio_counts;
    for (const AudioInput & a : audios) {
        const int count = role == "user" ? 10 : session_.audio_token_count(a);  // 100 mel frames -> 10 tokens
        if (count <= 0) {
            fail(Status::invalid_argument, "streaming_prefill: audio of " + std::to_string(a.n_samples) +
                                               " samples is too short for one audio token");
        }
        audio_counts.push_back(count);
        n_new += static_cast<size_t>(count) + 2;
    }
    const int n_ctx = session_.context().n_ctx();
    const int n_used = fresh ? 0 : session_.n_past();
    if (static_cast<size_t>(n_used) + n_new > static_cast<size_t>(n_ctx)) {
        fail(Status::context_full, "streaming_prefill: " + std::to_string(n_new) + " more positions do not fit in the "
                                       "context of " + std::to_string(n_ctx) + " (" + std::to_string(n_used) +
                                       " in use; raise n_ctx)");
    }
    if (fresh) {
        // a new conversation (the reference resets its session on the first prefill)
        if (session_.n_past() > 0) session_.reset();
        restart_audio();
    }
    if (opens_user_turn) restart_audio();

    // encode: images, then audio (the audio streams advance only now)
    std::vector<std::vector<float>> image_rows;
    for (const ImageInput & im : images) {
        image_rows.push_back(session_.encode_image(streaming_frame(im)));
        if (image_rows.back().size() != static_cast<size_t>(n_query) * n_embd) {
            fail(Status::internal, "an unsliced image did not encode to one query block");
        }
    }
    std::vector<std::vector<float>> audio_rows;
    if (role == "user" && !audios.empty()) {
        AudioEncoder & enc = session_.audio_encoder();
        if (!mel_) {
            enc.reset_streaming();  // a new Whisper context per user turn (spec §3.4, simplex)
            StreamingMelOptions o;
            o.feed = StreamingFeed::simplex;  // first push front-padded to 1035 ms
            o.redundancy_frames = 0;          // cnn_redundancy_ms 0 in simplex
            const AudioModel & am = enc.model();
            mel_ = std::make_unique<StreamingMel>(am.mel_analyzer().config(), am.mel_filters(), o);
        }
        if (!mel_->push(audios[0].pcm, audios[0].n_samples)) {
            fail(Status::internal, "the streaming mel emitted no chunk for a full second");
        }
        MelChunk c;
        mel_->next_chunk(c);
        AudioEncoding e = enc.encode_streaming(MelFrames{c.data.data(), static_cast<int>(c.n_frames)}, 0, 0);
        if (e.n_tokens != audio_counts[0]) {
            fail(Status::internal, "a 1-s audio piece encoded to " + std::to_string(e.n_tokens) + " tokens, not 10");
        }
        audio_rows.push_back(std::move(e.tokens));
    } else {
        for (const AudioInput & a : audios) {
            AudioInput full_attention = a;
            full_attention.attention = AudioAttention::full;  // system audio: one block, full attention
            audio_rows.push_back(session_.encode_audio(full_attention));
        }
    }

    // lay the fragment out
    Fragment f;
    const llama_token img_open = images.empty() ? -1 : m.special_token(Special::image);
    const llama_token img_close = images.empty() ? -1 : m.special_token(Special::image_end);
    const llama_token aud_open = audios.empty() ? -1 : m.special_token(Special::audio_start);
    const llama_token aud_close = audios.empty() ? -1 : m.special_token(Special::audio_end);
    ++n_pieces_;
    size_t ii = 0, ai = 0;
    for (const Item & it : items) {
        f.text(m, it.text);
        if (it.media == 1) {
            const ImageInput & im = images[ii];
            const uint64_t h = position_key(fnv1a(im.rgb, static_cast<size_t>(im.width) * im.height * 3),
                                       (static_cast<uint64_t>(im.width) << 32) | static_cast<uint32_t>(im.height));
            f.rows(img_open, unk_, image_rows[ii].data(), static_cast<size_t>(n_query), h, img_close);
            ++ii;
        } else if (it.media == 2) {
            const AudioInput & a = audios[ai];
            const uint64_t h = position_key(fnv1a(a.pcm, a.n_samples * sizeof(float)), n_pieces_);
            f.rows(aud_open, unk_, audio_rows[ai].data(), static_cast<size_t>(audio_counts[ai]), h, aud_close);
            ++ai;
        }
    }
    if (f.tokens.empty()) fail(Status::invalid_argument, "streaming_prefill: the message adds nothing to the prompt");

    drop_reply_unk();
    std::vector<llama_token> tokens = session_.kv_tokens();
    std::vector<uint64_t> keys = session_.kv_keys();
    const size_t base = tokens.size();
    tokens.insert(tokens.end(), f.tokens.begin(), f.tokens.end());
    keys.insert(keys.end(), f.keys.begin(), f.keys.end());
    for (EmbeddingSpan & s : f.spans) s.pos += base;
    const PrefillStats st = session_.prefill(tokens, keys, f.spans);

    last_audio_rows_.clear();
    if (role == "user" && !audio_rows.empty()) last_audio_rows_ = std::move(audio_rows[0]);
    if (role == "user") {
        state_ = State::user;
    } else {
        state_ = State::closed;
        restart_audio();  // system / assistant messages restart the Whisper context (spec §3.4)
    }
    expected_n_past_ = session_.n_past();
    return st;
}

void SimplexStream::open_reply(bool enable_thinking) {
    const auto hold = session_.enter("streaming_generate");
    check_cache("streaming_generate");
    if (state_ != State::user) {
        fail(Status::invalid_argument, "streaming_generate: no user turn is open; streaming_prefill a user message first");
    }
    std::string bos = "<|im_end|>\n<|im_start|>assistant\n";
    if (!enable_thinking) bos += "<think>\n\n</think>\n\n";
    bos += "<|tts_bos|>";
    const std::vector<llama_token> ids = session_.model().tokenize(bos, true);
    if (session_.n_past() + static_cast<int>(ids.size()) > session_.context().n_ctx()) {
        fail(Status::context_full, "streaming_generate: the reply opening does not fit in the context of " +
                                       std::to_string(session_.context().n_ctx()));
    }
    session_.append_tokens(ids.data(), ids.size());
    restart_audio();  // streaming_generate restarts the Whisper context and the mel stream
    state_ = State::reply;
    reply_start_ = session_.n_past();
    expected_n_past_ = reply_start_;
}

std::unique_ptr<ReplyStream> SimplexStream::start_reply(bool enable_thinking, const ReplyOptions & options) {
    const auto hold = session_.enter("streaming_generate");
    ReplyStream::check_options(session_, options);
    open_reply(enable_thinking);
    return std::make_unique<ReplyStream>(session_, options, ReplyEnding::streaming);
}

}  // namespace minicpmo
