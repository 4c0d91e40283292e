// The speech side of a duplex conversation (spec §6.3): per 1-s unit, the speaking unit's text
// tokens and LLM hidden rows go through the speech-token decoder's duplex layout (25 tokens per
// unit) and streaming Token2Wav (forced flush every unit, last_chunk at the turn end, then the
// voice's primed caches again); a listening unit is one second of silence.
//
// Two threads this object owns do the work, linked by bounded queues: the speech-token decoder
// (unit k+1) runs while Token2Wav vocodes unit k, and both while the caller prefills the next unit
// with the LLM; results come back in unit order. Destroying the object joins the threads.
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
#include <utility>
#include <vector>

namespace minicpmo {

class OmniSession;
class StageTurns;
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
    // threads only (the LLM stays with the caller). Each stage computes in a turn of `turns` (shared
    // with the caller's LLM stage; must outlive this). `queue_capacity`: units waiting at most per queue.
    DuplexSpeech(OmniSession & session, StageTurns & turns, const std::string & voice, uint64_t seed,
                 int queue_capacity = 2);
    ~DuplexSpeech();
    DuplexSpeech(const DuplexSpeech &) = delete;
    DuplexSpeech & operator=(const DuplexSpeech &) = delete;

    // Queues one unit (blocks while the queue is full). Throws an error a worker hit earlier.
    void submit(DuplexSpeechJob job);
    // The oldest finished unit; blocks until one is there (or returns false at once when !wait and
    // none is). Throws a worker's error, if any.
    bool take(DuplexSpeechResult & out, bool wait = true);
    // Unit `unit`'s result, waiting for it; results of earlier units stay for take().
    void take_unit(int unit, DuplexSpeechResult & out);
    // Units submitted and not yet taken.
    int in_flight() const;
    // Interrupt: drops the units not taken yet; the next unit starts a new turn in both stages (the
    // speech decoder's turn cleared, Token2Wav back to the voice's primed state).
    void interrupt();

    int unit_samples() const { return unit_samples_; }

private:
    // a unit between the two stages
    struct Tokens {
        int unit = 0;
        uint64_t epoch = 0;
        bool is_listen = false;
        bool end_of_turn = false;
        std::vector<int32_t> speech_tokens;
    };

    void run_decoder();   // stage 1: speech tokens
    void run_vocoder();   // stage 2: waveform
    bool idle() const;    // nothing queued or in the making (mu_ held)
    void set_error(std::exception_ptr e);

    // holds the session's speech lease (OmniSession::lease_speech) for this object's lifetime
    struct Lease {
        Lease(OmniSession & s, const char * what);
        ~Lease();
        Lease(const Lease &) = delete;
        Lease & operator=(const Lease &) = delete;
        OmniSession & session;
    };

    OmniSession & session_;
    StageTurns & turns_;
    Lease lease_;
    std::string voice_;
    std::mt19937_64 rng_;           // stage 1 only
    std::unique_ptr<TtsDuplexStream> tts_;
    int unit_samples_ = 0;
    int capacity_;

    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::pair<uint64_t, DuplexSpeechJob>> jobs_;  // (epoch, job)
    std::deque<Tokens> tokens_;
    std::deque<DuplexSpeechResult> done_;
    uint64_t epoch_ = 0;            // interrupt() starts a new one; older units are dropped
    int busy_ = 0;                  // units being worked on by the stages
    bool stop_ = false;
    std::exception_ptr error_;
    std::thread decoder_thread_, vocoder_thread_;
};

}  // namespace minicpmo
