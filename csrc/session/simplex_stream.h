// Simplex streaming conversation (spec §6.1, §4.4 "Omni / simplex streaming", §3.4): messages
// arrive one at a time and are prefilled into the KV cache at once (positions continue); a user
// turn may come in many pieces (e.g. one per second: a frame and 1 s of audio), and the reply is
// generated after the turn's last piece.
//
// Cache layout (what the official streaming_prefill / streaming_generate leave behind):
//   <|im_start|>system\n{content, audio as one <|audio_start|>⟨M rows⟩<|audio_end|>}<|im_end|>\n
//   <|im_start|>user\n{piece 1}{piece 2}…                      (pieces joined with "")
//   <|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n<|tts_bos|>{reply}
//   <|tts_eos|><|im_end|>\n<|im_start|>user\n{next turn}…
// Images are not sliced (max_slice_nums 1) and carry no <image_id>. User audio goes through the
// streaming mel (simplex feeding: the turn's first audio front-padded to 1035 ms, then 1000 ms,
// no redundancy frames) and the Whisper streaming key/value cache, both restarted for every user
// turn; system audio is encoded whole with full attention.
//
// The official reply never feeds its terminator, so its next user turn starts with
// "<|tts_eos|><|im_end|>\n". Session::step feeds <|tts_eos|> and <unk> (only <|im_end|> is left
// out), so the next turn is written from what the cache holds: after a fed <|tts_eos|> only
// "<|im_end|>\n" follows; a fed <unk> (the official "</s>" terminator) is removed first; otherwise
// (<|im_end|>, token limit, interrupted reply) "<|tts_eos|><|im_end|>\n" follows. Either way the
// cache then holds exactly the official token sequence.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "session/omni_session.h"
#include "session/reply_stream.h"

namespace minicpmo {

class StreamingMel;

class SimplexStream {
public:
    // `session` must outlive this object. The conversation starts afresh whenever the session's
    // cache is empty (after Session::reset) or with the first message this object sees.
    explicit SimplexStream(OmniSession & session);
    ~SimplexStream();

    // Forgets the conversation: the session's cache and the audio streams.
    void reset();

    // One message (role "system", "user" or "assistant"): `text` holds one kImageMarker per image
    // and one kAudioMarker per audio, in content order (items joined with ""). A system message
    // may only open the conversation; an assistant message is text only and closes an open turn;
    // a user piece holds at most one audio: the turn's first 1..16560 samples (front-padded to
    // 1035 ms), later 16000. Everything is checked (and the media encoded) before the cache changes.
    PrefillStats prefill(const std::string & role, const std::string & text, const std::vector<ImageInput> & images,
                         const std::vector<AudioInput> & audios);

    // Closes the open user turn with the reply opening
    // "<|im_end|>\n<|im_start|>assistant\n[<think>\n\n</think>\n\n]<|tts_bos|>", restarts the
    // audio streams and starts the reply, which ends (as the official streaming reply does) at
    // <|tts_eos|>, <|im_end|>, <unk> or the token limit.
    std::unique_ptr<ReplyStream> start_reply(bool enable_thinking, const ReplyOptions & options);

    // What the next user piece is prefixed with, given the cache (see the header comment).
    std::string next_user_prefix() const;
    bool user_turn_open() const { return state_ == State::user; }
    OmniSession & session() const { return session_; }
    // Rows the last user audio piece was prefilled with (n x n_embd; empty when it had none).
    const std::vector<float> & last_audio_rows() const { return last_audio_rows_; }

private:
    void open_reply(bool enable_thinking);
    enum class State { idle, closed, user, reply };

    void check_cache(const char * what);
    void restart_audio();
    // Text that closes what the conversation left open (removes a trailing fed <unk> of a reply).
    std::string close_open_turn() const;
    void drop_reply_unk();

    OmniSession & session_;
    std::unique_ptr<StreamingMel> mel_;
    State state_ = State::idle;
    int expected_n_past_ = 0;  // cache length this conversation left (replies grow it: see check_cache)
    int reply_start_ = 0;      // cache length after the reply opening
    uint64_t n_pieces_ = 0;    // makes the content keys of every audio piece distinct
    std::vector<float> last_audio_rows_;
    llama_token tts_bos_ = -1, tts_eos_ = -1, unk_ = -1;
};

}  // namespace minicpmo
