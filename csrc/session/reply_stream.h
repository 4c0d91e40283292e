// The one reply pipeline: every front end (C API, Python, CLI) answers a conversation through a
// ReplyStream and only pulls its chunks. A reply is text, optionally spoken:
//   - text:     LLM steps, one text piece each;
//   - whole:    the text, then the speech-token decoder over the whole reply (chat layout, spec
//               §5.1), then Token2Wav: one waveform at the end (what the official chat() returns);
//   - streamed: the official streaming pipeline (spec §6.1): every 10 reply tokens condition the
//               speech decoder, each second of speech is handed out as soon as it exists.
// A chat reply starts from a conversation (rendered, prefilled with its media, only the new part
// decoded); a streaming reply (simplex) starts from what the cache holds.
//
// The session is held only while a step computes, so a stream may be advanced from any thread
// between other calls. A call that takes the cache or the generation over (another chat, a
// prefill, reset, ...) abandons the stream: its next step fails by name.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "session/omni_session.h"
#include "sampling/tts_sampler.h"

namespace minicpmo {

class SpokenReplyStream;

enum class ReplySpeech { none, whole, streamed };

// How the reply is made. The defaults are the official chat() settings (GenerateParams).
struct ReplyOptions {
    GenerateParams generate;              // capture_hidden is set by the stream when it speaks whole
    ReplySpeech speech = ReplySpeech::none;
    std::string voice;                    // a voice of the model file; "" = its default voice
    UniformDraw speech_draw;              // uniforms for the speech-token sampler; empty = greedy
    std::optional<uint64_t> noise_seed;   // reseeds Token2Wav's noise before the reply; none = as it is
    // speech tokens at most: whole, per reply (0 = the model's 2048); streamed, per 10-token text
    // chunk (0 = the model's 500)
    int max_speech_tokens = 0;
};

// A conversation to answer: the i-th kImageMarker in the messages is images[i], the j-th
// kAudioMarker audios[j] (each kind counted in message order).
struct ChatRequest {
    std::vector<ChatMessage> messages;
    std::vector<ImageInput> images;
    std::vector<AudioInput> audios;
    MediaPromptOptions media;
    bool enable_thinking = false;
    bool add_generation_prompt = true;  // false: the conversation as it is (forward passes)
    // the spoken-reply template (generation prompt ending with <|tts_bos|>): none = when the
    // conversation holds audio, as the official chat() decides; always on when the reply speaks
    std::optional<bool> use_tts_template;
};

// Where the reply's text ends besides the LLM's terminators and the token limit.
enum class ReplyEnding {
    chat,       // <|im_end|> (and the other end-of-generation tokens)
    streaming,  // also <|tts_eos|> and <unk>, fed to the cache (the official streaming_generate)
};

struct ReplyChunk {
    std::string text;                       // reply text decoded by this step (may be empty)
    std::vector<std::vector<float>> audio;  // waveforms finished by this step, in order
};

class ReplyStream {
public:
    // Starts a reply from what the session's cache holds (the prompt is there already).
    ReplyStream(OmniSession & session, const ReplyOptions & options, ReplyEnding ending);
    // The checks the constructor makes before any work (parameters, speech components free,
    // voice known), for callers that change the cache before starting a reply.
    static void check_options(OmniSession & session, const ReplyOptions & options);
    ~ReplyStream();
    ReplyStream(const ReplyStream &) = delete;
    ReplyStream & operator=(const ReplyStream &) = delete;

    // One step. Returns false once the reply is complete (`out` then holds its last text and
    // audio, possibly empty).
    bool next(ReplyChunk & out);
    // Asks the reply to stop; only stores a flag, so it is safe from any thread and from a signal
    // handler. The next step acts on it: while text is decoded, the text ends (a whole spoken
    // reply still speaks what was said); once the text is done, the rest of the reply is dropped.
    void request_stop() { stop_requested_.store(true); }
    // Stops the text and the speech now (holds the session).
    void cancel();
    // Stops the reply if it is still the session's current one; does nothing (and throws nothing)
    // when another call took the session over, the session is busy in another thread, or closed.
    void abandon() noexcept;

    bool done() const { return phase_ == Phase::done; }
    // Why the text ended ("cancelled" also when the speech was stopped); none while it runs.
    FinishReason finish_reason() const { return finish_; }
    const std::string & text() const { return text_; }
    // Speech tokens made so far.
    const std::vector<int32_t> & speech_tokens() const;
    int sample_rate() const { return sample_rate_; }

private:
    enum class Phase { text, speech_tokens, synthesis, done };

    void check_current(const char * what) const;
    bool text_step(std::string & piece);
    void end_text();

    OmniSession & session_;
    ReplyOptions options_;
    ReplyEnding ending_;
    std::unique_ptr<SpokenReplyStream> spoken_;  // streamed speech
    std::vector<int32_t> whole_tokens_;          // whole speech
    Phase phase_ = Phase::text;
    FinishReason finish_ = FinishReason::none;
    std::string text_;
    uint64_t epoch_ = 0;
    int sample_rate_ = 0;
    std::atomic<bool> stop_requested_{false};
    int tts_eos_ = -1, unk_ = -1;
};

// Renders the conversation, prefills it (only what the cache does not hold yet; media of earlier
// turns are not encoded again) and starts the reply.
std::unique_ptr<ReplyStream> start_reply(OmniSession & session, const ChatRequest & request, const ReplyOptions & options);

// The prompt text of a request (what start_reply prefills).
std::string render_request(const ChatRequest & request, bool speaks);

}  // namespace minicpmo
