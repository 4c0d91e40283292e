/*
 * minicpmo.h - C API of minicpmo-cpp, a runtime for the MiniCPM-o 4.5 omni model.
 *
 * Opaque handles; every call returns a minicpmo_status and, on failure, leaves a message readable
 * with minicpmo_last_error() on the same thread. Text is UTF-8. Callbacks take a user_data pointer.
 *
 *   minicpmo_model * model;
 *   minicpmo_model_params mp = minicpmo_model_default_params();
 *   if (minicpmo_model_load("MiniCPM-o-4_5-Q4_K_M.gguf", &mp, &model) != MINICPMO_OK) {
 *       fprintf(stderr, "%s\n", minicpmo_last_error());
 *   }
 *
 * Threads: a model is shared read-only by any number of sessions (one KV cache each), and different
 * sessions may run concurrently. A session serves one call at a time: a call made while another
 * thread is inside a call on the same session (or on a duplex conversation over it) returns
 * MINICPMO_ERR_BUSY at once, without waiting and without touching the session; so does a call
 * into the same session from inside one of its callbacks. Serialize the calls of one session
 * yourself (e.g. a mutex) or give each thread its own session. Freeing a session or a duplex
 * conversation while another thread uses it is undefined.
 */
#ifndef MINICPMO_H
#define MINICPMO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32) && !defined(__MINGW32__)
#    ifdef MINICPMO_BUILD
#        define MINICPMO_API __declspec(dllexport)
#    else
#        define MINICPMO_API __declspec(dllimport)
#    endif
#else
#    define MINICPMO_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum minicpmo_status {
    MINICPMO_OK = 0,
    MINICPMO_ERR_INVALID_ARGUMENT = 1, /* bad parameter, bad UTF-8, unknown role, ... */
    MINICPMO_ERR_IO = 2,               /* file missing or unreadable */
    MINICPMO_ERR_BAD_MODEL = 3,        /* not a GGUF, wrong architecture, truncated, wrong tokenizer */
    MINICPMO_ERR_CONTEXT_FULL = 4,     /* the input does not fit in the context window */
    MINICPMO_ERR_CANCELLED = 5,
    MINICPMO_ERR_UNSUPPORTED = 6,      /* needs a component the model files lack */
    MINICPMO_ERR_INTERNAL = 7,
    MINICPMO_ERR_BUSY = 8,             /* another thread is running a call on the same session */
    MINICPMO_ERR_CLOSED = 9,           /* the session was closed (language bindings' close()) */
} minicpmo_status;

/* Why the last reply of a session ended (minicpmo_session_finish_reason). */
typedef enum minicpmo_finish_reason {
    MINICPMO_FINISH_NONE = 0,      /* no reply yet, or one is being generated */
    MINICPMO_FINISH_STOP = 1,      /* the model ended its reply */
    MINICPMO_FINISH_LENGTH = 2,    /* max_new_tokens reached */
    MINICPMO_FINISH_CONTEXT = 3,   /* the context window (n_ctx) is full: the reply so far is returned with
                                      MINICPMO_OK; its last token is not in the KV cache */
    MINICPMO_FINISH_CANCELLED = 4, /* a callback returned false */
} minicpmo_finish_reason;

typedef struct minicpmo_model minicpmo_model;
typedef struct minicpmo_session minicpmo_session;

/* Numeric parameters are checked when they are used; a value out of range is
 * MINICPMO_ERR_INVALID_ARGUMENT with a message naming the parameter, its value and the range. */
typedef struct minicpmo_model_params {
    const char * omni_path; /* companion file; NULL = the one named in the LLM file, if present */
    int32_t n_gpu_layers;   /* -1 = all, else >= 0 (more than the model's layers = all) */
    bool use_mmap;          /* map the weights from the files (the LLM and the omni companion's CPU
                             * weights) instead of reading them into memory */
    /* where the model computes: NULL, "" or "auto" = the first GPU when there is one (with
     * n_gpu_layers = 0: everything on the CPU), "cpu", or a ggml device name ("Vulkan0", "CUDA0",
     * "MTL0"). The encoders, speech decoder and Token2Wav run there too. An unknown name is
     * MINICPMO_ERR_INVALID_ARGUMENT with a message listing the devices of this build. */
    const char * device;
} minicpmo_model_params;

