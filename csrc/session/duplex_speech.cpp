#include "session/duplex_speech.h"

#include <utility>

#include "core/error.h"
#include "session/omni_session.h"
#include "speech/speech_synthesizer.h"
#include "speech/tts_decoder.h"
#include "speech/tts_stream.h"

namespace minicpmo {

DuplexSpeech::DuplexSpeech(OmniSession & session, const std::string & voice, uint64_t seed, int queue_capacity)
    : session_(session), voice_(voice), rng_(seed), capacity_(queue_capacity) {
    if (queue_capacity < 1) fail(Status::invalid_argument, "the speech queue needs room for at least one unit");
    SpeechSynthesizer & synth = session.speech();
    synth.voices().get(voice);  // an unknown voice fails here, before the conversation starts
    TtsDecoder & decoder = session.tts_decoder();
    tts_ = std::make_unique<TtsDuplexStream>(decoder, decoder.model().hparams().duplex);
    synth.stream_begin(voice);  // the voice's prompt caches are primed once and restored per turn
    unit_samples_ = synth.stream().unit_samples();
    worker_ = std::thread([this] { run(); });
}

DuplexSpeech::~DuplexSpeech() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
        jobs_.clear();
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
}

void DuplexSpeech::submit(DuplexSpeechJob job) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return error_ || static_cast<int>(jobs_.size()) < capacity_; });
    if (error_) std::rethrow_exception(error_);
    jobs_.push_back(std::move(job));
    cv_.notify_all();
}

bool DuplexSpeech::take(DuplexSpeechResult & out, bool wait) {
    std::unique_lock<std::mutex> lock(mu_);
    if (wait) {
        cv_.wait(lock, [this] { return error_ || !done_.empty() || (jobs_.empty() && busy_ == 0); });
    }
    if (error_) std::rethrow_exception(error_);
    if (done_.empty()) {
        if (wait) fail(Status::invalid_argument, "no duplex unit is waiting for its speech");
        return false;
    }
    out = std::move(done_.front());
    done_.pop_front();
    cv_.notify_all();
    return true;
}

int DuplexSpeech::in_flight() const {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(jobs_.size() + done_.size()) + busy_;
}

void DuplexSpeech::interrupt() {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.clear();
    done_.clear();
    restart_pending_ = true;
    cv_.notify_all();
}

void DuplexSpeech::restart_turn() {
    tts_->reset_turn();
    session_.speech().stream_begin(voice_);  // restores the primed caches and the silence look-ahead
}

void DuplexSpeech::run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
        cv_.wait(lock, [this] { return stop_ || restart_pending_ || !jobs_.empty(); });
        if (stop_) return;
        const bool restart = restart_pending_;
        restart_pending_ = false;
        std::vector<DuplexSpeechJob> batch;
        if (!jobs_.empty()) {
            batch.push_back(std::move(jobs_.front()));
            jobs_.pop_front();
        }
        busy_ = 1;
        cv_.notify_all();  // room in the queue
        lock.unlock();
        DuplexSpeechResult result;
        std::exception_ptr error;
        try {
            if (restart) restart_turn();
            if (!batch.empty()) result = synthesize(batch.front());
        } catch (...) {
            error = std::current_exception();
        }
        lock.lock();
        busy_ = 0;
        if (error) {
            error_ = error;
        } else if (!batch.empty() && !restart_pending_) {
            done_.push_back(std::move(result));  // an interrupt meanwhile drops it
        }
        cv_.notify_all();
        if (error_) return;
    }
}

DuplexSpeechResult DuplexSpeech::synthesize(const DuplexSpeechJob & job) {
    DuplexSpeechResult r;
    r.unit = job.unit;
    if (job.is_listen) {
        // a listening unit says nothing; the speaking turn's state (if any) waits for the next unit
        r.audio.assign(static_cast<size_t>(unit_samples_), 0.0f);
        return r;
    }
    auto draw = [this]() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; };
    const int n = static_cast<int>(job.text_ids.size());
    r.speech_tokens = tts_->unit(n ? job.text_ids.data() : nullptr, n ? job.hidden.data() : nullptr, n,
                                 job.end_of_turn, draw);
    SpeechSynthesizer & synth = session_.speech();
    // every speaking unit is flushed at once (windows down to 8 tokens); the turn's last unit ends
    // the utterance, after which the stream starts again from the voice's primed caches
    r.audio = synth.stream_push_duplex(r.speech_tokens.data(), static_cast<int>(r.speech_tokens.size()), true,
                                       job.end_of_turn);
    return r;
}

}  // namespace minicpmo
