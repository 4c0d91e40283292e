#include "session/duplex_speech.h"

#include <algorithm>
#include <optional>
#include <string>

#include "core/error.h"
#include "core/thread_name.h"
#include "core/uniform_random.h"
#include "session/omni_session.h"
#include "session/stage_turns.h"
#include "token2wav/token2wav.h"
#include "tts/tts_decoder.h"
#include "tts/tts_stream.h"

namespace minicpmo {

DuplexSpeech::Lease::Lease(OmniSession & s, const char * what) : session(s) { session.lease_speech(what); }

DuplexSpeech::Lease::~Lease() { session.release_speech(); }

DuplexSpeech::DuplexSpeech(OmniSession & session, StageTurns & turns, const std::string & voice, uint64_t seed,
                           int queue_capacity)
    : session_(session), turns_(turns), lease_(session, "duplex speech"), voice_(voice), rng_(seed),
      capacity_(queue_capacity) {
    if (queue_capacity < 1) fail(Status::invalid_argument, "the speech queues need room for at least one unit");
    Token2Wav & synth = session.token2wav();
    synth.voices().get(voice);  // an unknown voice fails here, before the conversation starts
    TtsDecoder & decoder = session.tts_decoder();
    tts_ = std::make_unique<TtsDuplexStream>(decoder, decoder.model().hparams().duplex);
    // the vocoder's noise from this conversation's seed too: its audio then does not depend on what
    // the session synthesized before (a server hands one session to many conversations)
    synth.reseed(seed);
    synth.stream_begin(voice);  // the voice's prompt caches are primed once and restored per turn
    unit_samples_ = synth.stream().unit_samples();
    decoder_thread_ = std::thread([this] {
        name_this_thread("minicpmo-tts");
        run_decoder();
    });
    vocoder_thread_ = std::thread([this] {
        name_this_thread("minicpmo-voc");
        run_vocoder();
    });
}

DuplexSpeech::~DuplexSpeech() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
        jobs_.clear();
        tokens_.clear();
    }
    cv_.notify_all();
    if (decoder_thread_.joinable()) decoder_thread_.join();
    if (vocoder_thread_.joinable()) vocoder_thread_.join();
}

bool DuplexSpeech::idle() const { return jobs_.empty() && tokens_.empty() && busy_ == 0; }

void DuplexSpeech::set_error(std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_) error_ = e;
    cv_.notify_all();
}

void DuplexSpeech::submit(DuplexSpeechJob job) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return error_ || static_cast<int>(jobs_.size()) < capacity_; });
    if (error_) std::rethrow_exception(error_);
    jobs_.emplace_back(epoch_, std::move(job));
    cv_.notify_all();
}

bool DuplexSpeech::take(DuplexSpeechResult & out, bool wait) {
    std::unique_lock<std::mutex> lock(mu_);
    if (wait) cv_.wait(lock, [this] { return error_ || !done_.empty() || idle(); });
    if (error_) std::rethrow_exception(error_);
    if (done_.empty()) {
        if (wait) fail(Status::invalid_argument, "no duplex unit is waiting for its speech");
        return false;
    }
    out = std::move(done_.front());
    done_.pop_front();
    return true;
}

void DuplexSpeech::take_unit(int unit, DuplexSpeechResult & out) {
    std::unique_lock<std::mutex> lock(mu_);
    auto find = [&] {
        return std::find_if(done_.begin(), done_.end(), [unit](const DuplexSpeechResult & r) { return r.unit == unit; });
    };
    cv_.wait(lock, [&] { return error_ || find() != done_.end() || idle(); });
    if (error_) std::rethrow_exception(error_);
    const auto it = find();
    if (it == done_.end()) fail(Status::internal, "duplex unit " + std::to_string(unit) + " has no speech");
    out = std::move(*it);
    done_.erase(it);
}

int DuplexSpeech::in_flight() const {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(jobs_.size() + tokens_.size() + done_.size()) + busy_;
}

void DuplexSpeech::interrupt() {
    std::lock_guard<std::mutex> lock(mu_);
    ++epoch_;
    jobs_.clear();
    tokens_.clear();
    done_.clear();
    cv_.notify_all();
}

void DuplexSpeech::run_decoder() {
    uint64_t turn_epoch = 0;  // the epoch the decoder's turn state belongs to
    auto draw = [this]() { return uniform_unit(rng_()); };
    try {
        for (;;) {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait(lock, [this] { return stop_ || error_ || !jobs_.empty(); });
            if (stop_ || error_) return;
            auto [epoch, job] = std::move(jobs_.front());
            jobs_.pop_front();
            ++busy_;
            cv_.notify_all();  // room in the job queue
            lock.unlock();

            if (epoch != turn_epoch) {  // an interrupt came in between: a new turn
                tts_->reset_turn();
                turn_epoch = epoch;
            }
            Tokens t;
            t.unit = job.unit;
            t.epoch = epoch;
            t.is_listen = job.is_listen;
            t.end_of_turn = job.end_of_turn;
            if (!job.is_listen) {
                // a listening unit says nothing; a speaking turn's state waits for its next unit
                const int n = static_cast<int>(job.text_ids.size());
                const StageTurns::Turn turn(turns_);
                t.speech_tokens = tts_->unit(n ? job.text_ids.data() : nullptr, n ? job.hidden.data() : nullptr, n,
                                             job.end_of_turn, draw);
            }

            lock.lock();
            cv_.wait(lock, [this] { return stop_ || error_ || static_cast<int>(tokens_.size()) < capacity_; });
            --busy_;
            if (stop_ || error_) return;
            if (epoch == epoch_) tokens_.push_back(std::move(t));  // else dropped by an interrupt
            cv_.notify_all();
        }
    } catch (...) {
        set_error(std::current_exception());
    }
}

void DuplexSpeech::run_vocoder() {
    uint64_t turn_epoch = 0;
    Token2Wav & synth = session_.token2wav();
    try {
        for (;;) {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait(lock, [this] { return stop_ || error_ || !tokens_.empty(); });
            if (stop_ || error_) return;
            Tokens t = std::move(tokens_.front());
            tokens_.pop_front();
            ++busy_;
            lock.unlock();

            DuplexSpeechResult r;
            r.unit = t.unit;
            {
                std::optional<StageTurns::Turn> turn;  // listening units compute nothing
                if (t.epoch != turn_epoch || !t.is_listen) turn.emplace(turns_);
                if (t.epoch != turn_epoch) {
                    synth.stream_begin(voice_);  // the voice's primed caches and a fresh silence look-ahead
                    turn_epoch = t.epoch;
                }
                if (t.is_listen) {
                    r.audio.assign(static_cast<size_t>(unit_samples_), 0.0f);
                } else {
                    // every speaking unit is flushed at once (windows down to 8 tokens); the turn's last
                    // unit ends the utterance and the stream goes back to the voice's primed caches
                    r.audio = synth.stream_push_duplex(t.speech_tokens.data(),
                                                       static_cast<int>(t.speech_tokens.size()), true, t.end_of_turn);
                    r.speech_tokens = std::move(t.speech_tokens);
                }
            }

            lock.lock();
            --busy_;
            if (t.epoch == epoch_) done_.push_back(std::move(r));
            cv_.notify_all();
        }
    } catch (...) {
        set_error(std::current_exception());
    }
}

}  // namespace minicpmo