typedef struct minicpmo_session_params {
    uint32_t n_ctx;    /* context window in tokens: 16 .. the model's training context */
    int32_t n_threads; /* 0 = all cores, else 1 .. 512 */
    uint32_t n_batch;  /* prompt tokens per decode call: 8 .. 65536 (above n_ctx: n_ctx) */
    const char * kv_cache_type; /* "f16" (default when NULL), "f32", "bf16", "q8_0", "q4_0" */
    /* how the encoders and the Token2Wav flow compute on the CPU: NULL, "" or "auto" = the
     * environment variable MINICPMO_COMPUTE when set, else "bf16" where oneDNN has native BF16
     * kernels for this CPU (AMX, AVX-512 BF16) and "f32" (the exact path) elsewhere; "bf16" = their
     * matrix products in BF16 through oneDNN (builds with oneDNN, CPUs with AVX-512; otherwise the
     * first image, audio or speech call fails with MINICPMO_ERR_UNSUPPORTED); "int8" = as 8-bit
     * integer products through oneDNN (any CPU with AVX2: about twice the F32 rate, a few 1e-2
     * relative from the exact path; never chosen by "auto"). Another value is
     * MINICPMO_ERR_INVALID_ARGUMENT. */
    const char * compute_type;
} minicpmo_session_params;

typedef struct minicpmo_generate_params {
    bool do_sample;           /* false = greedy */
    float temperature;        /* >= 0 (0 = greedy) */
    float top_p;              /* (0, 1] */
    int32_t top_k;            /* <= 0 = off */
    float repetition_penalty; /* > 0; 1 = off */
    uint64_t seed;
    int32_t max_new_tokens;   /* >= 0 */
    bool enable_thinking;     /* false = empty <think> block in the generation prompt */
    bool use_tts_template;    /* end the generation prompt with <|tts_bos|> (always on when audio is given) */
    bool generate_audio;      /* keep what minicpmo_session_speak_reply needs (implies use_tts_template) */
    int32_t max_speech_tokens; /* minicpmo_session_chat_spoken: speech tokens per 10-token text chunk at
                                  most; 0 = the model's (500) */
} minicpmo_generate_params;

typedef struct minicpmo_message {
    const char * role;    /* "system", "user" or "assistant" */
    const char * content; /* UTF-8 text */
} minicpmo_message;

/* Decoded RGB8 pixels (decoding files is the caller's business: stb_image, CoreGraphics, ...). */
typedef struct minicpmo_image {
    const uint8_t * rgb;    /* height rows of width * 3 bytes, no padding */
    int32_t width;
    int32_t height;
    int32_t max_slice_nums; /* high-resolution slices at most; 0 = the model's default (9); 1 = none */
} minicpmo_image;

/* Where an image goes in a message's content (the text the official processor expands). */
#define MINICPMO_IMAGE_MARKER "<image>./</image>"

/* 16 kHz mono float32 PCM (decoding and resampling are the caller's business; minicpmo-cli shows
 * one way). Samples must be finite. */
typedef struct minicpmo_audio {
    const float * samples;
    size_t n_samples;
} minicpmo_audio;

/* Where an audio goes in a message's content; it expands to <|audio_start|><unk>x N<|audio_end|>
 * with N = 10 per second. A user message with audio normally ends the prompt with <|tts_bos|>
 * (the model's spoken-reply template; set use_tts_template in minicpmo_generate_params). */
#define MINICPMO_AUDIO_MARKER "<audio>./</audio>"

/* Receives each piece of the reply as soon as it is complete UTF-8 (not NUL-terminated).
 * Return false to stop generating. */
typedef bool (*minicpmo_text_callback)(const char * piece, size_t len, void * user_data);

/* The message of the last failed call on this thread ("" if none). Valid until the next call. */
MINICPMO_API const char * minicpmo_last_error(void);
MINICPMO_API const char * minicpmo_status_name(minicpmo_status status);

MINICPMO_API minicpmo_model_params minicpmo_model_default_params(void);
MINICPMO_API minicpmo_session_params minicpmo_session_default_params(void);
MINICPMO_API minicpmo_generate_params minicpmo_generate_default_params(void);

/* Loads the LLM file and its omni companion. A load that goes ahead with something to know (no
 * companion found: text-only; files without the LLM fingerprint) prints "minicpmo: warning: ..."
 * lines to stderr. A companion from another conversion, or truncated, is refused. */
