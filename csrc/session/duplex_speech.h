// The speech side of a duplex conversation (spec §6.3): per 1-s unit, the speaking unit's text
// tokens and LLM hidden rows go through the speech-token decoder's duplex layout (25 tokens per
// unit) and streaming Token2Wav (forced flush every unit, last_chunk at the turn end, then the
// voice's primed caches again); a listening unit is one second of silence.
//
// The work runs on a thread this object owns, fed through a bounded queue, so that the speech of
// unit k is synthesized while the caller prefills unit k+1; results come back in unit order.
// Destroying the object joins the thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace minicpmo {

class OmniSession;
class TtsDuplexStream;

struct DuplexSpeechJob {
    int unit = 0;                      // the caller's unit number (returned with the audio)
    bool is_listen = false;
    bool end_of_turn = false;
    std::vector<int32_t> text_ids;     // the unit's speakable tokens (after its decision token)
    std::vector<float> hidden;         // their LLM final-norm rows
};

struct DuplexSpeechResult {
    int unit = 0;
    std::vector<float> audio;          // 24 kHz: one unit of silence when listening
    std::vector<int32_t> speech_tokens;
};

class DuplexSpeech {
public:
    // `session` must outlive this object; its speech decoder and Token2Wav are used by the worker
    // thread only (the LLM stays with the caller). `queue_capacity`: jobs waiting at most.
    DuplexSpeech(OmniSession & session, const std::string & voice, uint64_t seed, int queue_capacity = 2);
    ~DuplexSpeech();
    DuplexSpeech(const DuplexSpeech &) = delete;
    DuplexSpeech & operator=(const DuplexSpeech &) = delete;

    // Queues one unit (blocks while the queue is full). Throws an error the worker hit earlier.
    void submit(DuplexSpeechJob job);
    // The oldest finished unit; blocks until one is there (or returns false at once when !wait and
    // none is). Throws the worker's error, if any.
    bool take(DuplexSpeechResult & out, bool wait = true);
    // Units submitted and not yet taken.
    int in_flight() const;
    // Interrupt: drops queued and finished units not taken yet, and once the current unit is done
    // starts the next turn from the voice's primed state (the speech decoder's turn cleared).
    void interrupt();

    int unit_samples() const { return unit_samples_; }

private:
    void run();
    DuplexSpeechResult synthesize(const DuplexSpeechJob & job);
    void restart_turn();

    OmniSession & session_;
    std::string voice_;
    std::mt19937_64 rng_;
    std::unique_ptr<TtsDuplexStream> tts_;
    int unit_samples_ = 0;
    int capacity_;

    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<DuplexSpeechJob> jobs_;
    std::deque<DuplexSpeechResult> done_;
    int busy_ = 0;                 // jobs being worked on (0 or 1)
    bool restart_pending_ = false; // interrupt() asked for a fresh turn
    bool stop_ = false;
    std::exception_ptr error_;
    std::thread worker_;
};

}  // namespace minicpmo
