// Runs the HiFT vocoder for one session (spec §5.2.5, Appendix A.4): 80-bin log-mel (50 Hz) in,
// 24 kHz samples out. Whole utterances in one pass, or the streaming protocol of minicpmo-utils
// 1.0.1: an 8-frame mel cache, a 3840-sample source cache that overwrites the start of the next
// source, and a Hamming cross-fade of the first 3840 samples with the previous call's tail.
//
// The source's random phases and noise come from the session's seeded generator unless the caller
// injects them (tests do, to compare with the reference sample for sample).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/compute_backend.h"
#include "token2wav/hift_model.h"
#include "token2wav/hift_source.h"

namespace minicpmo {

// Mel frames owned by the caller: n_mel rows of n_frames values (channels first, time fastest), the
// layout of the official (1, 80, T) feature.
struct HiftMel {
    const float * data = nullptr;
    int n_frames = 0;
};

struct HiftForward {
    std::vector<float> audio;   // n_frames * hop_samples samples
    std::vector<float> source;  // the NSF source the decoder used (after the cache overwrite)
};

class HiftVocoder {
public:
    // Where this component's graphs ran so far (device vs CPU nodes, scheduler splits).
    const GraphPlacement & placement() const { return runner_.placement(); }
    // compute bf16 (a BF16 session): the convolutions' products through oneDNN's F32 kernels; HiFT
    // computes in F32 either way (its inverse STFT sums large terms that cancel)
    HiftVocoder(std::shared_ptr<const HiftModel> model, ComputeDevice device, int n_threads, uint64_t seed = 0,
                ComputeType compute = ComputeType::f32);

    const HiftModel & model() const { return *model_; }
    void set_n_threads(int n_threads) { backend_.set_n_threads(n_threads); }
    void reseed(uint64_t seed) { rng_.reseed(seed); }

    // Frame-rate F0 (Hz) the predictor gives for `mel`.
    std::vector<float> f0(const HiftMel & mel);
    // One HiFT pass (HiFTGenerator.forward): the first `n_cache` source samples are replaced by
    // `cache_source`. `random` null: drawn from the session's generator. `f0` (n_frames values)
    // replaces the predicted F0 when given: the source phase integrates F0 over the utterance, so
    // tests compare the source with the reference's F0 fed to both.
    HiftForward forward(const HiftMel & mel, const float * cache_source, int n_cache,
                        const HiftSourceRandom * random = nullptr, const float * f0 = nullptr);
    // A whole utterance: n_frames * hop_samples samples.
    std::vector<float> synthesize(const HiftMel & mel, const HiftSourceRandom * random = nullptr);

    // Streaming: one chunk of mel frames (may be empty on the last call, which flushes the tail).
    // A non-final call returns (cached + new frames - cached tail) * hop_samples samples: exactly
    // n_frames * hop_samples once the caches are full (24000 for a 50-frame chunk); the first call
    // starts with source-cache-length zeros. The last call returns everything left and ends the
    // stream (the next call starts a new one).
    std::vector<float> stream(const HiftMel & chunk, bool last, const HiftSourceRandom * random = nullptr);
    void reset_stream();
    // Samples the HiFT pass of the next stream() call covers for a chunk of `n_frames` (what an
    // injected HiftSourceRandom must hold).
    int64_t stream_pass_samples(int n_frames) const;
    bool stream_started() const { return !speech_cache_.empty(); }

private:
    std::vector<float> run_f0(const float * mel, int n_frames);
    void check_mel(const HiftMel & mel, bool allow_empty) const;

    std::shared_ptr<const HiftModel> model_;
    ComputeBackend backend_;
    GraphRunner runner_;
    HiftSourceRng rng_;
    std::vector<double> crossfade_;          // Hamming window of 2 x source-cache length (numpy's)
    std::vector<float> mel_cache_;           // n_mel x mel_cache_frames_ (channels first)
    int mel_cache_frames_ = 0;
    std::vector<float> source_cache_, speech_cache_;
};

}  // namespace minicpmo
