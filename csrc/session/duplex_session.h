// Full-duplex conversation, the LLM side (spec §6.2-6.5): the model hears and sees one second at a
// time and decides per second whether to listen or to speak. Each second is one "unit" in the KV
// cache of an OmniSession:
//   <unit>[<image>⟨rows⟩</image>[<slice>⟨rows⟩</slice>…]…][⟨10 audio rows⟩][text] decision… </unit>
// prefill_unit() writes everything up to the decision; generate_unit() runs the decision loop and
// hands out the spoken text tokens with their LLM hidden states for the speech decoder.
//
// The audio goes through the session's streaming mel (duplex feeding, 2 redundancy frames) and the
// Whisper encoder's streaming key/value cache (restarted by the encoder when it would pass the
// position table, every ~30 s). Everything here is per object: several duplex sessions over
// different OmniSessions do not share state.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "sampling/duplex_decode.h"
#include "session/duplex_speech.h"
#include "session/duplex_window.h"
#include "session/omni_session.h"
#include "session/stage_turns.h"

namespace minicpmo {

class StreamingMel;

enum class DuplexWindowMode { off, basic, context };

struct DuplexOptions {
    // §6.5 "basic" window: when the cache passes window_high positions after a unit, whole oldest
    // units after the protected system prompt are dropped until it is at or below window_low.
    // Kept for compatibility: true with window_mode off means basic.
    bool sliding_window = false;
    int window_high = 4000;
    int window_low = 3500;
    // §6.5 "context" window (duplex_window.h): past `context.max_units` units the oldest goes and
    // what it said is kept as "previous" text between the prefix and the suffix
    DuplexWindowMode window_mode = DuplexWindowMode::off;
    DuplexContextWindowParams context;

    DuplexWindowMode effective_mode() const {
        return window_mode == DuplexWindowMode::off && sliding_window ? DuplexWindowMode::basic : window_mode;
    }
};

// One second of input. Any of the three may be absent, not all of them.
struct DuplexUnitInput {
    const float * pcm = nullptr;      // 16 kHz mono: 16000 samples, the first unit 16000..16560 (1.035 s)
    size_t n_samples = 0;
    std::vector<ImageInput> frames;   // the frame (and e.g. a stacked high-FPS composite); max_slice_nums 0 = 1
    std::string text;
};

struct DuplexGenerateParams {
    DuplexDecodeParams decode;
    int max_new_speak_tokens = 20;    // the token at index max - 1 is a forced <|chunk_eos|>
    bool force_listen = false;        // decide <|listen|> without decoding
    // with speech on: wait for this unit's audio (false: it is synthesized while the caller goes on
    // with the next unit, and comes back through take_audio())
    bool wait_audio = true;
    // testing: decisions taken in this order instead of decode() (the protocol around them is
    // unchanged); running out is an error
    std::vector<llama_token> scripted;
};

struct DuplexUnitResult {
    bool is_listen = false;
    std::string text;                 // spoken text of the unit (tokens j >= 1, control tokens omitted)
    bool end_of_turn = false;
    int current_time = 0;             // audio (or vision) units prefilled so far
    std::vector<llama_token> decided;        // what was fed after the unit's inputs, </unit> excluded
    std::vector<llama_token> speak_tokens;   // (token, hidden) pairs for the TTS: fed tokens j >= 1
    std::vector<float> speak_hidden;         // speak_tokens.size() x n_embd, LLM final-norm output
    int n_dropped = 0;                       // positions of the units the sliding window removed after this unit
    int unit = 0;                            // units generated since prepare(), this one included
    bool has_audio = false;                  // speech on and waited for: audio below is this unit's
    std::vector<float> audio;                // 24 kHz, one unit of silence when listening
    std::vector<int32_t> speech_tokens;
};

class DuplexSession {
public:
    // `session` must outlive this object; the duplex conversation owns its KV cache while in use.
    DuplexSession(OmniSession & session, const DuplexOptions & options = {}, uint64_t seed = 0);
    ~DuplexSession();

    // Resets the LLM cache, the audio streams and the decision state, then feeds the prefix text,
    // the reference audio's embeddings (chat audio path, no placeholders; ref_pcm may be null) and
    // the suffix text; what is fed is protected from the sliding window.
    void prepare(const std::string & prefix, const std::string & suffix, const float * ref_pcm, size_t n_ref);

