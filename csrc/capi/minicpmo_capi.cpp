// The C API: a thin shell over the C++ classes that turns exceptions into status codes.
#include "minicpmo.h"

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <random>
#include <string>

#include "audio/pcm_checks.h"
#include "core/error.h"
#include "core/llama_log.h"
#include "core/uniform_random.h"
#include "llm/quantize.h"
#include "session/duplex_session.h"
#include "session/media_forward.h"
#include "session/omni_model.h"
#include "session/omni_session.h"
#include "session/reply_stream.h"
#include "session/simplex_stream.h"
#include "token2wav/token2wav.h"
#include "token2wav/voice_bank.h"
#include "session/cloned_voice.h"

struct minicpmo_model {
    std::shared_ptr<minicpmo::OmniModel> impl;
};

struct minicpmo_voice {
    std::unique_ptr<minicpmo::ClonedVoice> impl;
};

struct minicpmo_session {
    std::unique_ptr<minicpmo::OmniSession> impl;
    std::unique_ptr<minicpmo::SimplexStream> simplex;  // made by the first streaming call

    minicpmo::SimplexStream & streaming() {
        if (!simplex) simplex = std::make_unique<minicpmo::SimplexStream>(*impl);
        return *simplex;
    }
};

struct minicpmo_reply {
    minicpmo::OmniSession * session = nullptr;
    std::unique_ptr<minicpmo::ReplyStream> impl;
    minicpmo::ReplyChunk step;                  // the last step's output
    size_t next_audio = 0;                      // waveforms of `step` handed out so far
    bool text_given = false;                    // the text of `step` handed out
    bool more = true;                           // the stream has more steps
    ~minicpmo_reply() {
        if (impl) impl->abandon();
    }
};

struct minicpmo_duplex {
    std::unique_ptr<minicpmo::DuplexSession> impl;
};

