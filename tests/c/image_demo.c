/* Image chat through the public C API: one user turn with an image (raw RGB8 file), greedy; then the
 * low-level path (prefill text + image + text, generate). Built and run by tests/test_vision_chat.py.
 * usage: image_demo MODEL IMAGE.rgb WIDTH HEIGHT PROMPT N_PREDICT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minicpmo.h"

#define DEMO_NAME "image_demo"
#include "demo_common.h"

int main(int argc, char ** argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: image_demo MODEL IMAGE.rgb WIDTH HEIGHT PROMPT N_PREDICT\n");
        return 2;
    }
    const int w = atoi(argv[3]), h = atoi(argv[4]);
    const size_t n = (size_t) w * (size_t) h * 3;
    unsigned char * rgb = malloc(n);
    FILE * f = fopen(argv[2], "rb");
    if (!rgb || !f || fread(rgb, 1, n, f) != n) {
        fprintf(stderr, "image_demo: cannot read %s\n", argv[2]);
        return 1;
    }
    fclose(f);

    minicpmo_model * model = NULL;
    minicpmo_session * session = NULL;
    minicpmo_status st;
    if (open_session(argv[1], 2048, 2, NULL, &model, &session) != MINICPMO_OK) return 1;

    minicpmo_generate_params gp = minicpmo_generate_default_params();
    gp.do_sample = false;
    gp.repetition_penalty = 1.0f;
    gp.max_new_tokens = atoi(argv[6]);

    /* the vision tower readied for this size first (a no-op at compute type f32) */
    if ((st = minicpmo_session_prepare_images(session, w, h, 0)) != MINICPMO_OK) return fail("prepare images", st);
    st = minicpmo_session_prepare_images(session, w, 0, 0);
    printf("PREPARE_BAD:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());

    char content[4096];
    snprintf(content, sizeof content, "%s\n%s", MINICPMO_IMAGE_MARKER, argv[5]);
    minicpmo_message turn[1] = {{"user", content}};
    minicpmo_image image = {rgb, w, h, 0};
    char * reply = NULL;
    size_t len = 0;
    if ((st = minicpmo_session_chat_images(session, turn, 1, &image, 1, -1, &gp, NULL, NULL, &reply, &len)) != MINICPMO_OK) {
        return fail("chat", st);
    }
    printf("REPLY %zu\n", len);
    fwrite(reply, 1, len, stdout);
    printf("\nN_PAST:%d\n", minicpmo_session_n_past(session));
    minicpmo_string_free(reply);

    /* the same prompt built piece by piece */
    minicpmo_session_reset(session);
    if ((st = minicpmo_session_prefill_text(session, "<|im_start|>user\n")) != MINICPMO_OK) return fail("prefill", st);
    if ((st = minicpmo_session_prefill_image(session, &image, 0)) != MINICPMO_OK) return fail("prefill image", st);
    char tail[4096];
    snprintf(tail, sizeof tail, "\n%s<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", argv[5]);
    if ((st = minicpmo_session_prefill_text(session, tail)) != MINICPMO_OK) return fail("prefill", st);
    if ((st = minicpmo_session_generate(session, &gp, NULL, NULL, &reply, &len)) != MINICPMO_OK) return fail("generate", st);
    printf("LOWLEVEL %zu\n", len);
    fwrite(reply, 1, len, stdout);
    printf("\n");
    minicpmo_string_free(reply);

    /* bad images are statuses, not crashes */
    minicpmo_image bad = {rgb, 0, h, 0};
    st = minicpmo_session_prefill_image(session, &bad, -1);
    printf("BAD:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());
    st = minicpmo_session_chat_images(session, turn, 1, &image, 0, -1, &gp, NULL, NULL, NULL, NULL);
    printf("COUNT:%s:%s\n", minicpmo_status_name(st), minicpmo_last_error());

    minicpmo_session_free(session);
    minicpmo_model_free(model);
    free(rgb);
    return 0;
}
