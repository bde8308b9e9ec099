/*
 * Every error path of the C API: each call must fail with the expected
 * status, leave a message in medsam2_last_error(), and leave outputs alone.
 *
 *   error_paths CONFIG CHECKPOINT TMP_DIR
 *
 * Prints one line per check and "N passed, M failed"; exits 1 on a failure.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "medsam2.h"

static int g_passed, g_failed;

static void expect_at(int line, const char *what, medsam2_status got, medsam2_status want) {
    const char *msg = medsam2_last_error();
    int ok = got == want;
    /* A failure must explain itself; a success must leave the message empty. */
    if (ok && want != MEDSAM2_OK && (msg == NULL || msg[0] == '\0')) ok = 0;
    if (ok && want == MEDSAM2_OK && (msg == NULL || msg[0] != '\0')) ok = 0;
    if (ok) {
        g_passed++;
        printf("ok   %-58s %s: %s\n", what, medsam2_status_string(got), msg);
    } else {
        g_failed++;
        printf("FAIL line %d: %s: got %s, want %s (%s)\n", line, what, medsam2_status_string(got),
               medsam2_status_string(want), msg ? msg : "(null)");
    }
}
#define EXPECT(call, want) expect_at(__LINE__, #call, (call), (want))

static void check_at(int line, const char *what, int cond) {
    if (cond) {
        g_passed++;
        printf("ok   %s\n", what);
    } else {
        g_failed++;
        printf("FAIL line %d: %s\n", line, what);
    }
}
#define CHECK_TRUE(cond) check_at(__LINE__, #cond, (cond))

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fwrite(data, 1, n, f);
    fclose(f);
}

static void *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc((size_t)n);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) exit(2);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* The last error is per thread: a success on another thread leaves ours. */
static void *other_thread(void *arg) {
    (void)arg;
    medsam2_window w;
    int ok = medsam2_window_preset("lung", &w) == MEDSAM2_OK && medsam2_last_error()[0] == '\0';
    return ok ? (void *)1 : NULL;
}

struct cancel_state {
    unsigned calls, cancel_at;
};
static int cancel_progress(void *user, uint32_t done, uint32_t total) {
    struct cancel_state *s = user;
    (void)done;
    (void)total;
    s->calls++;
    return s->calls >= s->cancel_at;
}

