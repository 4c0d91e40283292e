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

#include "core/error.h"
#include "core/llama_log.h"
#include "core/uniform_random.h"
#include "llm/quantize.h"
#include "session/duplex_session.h"
#include "session/media_forward.h"
#include "session/omni_model.h"
#include "session/omni_session.h"
#include "session/simplex_stream.h"
#include "session/spoken_reply_stream.h"
#include "speech/speech_synthesizer.h"
#include "speech/voice_bank.h"

struct minicpmo_model {
    std::shared_ptr<minicpmo::OmniModel> impl;
};

struct minicpmo_session {
    std::unique_ptr<minicpmo::OmniSession> impl;
    std::unique_ptr<minicpmo::SimplexStream> simplex;  // made by the first streaming call

    minicpmo::SimplexStream & streaming() {
        if (!simplex) simplex = std::make_unique<minicpmo::SimplexStream>(*impl);
        return *simplex;
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
    for (size_t i = 0; i < a.n_samples; ++i) require(std::isfinite(a.samples[i]), "an audio has NaN or infinite samples");
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

// The template and media options of a chat_media-style call (forward_media renders the same prompt).
minicpmo::ChatTemplateOptions chat_options(const minicpmo_generate_params & p, size_t n_audios) {
    minicpmo::ChatTemplateOptions opts;
    opts.enable_thinking = p.enable_thinking;
    opts.use_tts_template = p.use_tts_template || p.generate_audio || n_audios > 0;  // as the official chat() does
    return opts;
}

minicpmo::MediaPromptOptions media_options(int32_t use_image_id) {
    minicpmo::MediaPromptOptions mo;
    mo.use_image_id = use_image_id < 0 ? -1 : (use_image_id ? 1 : 0);
    return mo;
}

// Calls into the same session from a callback are refused (busy): the call that made the callback
// is in the middle of its work.
std::function<bool(const std::string &)> piece_sink(minicpmo::Session & s, minicpmo_text_callback on_text,
                                                    void * user_data) {
    return [&s, on_text, user_data](const std::string & piece) {
        if (on_text == nullptr) return true;
        const minicpmo::CallGuard::Callout callout(s.guard());
        return on_text(piece.data(), piece.size(), user_data);
    };
}

bool call_text(minicpmo::Session & s, minicpmo_text_callback on_text, const std::string & piece, void * user_data) {
    return piece_sink(s, on_text, user_data)(piece);
}

bool call_audio(minicpmo::Session & s, minicpmo_audio_callback on_audio, const std::vector<float> & samples,
                int32_t sample_rate, void * user_data) {
    const minicpmo::CallGuard::Callout callout(s.guard());
    return on_audio(samples.data(), samples.size(), sample_rate, user_data);
}

// Streams a spoken reply from a prompt that ends with <|tts_bos|> (chat_spoken, streaming_generate):
// text pieces to on_text, 1-s chunks to on_audio; either returning false stops it. Returns the text.
std::string speak_streamed(minicpmo::OmniSession & s, const minicpmo_generate_params & p, const char * voice,
                           minicpmo_text_callback on_text, minicpmo_audio_callback on_audio, void * user_data) {
    require(p.max_speech_tokens >= 0, "max_speech_tokens must be >= 0");
    std::function<double()> draw;
    if (p.do_sample) {
        s.speech().reseed(p.seed);
        draw = minicpmo::seeded_uniform_draws(p.seed);
    }
    minicpmo::SpokenReplyStream stream(s, to_generate(p), voice ? voice : "", draw, p.max_speech_tokens);
    minicpmo::SpokenPiece piece;
    std::string reply;
    bool more = true;
    while (more) {
        more = stream.next(piece);
        reply += piece.text;
        const bool keep_text = piece.text.empty() || call_text(s, on_text, piece.text, user_data);
        bool keep_audio = true;
        for (const std::vector<float> & chunk : piece.audio) {
            if (keep_audio) keep_audio = call_audio(s, on_audio, chunk, stream.sample_rate(), user_data);
        }
        if (more && (!keep_text || !keep_audio)) {
            stream.cancel();
            more = false;
        }
    }
    return reply;
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
    return p;
}

minicpmo_session_params minicpmo_session_default_params(void) {
    minicpmo_session_params p;
    p.n_ctx = 8192;
    p.n_threads = 0;
    p.n_batch = 512;
    p.kv_cache_type = nullptr;
    return p;
}

minicpmo_generate_params minicpmo_generate_default_params(void) {
    // the official chat() sampling defaults (spec §4.5)
    minicpmo_generate_params p;
    p.do_sample = true;
    p.temperature = 0.7f;
    p.top_p = 0.8f;
    p.top_k = 100;
    p.repetition_penalty = 1.02f;
    p.seed = 0;
    p.max_new_tokens = 4096;
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
        auto s = std::make_unique<minicpmo_session>();
        s->impl = std::make_unique<minicpmo::OmniSession>(model->impl, cp);
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
        const std::vector<minicpmo::ChatMessage> msgs = to_messages(messages, n_messages);
        const std::vector<minicpmo::ImageInput> ims = to_images(images, n_images);
        const std::vector<minicpmo::AudioInput> sounds = to_audios(audios, n_audios);
        const minicpmo_generate_params p = params ? *params : minicpmo_generate_default_params();
        const auto hold = session->impl->enter("minicpmo_session_chat");
        hand_out(session->impl->chat(msgs, ims, sounds, media_options(use_image_id), chat_options(p, n_audios),
                                     to_generate(p), piece_sink(*session->impl, on_text, user_data)),
                 out_reply, out_len);
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
            s.speech().reseed(seed);
            draw = minicpmo::seeded_uniform_draws(seed);
        }
        const std::vector<float> audio = s.speak_reply(draw, voice ? voice : "", max_speech_tokens);
        call_audio(s, on_audio, audio, s.speech().sample_rate(), user_data);
    });
}

