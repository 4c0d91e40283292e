// Streaming log-mel of MiniCPM-o 4.5 (spec §3.4): the official StreamingMelProcessorExact and the
// way the simplex / duplex sessions feed it, reproduced value for value.
//
// The reference keeps the whole audio buffer (when it reaches 30 s it drops the oldest 10 s, a
// multiple of hop), recomputes the mel of the buffer on every call with reflect padding at both
// buffer ends and no 30-s zero padding, and emits per call at most one chunk: core frames
// [100k, 100(k+1)) in global frame numbers plus `redundancy` frames on each side (0 in simplex, 2 in
// duplex), once the buffer has enough "stable" frames (frames whose window lies inside the buffer):
// stable = (len - n_fft/2) / hop + 1 >= core_end + redundancy. The lower clip is chosen per call:
// a buffer shorter than 5 s gets the fixed floor max(x, -10) (a no-op after the 1e-10 clamp), a
// longer one the dynamic clip max(x, max_buffer - 8) over every frame of the current buffer
// (edge frames included). Emitted values are (x + 4) / 4.
//
// Instead of recomputing the buffer's mel each call, the raw log10 values of interior frames
// (frames that read no reflected sample) are cached by global frame number; only the two or three
// edge frames at each buffer end are recomputed per call. Results are identical to the full
// recomputation: a frame's value depends only on the samples its window reads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <utility>
#include <vector>

#include "audio/log_mel.h"

namespace minicpmo {

// Who feeds the processor, and so how the first chunk is made (spec §3.4):
//   raw      every push() is one reference process() call, as given.
//   simplex  like raw, but the first push after reset() is front-padded with zeros to
//            first_chunk_ms (16560 samples) when shorter (MiniCPMO.streaming_prefill).
//   duplex   pushes accumulate in a pending buffer; the first time, it is front-padded with zeros to
//            first_chunk_ms when shorter; then, when it holds chunk_samples() samples (16480 first,
//            16000 after), exactly those go to one process() call and are consumed
//            (MiniCPMODuplex.streaming_prefill). A push with too little pending audio emits nothing.
enum class StreamingFeed { raw, simplex, duplex };

struct StreamingMelOptions {
    StreamingFeed feed = StreamingFeed::raw;
    int redundancy_frames = 0;  // cnn_redundancy_ms / 10: 0 in simplex, 2 in duplex
    int chunk_ms = 1000;        // core frames per chunk = chunk_ms * sample_rate / 1000 / hop
    int first_chunk_ms = 1035;
    bool sliding_window = true;  // the sessions enable it
    double slide_trigger_seconds = 30.0;
    double slide_stride_seconds = 10.0;
    double slide_min_keep_seconds = 1.0;
    double dynamic_clip_min_seconds = 5.0;  // shorter buffers use the fixed floor
    float log_floor = -10.0f;               // the fixed floor (log10 units)
};

// One emitted chunk.
struct MelChunk {
    int n_mel = 0;
    int64_t n_frames = 0;
    std::vector<float> data;    // [n_mel][n_frames] row-major, like the batch output
    int64_t first_frame = 0;    // global frame number of column 0 (frame t is centred at sample t * hop)
    int64_t prefix_frames = 0;  // redundancy frames before the core ones (0 for chunk 0)
    int64_t core_frames = 0;
    int64_t suffix_frames = 0;
    bool dynamic_clip = false;  // true: max - dynamic_range_db over the buffer; false: the fixed floor
    double clip_threshold = 0;  // the lower clip applied (log10 units, before (x + 4) / 4)
    bool is_flush = false;      // produced by flush(): the remaining frames, no redundancy
};

// One audio stream; not thread-safe (one object per session, used from one thread at a time).
class StreamingMel {
public:
    // Throws invalid_argument for a bad config, filters or options.
    StreamingMel(const MelConfig & config, std::vector<float> filters, const StreamingMelOptions & options = {});
    // raw feeding with this redundancy and the other options at their defaults
    StreamingMel(const MelConfig & config, std::vector<float> filters, int redundancy_frames)
        : StreamingMel(config, std::move(filters), with_redundancy(redundancy_frames)) {}

    // Appends `n` samples (16 kHz mono float32; pcm may be null when n is 0) and runs one reference
    // process() call (for duplex: when enough audio is pending). Returns true when a chunk was queued
    // for next_chunk(). `is_last_chunk` (raw/simplex) emits the next chunk even if it is not stable
    // yet, as the reference does for the last audio of a turn. Throws invalid_argument for NaN/Inf
    // samples or a buffer beyond kMaxMelInputSamples, leaving the state unchanged.
    bool push(const float * pcm, size_t n, bool is_last_chunk = false);

    // Pops the oldest queued chunk; false when none is queued.
    bool next_chunk(MelChunk & out);

    // End of input (the reference flush()): queues the frames not emitted yet, computed over the
    // current buffer. Returns true when it queued a chunk. Pending duplex audio below one chunk is
    // not part of the buffer and is not flushed (the reference never hands it to the processor).
    bool flush();

    // Back to the state after construction (new turn / session).
    void reset();

    // Samples the reference asks for next (get_chunk_size): first_chunk_samples (16480) before the
    // first process() call, chunk_samples (16000) after.
    size_t chunk_samples() const;
    // Samples the caller pads the first chunk to: first_chunk_ms * sample_rate / 1000 (16560).
    size_t first_chunk_pad_samples() const;

    int64_t emitted_frames() const { return last_emitted_; }  // global frames emitted as core frames so far
    size_t buffer_samples() const { return buffer_.size(); }
    int64_t buffer_first_frame() const { return base_frame_; }  // global frame number of buffer frame 0
    size_t pending_samples() const { return pending_.size(); }  // duplex: audio waiting for a full chunk
    size_t queued_chunks() const { return queue_.size(); }
    const MelConfig & config() const { return analyzer_.config(); }
    const StreamingMelOptions & options() const { return options_; }

private:
    static StreamingMelOptions with_redundancy(int frames) {
        StreamingMelOptions o;
        o.redundancy_frames = frames;
        return o;
    }
    void process(const float * pcm, size_t n, bool is_last_chunk);
    void maybe_slide();
    // raw log10 mel of buffer frame t (local numbering) of the (truncated) buffer of `len` samples
    const double * buffer_frame(int64_t len, int64_t t, std::vector<double> & edge);
    void fill_cache(int64_t len, int64_t n_frames);
    MelChunk make_chunk(int64_t begin, int64_t end, int64_t len, int64_t n_frames);

    MelFrameAnalyzer analyzer_;
    StreamingMelOptions options_;
    MelFrameAnalyzer::Workspace ws_;
    int64_t chunk_frames_ = 0;
    size_t chunk_samples_ = 0;
    size_t first_chunk_samples_ = 0;

    std::vector<float> buffer_;  // the reference's self.buffer
    int64_t base_frame_ = 0;     // base_T
    int64_t last_emitted_ = 0;   // last_emitted_T
    bool first_call_ = true;     // is_first
    bool first_push_ = true;     // simplex: the first push (front-padded) has not come yet
    std::vector<float> pending_; // duplex: audio not yet handed to process()
    std::deque<MelChunk> queue_;

    // raw log10 mel of interior frames, global frames [cache_first_, cache_first_ + cache_count_),
    // frame-major, plus each frame's max over the bands
    int64_t cache_first_ = 0;
    int64_t cache_count_ = 0;
    std::vector<double> cache_;
    std::vector<double> cache_max_;
};

}  // namespace minicpmo