static size_t count_nonzero16(const uint16_t *p, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += p[i] != 0;
    return c;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s CONFIG CHECKPOINT TMP_DIR\n", argv[0]);
        return 2;
    }
    const char *cfg = argv[1], *ckpt = argv[2], *tmp = argv[3];
    char path[4096];

    /* ---- general */
    CHECK_TRUE(medsam2_abi_version() == MEDSAM2_ABI_VERSION);
    CHECK_TRUE(strcmp(medsam2_status_string(MEDSAM2_ERR_CANCELLED), "MEDSAM2_ERR_CANCELLED") == 0);
    CHECK_TRUE(strcmp(medsam2_status_string(-1), "MEDSAM2_UNKNOWN_STATUS") == 0);
    CHECK_TRUE(strcmp(medsam2_status_string(999), "MEDSAM2_UNKNOWN_STATUS") == 0);
    medsam2_window win = {0, 0};
    EXPECT(medsam2_window_preset(NULL, &win), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_window_preset("abdomen", NULL), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_window_preset("no-such-window", &win), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_window_preset("\xff\xfe", &win), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_window_preset("Soft Tissue", &win), MEDSAM2_OK);
    CHECK_TRUE(win.level == 40.0 && win.width == 400.0);

    /* ---- free functions accept NULL */
    EXPECT(medsam2_model_free(NULL), MEDSAM2_OK);
    EXPECT(medsam2_predictor_free(NULL), MEDSAM2_OK);
    EXPECT(medsam2_session_free(NULL), MEDSAM2_OK);

    /* ---- model loading */
    medsam2_model *model = (medsam2_model *)&win; /* must be reset to NULL on failure */
    EXPECT(medsam2_model_load(NULL, ckpt, NULL, NULL, &model), MEDSAM2_ERR_NULL_POINTER);
    CHECK_TRUE(model == NULL);
    EXPECT(medsam2_model_load(cfg, NULL, NULL, NULL, &model), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_model_load(cfg, ckpt, NULL, NULL, NULL), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_model_load("no-such-preset", ckpt, NULL, NULL, &model), MEDSAM2_ERR_CONFIG);
    snprintf(path, sizeof path, "%s/bad_config.yaml", tmp);
    write_bytes(path, "model: [1, 2\n  oops: {", 22);
    EXPECT(medsam2_model_load(path, ckpt, NULL, NULL, &model), MEDSAM2_ERR_CONFIG);
    EXPECT(medsam2_model_load(cfg, "/nonexistent/weights.safetensors", NULL, NULL, &model), MEDSAM2_ERR_IO);
    snprintf(path, sizeof path, "%s/garbage.safetensors", tmp);
    write_bytes(path, "this is not a safetensors file", 30);
    EXPECT(medsam2_model_load(cfg, path, NULL, NULL, &model), MEDSAM2_ERR_CHECKPOINT);
    snprintf(path, sizeof path, "%s/garbage.pt", tmp);
    write_bytes(path, "PK\x03\x04 truncated zip", 18);
    EXPECT(medsam2_model_load(cfg, path, NULL, NULL, &model), MEDSAM2_ERR_CHECKPOINT);
    snprintf(path, sizeof path, "%s/weights.bin.txt", tmp);
    write_bytes(path, "x", 1);
    EXPECT(medsam2_model_load(cfg, path, NULL, NULL, &model), MEDSAM2_ERR_CHECKPOINT);
    /* The tiny checkpoint does not fit the real tiny model. */
    EXPECT(medsam2_model_load("sam2.1_hiera_t", ckpt, NULL, NULL, &model), MEDSAM2_ERR_CHECKPOINT);
    EXPECT(medsam2_model_load(cfg, ckpt, "tpu", NULL, &model), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_model_load(cfg, ckpt, "cuda:x", NULL, &model), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_model_load(cfg, ckpt, NULL, "f64", &model), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_model_load(cfg, ckpt, "cuda", NULL, &model), MEDSAM2_ERR_BACKEND_UNAVAILABLE);
    EXPECT(medsam2_model_load(cfg, ckpt, "metal:1", NULL, &model), MEDSAM2_ERR_BACKEND_UNAVAILABLE);
    CHECK_TRUE(model == NULL);
    EXPECT(medsam2_model_load_from_memory(cfg, NULL, 10, NULL, NULL, &model), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_model_load_from_memory(cfg, NULL, 0, NULL, NULL, &model), MEDSAM2_ERR_CHECKPOINT);
    EXPECT(medsam2_model_load_from_memory(cfg, (const uint8_t *)"garbage", 7, NULL, NULL, &model),
           MEDSAM2_ERR_CHECKPOINT);
    size_t ckpt_len = 0;
    uint8_t *ckpt_bytes = read_all(ckpt, &ckpt_len);
    EXPECT(medsam2_model_load_from_memory(cfg, ckpt_bytes, ckpt_len, "", "", &model), MEDSAM2_OK);
    free(ckpt_bytes); /* the library copied them */
    medsam2_model *mem_model = model;
    EXPECT(medsam2_model_load(cfg, ckpt, "cpu", "f32", &model), MEDSAM2_OK);
    CHECK_TRUE(model != NULL && model != mem_model);
    EXPECT(medsam2_model_free(mem_model), MEDSAM2_OK);

    uint32_t size = 0, low = 0, count = 0;
    EXPECT(medsam2_model_image_size(NULL, &size), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_model_image_size(model, NULL), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_model_low_res_size(NULL, &low), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_model_mask_count(NULL, 1, &count), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_model_image_size(model, &size), MEDSAM2_OK);
    EXPECT(medsam2_model_low_res_size(model, &low), MEDSAM2_OK);
    EXPECT(medsam2_model_mask_count(model, 7, &count), MEDSAM2_OK);
    CHECK_TRUE(size > 0 && low == size / 4 && count == 3);

    /* ---- the last error is per thread */
    EXPECT(medsam2_window_preset("nope", &win), MEDSAM2_ERR_INVALID_ARGUMENT);
    pthread_t th;
    void *th_ok = NULL;
    pthread_create(&th, NULL, other_thread, NULL);
    pthread_join(th, &th_ok);
    CHECK_TRUE(th_ok != NULL);
    CHECK_TRUE(strstr(medsam2_last_error(), "nope") != NULL);

    /* ---- image predictor */
    enum { W = 50, H = 40 };
    static uint8_t rgb[H][W][3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) rgb[y][x][0] = rgb[y][x][1] = rgb[y][x][2] = (uint8_t)(x * 5);
    medsam2_predictor *pred = (medsam2_predictor *)&win;
    EXPECT(medsam2_predictor_new(NULL, &pred), MEDSAM2_ERR_NULL_POINTER);
    CHECK_TRUE(pred == NULL);
    EXPECT(medsam2_predictor_new(model, NULL), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_predictor_new(model, &pred), MEDSAM2_OK);

    uint8_t masks[3 * H * W];
    float scores[3];
    float logits[3 * H * W];
    const float pt[2] = {25.0f, 20.0f};
    const int32_t fg = 1;
    medsam2_prompt prompt = {0};
    prompt.points = pt;
    prompt.labels = &fg;
    prompt.num_points = 1;
    EXPECT(medsam2_predictor_predict(pred, &prompt, 0, masks, sizeof masks, scores, 3, NULL),
           MEDSAM2_ERR_INVALID_STATE);
    EXPECT(medsam2_predictor_last_logits(pred, logits, 3 * H * W), MEDSAM2_ERR_INVALID_STATE);

    medsam2_image img = {0};
    img.data = rgb;
    img.pixel_type = MEDSAM2_PIXEL_U8;
    img.width = W;
    img.height = H;
    img.channels = 3;
    EXPECT(medsam2_predictor_set_image(NULL, &img), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_predictor_set_image(pred, NULL), MEDSAM2_ERR_NULL_POINTER);
    medsam2_image bad = img;
    bad.data = NULL;
    EXPECT(medsam2_predictor_set_image(pred, &bad), MEDSAM2_ERR_NULL_POINTER);
    bad = img;
    bad.width = 0;
    EXPECT(medsam2_predictor_set_image(pred, &bad), MEDSAM2_ERR_INVALID_ARGUMENT);
    bad = img;
    bad.height = MEDSAM2_MAX_IMAGE_SIDE + 1;
    EXPECT(medsam2_predictor_set_image(pred, &bad), MEDSAM2_ERR_INVALID_ARGUMENT);
    bad = img;
    bad.channels = 2;
    EXPECT(medsam2_predictor_set_image(pred, &bad), MEDSAM2_ERR_INVALID_ARGUMENT);
    bad = img;
    bad.row_stride = W * 3 - 1;
    EXPECT(medsam2_predictor_set_image(pred, &bad), MEDSAM2_ERR_INVALID_ARGUMENT);
    bad = img;
    bad.row_stride = SIZE_MAX / 2;
    EXPECT(medsam2_predictor_set_image(pred, &bad), MEDSAM2_ERR_INVALID_ARGUMENT);
    bad = img;
    bad.pixel_type = 0;
    EXPECT(medsam2_predictor_set_image(pred, &bad), MEDSAM2_ERR_INVALID_ARGUMENT);
    bad = img;
    bad.pixel_type = 99;
    EXPECT(medsam2_predictor_set_image(pred, &bad), MEDSAM2_ERR_INVALID_ARGUMENT);
    static int16_t ct[H][W];
    bad = img;
    bad.data = ct;
    bad.pixel_type = MEDSAM2_PIXEL_I16;
    bad.channels = 1;
    EXPECT(medsam2_predictor_set_image(pred, &bad), MEDSAM2_ERR_INVALID_ARGUMENT); /* no window */
    bad.window.width = -400.0;
    EXPECT(medsam2_predictor_set_image(pred, &bad), MEDSAM2_ERR_INVALID_ARGUMENT);
    bad.window.width = 400.0;
    bad.window.level = NAN;
    EXPECT(medsam2_predictor_set_image(pred, &bad), MEDSAM2_ERR_INVALID_ARGUMENT);
    bad.window.level = 40.0;
    bad.channels = 3;
    EXPECT(medsam2_predictor_set_image(pred, &bad), MEDSAM2_ERR_INVALID_ARGUMENT);
    static float fimg[H][W];
    fimg[3][4] = NAN;
    bad = img;
    bad.data = fimg;
    bad.pixel_type = MEDSAM2_PIXEL_F32;
    bad.channels = 1;
    EXPECT(medsam2_predictor_set_image(pred, &bad), MEDSAM2_ERR_INVALID_ARGUMENT);
    fimg[3][4] = 0.5f;
    EXPECT(medsam2_predictor_set_image(pred, &bad), MEDSAM2_OK); /* f32 in 0..1 */
    EXPECT(medsam2_predictor_set_image(pred, &img), MEDSAM2_OK);

    memset(masks, 0xAB, sizeof masks);
    EXPECT(medsam2_predictor_predict(NULL, &prompt, 0, masks, sizeof masks, scores, 3, NULL),
           MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_predictor_predict(pred, NULL, 0, masks, sizeof masks, scores, 3, NULL),
           MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_predictor_predict(pred, &prompt, 0, NULL, 0, scores, 3, NULL), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_predictor_predict(pred, &prompt, 0, masks, H * W - 1, scores, 3, NULL),
           MEDSAM2_ERR_BUFFER_TOO_SMALL);
    EXPECT(medsam2_predictor_predict(pred, &prompt, 1, masks, 2 * H * W, scores, 3, NULL),
           MEDSAM2_ERR_BUFFER_TOO_SMALL);
    EXPECT(medsam2_predictor_predict(pred, &prompt, 1, masks, sizeof masks, scores, 2, NULL),
           MEDSAM2_ERR_BUFFER_TOO_SMALL);
    int untouched = 1;
    for (size_t i = 0; i < sizeof masks; i++) untouched &= masks[i] == 0xAB;
    CHECK_TRUE(untouched);

    medsam2_prompt p2 = prompt;
    const float outside[2] = {W + 1.0f, 20.0f};
    p2.points = outside;
    EXPECT(medsam2_predictor_predict(pred, &p2, 0, masks, sizeof masks, NULL, 0, NULL),
           MEDSAM2_ERR_INVALID_ARGUMENT);
    const float negative[2] = {-0.5f, 20.0f};
    p2.points = negative;
    EXPECT(medsam2_predictor_predict(pred, &p2, 0, masks, sizeof masks, NULL, 0, NULL),
           MEDSAM2_ERR_INVALID_ARGUMENT);
    const float nan_pt[2] = {NAN, 1.0f};
    p2.points = nan_pt;
    EXPECT(medsam2_predictor_predict(pred, &p2, 0, masks, sizeof masks, NULL, 0, NULL),
           MEDSAM2_ERR_INVALID_ARGUMENT);
    p2 = prompt;
    const int32_t bad_label = 7;
    p2.labels = &bad_label;
    EXPECT(medsam2_predictor_predict(pred, &p2, 0, masks, sizeof masks, NULL, 0, NULL),
           MEDSAM2_ERR_INVALID_ARGUMENT);
    p2 = prompt;
    p2.points = NULL;
    EXPECT(medsam2_predictor_predict(pred, &p2, 0, masks, sizeof masks, NULL, 0, NULL),
           MEDSAM2_ERR_NULL_POINTER);
    p2 = prompt;
    p2.labels = NULL;
    EXPECT(medsam2_predictor_predict(pred, &p2, 0, masks, sizeof masks, NULL, 0, NULL),
           MEDSAM2_ERR_NULL_POINTER);
    p2 = prompt;
    p2.num_points = MEDSAM2_MAX_POINTS + 1;
    EXPECT(medsam2_predictor_predict(pred, &p2, 0, masks, sizeof masks, NULL, 0, NULL),
           MEDSAM2_ERR_INVALID_ARGUMENT);
    medsam2_prompt empty = {0};
    EXPECT(medsam2_predictor_predict(pred, &empty, 0, masks, sizeof masks, NULL, 0, NULL),
           MEDSAM2_ERR_INVALID_ARGUMENT);
    const float inverted[4] = {30.0f, 30.0f, 10.0f, 10.0f};
    medsam2_prompt bp = {0};
    bp.bbox = inverted;
    EXPECT(medsam2_predictor_predict(pred, &bp, 0, masks, sizeof masks, NULL, 0, NULL),
           MEDSAM2_ERR_INVALID_ARGUMENT);
    const float big_box[4] = {0.0f, 0.0f, W + 5.0f, H};
    bp.bbox = big_box;
    EXPECT(medsam2_predictor_predict(pred, &bp, 0, masks, sizeof masks, NULL, 0, NULL),
           MEDSAM2_ERR_INVALID_ARGUMENT);
    float *mask_in = calloc((size_t)low * low, sizeof(float));
    medsam2_prompt mp = {0};
    mp.mask_input = mask_in;
    mp.mask_input_len = (size_t)low * low - 1;
    EXPECT(medsam2_predictor_predict(pred, &mp, 0, masks, sizeof masks, NULL, 0, NULL),
           MEDSAM2_ERR_INVALID_ARGUMENT);
    mp.mask_input = NULL;
    mp.mask_input_len = (size_t)low * low;
    EXPECT(medsam2_predictor_predict(pred, &mp, 0, masks, sizeof masks, NULL, 0, NULL),
           MEDSAM2_ERR_NULL_POINTER);
    mp.mask_input = mask_in;
    mask_in[5] = INFINITY;
    EXPECT(medsam2_predictor_predict(pred, &mp, 0, masks, sizeof masks, NULL, 0, NULL),
           MEDSAM2_ERR_INVALID_ARGUMENT);
    mask_in[5] = 0.0f;
    EXPECT(medsam2_predictor_predict(pred, &mp, 0, masks, sizeof masks, NULL, 0, NULL), MEDSAM2_OK);
    free(mask_in);
    EXPECT(medsam2_predictor_set_mask_threshold(pred, NAN), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_predictor_set_mask_threshold(NULL, 0.0f), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_predictor_set_postprocessing(pred, NAN, 0.0f), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_predictor_set_postprocessing(pred, 0.0f, -2.0f), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_predictor_set_postprocessing(NULL, 8.0f, 8.0f), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_predictor_set_postprocessing(pred, 0.0f, 0.0f), MEDSAM2_OK);

    uint32_t nm = 0;
    EXPECT(medsam2_predictor_predict(pred, &prompt, 1, masks, sizeof masks, scores, 3, &nm), MEDSAM2_OK);
    CHECK_TRUE(nm == 3);
    EXPECT(medsam2_predictor_last_logits(pred, NULL, 0), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_predictor_last_logits(pred, logits, 3 * H * W - 1), MEDSAM2_ERR_BUFFER_TOO_SMALL);
    EXPECT(medsam2_predictor_last_logits(pred, logits, 3 * H * W), MEDSAM2_OK);
    int consistent = 1;
    for (size_t i = 0; i < 3 * H * W; i++) consistent &= masks[i] == (logits[i] > 0.0f);
    CHECK_TRUE(consistent);
    float *lr = malloc(sizeof(float) * 3 * low * low);
    EXPECT(medsam2_predictor_last_low_res_logits(pred, lr, 3 * (size_t)low * low - 1),
           MEDSAM2_ERR_BUFFER_TOO_SMALL);
    EXPECT(medsam2_predictor_last_low_res_logits(pred, lr, 3 * (size_t)low * low), MEDSAM2_OK);
    free(lr);
    EXPECT(medsam2_predictor_clear_image(pred), MEDSAM2_OK);
    EXPECT(medsam2_predictor_predict(pred, &prompt, 0, masks, sizeof masks, NULL, 0, NULL),
           MEDSAM2_ERR_INVALID_STATE);
    EXPECT(medsam2_predictor_last_logits(pred, logits, 3 * H * W), MEDSAM2_ERR_INVALID_STATE);
    EXPECT(medsam2_predictor_free(pred), MEDSAM2_OK);

    /* ---- volume session */
    enum { VX = 24, VY = 20, VZ = 8 };
    static int16_t vox[VZ][VY][VX];
    for (int z = 0; z < VZ; z++)
        for (int y = 0; y < VY; y++)
            for (int x = 0; x < VX; x++) {
                int dx = x - 12, dy = y - 10, dz = z - 4;
                vox[z][y][x] = (int16_t)(dx * dx + dy * dy + 4 * dz * dz < 36 ? 100 : -80 + x);
            }
    medsam2_volume vol = {0};
    vol.voxels = vox;
    vol.pixel_type = MEDSAM2_PIXEL_I16;
    vol.dims[0] = VX;
    vol.dims[1] = VY;
    vol.dims[2] = VZ;
    vol.spacing[0] = vol.spacing[1] = vol.spacing[2] = 1.0;
    medsam2_intensity it = {0};
    it.mode = MEDSAM2_INTENSITY_WINDOW;
    it.window.level = 40.0;
    it.window.width = 400.0;
    medsam2_session *s = (medsam2_session *)&win;
    EXPECT(medsam2_session_new(NULL, &vol, &it, MEDSAM2_AXIS_K, NULL, &s), MEDSAM2_ERR_NULL_POINTER);
    CHECK_TRUE(s == NULL);
    EXPECT(medsam2_session_new(model, NULL, &it, MEDSAM2_AXIS_K, NULL, &s), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_session_new(model, &vol, NULL, MEDSAM2_AXIS_K, NULL, &s), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_session_new(model, &vol, &it, MEDSAM2_AXIS_K, NULL, NULL), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_session_new(model, &vol, &it, 3, NULL, &s), MEDSAM2_ERR_INVALID_ARGUMENT);
    medsam2_volume bv = vol;
    bv.voxels = NULL;
    EXPECT(medsam2_session_new(model, &bv, &it, MEDSAM2_AXIS_K, NULL, &s), MEDSAM2_ERR_NULL_POINTER);
    bv = vol;
    bv.dims[1] = 0;
    EXPECT(medsam2_session_new(model, &bv, &it, MEDSAM2_AXIS_K, NULL, &s), MEDSAM2_ERR_INVALID_ARGUMENT);
    bv = vol;
    bv.dims[0] = bv.dims[1] = bv.dims[2] = 0xFFFFFFFFu;
    EXPECT(medsam2_session_new(model, &bv, &it, MEDSAM2_AXIS_K, NULL, &s), MEDSAM2_ERR_INVALID_ARGUMENT);
    bv = vol;
    bv.pixel_type = 42;
    EXPECT(medsam2_session_new(model, &bv, &it, MEDSAM2_AXIS_K, NULL, &s), MEDSAM2_ERR_INVALID_ARGUMENT);
    bv = vol;
    bv.spacing[2] = 0.0;
    EXPECT(medsam2_session_new(model, &bv, &it, MEDSAM2_AXIS_K, NULL, &s), MEDSAM2_ERR_INVALID_ARGUMENT);
    bv = vol;
    bv.direction[0] = 1.0; /* rank-deficient direction */
    EXPECT(medsam2_session_new(model, &bv, &it, MEDSAM2_AXIS_K, NULL, &s), MEDSAM2_ERR_INVALID_ARGUMENT);
    medsam2_intensity bi = it;
    bi.mode = 0;
    EXPECT(medsam2_session_new(model, &vol, &bi, MEDSAM2_AXIS_K, NULL, &s), MEDSAM2_ERR_INVALID_ARGUMENT);
    bi.mode = MEDSAM2_INTENSITY_NONE; /* needs u8 voxels */
    EXPECT(medsam2_session_new(model, &vol, &bi, MEDSAM2_AXIS_K, NULL, &s), MEDSAM2_ERR_INVALID_ARGUMENT);
    bi = it;
    bi.window.width = 0.0;
    EXPECT(medsam2_session_new(model, &vol, &bi, MEDSAM2_AXIS_K, NULL, &s), MEDSAM2_ERR_INVALID_ARGUMENT);
    bi = it;
    bi.stretch = 5;
    EXPECT(medsam2_session_new(model, &vol, &bi, MEDSAM2_AXIS_K, NULL, &s), MEDSAM2_ERR_INVALID_ARGUMENT);
    bi = it;
    bi.mode = MEDSAM2_INTENSITY_PERCENTILE;
    bi.lower_percentile = 60.0;
    bi.upper_percentile = 10.0;
    EXPECT(medsam2_session_new(model, &vol, &bi, MEDSAM2_AXIS_K, NULL, &s), MEDSAM2_ERR_INVALID_ARGUMENT);
    CHECK_TRUE(s == NULL);
    bi.lower_percentile = 0.5;
    bi.upper_percentile = 99.5;
    EXPECT(medsam2_session_new(model, &vol, &bi, MEDSAM2_AXIS_J, NULL, &s), MEDSAM2_OK);
    EXPECT(medsam2_session_free(s), MEDSAM2_OK);
    medsam2_session_options opts = {2, 1, -1};
    EXPECT(medsam2_session_new(model, &vol, &it, MEDSAM2_AXIS_K, &opts, &s), MEDSAM2_OK);

    const size_t nvox = (size_t)VX * VY * VZ;
    uint16_t *labels = malloc(nvox * sizeof *labels);
    uint8_t slice_mask[VX * VY];
    uint32_t ns = 0, sw = 0, sh = 0;
    EXPECT(medsam2_session_slice_shape(NULL, &ns, &sw, &sh), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_session_slice_shape(s, &ns, &sw, &sh), MEDSAM2_OK);
    CHECK_TRUE(ns == VZ && sw == VX && sh == VY);
    EXPECT(medsam2_session_propagate(s, MEDSAM2_DIRECTION_BOTH, -1, 0, NULL, NULL), MEDSAM2_ERR_INVALID_STATE);
    const float vpt[2] = {12.0f, 10.0f};
    EXPECT(medsam2_session_add_points(NULL, 4, 1, vpt, &fg, 1, 1, NULL, 0), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_session_add_points(s, VZ, 1, vpt, &fg, 1, 1, NULL, 0), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_add_points(s, 4, 0, vpt, &fg, 1, 1, NULL, 0), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_add_points(s, 4, MEDSAM2_MAX_OBJECT_ID + 1, vpt, &fg, 1, 1, NULL, 0),
           MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_add_points(s, 4, 1, vpt, &fg, 0, 1, NULL, 0), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_add_points(s, 4, 1, NULL, &fg, 1, 1, NULL, 0), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_session_add_points(s, 4, 1, vpt, NULL, 1, 1, NULL, 0), MEDSAM2_ERR_NULL_POINTER);
    const float vout[2] = {12.0f, VY + 3.0f};
    EXPECT(medsam2_session_add_points(s, 4, 1, vout, &fg, 1, 1, NULL, 0), MEDSAM2_ERR_INVALID_ARGUMENT);
    const int32_t two = 2;
    EXPECT(medsam2_session_add_points(s, 4, 1, vpt, &two, 1, 1, NULL, 0), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_add_points(s, 4, 1, vpt, &fg, 1, 1, slice_mask, VX * VY - 1),
           MEDSAM2_ERR_BUFFER_TOO_SMALL);
    size_t nobj = 99;
    EXPECT(medsam2_session_object_ids(s, NULL, 0, &nobj), MEDSAM2_OK);
    CHECK_TRUE(nobj == 0); /* failed calls created no object */
    EXPECT(medsam2_session_add_points(s, 4, 1, vpt, &fg, 1, 1, slice_mask, sizeof slice_mask), MEDSAM2_OK);
    EXPECT(medsam2_session_add_box(s, 2, 2, NULL, NULL, 0), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_session_add_box(s, 2, 2, inverted, NULL, 0), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_add_mask(s, 2, 3, slice_mask, sizeof slice_mask - 1, NULL, 0),
           MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_add_mask(s, 2, 3, NULL, sizeof slice_mask, NULL, 0), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_session_add_mask(s, 2, 3, slice_mask, sizeof slice_mask, NULL, 0), MEDSAM2_OK);
    uint32_t ids[3];
    EXPECT(medsam2_session_object_ids(s, ids, 1, &nobj), MEDSAM2_ERR_BUFFER_TOO_SMALL);
    CHECK_TRUE(nobj == 2);
    EXPECT(medsam2_session_object_ids(s, ids, 3, &nobj), MEDSAM2_OK);
    CHECK_TRUE(nobj == 2 && ids[0] == 1 && ids[1] == 3);
    EXPECT(medsam2_session_propagate(s, 0, -1, 0, NULL, NULL), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_propagate(s, 4, -1, 0, NULL, NULL), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_propagate(s, MEDSAM2_DIRECTION_FORWARD, VZ, 0, NULL, NULL),
           MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_propagate(NULL, MEDSAM2_DIRECTION_FORWARD, -1, 0, NULL, NULL),
           MEDSAM2_ERR_NULL_POINTER);

    /* Cancellation: stop after 3 slices; the session stays usable. */
    struct cancel_state cs = {0, 3};
    EXPECT(medsam2_session_propagate(s, MEDSAM2_DIRECTION_BOTH, -1, 0, cancel_progress, &cs),
           MEDSAM2_ERR_CANCELLED);
    CHECK_TRUE(cs.calls == 3);
    EXPECT(medsam2_session_get_labels(s, labels, nvox), MEDSAM2_OK);
    size_t partial = count_nonzero16(labels, nvox);
    cs.calls = 0;
    cs.cancel_at = 1000;
    EXPECT(medsam2_session_propagate(s, MEDSAM2_DIRECTION_BOTH, -1, 0, cancel_progress, &cs), MEDSAM2_OK);
    CHECK_TRUE(cs.calls == VZ + 2 - 1); /* forward 2..7 (6), backward 2..0 (3) */
    EXPECT(medsam2_session_get_labels(s, labels, nvox), MEDSAM2_OK);
    CHECK_TRUE(count_nonzero16(labels, nvox) >= partial);
    /* max_slices limits each direction. */
    cs.calls = 0;
    EXPECT(medsam2_session_propagate(s, MEDSAM2_DIRECTION_FORWARD, 4, 2, cancel_progress, &cs), MEDSAM2_OK);
    CHECK_TRUE(cs.calls == 3);

    EXPECT(medsam2_session_get_labels(s, NULL, nvox), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_session_get_labels(s, labels, nvox - 1), MEDSAM2_ERR_BUFFER_TOO_SMALL);
    EXPECT(medsam2_session_get_slice_labels(s, VZ, labels, nvox), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_get_slice_labels(s, 1, labels, VX * VY - 1), MEDSAM2_ERR_BUFFER_TOO_SMALL);
    EXPECT(medsam2_session_get_slice_labels(s, 4, labels, VX * VY), MEDSAM2_OK);
    EXPECT(medsam2_session_get_object_mask(s, 4, 9, slice_mask, sizeof slice_mask), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_get_object_mask(s, 4, 1, slice_mask, sizeof slice_mask - 1),
           MEDSAM2_ERR_BUFFER_TOO_SMALL);
    EXPECT(medsam2_session_get_object_mask(s, 4, 1, slice_mask, sizeof slice_mask), MEDSAM2_OK);
    int same = 1;
    for (size_t i = 0; i < VX * VY; i++) same &= (labels[i] == 1) == (slice_mask[i] == 1) || labels[i] == 3;
    CHECK_TRUE(same);

    const double inside[3] = {3.0, 4.0, 5.0}, far_away[3] = {3.0, 4.0, 500.0}, nan3[3] = {NAN, 0, 0};
    uint32_t sl = 0;
    float sx = 0, sy = 0;
    EXPECT(medsam2_session_physical_to_slice(s, inside, &sl, &sx, &sy), MEDSAM2_OK);
    CHECK_TRUE(sl == 5 && sx == 3.0f && sy == 4.0f);
    EXPECT(medsam2_session_physical_to_slice(s, far_away, &sl, &sx, &sy), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_physical_to_slice(s, nan3, &sl, &sx, &sy), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_physical_to_slice(s, NULL, &sl, &sx, &sy), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_session_physical_to_slice(s, inside, NULL, &sx, &sy), MEDSAM2_ERR_NULL_POINTER);

    EXPECT(medsam2_session_clear_prompts(s, 4, 9), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_clear_prompts(s, VZ, 1), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_clear_prompts(s, 2, 3), MEDSAM2_OK);
    EXPECT(medsam2_session_remove_object(s, 9), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_remove_object(NULL, 1), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_session_remove_object(s, 3), MEDSAM2_OK);
    EXPECT(medsam2_session_object_ids(s, ids, 3, &nobj), MEDSAM2_OK);
    CHECK_TRUE(nobj == 1 && ids[0] == 1);

    /* Whole-volume segmentation (as segment_volume) and physical boxes. */
    medsam2_segment_options so = {0};
    EXPECT(medsam2_session_segment(NULL, NULL, labels, nvox, NULL, NULL), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_session_segment(s, NULL, NULL, nvox, NULL, NULL), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_session_segment(s, NULL, labels, nvox - 1, NULL, NULL), MEDSAM2_ERR_BUFFER_TOO_SMALL);
    so.propagation = 4;
    EXPECT(medsam2_session_segment(s, &so, labels, nvox, NULL, NULL), MEDSAM2_ERR_INVALID_ARGUMENT);
    so.propagation = MEDSAM2_PROPAGATION_FORWARD;
    so.mask_threshold = NAN;
    EXPECT(medsam2_session_segment(s, &so, labels, nvox, NULL, NULL), MEDSAM2_ERR_INVALID_ARGUMENT);
    so.mask_threshold = 0.0f;
    so.largest_component = 1;
    EXPECT(medsam2_session_segment(s, &so, labels, nvox, NULL, NULL), MEDSAM2_OK);
    struct cancel_state cs2 = {0, 2};
    EXPECT(medsam2_session_segment(s, NULL, labels, nvox, cancel_progress, &cs2), MEDSAM2_ERR_CANCELLED);
    CHECK_TRUE(cs2.calls == 2);
    EXPECT(medsam2_session_segment(s, NULL, labels, nvox, NULL, NULL), MEDSAM2_OK);
    const double b0[3] = {2.0, 2.0, 5.0}, b1[3] = {8.0, 8.0, 5.0}, beyond[3] = {3.0, 4.0, 600.0};
    uint32_t bsl = 99;
    EXPECT(medsam2_session_add_box_physical(NULL, 3, b0, b1, &bsl), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_session_add_box_physical(s, 3, NULL, b1, &bsl), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_session_add_box_physical(s, 0, b0, b1, &bsl), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_add_box_physical(s, 3, far_away, beyond, &bsl), MEDSAM2_ERR_INVALID_ARGUMENT);
    EXPECT(medsam2_session_add_box_physical(s, 3, nan3, b1, &bsl), MEDSAM2_ERR_INVALID_ARGUMENT);
    CHECK_TRUE(bsl == 99);
    EXPECT(medsam2_session_add_box_physical(s, 3, b0, b1, NULL), MEDSAM2_OK);
    EXPECT(medsam2_session_add_box_physical(s, 3, b0, b1, &bsl), MEDSAM2_OK);
    CHECK_TRUE(bsl == 5);

    EXPECT(medsam2_session_reset(NULL), MEDSAM2_ERR_NULL_POINTER);
    EXPECT(medsam2_session_reset(s), MEDSAM2_OK);
    EXPECT(medsam2_session_object_ids(s, NULL, 0, &nobj), MEDSAM2_OK);
    CHECK_TRUE(nobj == 0);
    EXPECT(medsam2_session_propagate(s, MEDSAM2_DIRECTION_BOTH, -1, 0, NULL, NULL), MEDSAM2_ERR_INVALID_STATE);
    EXPECT(medsam2_session_get_labels(s, labels, nvox), MEDSAM2_OK);
    CHECK_TRUE(count_nonzero16(labels, nvox) == 0);

    /* The session keeps the model alive after the caller frees it. */
    EXPECT(medsam2_model_free(model), MEDSAM2_OK);
    EXPECT(medsam2_session_add_points(s, 4, 1, vpt, &fg, 1, 1, slice_mask, sizeof slice_mask), MEDSAM2_OK);
    EXPECT(medsam2_session_propagate(s, MEDSAM2_DIRECTION_FORWARD, -1, 1, NULL, NULL), MEDSAM2_OK);
    EXPECT(medsam2_session_free(s), MEDSAM2_OK);
    free(labels);

    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
