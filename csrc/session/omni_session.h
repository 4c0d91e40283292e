// A conversation that can see and listen: the LLM session plus, created on first use, the
// session's own vision and audio encoders. Media are encoded only when the part of the prompt that
// holds them is not already in the KV cache (earlier turns keep their images and audio without
// re-encoding).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "audio/audio_encoder.h"
#include "session/media_prompt.h"
#include "session/omni_model.h"
#include "session/session.h"

namespace minicpmo {

class VisionEncoder;
class TtsDecoder;
class Token2Wav;

// Decoded RGB8 pixels owned by the caller for the duration of a call.
struct ImageInput {
    const uint8_t * rgb = nullptr;  // height rows of width * 3 bytes
    int width = 0;
    int height = 0;
    int max_slice_nums = 0;         // 0 = the model's default (9 for chat)
    // identifies the pixels for the KV cache's reuse when nonzero (a front end that remembers a
    // decoded image across turns); 0 = hash the pixels
    uint64_t content_key = 0;
};

// Frames of live conversations (simplex pieces, duplex units) are not sliced unless a slice count
// is given: the official streaming paths encode each frame as one query block.
inline ImageInput streaming_frame(ImageInput im) {
    if (im.max_slice_nums <= 0) im.max_slice_nums = 1;
    return im;
}

// 16 kHz mono float32 PCM owned by the caller for the duration of a call.
struct AudioInput {
    const float * pcm = nullptr;
    size_t n_samples = 0;
    AudioAttention attention = AudioAttention::block_causal;  // full: simplex-streaming system audio
    uint64_t content_key = 0;  // as ImageInput::content_key
};

struct MediaPromptOptions {
    int use_image_id = -1;          // -1 = the model's default (true), 0 / 1 = off / on
};

// Encoder rows of a media prompt's spans. `spans` point into `images` / `audios` (one row block per
// input, encoded once however many spans it has); a span that needed no encoding has null rows.
struct MediaRows {
    std::vector<std::vector<float>> images, audios;
    std::vector<EmbeddingSpan> spans;
};

class OmniSession : public Session {
public:
    // compute: how the encoders and the flow compute on the CPU (core/compute_backend.h)
    OmniSession(std::shared_ptr<const OmniModel> model, const LlmContextParams & params,
                ComputeType compute = ComputeType::f32);
    ~OmniSession();

    const OmniModel & omni_model() const;
    ComputeType compute_type() const { return compute_; }
    void set_n_threads(int n_threads);
    int n_threads() const { return n_threads_; }  // 0 = all cores

    // Frees the KV cache, the encoders, the speech components and the model reference; every
    // later call fails with Status::closed. Refused (busy) while another thread runs a call or a
    // duplex conversation's speech thread uses the session. Closing twice is a no-op.
    void close();

    // A duplex conversation's speech threads use the speech decoder and Token2Wav for as long as
    // they live (duplex_speech.h): they take this lease, and the calls that use those components
    // on the caller's thread are refused (busy) meanwhile.
    void lease_speech(const char * what);
    void release_speech();
    void require_speech_free(const char * what) const;

    // LLM embeddings of one image: (1 + slices) * n_query rows of n_embd, source first, then the
    // slices row by row. `vit_features` (optional) receives each slice's ViT output.
    std::vector<float> encode_image(const ImageInput & image, std::vector<std::vector<float>> * vit_features = nullptr);

    // Readies the vision tower for images of width x height cut as max_slice_nums says (0 = the
    // model's default, 1 = one block, as live frames are): its weights packed for the fast kernels and
    // those kernels made, nothing computed. The first image of that size then encodes as fast as the
    // next (a live conversation's first frame); later sessions of the model find the weights packed.
    // Nothing to do at compute_type f32 or on a GPU. Throws invalid_argument for a size no image may have.
    void prepare_images(int width, int height, int max_slice_nums);

    // LLM embeddings of one audio (chat path: log-mel in 30-s pieces, each encoded with its own
    // positions; 10 rows per second). `hidden` (optional) receives the encoder output of each piece.
    std::vector<float> encode_audio(const AudioInput & audio, std::vector<std::vector<float>> * hidden = nullptr);
    // Audio placeholders the prompt holds for it (= rows encode_audio returns).
    int audio_token_count(const AudioInput & audio);
    // The session's audio encoder (streaming state lives there).
    AudioEncoder & audio_encoder();
    // The session's speech-token decoder (its key/value cache lives there).
    TtsDecoder & tts_decoder();
    // Speech tokens of the last reply (chat layout, spec §5.1): the reply must have been generated
    // after a prompt ending with <|tts_bos|> and with GenerateParams::capture_hidden; the spoken
    // text is the reply up to <|tts_eos|>. `draw` empty = greedy; max_new_tokens 0 = the model's.
    std::vector<int32_t> reply_speech_tokens(const std::function<double()> & draw, int max_new_tokens = 0,
                                             bool * finished = nullptr);
    // The session's Token2Wav (flow + HiFT) with its seeded generators.
    Token2Wav & token2wav();
    // 24 kHz samples of the last reply: reply_speech_tokens, then Token2Wav with voice `voice`
    // ("" = the default voice).
    std::vector<float> speak_reply(const std::function<double()> & draw, const std::string & voice,
                                   int max_speech_tokens = 0);

    // Prefills a rendered prompt whose placeholders (kImageMarker / kAudioMarker) stand for
    // `images` and `audios`, each kind in order.
    PrefillStats prefill_media(const std::string & text, const std::vector<ImageInput> & images,
                               const std::vector<AudioInput> & audios, const MediaPromptOptions & options);
    // The whole layout: tokens, content keys and media spans (what prefill_media decodes).
    MediaPrompt media_prompt(const std::string & text, const std::vector<ImageInput> & images,
                             const std::vector<AudioInput> & audios, const MediaPromptOptions & options);
    // Encodes the media whose spans in `prompt` end after position `keep` (0 = all of them).
    MediaRows encode_media_spans(const MediaPrompt & prompt, const std::vector<ImageInput> & images,
                                 const std::vector<AudioInput> & audios, size_t keep = 0);

    // Appends one image's token layout after what the cache holds; image_id < 0 writes no
    // <image_id> tag.
    PrefillStats append_image(const ImageInput & image, int image_id);
    // Appends one audio's <|audio_start|><unk>×N<|audio_end|> after what the cache holds.
    PrefillStats append_audio(const AudioInput & audio);

    // Where each component computed so far: (name, placement) for those that ran, in pipeline
    // order (vision, audio, tts, flow, hift).
    std::vector<std::pair<std::string, GraphPlacement>> graph_placements() const;

private:
    VisionEncoder & vision();

    std::shared_ptr<const OmniModel> omni_;
    std::unique_ptr<VisionEncoder> vision_;
    std::unique_ptr<AudioEncoder> audio_;
    std::unique_ptr<TtsDecoder> tts_;
    std::unique_ptr<Token2Wav> token2wav_;
    int n_threads_;
    ComputeType compute_;
    std::atomic<int> speech_leases_{0};
};

}  // namespace minicpmo