namespace {

thread_local std::string t_last_error;

minicpmo_status set_error(minicpmo_status status, const std::string & message) {
    t_last_error = message;
    return status;
}

// Runs `body`, mapping every exception to a status and a message for minicpmo_last_error().
template <typename F>
minicpmo_status guarded(F && body) {
    try {
        t_last_error.clear();
        body();
        return MINICPMO_OK;
    } catch (const minicpmo::Error & e) {
        return set_error(static_cast<minicpmo_status>(e.status()), e.what());
    } catch (const std::bad_alloc &) {
        return set_error(MINICPMO_ERR_INTERNAL, "out of memory");
    } catch (const std::exception & e) {
        return set_error(MINICPMO_ERR_INTERNAL, e.what());
    } catch (...) {
        return set_error(MINICPMO_ERR_INTERNAL, "unknown error");
    }
}

minicpmo::GenerateParams to_generate(const minicpmo_generate_params & p) {
    minicpmo::GenerateParams g;
    g.sampling.do_sample = p.do_sample;
    g.sampling.temperature = p.temperature;
    g.sampling.top_p = p.top_p;
    g.sampling.top_k = p.top_k;
    g.sampling.repetition_penalty = p.repetition_penalty;
    g.sampling.seed = p.seed;
    g.max_new_tokens = p.max_new_tokens;
    g.capture_hidden = p.generate_audio;
    return g;
}

void require(bool ok, const char * what) {
    if (!ok) minicpmo::fail(minicpmo::Status::invalid_argument, what);
}

void hand_out(const std::string & reply, char ** out_reply, size_t * out_len) {
    if (out_len) *out_len = reply.size();
    if (!out_reply) return;
    char * s = static_cast<char *>(std::malloc(reply.size() + 1));
    if (!s) throw std::bad_alloc();
    std::memcpy(s, reply.data(), reply.size());
    s[reply.size()] = '\0';
    *out_reply = s;
}

minicpmo::ImageInput to_image(const minicpmo_image & im) {
    require(im.rgb != nullptr, "an image has NULL pixels");
    require(im.width > 0 && im.height > 0, "an image has a zero or negative size");
    require(im.max_slice_nums >= 0, "max_slice_nums must be >= 0");
    minicpmo::ImageInput in;
    in.rgb = im.rgb;
    in.width = im.width;
    in.height = im.height;
    in.max_slice_nums = im.max_slice_nums;
    return in;
}

minicpmo::AudioInput to_audio(const minicpmo_audio & a) {
    require(a.samples != nullptr || a.n_samples == 0, "an audio has NULL samples");
    require(a.n_samples > 0, "an audio is empty (no samples)");
    minicpmo::require_finite_pcm(a.samples, a.n_samples, "audio");
    minicpmo::AudioInput in;
    in.pcm = a.samples;
    in.n_samples = a.n_samples;
    return in;
}

std::vector<minicpmo::ImageInput> to_images(const minicpmo_image * images, size_t n_images) {
    require(images != nullptr || n_images == 0, "images is NULL");
    std::vector<minicpmo::ImageInput> out;
    for (size_t i = 0; i < n_images; ++i) out.push_back(to_image(images[i]));
    return out;
}

std::vector<minicpmo::AudioInput> to_audios(const minicpmo_audio * audios, size_t n_audios) {
    require(audios != nullptr || n_audios == 0, "audios is NULL");
    std::vector<minicpmo::AudioInput> out;
    for (size_t i = 0; i < n_audios; ++i) out.push_back(to_audio(audios[i]));
    return out;
}

std::vector<minicpmo::ChatMessage> to_messages(const minicpmo_message * messages, size_t n_messages) {
    require(messages != nullptr || n_messages == 0, "messages is NULL");
    require(n_messages > 0, "the message list is empty");
    std::vector<minicpmo::ChatMessage> msgs;
    msgs.reserve(n_messages);
    for (size_t i = 0; i < n_messages; ++i) {
        require(messages[i].role != nullptr && messages[i].content != nullptr, "a message has a NULL role or content");
        msgs.push_back({messages[i].role, messages[i].content});
    }
    return msgs;
}

// The conversation of a chat_media-style call (forward_media renders the same prompt). The request
// points into the caller's arrays for the duration of the call.
minicpmo::ChatRequest chat_request(const minicpmo_message * messages, size_t n_messages, const minicpmo_image * images,
                                   size_t n_images, int32_t use_image_id, const minicpmo_audio * audios,
                                   size_t n_audios, const minicpmo_generate_params & p) {
    minicpmo::ChatRequest r;
    r.messages = to_messages(messages, n_messages);
    r.images = to_images(images, n_images);
    r.audios = to_audios(audios, n_audios);
    r.media.use_image_id = use_image_id < 0 ? -1 : (use_image_id ? 1 : 0);
    r.enable_thinking = p.enable_thinking;
    if (p.use_tts_template || p.generate_audio) r.use_tts_template = true;  // else: on when audio is given
    return r;
}

// How a reply is made from the generate params: with speech, the seed also seeds the speech
// sampling and the vocoder noise when sampling (greedy speech tokens otherwise).
minicpmo::ReplyOptions reply_options(const minicpmo_generate_params & p, minicpmo::ReplySpeech speech,
                                     const char * voice) {
    minicpmo::ReplyOptions o;
    o.generate = to_generate(p);
    o.speech = speech;
    o.voice = voice ? voice : "";
    o.max_speech_tokens = p.max_speech_tokens;
    if (speech != minicpmo::ReplySpeech::none && p.do_sample) {
        o.noise_seed = p.seed;
        o.speech_draw = minicpmo::seeded_uniform_draws(p.seed);
    }
    return o;
}

// Calls into the same session from a callback are refused (busy): the call that made the callback
// is in the middle of its work.
bool call_text(minicpmo::Session & s, minicpmo_text_callback on_text, const std::string & piece, void * user_data) {
    if (on_text == nullptr) return true;
    const minicpmo::CallGuard::Callout callout(s.guard());
    return on_text(piece.data(), piece.size(), user_data);
}

bool call_audio(minicpmo::Session & s, minicpmo_audio_callback on_audio, const std::vector<float> & samples,
                int32_t sample_rate, void * user_data) {
    const minicpmo::CallGuard::Callout callout(s.guard());
    return on_audio(samples.data(), samples.size(), sample_rate, user_data);
}

// Pulls a reply to its end: text pieces to on_text, waveforms to on_audio (each may be NULL);
// either returning false stops the reply. Returns its text.
std::string drive_reply(minicpmo::OmniSession & s, minicpmo::ReplyStream & reply, minicpmo_text_callback on_text,
                        minicpmo_audio_callback on_audio, void * user_data) {
    minicpmo::ReplyChunk chunk;
    bool more = true;
    while (more) {
        more = reply.next(chunk);
        const bool keep_text = chunk.text.empty() || call_text(s, on_text, chunk.text, user_data);
        bool keep_audio = true;
        for (const std::vector<float> & samples : chunk.audio) {
            if (keep_audio && on_audio) keep_audio = call_audio(s, on_audio, samples, reply.sample_rate(), user_data);
        }
        if (more && (!keep_text || !keep_audio)) {
            reply.cancel();
            more = false;
        }
    }
    return reply.text();
}

minicpmo_finish_reason to_finish_reason(minicpmo::FinishReason r) {
    switch (r) {
        case minicpmo::FinishReason::none: return MINICPMO_FINISH_NONE;
        case minicpmo::FinishReason::stop: return MINICPMO_FINISH_STOP;
        case minicpmo::FinishReason::length: return MINICPMO_FINISH_LENGTH;
        case minicpmo::FinishReason::context: return MINICPMO_FINISH_CONTEXT;
        case minicpmo::FinishReason::cancelled: return MINICPMO_FINISH_CANCELLED;
    }
    return MINICPMO_FINISH_NONE;
}

}  // namespace