MINICPMO_API minicpmo_status minicpmo_model_load(const char * path, const minicpmo_model_params * params,
                                                 minicpmo_model ** out_model);
MINICPMO_API void minicpmo_model_free(minicpmo_model * model);
/* Whether the omni companion was found and loaded (image/audio/speech need it). */
MINICPMO_API bool minicpmo_model_has_omni(const minicpmo_model * model);
/* The LLM's hidden size and vocabulary size (row widths of minicpmo_session_forward_media's outputs). */
MINICPMO_API int32_t minicpmo_model_n_embd(const minicpmo_model * model);
MINICPMO_API int32_t minicpmo_model_n_vocab(const minicpmo_model * model);

MINICPMO_API minicpmo_status minicpmo_session_new(minicpmo_model * model, const minicpmo_session_params * params,
                                                  minicpmo_session ** out_session);
MINICPMO_API void minicpmo_session_free(minicpmo_session * session);
/* Forgets the conversation (clears the KV cache). */
MINICPMO_API minicpmo_status minicpmo_session_reset(minicpmo_session * session);

/* Renders the whole conversation with the chat template, reuses what the KV cache already holds
 * (earlier turns are not prefilled again), generates the assistant reply and streams it to
 * `on_text` (may be NULL). The full reply is also returned through out_reply/out_len when those are
 * non-NULL: free it with minicpmo_string_free. */
MINICPMO_API minicpmo_status minicpmo_session_chat(minicpmo_session * session, const minicpmo_message * messages,
                                                   size_t n_messages, const minicpmo_generate_params * params,
                                                   minicpmo_text_callback on_text, void * user_data,
                                                   char ** out_reply, size_t * out_len);

/* minicpmo_session_chat with images: the i-th MINICPMO_IMAGE_MARKER in the conversation (in message
 * order) is images[i]; the counts must match. Images already in the KV cache from earlier turns are
 * not encoded again. `use_image_id` < 0 = the model's default (numbered <image_id> tags), 0 = off. */
MINICPMO_API minicpmo_status minicpmo_session_chat_images(minicpmo_session * session, const minicpmo_message * messages,
                                                          size_t n_messages, const minicpmo_image * images,
                                                          size_t n_images, int32_t use_image_id,
                                                          const minicpmo_generate_params * params,
                                                          minicpmo_text_callback on_text, void * user_data,
                                                          char ** out_reply, size_t * out_len);

/* minicpmo_session_chat with images and audio: the i-th MINICPMO_IMAGE_MARKER is images[i], the
 * j-th MINICPMO_AUDIO_MARKER is audios[j] (each kind counted in message order; counts must match).
 * Media already in the KV cache from earlier turns are not encoded again. */
MINICPMO_API minicpmo_status minicpmo_session_chat_media(minicpmo_session * session, const minicpmo_message * messages,
                                                         size_t n_messages, const minicpmo_image * images,
                                                         size_t n_images, int32_t use_image_id,
                                                         const minicpmo_audio * audios, size_t n_audios,
                                                         const minicpmo_generate_params * params,
                                                         minicpmo_text_callback on_text, void * user_data,
                                                         char ** out_reply, size_t * out_len);

/* Low level: encode an audio (chat mode) and append <|audio_start|><unk>x N<|audio_end|> to the cache. */
MINICPMO_API minicpmo_status minicpmo_session_prefill_audio(minicpmo_session * session, const minicpmo_audio * audio);

/* Low level: encode an image and append its tokens (<image>...</image> and slice rows) to the cache,
 * preceded by <image_id>image_id</image_id> when image_id >= 0. */
MINICPMO_API minicpmo_status minicpmo_session_prefill_image(minicpmo_session * session, const minicpmo_image * image,
                                                            int32_t image_id);

/* Readies the vision tower for images of width x height cut into at most max_slice_nums slices (0 =
 * the model's default; 1 = one block, as live frames are): the weights packed for the fast kernels and
 * those kernels made, nothing computed, so that the first such image (a live conversation's first
 * frame) encodes as fast as the next. A no-op at compute type f32 and on a GPU. */
MINICPMO_API minicpmo_status minicpmo_session_prepare_images(minicpmo_session * session, int32_t width, int32_t height,
                                                             int32_t max_slice_nums);

