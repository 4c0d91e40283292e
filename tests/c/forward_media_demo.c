/* All-positions forward of a media prompt through the public C API: a user turn with an image (raw
 * RGB8 file) and an audio (raw float32 16 kHz file), first asking for the length only, then a too
 * small buffer (refused), then the outputs, written as raw files to OUT_DIR (tokens.i32, media.u8,
 * logits.f32, hidden.f32). Built and run by tests/test_media_forward.py.
 * usage: forward_media_demo MODEL IMAGE.rgb WIDTH HEIGHT AUDIO.f32 PROMPT OUT_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minicpmo.h"

#define DEMO_NAME "forward_media_demo"
#include "demo_common.h"

static void * read_all(const char * path, size_t * size) {
    FILE * f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void * data = n > 0 ? malloc((size_t) n) : NULL;
    if (data && fread(data, 1, (size_t) n, f) != (size_t) n) {
        free(data);
        data = NULL;
    }
    fclose(f);
    *size = data ? (size_t) n : 0;
    return data;
}

static int write_all(const char * dir, const char * name, const void * data, size_t size) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE * f = fopen(path, "wb");
    const int ok = f && fwrite(data, 1, size, f) == size;
    if (f) fclose(f);
    if (!ok) fprintf(stderr, "forward_media_demo: cannot write %s\n", path);
    return ok;
}

int main(int argc, char ** argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: forward_media_demo MODEL IMAGE.rgb WIDTH HEIGHT AUDIO.f32 PROMPT OUT_DIR\n");
        return 2;
    }
    const int w = atoi(argv[3]), h = atoi(argv[4]);
    size_t rgb_size = 0, pcm_size = 0;
    unsigned char * rgb = read_all(argv[2], &rgb_size);
    float * pcm = read_all(argv[5], &pcm_size);
    if (!rgb || rgb_size != (size_t) w * (size_t) h * 3 || !pcm) {
        fprintf(stderr, "forward_media_demo: cannot read the image or the audio\n");
        return 1;
    }

    minicpmo_model * model = NULL;
    minicpmo_session * session = NULL;
    minicpmo_status st;
    if (open_session(argv[1], 4096, 2, "f32", &model, &session) != MINICPMO_OK) return 1;

    char content[4096];
    snprintf(content, sizeof content, "%s\n%s\n%s", MINICPMO_IMAGE_MARKER, argv[6], MINICPMO_AUDIO_MARKER);
    minicpmo_message turn[1] = {{"user", content}};
    minicpmo_image image = {rgb, w, h, 0};
    minicpmo_audio audio = {pcm, pcm_size / sizeof(float)};

    size_t n = 0;
    st = minicpmo_session_forward_media(session, turn, 1, &image, 1, -1, &audio, 1, NULL, 0, NULL, NULL, NULL, NULL, &n);
    if (st != MINICPMO_OK) return fail("forward_media (length)", st);
    printf("N %zu\n", n);

    const size_t n_embd = (size_t) minicpmo_model_n_embd(model), n_vocab = (size_t) minicpmo_model_n_vocab(model);
    int32_t * tokens = malloc(n * sizeof(int32_t));
    uint8_t * media = malloc(n);
    float * logits = malloc(n * n_vocab * sizeof(float));
    float * hidden = malloc(n * n_embd * sizeof(float));
    if (!tokens || !media || !logits || !hidden) return 1;

    size_t n_small = 0;
    st = minicpmo_session_forward_media(session, turn, 1, &image, 1, -1, &audio, 1, NULL, n - 1, tokens, media, logits,
                                        hidden, &n_small);
    printf("SMALL %s %zu %s\n", minicpmo_status_name(st), n_small, minicpmo_last_error());

    size_t n_out = 0;
    st = minicpmo_session_forward_media(session, turn, 1, &image, 1, -1, &audio, 1, NULL, n, tokens, media, logits,
                                        hidden, &n_out);
    if (st != MINICPMO_OK) return fail("forward_media", st);
    printf("OUT %zu N_EMBD %zu N_VOCAB %zu N_PAST %d\n", n_out, n_embd, n_vocab, minicpmo_session_n_past(session));
    const char * dir = argv[7];
    if (!write_all(dir, "tokens.i32", tokens, n * sizeof(int32_t)) || !write_all(dir, "media.u8", media, n) ||
        !write_all(dir, "logits.f32", logits, n * n_vocab * sizeof(float)) ||
        !write_all(dir, "hidden.f32", hidden, n * n_embd * sizeof(float))) {
        return 1;
    }
    free(tokens);
    free(media);
    free(logits);
    free(hidden);
    minicpmo_session_free(session);
    minicpmo_model_free(model);
    free(rgb);
    free(pcm);
    return 0;
}