minicpmo_status minicpmo_model_check_voice(const minicpmo_model * model, const char * voice) {
    return guarded([&] {
        require(model != nullptr, "model is NULL");
        model->impl->voices()->get(voice ? voice : "");
    });
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
        const std::vector<minicpmo::ChatMessage> msgs = to_messages(messages, n_messages);
        const std::vector<minicpmo::ImageInput> ims = to_images(images, n_images);
        const std::vector<minicpmo::AudioInput> sounds = to_audios(audios, n_audios);
        const minicpmo_generate_params p = params ? *params : minicpmo_generate_default_params();
        minicpmo::ChatTemplateOptions opts;
        opts.enable_thinking = p.enable_thinking;
        opts.use_tts_template = true;
        minicpmo::MediaPromptOptions mo;
        mo.use_image_id = use_image_id < 0 ? -1 : (use_image_id ? 1 : 0);
        minicpmo::OmniSession & s = *session->impl;
        const auto hold = s.enter("minicpmo_session_chat_spoken");
        s.prefill_media(minicpmo::render_chat(msgs, opts), ims, sounds, mo);
        hand_out(speak_streamed(s, p, voice, on_text, on_audio, user_data), out_reply, out_len);
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
        const auto hold = session->impl->enter("minicpmo_session_streaming_generate");
        minicpmo::SimplexStream & stream = session->streaming();
        stream.open_reply(p.enable_thinking);
        std::string reply;
        if (p.generate_audio) {
            reply = speak_streamed(*session->impl, p, voice, on_text, on_audio, user_data);
        } else {
            minicpmo::GenerateParams g = to_generate(p);
            stream.begin_text_reply(g);
            std::string piece;
            bool more = true;
            while (more) {
                more = stream.text_step(piece);
                if (piece.empty()) continue;
                reply += piece;
                if (!call_text(*session->impl, on_text, piece, user_data) && more) {
                    session->impl->cancel();
                    more = false;
                }
            }
        }
        hand_out(reply, out_reply, out_len);
    });
}

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
        const auto hold = session->impl->enter("minicpmo_session_generate");
        hand_out(session->impl->generate(to_generate(p), piece_sink(*session->impl, on_text, user_data)), out_reply,
                 out_len);
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
        const std::vector<minicpmo::ChatMessage> msgs = to_messages(messages, n_messages);
        const std::vector<minicpmo::ImageInput> ims = to_images(images, n_images);
        const std::vector<minicpmo::AudioInput> sounds = to_audios(audios, n_audios);
        const minicpmo_generate_params p = params ? *params : minicpmo_generate_default_params();
        minicpmo::OmniSession & s = *session->impl;
        const auto hold = s.enter("minicpmo_session_forward_media");
        // the layout first: it gives the length without encoding or decoding anything
        const minicpmo::MediaPrompt prompt =
            s.media_prompt(minicpmo::render_chat(msgs, chat_options(p, n_audios)), ims, sounds, media_options(use_image_id));
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
    if (!session) return MINICPMO_FINISH_NONE;
    switch (session->impl->finish_reason()) {
        case minicpmo::FinishReason::none: return MINICPMO_FINISH_NONE;
        case minicpmo::FinishReason::stop: return MINICPMO_FINISH_STOP;
        case minicpmo::FinishReason::length: return MINICPMO_FINISH_LENGTH;
        case minicpmo::FinishReason::context: return MINICPMO_FINISH_CONTEXT;
        case minicpmo::FinishReason::cancelled: return MINICPMO_FINISH_CANCELLED;
    }
    return MINICPMO_FINISH_NONE;
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
    minicpmo_duplex_params p;
    p.generate_audio = true;
    p.voice = nullptr;
    p.seed = 0;
    p.sliding_window = false;
    p.window_high = 4000;
    p.window_low = 3500;
    p.window_mode = MINICPMO_WINDOW_OFF;
    p.context_max_units = 24;
    p.context_previous_max_tokens = 500;
    p.context_previous_marker = nullptr;
    return p;
}

minicpmo_duplex_generate_params minicpmo_duplex_generate_default_params(void) {
    // the official duplex defaults (spec §6.2)
    minicpmo_duplex_generate_params p;
    p.greedy = false;
    p.max_new_speak_tokens = 20;
    p.temperature = 0.7f;
    p.top_k = 20;
    p.top_p = 0.8f;
    p.repetition_penalty = 1.05f;
    p.repetition_window = 512;
    p.length_penalty = 1.1f;
    p.listen_prob_scale = 1.0f;
    p.force_listen = false;
    p.listen_top_k = 0;
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
        for (size_t i = 0; i < n_samples; ++i) require(std::isfinite(pcm[i]), "the unit's audio has NaN or infinite samples");
        minicpmo::DuplexUnitInput in;
        in.pcm = pcm;
        in.n_samples = n_samples;
        for (size_t i = 0; i < n_frames; ++i) {
            minicpmo::ImageInput im = to_image(frames[i]);
            if (im.max_slice_nums == 0) im.max_slice_nums = 1;  // duplex frames are not sliced by default
            in.frames.push_back(im);
        }
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
            u.sample_rate = duplex->impl->session().speech().sample_rate();
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