/* Receives synthesized speech: n mono float32 samples at sample_rate Hz. Return false to stop. */
typedef bool (*minicpmo_audio_callback)(const float * samples, size_t n, int32_t sample_rate, void * user_data);

/* Speaks the last reply of a chat generated with generate_audio = true: the speech-token decoder
 * conditioned on the reply (up to <|tts_eos|>), then Token2Wav with `voice` (NULL or "" = the model
 * file's default voice). The whole utterance is delivered to on_audio (24 kHz). seed 0 = greedy
 * speech tokens and the session's default noise; max_speech_tokens 0 = the model's limit (2048,
 * 25 per second). */
MINICPMO_API minicpmo_status minicpmo_session_speak_reply(minicpmo_session * session, const char * voice,
                                                          uint64_t seed, int32_t max_speech_tokens,
                                                          minicpmo_audio_callback on_audio, void * user_data);

/* Checks before any generation that speech output can use `voice` (NULL or "" = the default): the
 * companion is there and holds a voice of that name (the error names the voices there are). Loads
 * the voice prompts on first use. */
MINICPMO_API minicpmo_status minicpmo_model_check_voice(const minicpmo_model * model, const char * voice);

/* A voice cloned at run time from a reference recording, as the official code clones one: the omni
 * file's speech tokenizer and CAM++ speaker encoder make its prompt tokens and x-vector, and its
 * 24 kHz log-mel conditions the vocoder. The companion must hold the voice encoders (converted with
 * the release's assets/token2wav folder); otherwise MINICPMO_ERR_UNSUPPORTED. */
typedef struct minicpmo_voice minicpmo_voice;

/* Clones a voice from mono float PCM at sample_rate Hz (any rate in [1, 768000]; 0.5 s to 17 s: the
 * streaming caches bound the prompt). n_threads 0 = all cores. The voice is usable in every speaking
 * call of the model's sessions (voice parameters, minicpmo_duplex_params.voice) by the name
 * minicpmo_voice_name() gives, until minicpmo_voice_free. Thread-safe. */
MINICPMO_API minicpmo_status minicpmo_voice_from_pcm(const minicpmo_model * model, const float * pcm, size_t n_samples,
                                                     int32_t sample_rate, int32_t n_threads, minicpmo_voice ** out_voice);
/* The name to pass as `voice` ("@voice-<n>": no voice of a file can have it). Valid until the voice is freed. */
MINICPMO_API const char * minicpmo_voice_name(const minicpmo_voice * voice);
/* The voice prompt, owned by the voice: n_tokens speech token ids, spk_dim x-vector values and
 * n_frames x n_mel prompt mel values (frame-major). Any out pointer may be NULL. */
MINICPMO_API minicpmo_status minicpmo_voice_prompt(const minicpmo_voice * voice, const int32_t ** tokens, size_t * n_tokens,
                                                   const float ** spk, size_t * spk_dim, const float ** mel,
                                                   size_t * n_frames, int32_t * n_mel);
/* Releases the voice: later calls naming it fail with MINICPMO_ERR_INVALID_ARGUMENT; a reply already
 * speaking with it finishes. NULL is a no-op. */
MINICPMO_API void minicpmo_voice_free(minicpmo_voice * voice);

/* minicpmo_session_chat_media with a streamed spoken reply (the official streaming pipeline, spec
 * §6.1): the prompt ends with <|tts_bos|>, every 10 reply tokens condition the speech decoder and
 * each second of 24 kHz speech reaches on_audio as soon as it is synthesized (24000 samples while
 * speaking; the last call holds the rest), interleaved with the text pieces on on_text (may be
 * NULL). The reply ends at <|tts_eos|>. voice NULL or "" = the model file's default voice.
 * params->do_sample false = greedy speech tokens; otherwise params->seed also seeds the speech
 * sampling and the vocoder noise. Either callback returning false stops the reply. */
MINICPMO_API minicpmo_status minicpmo_session_chat_spoken(minicpmo_session * session, const minicpmo_message * messages,
                                                          size_t n_messages, const minicpmo_image * images,
                                                          size_t n_images, int32_t use_image_id,
                                                          const minicpmo_audio * audios, size_t n_audios,
                                                          const minicpmo_generate_params * params, const char * voice,
                                                          minicpmo_text_callback on_text,
                                                          minicpmo_audio_callback on_audio, void * user_data,
                                                          char ** out_reply, size_t * out_len);