extern "C" {

const char * minicpmo_last_error(void) { return t_last_error.c_str(); }

const char * minicpmo_status_name(minicpmo_status status) {
    switch (status) {
        case MINICPMO_OK: return "ok";
        case MINICPMO_ERR_INVALID_ARGUMENT: return "invalid argument";
        case MINICPMO_ERR_IO: return "i/o error";
        case MINICPMO_ERR_BAD_MODEL: return "bad model file";
        case MINICPMO_ERR_CONTEXT_FULL: return "context full";
        case MINICPMO_ERR_CANCELLED: return "cancelled";
        case MINICPMO_ERR_UNSUPPORTED: return "unsupported";
        case MINICPMO_ERR_INTERNAL: return "internal error";
        case MINICPMO_ERR_BUSY: return "session busy";
        case MINICPMO_ERR_CLOSED: return "session closed";
    }
    return "unknown status";
}

minicpmo_model_params minicpmo_model_default_params(void) {
    minicpmo_model_params p;
    p.omni_path = nullptr;
    p.n_gpu_layers = -1;
    p.use_mmap = true;
    p.device = nullptr;
    return p;
}

// The defaults below come from the C++ structs' initializers, the one table every front end uses.
minicpmo_session_params minicpmo_session_default_params(void) {
    const minicpmo::LlmContextParams d;
    minicpmo_session_params p;
    p.n_ctx = d.n_ctx;
    p.n_threads = d.n_threads;
    p.n_batch = d.n_batch;
    p.kv_cache_type = nullptr;  // d.kv_cache_type
    p.compute_type = nullptr;   // auto
    return p;
}

minicpmo_generate_params minicpmo_generate_default_params(void) {
    const minicpmo::GenerateParams d;  // the official chat() sampling defaults (spec §4.5)
    minicpmo_generate_params p;
    p.do_sample = d.sampling.do_sample;
    p.temperature = d.sampling.temperature;
    p.top_p = d.sampling.top_p;
    p.top_k = d.sampling.top_k;
    p.repetition_penalty = d.sampling.repetition_penalty;
    p.seed = d.sampling.seed;
    p.max_new_tokens = d.max_new_tokens;
    p.enable_thinking = false;
    p.use_tts_template = false;
    p.generate_audio = false;
    p.max_speech_tokens = 0;
    return p;
}

minicpmo_status minicpmo_model_load(const char * path, const minicpmo_model_params * params,
                                    minicpmo_model ** out_model) {
    return guarded([&] {
        require(path != nullptr, "model path is NULL");
        require(out_model != nullptr, "out_model is NULL");
        *out_model = nullptr;
        const minicpmo_model_params p = params ? *params : minicpmo_model_default_params();
        minicpmo::LlmModelParams lp;
        lp.n_gpu_layers = p.n_gpu_layers;
        lp.use_mmap = p.use_mmap;
        lp.device = p.device ? p.device : "";
        auto m = std::make_unique<minicpmo_model>();
        m->impl = std::make_unique<minicpmo::OmniModel>(path, p.omni_path ? p.omni_path : "", lp);
        for (const std::string & w : m->impl->load_warnings()) minicpmo::log_warning(w);  // C API log: stderr
        *out_model = m.release();
    });
}

void minicpmo_model_free(minicpmo_model * model) { delete model; }

bool minicpmo_model_has_omni(const minicpmo_model * model) { return model && model->impl->has_omni(); }

int32_t minicpmo_model_n_embd(const minicpmo_model * model) { return model ? model->impl->llm()->n_embd() : 0; }

int32_t minicpmo_model_n_vocab(const minicpmo_model * model) { return model ? model->impl->llm()->n_vocab() : 0; }

minicpmo_status minicpmo_session_new(minicpmo_model * model, const minicpmo_session_params * params,
                                     minicpmo_session ** out_session) {
    return guarded([&] {
        require(model != nullptr, "model is NULL");
        require(out_session != nullptr, "out_session is NULL");
        *out_session = nullptr;
        const minicpmo_session_params p = params ? *params : minicpmo_session_default_params();
        minicpmo::LlmContextParams cp;
        cp.n_ctx = p.n_ctx;
        cp.n_threads = p.n_threads;
        cp.n_batch = p.n_batch;
        if (p.kv_cache_type) cp.kv_cache_type = p.kv_cache_type;
        const minicpmo::ComputeType compute = minicpmo::resolve_compute_type(p.compute_type ? p.compute_type : "");
        auto s = std::make_unique<minicpmo_session>();
        s->impl = std::make_unique<minicpmo::OmniSession>(model->impl, cp, compute);
        *out_session = s.release();
    });
}

void minicpmo_session_free(minicpmo_session * session) { delete session; }

minicpmo_status minicpmo_session_reset(minicpmo_session * session) {
    return guarded([&] {
        require(session != nullptr, "session is NULL");
        session->impl->reset();
    });
}

minicpmo_status minicpmo_session_chat(minicpmo_session * session, const minicpmo_message * messages,
                                      size_t n_messages, const minicpmo_generate_params * params,
                                      minicpmo_text_callback on_text, void * user_data, char ** out_reply,
                                      size_t * out_len) {
    return minicpmo_session_chat_images(session, messages, n_messages, nullptr, 0, -1, params, on_text, user_data,
                                        out_reply, out_len);
}

minicpmo_status minicpmo_session_chat_images(minicpmo_session * session, const minicpmo_message * messages,
                                             size_t n_messages, const minicpmo_image * images, size_t n_images,
                                             int32_t use_image_id, const minicpmo_generate_params * params,
                                             minicpmo_text_callback on_text, void * user_data, char ** out_reply,
                                             size_t * out_len) {
    return minicpmo_session_chat_media(session, messages, n_messages, images, n_images, use_image_id, nullptr, 0, params,
                                       on_text, user_data, out_reply, out_len);
}

minicpmo_status minicpmo_session_chat_media(minicpmo_session * session, const minicpmo_message * messages,
                                            size_t n_messages, const minicpmo_image * images, size_t n_images,
                                            int32_t use_image_id, const minicpmo_audio * audios, size_t n_audios,
                                            const minicpmo_generate_params * params, minicpmo_text_callback on_text,
                                            void * user_data, char ** out_reply, size_t * out_len) {
    return guarded([&] {
        require(session != nullptr, "session is NULL");
        if (out_reply) *out_reply = nullptr;
        const minicpmo_generate_params p = params ? *params : minicpmo_generate_default_params();
        const minicpmo::ChatRequest request =
            chat_request(messages, n_messages, images, n_images, use_image_id, audios, n_audios, p);
        minicpmo::OmniSession & s = *session->impl;
        const auto hold = s.enter("minicpmo_session_chat");
        // a text reply; with generate_audio its hidden states stay for minicpmo_session_speak_reply
        const auto reply = minicpmo::start_reply(s, request, reply_options(p, minicpmo::ReplySpeech::none, nullptr));
        hand_out(drive_reply(s, *reply, on_text, nullptr, user_data), out_reply, out_len);
    });
}

minicpmo_status minicpmo_session_prefill_audio(minicpmo_session * session, const minicpmo_audio * audio) {
    return guarded([&] {
        require(session != nullptr, "session is NULL");
        require(audio != nullptr, "audio is NULL");
        session->impl->append_audio(to_audio(*audio));
    });
}

minicpmo_status minicpmo_session_prefill_image(minicpmo_session * session, const minicpmo_image * image,
                                               int32_t image_id) {
    return guarded([&] {
        require(session != nullptr, "session is NULL");
        require(image != nullptr, "image is NULL");
        session->impl->append_image(to_image(*image), image_id);
    });
}

minicpmo_status minicpmo_session_prepare_images(minicpmo_session * session, int32_t width, int32_t height,
                                               int32_t max_slice_nums) {
    return guarded([&] {
        require(session != nullptr, "session is NULL");
        session->impl->prepare_images(width, height, max_slice_nums);
    });
}

minicpmo_status minicpmo_session_speak_reply(minicpmo_session * session, const char * voice, uint64_t seed,
                                             int32_t max_speech_tokens, minicpmo_audio_callback on_audio,
                                             void * user_data) {
    return guarded([&] {
        require(session != nullptr, "session is NULL");
        require(on_audio != nullptr, "on_audio is NULL");
        require(max_speech_tokens >= 0, "max_speech_tokens must be >= 0");
        minicpmo::OmniSession & s = *session->impl;
        const auto hold = s.enter("minicpmo_session_speak_reply");
        std::function<double()> draw;
        if (seed != 0) {
            s.token2wav().reseed(seed);
            draw = minicpmo::seeded_uniform_draws(seed);
        }
        const std::vector<float> audio = s.speak_reply(draw, voice ? voice : "", max_speech_tokens);
        call_audio(s, on_audio, audio, s.token2wav().sample_rate(), user_data);
    });
}

minicpmo_status minicpmo_model_check_voice(const minicpmo_model * model, const char * voice) {
    return guarded([&] {
        require(model != nullptr, "model is NULL");
        model->impl->voices()->get(voice ? voice : "");
    });
}

minicpmo_status minicpmo_voice_from_pcm(const minicpmo_model * model, const float * pcm, size_t n_samples,
                                        int32_t sample_rate, int32_t n_threads, minicpmo_voice ** out_voice) {
    return guarded([&] {
        require(model != nullptr, "model is NULL");
        require(out_voice != nullptr, "out_voice is NULL");
        *out_voice = nullptr;
        require(n_samples == 0 || pcm != nullptr, "pcm is NULL");
        require(n_threads >= 0 && n_threads <= 512, "n_threads must be 0 (all cores) .. 512");
        auto v = std::make_unique<minicpmo_voice>();
        v->impl = std::make_unique<minicpmo::ClonedVoice>(*model->impl, pcm, n_samples, sample_rate, n_threads);
        *out_voice = v.release();
    });
}

const char * minicpmo_voice_name(const minicpmo_voice * voice) { return voice ? voice->impl->name().c_str() : ""; }

minicpmo_status minicpmo_voice_prompt(const minicpmo_voice * voice, const int32_t ** tokens, size_t * n_tokens,
                                      const float ** spk, size_t * spk_dim, const float ** mel, size_t * n_frames,
                                      int32_t * n_mel) {
    return guarded([&] {
        require(voice != nullptr, "voice is NULL");
        const minicpmo::VoicePrompt & p = voice->impl->prompt();
        if (tokens) *tokens = p.tokens.data();
        if (n_tokens) *n_tokens = p.tokens.size();
        if (spk) *spk = p.spk.data();
        if (spk_dim) *spk_dim = p.spk.size();
        if (mel) *mel = p.mel.data();
        if (n_frames) *n_frames = p.n_mel > 0 ? p.mel.size() / static_cast<size_t>(p.n_mel) : 0;
        if (n_mel) *n_mel = p.n_mel;
    });
}

void minicpmo_voice_free(minicpmo_voice * voice) {
    delete voice;
}

minicpmo_status minicpmo_session_chat_spoken(minicpmo_session * session, const minicpmo_message * messages,
                                             size_t n_messages, const minicpmo_image * images, size_t n_images,
                                             int32_t use_image_id, const minicpmo_audio * audios, size_t n_audios,
                                             const minicpmo_generate_params * params, const char * voice,
                                             minicpmo_text_callback on_text, minicpmo_audio_callback on_audio,
                                             void * user_data, char ** out_reply, size_t * out_len) {
    return guarded([&] {
        require(session != nullptr, "session is NULL");
        require(on_audio != nullptr, "on_audio is NULL");
        if (out_reply) *out_reply = nullptr;
        const minicpmo_generate_params p = params ? *params : minicpmo_generate_default_params();
        const minicpmo::ChatRequest request =
            chat_request(messages, n_messages, images, n_images, use_image_id, audios, n_audios, p);
        minicpmo::OmniSession & s = *session->impl;
        const auto hold = s.enter("minicpmo_session_chat_spoken");
        const auto reply = minicpmo::start_reply(s, request, reply_options(p, minicpmo::ReplySpeech::streamed, voice));
        hand_out(drive_reply(s, *reply, on_text, on_audio, user_data), out_reply, out_len);
    });
}

minicpmo_status minicpmo_session_streaming_prefill(minicpmo_session * session, const char * role,
                                                   const char * content, const minicpmo_image * images,
                                                   size_t n_images, const minicpmo_audio * audios, size_t n_audios) {
    return guarded([&] {
        require(session != nullptr, "session is NULL");
        require(role != nullptr, "role is NULL");
        const std::vector<minicpmo::ImageInput> ims = to_images(images, n_images);
        const std::vector<minicpmo::AudioInput> sounds = to_audios(audios, n_audios);
        const auto hold = session->impl->enter("minicpmo_session_streaming_prefill");
        session->streaming().prefill(role, content ? content : "", ims, sounds);
    });
}

minicpmo_status minicpmo_session_streaming_generate(minicpmo_session * session, const minicpmo_generate_params * params,
                                                    const char * voice, minicpmo_text_callback on_text,
                                                    minicpmo_audio_callback on_audio, void * user_data,
                                                    char ** out_reply, size_t * out_len) {
    return guarded([&] {
        require(session != nullptr, "session is NULL");
        if (out_reply) *out_reply = nullptr;
        const minicpmo_generate_params p = params ? *params : minicpmo_generate_default_params();
        require(!p.generate_audio || on_audio != nullptr, "on_audio is NULL (generate_audio is set)");
        minicpmo::OmniSession & s = *session->impl;
        const auto hold = s.enter("minicpmo_session_streaming_generate");
        const minicpmo::ReplySpeech speech = p.generate_audio ? minicpmo::ReplySpeech::streamed : minicpmo::ReplySpeech::none;
        const auto reply = session->streaming().start_reply(p.enable_thinking, reply_options(p, speech, voice));
        hand_out(drive_reply(s, *reply, on_text, on_audio, user_data), out_reply, out_len);
    });
}

minicpmo_status minicpmo_session_start_reply(minicpmo_session * session, const minicpmo_message * messages,
                                             size_t n_messages, const minicpmo_image * images, size_t n_images,
                                             int32_t use_image_id, const minicpmo_audio * audios, size_t n_audios,
                                             const minicpmo_generate_params * params, minicpmo_speech speech,
                                             const char * voice, minicpmo_reply ** out_reply) {
    return guarded([&] {
        require(session != nullptr, "session is NULL");
        require(out_reply != nullptr, "out_reply is NULL");
        *out_reply = nullptr;
        minicpmo::ReplySpeech mode;
        switch (speech) {
            case MINICPMO_SPEECH_NONE: mode = minicpmo::ReplySpeech::none; break;
            case MINICPMO_SPEECH_WHOLE: mode = minicpmo::ReplySpeech::whole; break;
            case MINICPMO_SPEECH_STREAMED: mode = minicpmo::ReplySpeech::streamed; break;
            default:
                minicpmo::fail(minicpmo::Status::invalid_argument,
                               "speech must be 0 (none), 1 (whole) or 2 (streamed), got " + std::to_string(speech));
        }
        const minicpmo_generate_params p = params ? *params : minicpmo_generate_default_params();
        const minicpmo::ChatRequest request =
            chat_request(messages, n_messages, images, n_images, use_image_id, audios, n_audios, p);
        auto r = std::make_unique<minicpmo_reply>();
        r->session = session->impl.get();
        r->impl = minicpmo::start_reply(*session->impl, request, reply_options(p, mode, voice));
        r->text_given = true;  // no step yet
        *out_reply = r.release();
    });
}

minicpmo_status minicpmo_reply_next(minicpmo_reply * reply, minicpmo_reply_chunk * out_chunk) {
    return guarded([&] {
        require(reply != nullptr, "reply is NULL");
        require(out_chunk != nullptr, "out_chunk is NULL");
        *out_chunk = minicpmo_reply_chunk{};
        out_chunk->text = "";
        // a step may finish several waveforms: they are handed out one per call, the text first
        const bool drained = reply->text_given && reply->next_audio >= reply->step.audio.size();
        if (drained && reply->more) {
            reply->more = reply->impl->next(reply->step);
            reply->text_given = false;
            reply->next_audio = 0;
        }
        if (!reply->text_given) {
            out_chunk->text = reply->step.text.c_str();
            out_chunk->text_len = reply->step.text.size();
            reply->text_given = true;
        }
        if (reply->next_audio < reply->step.audio.size()) {
            const std::vector<float> & a = reply->step.audio[reply->next_audio++];
            out_chunk->audio = a.data();
            out_chunk->n_audio = a.size();
            out_chunk->sample_rate = reply->impl->sample_rate();
        }
        out_chunk->done = !reply->more && reply->next_audio >= reply->step.audio.size();
    });
}

void minicpmo_reply_stop(minicpmo_reply * reply) {
    if (reply && reply->impl) reply->impl->request_stop();
}

minicpmo_finish_reason minicpmo_reply_finish_reason(const minicpmo_reply * reply) {
    return reply && reply->impl ? to_finish_reason(reply->impl->finish_reason()) : MINICPMO_FINISH_NONE;
}

void minicpmo_reply_free(minicpmo_reply * reply) { delete reply; }

minicpmo_status minicpmo_session_prefill_text(minicpmo_session * session, const char * text) {
    return guarded([&] {
        require(session != nullptr, "session is NULL");
        require(text != nullptr, "text is NULL");
        session->impl->append_text(text);
    });
}

minicpmo_status minicpmo_session_generate(minicpmo_session * session, const minicpmo_generate_params * params,
                                          minicpmo_text_callback on_text, void * user_data, char ** out_reply,
                                          size_t * out_len) {
    return guarded([&] {
        require(session != nullptr, "session is NULL");
        if (out_reply) *out_reply = nullptr;
        const minicpmo_generate_params p = params ? *params : minicpmo_generate_default_params();
        minicpmo::OmniSession & s = *session->impl;
        const auto hold = s.enter("minicpmo_session_generate");
        minicpmo::ReplyStream reply(s, reply_options(p, minicpmo::ReplySpeech::none, nullptr), minicpmo::ReplyEnding::chat);
        hand_out(drive_reply(s, reply, on_text, nullptr, user_data), out_reply, out_len);
    });
}

int32_t minicpmo_session_n_past(const minicpmo_session * session) { return session ? session->impl->n_past() : 0; }

minicpmo_status minicpmo_session_forward_media(minicpmo_session * session, const minicpmo_message * messages,
                                               size_t n_messages, const minicpmo_image * images, size_t n_images,
                                               int32_t use_image_id, const minicpmo_audio * audios, size_t n_audios,
                                               const minicpmo_generate_params * params, size_t capacity,
                                               int32_t * out_tokens, uint8_t * out_is_media, float * out_logits,
                                               float * out_hidden, size_t * out_n_positions) {
    return guarded([&] {
        require(session != nullptr, "session is NULL");
        require(out_n_positions != nullptr, "out_n_positions is NULL");
        *out_n_positions = 0;
        const minicpmo_generate_params p = params ? *params : minicpmo_generate_default_params();
        const minicpmo::ChatRequest request =
            chat_request(messages, n_messages, images, n_images, use_image_id, audios, n_audios, p);
        const std::vector<minicpmo::ImageInput> & ims = request.images;
        const std::vector<minicpmo::AudioInput> & sounds = request.audios;
        minicpmo::OmniSession & s = *session->impl;
        const auto hold = s.enter("minicpmo_session_forward_media");
        // the layout first: it gives the length without encoding or decoding anything
        const minicpmo::MediaPrompt prompt =
            s.media_prompt(minicpmo::render_request(request, false), ims, sounds, request.media);
        const size_t n = prompt.tokens.size();
        *out_n_positions = n;
        if (!out_tokens && !out_is_media && !out_logits && !out_hidden) return;
        if (n > capacity) {
            minicpmo::fail(minicpmo::Status::invalid_argument,
                           "the prompt has " + std::to_string(n) + " positions but the output buffers hold " +
                               std::to_string(capacity) + " (call again with capacity >= *out_n_positions)");
        }
        const minicpmo::PromptForward r = minicpmo::forward_media(s, prompt, ims, sounds, out_logits != nullptr);
        if (out_tokens) std::copy(r.tokens.begin(), r.tokens.end(), out_tokens);
        if (out_is_media) std::copy(r.is_media.begin(), r.is_media.end(), out_is_media);
        if (out_logits) std::copy(r.logits.begin(), r.logits.end(), out_logits);
        if (out_hidden) std::copy(r.hidden.begin(), r.hidden.end(), out_hidden);
    });
}

minicpmo_finish_reason minicpmo_session_finish_reason(const minicpmo_session * session) {
    return session ? to_finish_reason(session->impl->finish_reason()) : MINICPMO_FINISH_NONE;
}

const char * minicpmo_finish_reason_name(minicpmo_finish_reason reason) {
    switch (reason) {
        case MINICPMO_FINISH_NONE: return "";
        case MINICPMO_FINISH_STOP: return "stop";
        case MINICPMO_FINISH_LENGTH: return "length";
        case MINICPMO_FINISH_CONTEXT: return "context";
        case MINICPMO_FINISH_CANCELLED: return "cancelled";
    }
    return "";
}

void minicpmo_string_free(char * s) { std::free(s); }

minicpmo_status minicpmo_quantize_llm(const char * in_path, const char * out_path, const char * type,
                                      int32_t n_threads) {
    return guarded([&] {
        require(in_path && out_path && type, "in_path, out_path and type must not be NULL");
        minicpmo::quantize_llm(in_path, out_path, type, n_threads, nullptr);
    });
}

minicpmo_duplex_params minicpmo_duplex_default_params(void) {
    const minicpmo::DuplexOptions d;
    minicpmo_duplex_params p;
    p.generate_audio = true;
    p.voice = nullptr;
    p.seed = 0;
    p.sliding_window = d.sliding_window;
    p.window_high = d.window_high;
    p.window_low = d.window_low;
    p.window_mode = MINICPMO_WINDOW_OFF;  // d.window_mode
    p.context_max_units = d.context.max_units;
    p.context_previous_max_tokens = d.context.previous_max_tokens;
    p.context_previous_marker = nullptr;  // d.context.previous_marker
    return p;
}

minicpmo_duplex_generate_params minicpmo_duplex_generate_default_params(void) {
    const minicpmo::DuplexGenerateParams d;  // the official duplex defaults (spec §6.2)
    minicpmo_duplex_generate_params p;
    p.greedy = d.decode.greedy;
    p.max_new_speak_tokens = d.max_new_speak_tokens;
    p.temperature = d.decode.temperature;
    p.top_k = d.decode.top_k;
    p.top_p = d.decode.top_p;
    p.repetition_penalty = d.decode.repetition_penalty;
    p.repetition_window = d.decode.repetition_window;
    p.length_penalty = d.decode.length_penalty;
    p.listen_prob_scale = d.decode.listen_prob_scale;
    p.force_listen = d.force_listen;
    p.listen_top_k = d.decode.listen_top_k;
    return p;
}

minicpmo_status minicpmo_duplex_new(minicpmo_session * session, const minicpmo_duplex_params * params,
                                    minicpmo_duplex ** out_duplex) {
    return guarded([&] {
        require(session != nullptr, "session is NULL");
        require(out_duplex != nullptr, "out_duplex is NULL");
        *out_duplex = nullptr;
        const minicpmo_duplex_params p = params ? *params : minicpmo_duplex_default_params();
        minicpmo::DuplexOptions o;
        o.sliding_window = p.sliding_window;
        o.window_high = p.window_high;
        o.window_low = p.window_low;
        switch (p.window_mode) {
            case MINICPMO_WINDOW_OFF: o.window_mode = minicpmo::DuplexWindowMode::off; break;
            case MINICPMO_WINDOW_BASIC: o.window_mode = minicpmo::DuplexWindowMode::basic; break;
            case MINICPMO_WINDOW_CONTEXT: o.window_mode = minicpmo::DuplexWindowMode::context; break;
            default:
                minicpmo::fail(minicpmo::Status::invalid_argument,
                               "window_mode must be 0 (off), 1 (basic) or 2 (context), got " + std::to_string(p.window_mode));
        }
        o.context.max_units = p.context_max_units;
        o.context.previous_max_tokens = p.context_previous_max_tokens;
        if (p.context_previous_marker) o.context.previous_marker = p.context_previous_marker;
        auto d = std::make_unique<minicpmo_duplex>();
        d->impl = std::make_unique<minicpmo::DuplexSession>(*session->impl, o, p.seed);
        d->impl->set_speech(p.generate_audio, p.voice ? p.voice : "", p.seed);
        *out_duplex = d.release();
    });
}

void minicpmo_duplex_free(minicpmo_duplex * duplex) { delete duplex; }

minicpmo_status minicpmo_duplex_prepare(minicpmo_duplex * duplex, const char * prefix, const char * suffix,
                                        const minicpmo_audio * ref_audio) {
    return guarded([&] {
        require(duplex != nullptr, "duplex is NULL");
        const auto hold = duplex->impl->session().enter("minicpmo_duplex_prepare");
        minicpmo::AudioInput ref;
        if (ref_audio) ref = to_audio(*ref_audio);
        duplex->impl->prepare(prefix ? prefix : "", suffix ? suffix : "", ref.pcm, ref.n_samples);
    });
}

minicpmo_status minicpmo_duplex_prefill(minicpmo_duplex * duplex, const float * pcm, size_t n_samples,
                                        const minicpmo_image * frames, size_t n_frames, const char * text) {
    return guarded([&] {
        require(duplex != nullptr, "duplex is NULL");
        const auto hold = duplex->impl->session().enter("minicpmo_duplex_prefill");
        require(pcm != nullptr || n_samples == 0, "pcm is NULL");
        require(frames != nullptr || n_frames == 0, "frames is NULL");
        minicpmo::require_finite_pcm(pcm, n_samples, "the unit's audio");
        minicpmo::DuplexUnitInput in;
        in.pcm = pcm;
        in.n_samples = n_samples;
        for (size_t i = 0; i < n_frames; ++i) in.frames.push_back(to_image(frames[i]));  // 0 slices: unsliced
        if (text) in.text = text;
        duplex->impl->prefill_unit(in);
    });
}

void minicpmo_duplex_unit_clear(minicpmo_duplex_unit * unit) {
    if (!unit) return;
    std::free(unit->text);
    std::free(unit->audio);
    *unit = minicpmo_duplex_unit{};
}

minicpmo_status minicpmo_duplex_generate(minicpmo_duplex * duplex, const minicpmo_duplex_generate_params * params,
                                         minicpmo_duplex_unit * out_unit) {
    return guarded([&] {
        require(duplex != nullptr, "duplex is NULL");
        const auto hold = duplex->impl->session().enter("minicpmo_duplex_generate");
        require(out_unit != nullptr, "out_unit is NULL");
        *out_unit = minicpmo_duplex_unit{};
        const minicpmo_duplex_generate_params p = params ? *params : minicpmo_duplex_generate_default_params();
        minicpmo::DuplexGenerateParams g;
        g.decode.greedy = p.greedy;
        g.decode.temperature = p.temperature;
        g.decode.top_k = p.top_k;
        g.decode.top_p = p.top_p;
        g.decode.repetition_penalty = p.repetition_penalty;
        g.decode.repetition_window = p.repetition_window;
        g.decode.length_penalty = p.length_penalty;
        g.decode.listen_prob_scale = p.listen_prob_scale;
        g.decode.listen_top_k = p.listen_top_k;
        g.max_new_speak_tokens = p.max_new_speak_tokens;
        g.force_listen = p.force_listen;
        minicpmo::DuplexUnitResult r = duplex->impl->generate_unit(g);
        minicpmo_duplex_unit u{};
        u.is_listen = r.is_listen;
        u.end_of_turn = r.end_of_turn;
        u.current_time = r.current_time;
        hand_out(r.text, &u.text, &u.text_len);
        if (r.has_audio) {
            u.audio = static_cast<float *>(std::malloc(std::max<size_t>(1, r.audio.size()) * sizeof(float)));
            if (!u.audio) {
                std::free(u.text);
                throw std::bad_alloc();
            }
            std::memcpy(u.audio, r.audio.data(), r.audio.size() * sizeof(float));
            u.n_audio = r.audio.size();
            u.sample_rate = duplex->impl->session().token2wav().sample_rate();
        }
        *out_unit = u;
    });
}

minicpmo_status minicpmo_duplex_interrupt(minicpmo_duplex * duplex) {
    return guarded([&] {
        require(duplex != nullptr, "duplex is NULL");
        const auto hold = duplex->impl->session().enter("minicpmo_duplex_interrupt");
        duplex->impl->interrupt();
    });
}

}  // extern "C"
