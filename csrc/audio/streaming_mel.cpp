#include "audio/streaming_mel.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "audio/pcm_checks.h"
#include "core/error.h"

namespace minicpmo {

namespace {

void validate_options(const StreamingMelOptions & o) {
    auto bad = [](const std::string & what) { fail(Status::invalid_argument, "streaming mel options: " + what); };
    if (o.redundancy_frames < 0 || o.redundancy_frames > 1000) {
        bad("redundancy_frames " + std::to_string(o.redundancy_frames) + " is outside [0, 1000]");
    }
    if (o.chunk_ms < 1 || o.chunk_ms > 60000) bad("chunk_ms " + std::to_string(o.chunk_ms) + " is outside [1, 60000]");
    if (o.first_chunk_ms < 1 || o.first_chunk_ms > 60000) {
        bad("first_chunk_ms " + std::to_string(o.first_chunk_ms) + " is outside [1, 60000]");
    }
    for (double v : {o.slide_trigger_seconds, o.slide_stride_seconds, o.slide_min_keep_seconds}) {
        if (!std::isfinite(v) || v <= 0.0 || v > 3600.0) bad("sliding-window durations must lie in (0, 3600] seconds");
    }
    if (!std::isfinite(o.dynamic_clip_min_seconds) || o.dynamic_clip_min_seconds < 0.0) {
        bad("dynamic_clip_min_seconds must be finite and >= 0");
    }
    if (!std::isfinite(o.log_floor)) bad("log_floor must be finite");
}

// Python's int(x) of a non-negative float: truncation
int64_t trunc_samples(double seconds, int sample_rate) { return int64_t(seconds * double(sample_rate)); }

}  // namespace

StreamingMel::StreamingMel(const MelConfig & config, std::vector<float> filters, const StreamingMelOptions & options)
    : analyzer_(config, std::move(filters)), options_(options) {
    validate_options(options_);
    ws_ = analyzer_.make_workspace();
    const MelConfig & c = analyzer_.config();
    // chunk_samples = int(round(chunk_ms * sr / 1000)) (round half to even, as Python's round)
    chunk_samples_ = size_t(std::nearbyint(double(options_.chunk_ms) * c.sample_rate / 1000.0));
    chunk_frames_ = int64_t(chunk_samples_) / c.hop;
    if (chunk_frames_ < 1) {
        fail(Status::invalid_argument, "streaming mel options: chunk_ms " + std::to_string(options_.chunk_ms) +
                                           " is shorter than one hop");
    }
    // the first request is aligned down to whole hops, at least one hop
    const size_t raw_first = size_t(std::nearbyint(double(options_.first_chunk_ms) * c.sample_rate / 1000.0));
    first_chunk_samples_ = std::max(size_t(c.hop), raw_first / size_t(c.hop) * size_t(c.hop));
    reset();
}

void StreamingMel::reset() {
    buffer_.clear();
    base_frame_ = 0;
    last_emitted_ = 0;
    first_call_ = true;
    first_push_ = true;
    pending_.clear();
    queue_.clear();
    cache_first_ = 0;
    cache_count_ = 0;
    cache_.clear();
    cache_max_.clear();
}

size_t StreamingMel::chunk_samples() const { return first_call_ ? first_chunk_samples_ : chunk_samples_; }

size_t StreamingMel::first_chunk_pad_samples() const {
    return size_t(int64_t(options_.first_chunk_ms) * analyzer_.config().sample_rate / 1000);
}

bool StreamingMel::push(const float * pcm, size_t n, bool is_last_chunk) {
    if (n > 0 && pcm == nullptr) fail(Status::invalid_argument, "streaming mel: no sample buffer given");
    // zeros the caller puts in front of the first chunk (simplex: the first push; duplex: the
    // pending audio until the first process() call)
    const size_t pad_to = first_chunk_pad_samples();
    size_t front_pad = 0;
    if (options_.feed == StreamingFeed::simplex && first_push_) front_pad = pad_to - std::min(pad_to, n);
    if (options_.feed == StreamingFeed::duplex && first_call_) front_pad = pad_to - std::min(pad_to, pending_.size() + n);
    if (n > kMaxMelInputSamples || buffer_.size() + pending_.size() + front_pad + n > kMaxMelInputSamples) {
        fail(Status::invalid_argument, "streaming mel: the audio buffer would exceed " +
                                           std::to_string(kMaxMelInputSamples) + " samples");
    }
    require_finite_pcm(pcm, n, "streaming mel");

    const size_t queued_before = queue_.size();
    switch (options_.feed) {
        case StreamingFeed::raw:
            process(pcm, n, is_last_chunk);
            break;
        case StreamingFeed::simplex: {
            // MiniCPMO.streaming_prefill: the first user audio chunk is zero-padded at the front to
            // first_chunk_ms and handed over whole
            if (front_pad > 0) {
                std::vector<float> padded(front_pad, 0.0f);
                padded.insert(padded.end(), pcm, pcm + n);
                process(padded.data(), padded.size(), is_last_chunk);
            } else {
                process(pcm, n, is_last_chunk);
            }
            first_push_ = false;
            break;
        }
        case StreamingFeed::duplex: {
            // MiniCPMODuplex.streaming_prefill: accumulate; before the first chunk, zero-pad the
            // front to first_chunk_ms; hand over exactly chunk_samples() and consume as many
            if (n > 0) pending_.insert(pending_.end(), pcm, pcm + n);
            if (front_pad > 0) pending_.insert(pending_.begin(), front_pad, 0.0f);
            const size_t need = chunk_samples();
            if (pending_.size() < need) break;
            const int sr = analyzer_.config().sample_rate;
            // consumed = int(int(need / sr * 1000) * sr / 1000) for the first chunk (the reference
            // goes through its millisecond value), int(chunk_ms * sr / 1000) after
            const size_t consumed = first_call_ ? size_t(int64_t(need) * 1000 / sr * sr / 1000)
                                                : size_t(int64_t(options_.chunk_ms) * sr / 1000);
            process(pending_.data(), need, is_last_chunk);
            pending_.erase(pending_.begin(), pending_.begin() + std::min(consumed, pending_.size()));
            break;
        }
    }
    return queue_.size() > queued_before;
}

bool StreamingMel::next_chunk(MelChunk & out) {
    if (queue_.empty()) return false;
    out = std::move(queue_.front());
    queue_.pop_front();
    return true;
}

void StreamingMel::maybe_slide() {
    if (!options_.sliding_window) return;
    const int sr = analyzer_.config().sample_rate;
    const int64_t hop = analyzer_.config().hop;
    const int64_t len = int64_t(buffer_.size());
    if (len < trunc_samples(options_.slide_trigger_seconds, sr)) return;
    int64_t drop = trunc_samples(options_.slide_stride_seconds, sr);
    // keep at least slide_min_keep_seconds (the reference's guard)
    const int64_t guard = std::min(trunc_samples(options_.slide_min_keep_seconds, sr), len - drop);
    drop = std::min(drop, std::max<int64_t>(0, len - guard));
    drop = drop / hop * hop;  // whole hops: global frame numbers stay aligned with the samples
    if (drop <= 0) return;
    buffer_.erase(buffer_.begin(), buffer_.begin() + std::min(drop, len));
    base_frame_ += drop / hop;
}

void StreamingMel::fill_cache(int64_t len, int64_t n_frames) {
    const MelConfig & c = analyzer_.config();
    const int64_t half = c.n_fft / 2;
    // interior buffer frames: t * hop - half >= 0 and t * hop - half + n_fft <= len
    const int64_t lo = (half + c.hop - 1) / c.hop;
    const int64_t last_start = len - c.n_fft + half;
    const int64_t hi = std::min(n_frames, last_start < 0 ? 0 : last_start / c.hop + 1);
    const int64_t first_g = base_frame_ + lo;
    const int64_t end_g = base_frame_ + std::max(lo, hi);
    const size_t n_mel = size_t(c.n_mel);
    // forget frames that left the interior (dropped by a slide, or now reading the reflected start)
    if (cache_count_ > 0 && cache_first_ < first_g) {
        const int64_t n_drop = std::min(cache_count_, first_g - cache_first_);
        cache_.erase(cache_.begin(), cache_.begin() + n_drop * int64_t(n_mel));
        cache_max_.erase(cache_max_.begin(), cache_max_.begin() + n_drop);
        cache_first_ += n_drop;
        cache_count_ -= n_drop;
    }
    if (cache_count_ == 0) cache_first_ = first_g;
    for (int64_t g = cache_first_ + cache_count_; g < end_g; ++g) {
        cache_.resize(cache_.size() + n_mel);
        double * dst = cache_.data() + size_t(cache_count_) * n_mel;
        analyzer_.frame(buffer_.data(), len, g - base_frame_, dst, ws_);
        cache_max_.push_back(*std::max_element(dst, dst + n_mel));
        ++cache_count_;
    }
}

const double * StreamingMel::buffer_frame(int64_t len, int64_t t, std::vector<double> & edge) {
    const int64_t g = base_frame_ + t;
    if (analyzer_.is_interior(len, t) && g >= cache_first_ && g < cache_first_ + cache_count_) {
        return cache_.data() + size_t(g - cache_first_) * size_t(analyzer_.config().n_mel);
    }
    edge.resize(size_t(analyzer_.config().n_mel));
    analyzer_.frame(buffer_.data(), len, t, edge.data(), ws_);
    return edge.data();
}

MelChunk StreamingMel::make_chunk(int64_t begin, int64_t end, int64_t len, int64_t n_frames) {
    const MelConfig & c = analyzer_.config();
    const int n_mel = c.n_mel;
    fill_cache(len, n_frames);
    MelChunk chunk;
    chunk.n_mel = n_mel;
    chunk.n_frames = end - begin;
    chunk.first_frame = base_frame_ + begin;
    // the clip mode follows the whole buffer's length, before the extractor's 30-s truncation
    chunk.dynamic_clip = double(buffer_.size()) >= options_.dynamic_clip_min_seconds * c.sample_rate;
    std::vector<double> edge;
    double threshold = double(options_.log_floor);
    if (chunk.dynamic_clip) {
        // max over every frame of the buffer's spectrogram: cached interior frames + edge frames
        double max_value = -HUGE_VAL;
        for (int64_t i = 0; i < cache_count_; ++i) max_value = std::max(max_value, cache_max_[size_t(i)]);
        for (int64_t t = 0; t < n_frames; ++t) {
            const int64_t g = base_frame_ + t;
            if (analyzer_.is_interior(len, t) && g >= cache_first_ && g < cache_first_ + cache_count_) continue;
            const double * v = buffer_frame(len, t, edge);
            max_value = std::max(max_value, *std::max_element(v, v + n_mel));
        }
        threshold = max_value - double(c.dynamic_range_db);
    }
    chunk.clip_threshold = threshold;
    chunk.data.resize(size_t(n_mel) * size_t(chunk.n_frames));
    for (int64_t t = begin; t < end; ++t) {
        const double * v = buffer_frame(len, t, edge);
        for (int b = 0; b < n_mel; ++b) {
            chunk.data[size_t(b) * size_t(chunk.n_frames) + size_t(t - begin)] =
                float((std::max(v[b], threshold) + 4.0) / 4.0);
        }
    }
    return chunk;
}

void StreamingMel::process(const float * pcm, size_t n, bool is_last_chunk) {
    if (n > 0) buffer_.insert(buffer_.end(), pcm, pcm + n);
    maybe_slide();
    first_call_ = false;
    const MelConfig & c = analyzer_.config();
    const int64_t len = int64_t(buffer_.size());
    // The reference raises for a buffer shorter than one window (its STFT cannot pad it); nothing
    // can be emitted from it, so this call emits nothing instead.
    if (len < c.n_fft) return;
    // the extractor truncates its input to chunk_samples (30 s) even with padding=False
    const int64_t used = std::min<int64_t>(len, c.chunk_samples);
    const int64_t n_frames = analyzer_.n_frames(used);
    const int64_t half = c.n_fft / 2;
    const int64_t stable = std::min(n_frames, len < half ? 0 : (len - half) / c.hop + 1);
    const int64_t core_begin = last_emitted_;
    const int64_t core_end = core_begin + chunk_frames_;
    const int64_t redundancy = options_.redundancy_frames;
    if (base_frame_ + stable < core_end + redundancy && !is_last_chunk) return;

    const int64_t begin = std::clamp(std::max<int64_t>(0, core_begin - redundancy) - base_frame_, int64_t(0), n_frames);
    const int64_t end = std::clamp(core_end + redundancy - base_frame_, begin, n_frames);
    last_emitted_ = core_end;  // only the core pointer advances
    if (end == begin) return;
    MelChunk chunk = make_chunk(begin, end, used, n_frames);
    const int64_t g_begin = chunk.first_frame, g_end = chunk.first_frame + chunk.n_frames;
    chunk.prefix_frames = std::max<int64_t>(0, std::min(g_end, core_begin) - g_begin);
    chunk.core_frames = std::max<int64_t>(0, std::min(g_end, core_end) - std::max(g_begin, core_begin));
    chunk.suffix_frames = chunk.n_frames - chunk.prefix_frames - chunk.core_frames;
    queue_.push_back(std::move(chunk));
}

bool StreamingMel::flush() {
    const MelConfig & c = analyzer_.config();
    const int64_t len = int64_t(buffer_.size());
    if (len < c.n_fft) return false;  // the reference returns nothing (empty) or raises (too short)
    const int64_t used = std::min<int64_t>(len, c.chunk_samples);
    const int64_t n_frames = analyzer_.n_frames(used);
    if (last_emitted_ >= base_frame_ + n_frames) return false;
    const int64_t begin = std::max<int64_t>(0, last_emitted_ - base_frame_);
    last_emitted_ = base_frame_ + n_frames;
    MelChunk chunk = make_chunk(begin, n_frames, used, n_frames);
    chunk.core_frames = chunk.n_frames;
    chunk.is_flush = true;
    queue_.push_back(std::move(chunk));
    return true;
}

}  // namespace minicpmo
