#include "session/omni_session.h"

#include <algorithm>
#include <optional>

#include "core/error.h"
#include "audio/audio_features.h"
#include "session/media_prompt.h"
#include "token2wav/token2wav.h"
#include "tts/tts_decoder.h"
#include "tts/tts_generate.h"
#include "vision/image_preprocess.h"
#include "vision/vision_encoder.h"

namespace minicpmo {

namespace {

uint64_t fnv1a(uint64_t h, const void * data, size_t n) {
    const auto * p = static_cast<const uint8_t *>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001B3ull;
    return h;
}

uint64_t image_hash(const ImageInput & im, int max_slice_nums) {
    uint64_t h = 0xCBF29CE484222325ull;
    const int32_t dims[3] = {im.width, im.height, max_slice_nums};
    h = fnv1a(h, dims, sizeof(dims));
    if (im.content_key != 0) return fnv1a(h, &im.content_key, sizeof(im.content_key));
    return fnv1a(h, im.rgb, static_cast<size_t>(im.width) * im.height * 3);
}

SliceConfig slice_config(const VisionHparams & hp, int max_slice_nums) {
    if (max_slice_nums < 0) {
        fail(Status::invalid_argument, "max_slice_nums must be >= 0 (0 = the model's default), got " +
                                           std::to_string(max_slice_nums));
    }
    SliceConfig c;
    c.scale_resolution = hp.scale_resolution;
    c.patch_size = hp.patch_size;
    c.max_slice_nums = max_slice_nums > 0 ? max_slice_nums : hp.max_slice_nums;
    for (int i = 0; i < 3; ++i) {
        c.mean[i] = hp.mean[i];
        c.std[i] = hp.std[i];
    }
    return c;
}

RgbImageView view_of(const ImageInput & im) {
    if (!im.rgb) fail(Status::invalid_argument, "image pixels are NULL");
    return RgbImageView{im.rgb, im.width, im.height};
}

}  // namespace

OmniSession::OmniSession(std::shared_ptr<const OmniModel> model, const LlmContextParams & params, ComputeType compute)
    : Session(model->llm(), params), omni_(std::move(model)), n_threads_(params.n_threads), compute_(compute) {}

OmniSession::~OmniSession() = default;

const OmniModel & OmniSession::omni_model() const {
    if (!omni_) fail(Status::closed, "the session is closed");
    return *omni_;
}

void OmniSession::close() {
    if (closed()) return;
    const auto hold = enter("close");
    require_speech_free("close");
    vision_.reset();
    audio_.reset();
    tts_.reset();
    token2wav_.reset();
    omni_.reset();
    close_llm();
}

void OmniSession::lease_speech(const char * what) {
    if (speech_leases_.fetch_add(1) != 0) {
        speech_leases_.fetch_sub(1);
        fail(Status::busy, std::string(what) + ": the session's speech decoder is already in use by another duplex "
                                               "conversation's speech thread; close that conversation first");
    }
}

void OmniSession::release_speech() { speech_leases_.fetch_sub(1); }

void OmniSession::require_speech_free(const char * what) const {
    if (speech_leases_.load() != 0) {
        fail(Status::busy, std::string(what) + ": the session's speech decoder and Token2Wav are in use by a duplex "
                                               "conversation's speech thread; close that conversation (or prepare it "
                                               "with speech off) first");
    }
}

void OmniSession::set_n_threads(int n_threads) {
    const auto hold = enter("set_n_threads");
    check_n_threads(n_threads);
    require_speech_free("set_n_threads");
    context().set_n_threads(n_threads);
    n_threads_ = n_threads;
    if (vision_) vision_->set_n_threads(n_threads);
    if (audio_) audio_->set_n_threads(n_threads);
    if (tts_) tts_->set_n_threads(n_threads);
    if (token2wav_) token2wav_->set_n_threads(n_threads);
}

VisionEncoder & OmniSession::vision() {
    if (!vision_) {
        std::shared_ptr<const VisionModel> vm = omni_model().vision();
        if (vm->hparams().n_embd_out != context().n_embd()) {
            fail(Status::bad_model, "the vision component projects to width " + std::to_string(vm->hparams().n_embd_out) +
                                        " but the LLM has width " + std::to_string(context().n_embd()));
        }
        vision_ = std::make_unique<VisionEncoder>(std::move(vm), omni_model().device(), n_threads_, compute_);
    }
    return *vision_;
}

std::vector<float> OmniSession::encode_image(const ImageInput & image, std::vector<std::vector<float>> * vit_features) {
    const auto hold = enter("encode_image");
    VisionEncoder & enc = vision();
    const PreprocessedImage pre =
        preprocess_image(view_of(image), slice_config(enc.model().hparams(), image.max_slice_nums));
    return enc.encode(pre, vit_features);
}

void OmniSession::prepare_images(int width, int height, int max_slice_nums) {
    const auto hold = enter("prepare_images");
    VisionEncoder & enc = vision();
    const VisionHparams & hp = enc.model().hparams();
    const SliceLayout sl = plan_slices(width, height, slice_config(hp, max_slice_nums));  // checks the size
    const int p = hp.patch_size;
    enc.prepare(sl.source.height / p, sl.source.width / p);
    if (sl.sliced()) enc.prepare(sl.slice.height / p, sl.slice.width / p);
}

namespace {

uint64_t audio_hash(const AudioInput & a) {
    uint64_t h = 0xCBF29CE484222325ull;
    const int32_t mode = static_cast<int32_t>(a.attention);
    h = fnv1a(h, &mode, sizeof(mode));
    if (a.content_key != 0) {
        h = fnv1a(h, &a.n_samples, sizeof(a.n_samples));
        return fnv1a(h, &a.content_key, sizeof(a.content_key));
    }
    return fnv1a(h, a.pcm, a.n_samples * sizeof(float));
}

const float * samples_of(const AudioInput & a) {
    if (!a.pcm || a.n_samples == 0) fail(Status::invalid_argument, "audio is empty (no samples)");
    return a.pcm;
}

}  // namespace

AudioEncoder & OmniSession::audio_encoder() {
    if (!audio_) {
        std::shared_ptr<const AudioModel> am = omni_model().audio();
        if (am->hparams().n_embd_out != context().n_embd()) {
            fail(Status::bad_model, "the audio component projects to width " + std::to_string(am->hparams().n_embd_out) +
                                        " but the LLM has width " + std::to_string(context().n_embd()));
        }
        audio_ = std::make_unique<AudioEncoder>(std::move(am), omni_model().device(), n_threads_, compute_);
    }
    return *audio_;
}

TtsDecoder & OmniSession::tts_decoder() {
    if (!tts_) {
        std::shared_ptr<const TtsModel> tm = omni_model().tts();
        if (tm->hparams().n_embd_llm != context().n_embd()) {
            fail(Status::bad_model, "the TTS reads LLM hidden states of width " + std::to_string(tm->hparams().n_embd_llm) +
                                        " but the LLM has width " + std::to_string(context().n_embd()));
        }
        tts_ = std::make_unique<TtsDecoder>(std::move(tm), omni_model().device(), n_threads_);
    }
    return *tts_;
}

std::vector<int32_t> OmniSession::reply_speech_tokens(const std::function<double()> & draw, int max_new_tokens,
                                                     bool * finished) {
    const auto hold = enter("reply_speech_tokens");
    require_speech_free("reply_speech_tokens");
    const std::vector<llama_token> & reply = last_generated();
    const std::vector<float> & hidden = generated_hidden();
    const size_t n_embd = static_cast<size_t>(context().n_embd());
    const llama_token tts_bos = model().special_token(Special::tts_bos), tts_eos = model().special_token(Special::tts_eos);
    const std::vector<llama_token> & kv = kv_tokens();
    // the reply's tokens are the last ones in the cache; the prompt before them ends with <|tts_bos|>
    const size_t n_fed = hidden.size() / n_embd;
    if (reply.empty() || n_fed == 0 || kv.size() < n_fed + 1 || kv[kv.size() - n_fed - 1] != tts_bos) {
        fail(Status::invalid_argument, "the last reply was not generated with the spoken-reply template "
                                       "(prompt ending with <|tts_bos|>) and captured hidden states");
    }
    // the spoken text ends at <|tts_eos|>; a reply that stopped before one (at <|im_end|> or at
    // max_new_tokens) is spoken as far as it went (the official code makes no audio then)
    const auto end = std::find(reply.begin(), reply.end(), tts_eos);
    const int n = static_cast<int>(std::min<size_t>(end - reply.begin(), n_fed));
    if (n == 0) fail(Status::invalid_argument, "the last reply has no text to speak");
    if (static_cast<size_t>(n) > n_fed) fail(Status::internal, "fewer hidden states than spoken tokens");
    std::vector<int32_t> ids(reply.begin(), end);
    TtsDecoder & d = tts_decoder();
    TtsSampling sampling = d.model().hparams().chat;
    if (max_new_tokens > 0) sampling.max_new_tokens = max_new_tokens;
    TtsChatResult r = generate_chat_speech(d, ids.data(), hidden.data(), n, sampling, draw);
    if (finished) *finished = r.finished;
    return r.tokens;
}

std::vector<std::pair<std::string, GraphPlacement>> OmniSession::graph_placements() const {
    std::vector<std::pair<std::string, GraphPlacement>> out;
    if (vision_) out.emplace_back("vision", vision_->placement());
    if (audio_) out.emplace_back("audio", audio_->placement());
    if (tts_) out.emplace_back("tts", tts_->placement());
    if (token2wav_) {
        out.emplace_back("flow", token2wav_->flow_placement());
        out.emplace_back("hift", token2wav_->hift_placement());
    }
    return out;
}

Token2Wav & OmniSession::token2wav() {
    if (!token2wav_) {
        token2wav_ = std::make_unique<Token2Wav>(omni_model().flow(), omni_model().hift(), omni_model().voices(), omni_model().device(),
                                                      n_threads_, 0, compute_);
    }
    return *token2wav_;
}

std::vector<float> OmniSession::speak_reply(const std::function<double()> & draw, const std::string & voice,
                                            int max_speech_tokens) {
    const auto hold = enter("speak_reply");
    require_speech_free("speak_reply");
    Token2Wav & synth = token2wav();
    synth.voices().get(voice);  // an unknown voice fails before any work
    return synth.synthesize(reply_speech_tokens(draw, max_speech_tokens), voice);
}

int OmniSession::audio_token_count(const AudioInput & audio) {
    const auto hold = enter("audio_token_count");
    samples_of(audio);
    return audio_tokens_for_samples(audio_encoder().model().hparams(), audio.n_samples);
}

std::vector<float> OmniSession::encode_audio(const AudioInput & audio, std::vector<std::vector<float>> * hidden) {
    const auto hold = enter("encode_audio");
    AudioEncoder & enc = audio_encoder();
    const AudioModel & m = enc.model();
    const AudioHparams & hp = m.hparams();
    const std::vector<MelPiece> pieces = chat_mel_pieces(m, samples_of(audio), audio.n_samples);
    // The official chat batch pads every piece with zero mel frames to the longest one and masks
    // only keys at or past the piece's mel-frame count (audio_features.h); padding up to the end
    // of the last attention block is enough to get the same block-causal result.
    int batch_frames = 0;
    for (const MelPiece & p : pieces) batch_frames = std::max(batch_frames, p.n_frames);
    std::vector<float> rows, padded;
    if (hidden) hidden->clear();
    for (const MelPiece & p : pieces) {
        const int n_enc = audio_encoder_frames(p.n_frames);
        const int n_tokens = n_enc >= hp.pool_step ? (n_enc - hp.pool_step) / hp.pool_step + 1 : 0;
        const int blocks = (n_enc + hp.block_frames() - 1) / hp.block_frames();
        const int pad_to = audio.attention == AudioAttention::block_causal
                               ? std::min(batch_frames, 2 * blocks * hp.block_frames())
                               : batch_frames;
        const float * mel = p.data.data();
        if (pad_to > p.n_frames) {
            padded.assign(static_cast<size_t>(hp.n_mel) * pad_to, 0.0f);
            for (int b = 0; b < hp.n_mel; ++b) {
                std::copy_n(p.data.data() + static_cast<size_t>(b) * p.n_frames, p.n_frames,
                            padded.data() + static_cast<size_t>(b) * pad_to);
            }
            mel = padded.data();
        }
        AudioEncoding e = enc.encode(MelFrames{mel, std::max(pad_to, p.n_frames)}, audio.attention, hidden != nullptr,
                                     p.n_frames);
        if (e.n_tokens < n_tokens) fail(Status::internal, "audio encoder returned fewer tokens than its piece needs");
        rows.insert(rows.end(), e.tokens.begin(), e.tokens.begin() + static_cast<size_t>(n_tokens) * hp.n_embd_out);
        if (hidden) {
            e.hidden.resize(static_cast<size_t>(n_enc) * hp.n_embd);
            hidden->push_back(std::move(e.hidden));
        }
    }
    const size_t want = static_cast<size_t>(audio_tokens_for_samples(hp, audio.n_samples)) * hp.n_embd_out;
    if (rows.size() != want) fail(Status::internal, "audio encoding does not match its placeholder count");
    return rows;
}

namespace {

struct BuiltPrompt {
    MediaPrompt prompt;
    int n_query = 0;
};

}  // namespace

// Lays out the prompt: slicing plans of the images and token counts of the audios decide it.
static BuiltPrompt build_prompt(OmniSession & s, const LlmModel & llm, const std::string & text,
                                const std::vector<ImageInput> & images, const std::vector<AudioInput> & audios,
                                const MediaPromptOptions & options, const VisionHparams * hp) {
    std::vector<PromptImage> layout;
    layout.reserve(images.size());
    for (const ImageInput & im : images) {
        const SliceConfig cfg = slice_config(*hp, im.max_slice_nums);
        const SliceLayout sl = plan_slices(view_of(im).width, view_of(im).height, cfg);
        layout.push_back(PromptImage{sl.grid.cols, sl.grid.rows, image_hash(im, cfg.max_slice_nums)});
    }
    std::vector<PromptAudio> sounds;
    sounds.reserve(audios.size());
    for (const AudioInput & a : audios) {
        const int n = s.audio_token_count(a);
        if (n <= 0) {
            fail(Status::invalid_argument, "audio of " + std::to_string(a.n_samples) +
                                               " samples is too short for one audio token (at least 1281 samples, 80 ms at 16 kHz)");
        }
        sounds.push_back(PromptAudio{n, audio_hash(a)});
    }
    const bool use_id = hp ? (options.use_image_id < 0 ? hp->use_image_id : options.use_image_id != 0) : false;
    const int n_query = hp ? hp->n_query : 0;
    return BuiltPrompt{build_media_prompt(llm, text, layout, sounds, n_query, use_id), n_query};
}

MediaPrompt OmniSession::media_prompt(const std::string & text, const std::vector<ImageInput> & images,
                                      const std::vector<AudioInput> & audios, const MediaPromptOptions & options) {
    const auto hold = enter("media_prompt");
    const VisionHparams * hp = images.empty() ? nullptr : &vision().model().hparams();
    return build_prompt(*this, model(), text, images, audios, options, hp).prompt;
}

MediaRows OmniSession::encode_media_spans(const MediaPrompt & p, const std::vector<ImageInput> & images,
                                          const std::vector<AudioInput> & audios, size_t keep) {
    const auto hold = enter("encode_media_spans");
    MediaRows out;
    out.images.resize(images.size());
    out.audios.resize(audios.size());
    const size_t n_embd = static_cast<size_t>(context().n_embd());
    for (const MediaPrompt::Span & s : p.spans) {
        if (s.pos + s.n_rows <= keep) continue;
        if (s.kind == MediaPrompt::Span::Kind::image) {
            if (out.images.at(s.index).empty()) out.images[s.index] = encode_image(images[s.index]);
        } else if (out.audios.at(s.index).empty()) {
            out.audios[s.index] = encode_audio(audios[s.index]);
        }
    }
    out.spans.reserve(p.spans.size());
    for (const MediaPrompt::Span & s : p.spans) {
        const bool is_image = s.kind == MediaPrompt::Span::Kind::image;
        const std::vector<float> & r = is_image ? out.images[s.index] : out.audios[s.index];
        const size_t first = is_image ? s.slice * s.n_rows : 0;
        const float * data = r.empty() ? nullptr : r.data() + first * n_embd;
        if (data && (first + s.n_rows) * n_embd > r.size()) {
            fail(Status::internal, "media encoding has fewer rows than its prompt layout");
        }
        out.spans.push_back(EmbeddingSpan{s.pos, s.n_rows, data});
    }
    return out;
}

PrefillStats OmniSession::prefill_media(const std::string & text, const std::vector<ImageInput> & images,
                                        const std::vector<AudioInput> & audios, const MediaPromptOptions & options) {
    const auto hold = enter("prefill_media");
    const MediaPrompt p = media_prompt(text, images, audios, options);
    // encode only the media that have a span beyond the reused prefix
    const MediaRows rows = encode_media_spans(p, images, audios, reusable_prefix(p.tokens, p.keys));
    return prefill(p.tokens, p.keys, rows.spans);
}

PrefillStats OmniSession::append_image(const ImageInput & image, int image_id) {
    const auto hold = enter("append_image");
    VisionEncoder & enc = vision();
    const VisionHparams & hp = enc.model().hparams();
    const SliceConfig cfg = slice_config(hp, image.max_slice_nums);
    const SliceLayout sl = plan_slices(view_of(image).width, view_of(image).height, cfg);
    const PromptImage layout{sl.grid.cols, sl.grid.rows, image_hash(image, cfg.max_slice_nums)};
    const MediaPrompt add = build_media_prompt(model(), kImageMarker, {layout}, {}, hp.n_query, image_id >= 0,
                                               image_id < 0 ? 0 : image_id);
    const std::vector<float> rows = encode_image(image);
    std::vector<llama_token> tokens = kv_tokens();
    std::vector<uint64_t> keys = kv_keys();
    const size_t base = tokens.size();
    tokens.insert(tokens.end(), add.tokens.begin(), add.tokens.end());
    keys.insert(keys.end(), add.keys.begin(), add.keys.end());
    const size_t n_embd = static_cast<size_t>(context().n_embd());
    std::vector<EmbeddingSpan> spans;
    for (const MediaPrompt::Span & s : add.spans) {
        spans.push_back(EmbeddingSpan{base + s.pos, static_cast<size_t>(hp.n_query), rows.data() + s.slice * hp.n_query * n_embd});
    }
    return prefill(tokens, keys, spans);
}

PrefillStats OmniSession::append_audio(const AudioInput & audio) {
    const auto hold = enter("append_audio");
    const int n = audio_token_count(audio);
    if (n <= 0) fail(Status::invalid_argument, "audio is too short for one audio token (at least 1281 samples, 80 ms at 16 kHz)");
    const MediaPrompt add = build_media_prompt(model(), kAudioMarker, {}, {PromptAudio{n, audio_hash(audio)}}, 0, false);
    const std::vector<float> rows = encode_audio(audio);
    std::vector<llama_token> tokens = kv_tokens();
    std::vector<uint64_t> keys = kv_keys();
    const size_t base = tokens.size();
    tokens.insert(tokens.end(), add.tokens.begin(), add.tokens.end());
    keys.insert(keys.end(), add.keys.begin(), add.keys.end());
    const MediaPrompt::Span & s = add.spans.at(0);
    return prefill(tokens, keys, {EmbeddingSpan{base + s.pos, s.n_rows, rows.data()}});
}

}  // namespace minicpmo