/* Simplex streaming (spec §6.1, the official streaming_prefill / streaming_generate): one message at a
 * time goes into the KV cache at once (positions continue). role "system" (only as the conversation's
 * first message), "user" or "assistant" (text only; closes an open turn). `content` holds one
 * MINICPMO_IMAGE_MARKER per image and one MINICPMO_AUDIO_MARKER per audio, in order (items joined with
 * ""). A user turn may come in many pieces, e.g. one per second: a frame (not sliced, no <image_id>)
 * and 1 s of audio, at most one audio per piece: the turn's first 1..16560 samples (front-padded with
 * zeros to 1.035 s), later exactly 16000; the audio goes through the streaming mel and the Whisper
 * streaming cache, restarted for every user turn. System audio is encoded whole with full attention.
 * An empty cache (a new session, minicpmo_session_reset) starts a new conversation. */
MINICPMO_API minicpmo_status minicpmo_session_streaming_prefill(minicpmo_session * session, const char * role,
                                                                const char * content, const minicpmo_image * images,
                                                                size_t n_images, const minicpmo_audio * audios,
                                                                size_t n_audios);

/* Ends the open user turn with "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n<|tts_bos|>"
 * (no think block with enable_thinking) and generates the reply until <|tts_eos|>, <|im_end|>, <unk> or
 * params->max_new_tokens; text pieces go to on_text (may be NULL). With params->generate_audio the
 * reply is spoken as minicpmo_session_chat_spoken does (on_audio required: 1-s chunks of 24 kHz audio
 * while the text is decoded, the rest at the end; voice NULL or "" = the default voice;
 * params->do_sample false = greedy speech tokens, else params->seed also seeds them and the vocoder
 * noise). Either callback returning false stops the reply. The reply stays in the cache: the next
 * user message continues the conversation. */
MINICPMO_API minicpmo_status minicpmo_session_streaming_generate(minicpmo_session * session,
                                                                 const minicpmo_generate_params * params,
                                                                 const char * voice, minicpmo_text_callback on_text,
                                                                 minicpmo_audio_callback on_audio, void * user_data,
                                                                 char ** out_reply, size_t * out_len);

/* ---- A reply pulled step by step (what the calls above drive with callbacks) ----
 * minicpmo_session_start_reply renders and prefills the conversation (as minicpmo_session_chat_media)
 * and starts the reply; each minicpmo_reply_next computes one step and hands out what it finished.
 * The session is held only during those calls, and must outlive the reply. A later call on the
 * session that prefills, resets or starts another reply abandons this one (its next step fails). */
typedef struct minicpmo_reply minicpmo_reply;

typedef enum minicpmo_speech {
    MINICPMO_SPEECH_NONE = 0,     /* text only */
    MINICPMO_SPEECH_WHOLE = 1,    /* the text, then its speech as one waveform (as minicpmo_session_speak_reply) */
    MINICPMO_SPEECH_STREAMED = 2, /* 1-s chunks while the text is decoded (as minicpmo_session_chat_spoken) */
} minicpmo_speech;

typedef struct minicpmo_reply_chunk {
    const char * text;  /* UTF-8 piece (not NUL-terminated, may be empty); valid until the next call */
    size_t text_len;
    const float * audio; /* one waveform, or NULL; valid until the next call on this reply */
    size_t n_audio;
    int32_t sample_rate; /* of the audio (24000) */
    bool done;           /* the reply is complete: this chunk is its last */
} minicpmo_reply_chunk;

/* voice: NULL or "" = the model file's default voice (used with speech only). With speech and
 * params->do_sample, params->seed also seeds the speech sampling and the vocoder noise. */
MINICPMO_API minicpmo_status minicpmo_session_start_reply(minicpmo_session * session, const minicpmo_message * messages,
                                                          size_t n_messages, const minicpmo_image * images,
                                                          size_t n_images, int32_t use_image_id,
                                                          const minicpmo_audio * audios, size_t n_audios,
                                                          const minicpmo_generate_params * params,
                                                          minicpmo_speech speech, const char * voice,
                                                          minicpmo_reply ** out_reply);