    // Writes one unit's inputs. Inputs are checked and encoded before anything enters the cache.
    void prefill_unit(const DuplexUnitInput & input);

    // The decision loop of the prefilled unit, then </unit> (and the sliding window when on).
    DuplexUnitResult generate_unit(const DuplexGenerateParams & params);

    // Speech for the speaking units (spec §6.3) with voice `voice` ("" = the default), seeded;
    // takes effect at the next prepare(). Off by default.
    void set_speech(bool on, const std::string & voice = "", uint64_t seed = 0);
    bool speech_on() const { return speech_on_; }
    // The oldest unit whose audio was not waited for; false when none is ready and !wait.
    bool take_audio(DuplexSpeechResult & out, bool wait = true);
    // Stops speaking now (spec §6.3 interrupt): speech not yet handed out is dropped, the speaking
    // turn is closed in the LLM cache with <|turn_eos|> and the next turn's speech starts afresh.
    void interrupt();

    // Stops the speech threads (speech not taken yet is dropped) and gives the session's speech
    // components back; generate_unit then fails until prepare() starts a new conversation.
    void close();

    void reseed(uint64_t seed);
    bool prepared() const { return prepared_; }
    bool has_pending_unit() const { return pending_; }
    const std::vector<float> & pending_logits() const { return pending_logits_; }
    int system_length() const { return system_length_; }
    int current_time() const { return audio_chunks_; }
    bool turn_ended() const { return turn_ended_; }
    const std::vector<llama_token> & decode_history() const { return history_; }
    const std::vector<int> & unit_lengths() const { return unit_lengths_; }
    const DuplexOptions & options() const { return options_; }
    // context window: "previous" as it is in the cache (marker + kept text ids; empty before any)
    std::vector<llama_token> previous_tokens() const {
        return window_ ? window_->previous_tokens() : std::vector<llama_token>{};
    }
    const DuplexDecodeIds & decode_ids() const { return decode_ids_; }
    // the turns its stages computed in (set at prepare() from the session's thread count)
    StageTurns::Stats stage_turns() const { return turns_.stats(); }
    OmniSession & session() { return session_; }

private:
    void feed_token(llama_token t, bool want_hidden = false);
    // prepare() was called and nobody else changed the cache since (e.g. a chat on the same session)
    void require_prepared(const char * what) const;
    int enforce_window();

    OmniSession & session_;
    DuplexOptions options_;
    std::mt19937_64 rng_;
    std::unique_ptr<StreamingMel> mel_;

    // special ids
    llama_token unit_ = -1, unit_end_ = -1, image_ = -1, image_end_ = -1, slice_ = -1, slice_end_ = -1;
    llama_token listen_ = -1, speak_ = -1, tts_bos_ = -1, chunk_tts_eos_ = -1;
    DuplexDecodeIds decode_ids_;

    bool prepared_ = false;
    int expected_n_past_ = 0;       // cache length the duplex conversation left behind
    bool pending_ = false;          // a unit is prefilled and waits for generate_unit
    std::vector<float> pending_logits_;
    int unit_start_ = 0;            // cache length when the pending unit began
    int system_length_ = 0;
    int audio_chunks_ = 0;          // the reference's audio_chunk_idx
    bool turn_ended_ = true;        // the reference's current_turn_ended
    std::vector<llama_token> history_;  // stage-2 decisions, for the repetition penalty
    std::vector<int> unit_lengths_;     // cache positions of each unit still in the cache
    std::unique_ptr<DuplexContextWindow> window_;  // context mode only
    int units_generated_ = 0;

    bool speech_on_ = false;
    std::string voice_;
    uint64_t speech_seed_ = 0;
    bool speech_closed_ = false;            // close() stopped the speech threads
    // the LLM stage (prefill_unit, generate_unit) and the speech threads' stages compute in turns
    // when the cores cannot hold all their teams (stage_turns.h)
    StageTurns turns_;
    std::unique_ptr<DuplexSpeech> speech_;  // last member: its thread stops before the rest goes
};

}  // namespace minicpmo
