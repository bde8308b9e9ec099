/*
 * One model shared by four threads, each with its own image predictor and
 * volume session: every thread must get exactly the single-threaded results.
 *
 *   threads CONFIG CHECKPOINT
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "medsam2.h"

#define NTHREADS 4
#define W 60
#define H 44
#define VX 36
#define VY 28
#define VZ 8

#define CHECK(call)                                                                        \
    do {                                                                                   \
        medsam2_status st_ = (call);                                                       \
        if (st_ != MEDSAM2_OK) {                                                           \
            fprintf(stderr, "%s failed: %s: %s\n", #call, medsam2_status_string(st_),      \
                    medsam2_last_error());                                                 \
            return 1;                                                                      \
        }                                                                                  \
    } while (0)

static const medsam2_model *g_model;
static uint8_t g_rgb[H][W][3];
static int16_t g_vol[VZ][VY][VX];

struct result {
    uint8_t masks[3 * H * W];
    float scores[3];
    uint16_t labels[VX * VY * VZ];
    int failed;
};

/* Segments the image and the volume; returns nonzero on a library error. */
static int work(struct result *r, int variant) {
    medsam2_predictor *p = NULL;
    CHECK(medsam2_predictor_new(g_model, &p));
    medsam2_image img = {0};
    img.data = g_rgb;
    img.pixel_type = MEDSAM2_PIXEL_U8;
    img.width = W;
    img.height = H;
    img.channels = 3;
    CHECK(medsam2_predictor_set_image(p, &img));
    const float pt[2] = {20.0f + variant, 22.0f};
    const int32_t fg = 1;
    medsam2_prompt prompt = {0};
    prompt.points = pt;
    prompt.labels = &fg;
    prompt.num_points = 1;
    CHECK(medsam2_predictor_predict(p, &prompt, 1, r->masks, sizeof r->masks, r->scores, 3, NULL));
    CHECK(medsam2_predictor_free(p));

    medsam2_volume vol = {0};
    vol.voxels = g_vol;
    vol.pixel_type = MEDSAM2_PIXEL_I16;
    vol.dims[0] = VX;
    vol.dims[1] = VY;
    vol.dims[2] = VZ;
    vol.spacing[0] = vol.spacing[1] = vol.spacing[2] = 1.0;
    medsam2_intensity it = {0};
    it.mode = MEDSAM2_INTENSITY_WINDOW;
    CHECK(medsam2_window_preset("abdomen", &it.window));
    medsam2_session *s = NULL;
    CHECK(medsam2_session_new(g_model, &vol, &it, MEDSAM2_AXIS_K, NULL, &s));
    const float vpt[2] = {12.0f + variant, 14.0f};
    CHECK(medsam2_session_add_points(s, 3, 1, vpt, &fg, 1, 1, NULL, 0));
    const float box[4] = {22.0f, 4.0f, 33.0f, 24.0f};
    CHECK(medsam2_session_add_box(s, 5, 2, box, NULL, 0));
    CHECK(medsam2_session_propagate(s, MEDSAM2_DIRECTION_BOTH, -1, 0, NULL, NULL));
    CHECK(medsam2_session_get_labels(s, r->labels, VX * VY * VZ));
    CHECK(medsam2_session_free(s));
    return 0;
}

struct job {
    struct result *r;
    int variant;
};

static void *thread_main(void *arg) {
    struct job *j = arg;
    j->r->failed = work(j->r, j->variant);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s CONFIG CHECKPOINT\n", argv[0]);
        return 2;
    }
    uint32_t seed = 99;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++) {
                seed = seed * 1103515245u + 12345u;
                int dx = x - 20, dy = y - 22;
                g_rgb[y][x][c] = (uint8_t)((dx * dx + dy * dy < 100 ? 200 : 40) + (seed >> 28));
            }
    for (int z = 0; z < VZ; z++)
        for (int y = 0; y < VY; y++)
            for (int x = 0; x < VX; x++) {
                int dx = x - 12, dy = y - 14, dz = z - 3;
                int v = dx * dx + dy * dy + 4 * dz * dz < 49 ? 90 : -60;
                if (x >= 24 && x < 32 && y >= 6 && y < 22) v = 250;
                g_vol[z][y][x] = (int16_t)(v + (x * 7 + y * 3 + z) % 11);
            }

    medsam2_model *model = NULL;
    CHECK(medsam2_model_load(argv[1], argv[2], NULL, NULL, &model));
    g_model = model;

    /* Two variants of prompts: threads 0 and 2 run variant 0, 1 and 3 variant 1. */
    static struct result single[2], multi[NTHREADS];
    for (int v = 0; v < 2; v++)
        if (work(&single[v], v)) return 1;

    pthread_t th[NTHREADS];
    struct job jobs[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        jobs[i].r = &multi[i];
        jobs[i].variant = i % 2;
        if (pthread_create(&th[i], NULL, thread_main, &jobs[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);

    int failures = 0;
    for (int i = 0; i < NTHREADS; i++) {
        const struct result *a = &multi[i], *b = &single[i % 2];
        int ok = !a->failed && memcmp(a->masks, b->masks, sizeof a->masks) == 0 &&
                 memcmp(a->scores, b->scores, sizeof a->scores) == 0 &&
                 memcmp(a->labels, b->labels, sizeof a->labels) == 0;
        size_t fgvox = 0;
        for (size_t k = 0; k < VX * VY * VZ; k++) fgvox += a->labels[k] != 0;
        printf("thread %d (variant %d): %s, scores %.6f %.6f %.6f, %zu labelled voxels\n", i, i % 2,
               ok ? "identical to one thread" : "DIFFERENT", a->scores[0], a->scores[1],
               a->scores[2], fgvox);
        failures += !ok;
    }
    /* The variants must differ, or the comparison proves little. */
    if (memcmp(single[0].scores, single[1].scores, sizeof single[0].scores) == 0) {
        printf("variants gave identical scores\n");
        failures++;
    }
    CHECK(medsam2_model_free(model));
    printf("%d passed, %d failed\n", NTHREADS - failures, failures);
    return failures ? 1 : 0;
}