/* The next chunk; after the one with done = true it returns empty chunks with done = true. */
MINICPMO_API minicpmo_status minicpmo_reply_next(minicpmo_reply * reply, minicpmo_reply_chunk * out_chunk);
/* Asks the reply to stop. It only sets a flag, so it may be called from any thread or from a signal
 * handler; the next minicpmo_reply_next acts on it: while the text is decoded, the text ends there
 * (a WHOLE reply still speaks what was said); later, the rest of the reply is dropped. */
MINICPMO_API void minicpmo_reply_stop(minicpmo_reply * reply);
/* Why the reply's text ended (MINICPMO_FINISH_NONE until it has). */
MINICPMO_API minicpmo_finish_reason minicpmo_reply_finish_reason(const minicpmo_reply * reply);
/* Frees the reply; a reply still running is cancelled first (unless the session moved on). */
MINICPMO_API void minicpmo_reply_free(minicpmo_reply * reply);

/* Low level: append raw prompt text (special tokens like <|im_start|> are parsed) to the cache. */
MINICPMO_API minicpmo_status minicpmo_session_prefill_text(minicpmo_session * session, const char * text);
/* Low level: generate from what the cache holds (no template is applied). */
MINICPMO_API minicpmo_status minicpmo_session_generate(minicpmo_session * session,
                                                       const minicpmo_generate_params * params,
                                                       minicpmo_text_callback on_text, void * user_data,
                                                       char ** out_reply, size_t * out_len);
/* Number of positions in use in the session's KV cache. */
MINICPMO_API int32_t minicpmo_session_n_past(const minicpmo_session * session);
/* Why the session's last reply ended (after any call that generates; a reply that filled the
 * context comes back with MINICPMO_OK and MINICPMO_FINISH_CONTEXT). */
MINICPMO_API minicpmo_finish_reason minicpmo_session_finish_reason(const minicpmo_session * session);
/* "stop", "length", "context", "cancelled" ("" for MINICPMO_FINISH_NONE). */
MINICPMO_API const char * minicpmo_finish_reason_name(minicpmo_finish_reason reason);

/* Low level: logits and final-norm hidden states of every position of the prompt
 * minicpmo_session_chat_media would prefill for the same messages, images, audios, use_image_id and
 * params (enable_thinking, use_tts_template, generate_audio; NULL = defaults), images and audio
 * included, computed on an empty KV cache. The conversation is cleared (as minicpmo_session_reset):
 * the next chat prefills its whole prompt. *out_n_positions receives the prompt length n. Outputs,
 * each NULL when not wanted, hold `capacity` positions: out_tokens (token ids; image / audio rows hold
 * the <unk> placeholder), out_is_media (1 where encoder rows replaced the token embedding),
 * out_logits (capacity x minicpmo_model_n_vocab floats), out_hidden (capacity x minicpmo_model_n_embd
 * floats). With all four NULL only the length is computed (nothing is encoded or decoded); n >
 * capacity fails with MINICPMO_ERR_INVALID_ARGUMENT before any work, *out_n_positions set. */
MINICPMO_API minicpmo_status minicpmo_session_forward_media(minicpmo_session * session, const minicpmo_message * messages,
                                                            size_t n_messages, const minicpmo_image * images,
                                                            size_t n_images, int32_t use_image_id,
                                                            const minicpmo_audio * audios, size_t n_audios,
                                                            const minicpmo_generate_params * params, size_t capacity,
                                                            int32_t * out_tokens, uint8_t * out_is_media,
                                                            float * out_logits, float * out_hidden,
                                                            size_t * out_n_positions);

MINICPMO_API void minicpmo_string_free(char * s);

/* ---- Full-duplex conversation (spec §6): one unit = one second heard / seen, then a decision ----
 * Per second: minicpmo_duplex_prefill (1 s of 16 kHz PCM, the first unit 1.0 to 1.035 s, and/or RGB
 * frames and text), then minicpmo_duplex_generate, which decides listen or speak and returns the
 * unit's text and, with speech on, its 24 kHz audio (1 s of silence while listening). The duplex
 * conversation uses the session's KV cache; the session must outlive it. */
typedef struct minicpmo_duplex minicpmo_duplex;

typedef struct minicpmo_duplex_params {
    bool generate_audio;    /* speak the speaking units (needs the speech components) */
    const char * voice;     /* NULL or "" = the model file's default voice */
    uint64_t seed;          /* decisions and speech sampling */
    bool sliding_window;    /* drop the oldest units past window_high positions, down to window_low */
    int32_t window_high;
    int32_t window_low;
    /* MINICPMO_WINDOW_* (0: off, or basic when sliding_window is true). CONTEXT: past
     * context_max_units units the oldest is dropped and what it said is kept as text
     * (context_previous_marker + its last context_previous_max_tokens tokens) inside the system prompt */
    int32_t window_mode;
    int32_t context_max_units;            /* 24 */
    int32_t context_previous_max_tokens;  /* 500 */
    const char * context_previous_marker; /* NULL = "\n\nprevious: " */
} minicpmo_duplex_params;

enum { MINICPMO_WINDOW_OFF = 0, MINICPMO_WINDOW_BASIC = 1, MINICPMO_WINDOW_CONTEXT = 2 };

typedef struct minicpmo_duplex_generate_params {
    bool greedy;                  /* false = sampling (temperature, top_k, top_p) */
    int32_t max_new_speak_tokens; /* per unit; the last slot is a forced <|chunk_eos|> (20) */
    float temperature;            /* 0.7 */
    int32_t top_k;                /* 20 */
    float top_p;                  /* 0.8 */
    float repetition_penalty;     /* 1.05 over the last repetition_window decisions (512) */
    int32_t repetition_window;
    float length_penalty;         /* on <|turn_eos|> (1.1) */
    float listen_prob_scale;      /* 1.0 */
    bool force_listen;
    int32_t listen_top_k;         /* > 0: listen at once when <|listen|> ranks within the top k (0 = off) */
} minicpmo_duplex_generate_params;

typedef struct minicpmo_duplex_unit {
    bool is_listen;
    bool end_of_turn;
    int32_t current_time;   /* units heard so far */
    char * text;            /* UTF-8, NUL-terminated; free with minicpmo_duplex_unit_clear */
    size_t text_len;
    float * audio;          /* 24 kHz samples (NULL with speech off) */
    size_t n_audio;
    int32_t sample_rate;
} minicpmo_duplex_unit;

MINICPMO_API minicpmo_duplex_params minicpmo_duplex_default_params(void);
MINICPMO_API minicpmo_duplex_generate_params minicpmo_duplex_generate_default_params(void);
MINICPMO_API minicpmo_status minicpmo_duplex_new(minicpmo_session * session, const minicpmo_duplex_params * params,
                                                 minicpmo_duplex ** out_duplex);
/* Joins the speech thread. */
MINICPMO_API void minicpmo_duplex_free(minicpmo_duplex * duplex);
/* Starts a conversation: clears the cache, feeds prefix, the reference audio's embeddings (may be
 * NULL) and suffix, e.g. "<|im_start|>system\nStreaming Omni Conversation.\n<|audio_start|>" and
 * "<|audio_end|><|im_end|>". */
MINICPMO_API minicpmo_status minicpmo_duplex_prepare(minicpmo_duplex * duplex, const char * prefix, const char * suffix,
                                                     const minicpmo_audio * ref_audio);
/* One unit's input: pcm (may be NULL with n_samples 0), frames (max_slice_nums 0 = no slicing), text (may be NULL). */
MINICPMO_API minicpmo_status minicpmo_duplex_prefill(minicpmo_duplex * duplex, const float * pcm, size_t n_samples,
                                                     const minicpmo_image * frames, size_t n_frames, const char * text);
MINICPMO_API minicpmo_status minicpmo_duplex_generate(minicpmo_duplex * duplex,
                                                      const minicpmo_duplex_generate_params * params,
                                                      minicpmo_duplex_unit * out_unit);
MINICPMO_API void minicpmo_duplex_unit_clear(minicpmo_duplex_unit * unit);
/* Stops speaking now: speech not handed out is dropped and a speaking turn is closed. */
MINICPMO_API minicpmo_status minicpmo_duplex_interrupt(minicpmo_duplex * duplex);

/* Quantizes an LLM GGUF to `type` ("Q4_K_M", "Q8_0", "F16", ... 16 names, case-insensitive)
 * with n_threads (0 = all cores). The omni companion is not touched. */
MINICPMO_API minicpmo_status minicpmo_quantize_llm(const char * in_path, const char * out_path, const char * type,
                                                   int32_t n_threads);

#ifdef __cplusplus
}
#endif

#endif /* MINICPMO_H */
