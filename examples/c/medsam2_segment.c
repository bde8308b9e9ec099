/*
 * medsam2 C example: segment an image and a CT volume through libmedsam2.
 *
 *   medsam2_segment CONFIG CHECKPOINT OUT_DIR [--volume-only]
 *
 * CONFIG is a preset name (e.g. sam2.1_hiera_t) or a YAML config file,
 * CHECKPOINT a .safetensors or .pt file. The program makes a synthetic RGB
 * image, a synthetic CT slice and a synthetic CT volume, segments them, and
 * writes inputs and results as raw little-endian arrays into OUT_DIR:
 *
 *   image_rgb.u8            H x W x 3 input image
 *   image_point_masks.u8    3 x H x W masks from one click (multimask)
 *   image_point_scores.f32  their 3 IoU scores
 *   image_box_mask.u8       H x W mask from a box
 *   image_refine_mask.u8    H x W mask from two clicks + the best low-res mask
 *   ct_image.i16            H x W CT slice (Hounsfield units)
 *   ct_point_mask.u8        H x W mask of the CT slice (abdomen window)
 *   volume.i16              Z x Y x X CT volume
 *   volume_labels.u16       labels after a click (object 1) and a box (object 2)
 *   volume_corrected.u16    labels after a background click on a propagated slice
 *   volume_removed.u16      labels after removing object 2
 *   volume_segment.u16      medsam2_session_segment (separate passes, largest
 *                           component) after a physical box for object 3
 *
 * Build: cc -I include medsam2_segment.c -L target/release -lmedsam2
 * (or with CMake: find_package(medsam2), see CMakeLists.txt).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "medsam2.h"

#define IMG_W 100
#define IMG_H 72
#define VOL_X 40
#define VOL_Y 32
#define VOL_Z 10

/* Fails loudly with the library's message. */
#define CHECK(call)                                                                    \
    do {                                                                               \
        medsam2_status st_ = (call);                                                   \
        if (st_ != MEDSAM2_OK) {                                                       \
            fprintf(stderr, "%s:%d: %s failed: %s: %s\n", __FILE__, __LINE__, #call,   \
                    medsam2_status_string(st_), medsam2_last_error());                 \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

static const char *g_out_dir;

static void write_file(const char *name, const void *data, size_t bytes) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", g_out_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, bytes, f) != bytes) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

/* A small deterministic pseudo-random generator (same sequence everywhere). */
static uint32_t g_rng = 12345u;
static uint32_t next_rand(void) {
    g_rng = g_rng * 1103515245u + 12345u;
    return (g_rng >> 16) & 0x7fffu;
}

static size_t count_nonzero_u8(const uint8_t *p, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += p[i] != 0;
    return c;
}

static size_t count_label(const uint16_t *p, size_t n, uint16_t label) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += p[i] == label;
    return c;
}

static void segment_image(const medsam2_model *model) {
    g_rng = 12345u;
    /* An RGB image: a bright disc on a dark gradient. */
    static uint8_t rgb[IMG_H][IMG_W][3];
    for (int y = 0; y < IMG_H; y++)
        for (int x = 0; x < IMG_W; x++) {
            int dx = x - 60, dy = y - 30;
            int inside = dx * dx + dy * dy < 18 * 18;
            rgb[y][x][0] = (uint8_t)(inside ? 220 : 20 + x / 2);
            rgb[y][x][1] = (uint8_t)(inside ? 180 : 30 + y / 2);
            rgb[y][x][2] = (uint8_t)(inside ? 60 : 40 + (int)(next_rand() % 32));
        }
    write_file("image_rgb.u8", rgb, sizeof rgb);

    medsam2_predictor *pred = NULL;
    CHECK(medsam2_predictor_new(model, &pred));
    medsam2_image img = {0};
    img.data = rgb;
    img.pixel_type = MEDSAM2_PIXEL_U8;
    img.width = IMG_W;
    img.height = IMG_H;
    img.channels = 3;
    img.row_stride = 0; /* packed */
    CHECK(medsam2_predictor_set_image(pred, &img));

    /* One click, three candidate masks. */
    uint32_t m = 0;
    CHECK(medsam2_model_mask_count(model, 1, &m));
    uint8_t *masks = malloc((size_t)m * IMG_H * IMG_W);
    float scores[3];
    const float click[2] = {60.0f, 30.0f};
    const int32_t fg = 1;
    medsam2_prompt prompt = {0};
    prompt.points = click;
    prompt.labels = &fg;
    prompt.num_points = 1;
    CHECK(medsam2_predictor_predict(pred, &prompt, 1, masks, (size_t)m * IMG_H * IMG_W, scores, 3, &m));
    write_file("image_point_masks.u8", masks, (size_t)m * IMG_H * IMG_W);
    write_file("image_point_scores.f32", scores, sizeof scores);
    unsigned best = 0;
    for (unsigned i = 1; i < m; i++)
        if (scores[i] > scores[best]) best = i;
    printf("image: %u masks, scores %.4f %.4f %.4f, best %u with %zu pixels\n", m, scores[0],
           scores[1], scores[2], best, count_nonzero_u8(masks + (size_t)best * IMG_H * IMG_W, IMG_H * IMG_W));

    /* Refine: the best mask's low-res logits plus a background click. */
    uint32_t low = 0;
    CHECK(medsam2_model_low_res_size(model, &low));
    float *low_res = malloc(sizeof(float) * m * low * low);
    CHECK(medsam2_predictor_last_low_res_logits(pred, low_res, (size_t)m * low * low));
    const float clicks2[4] = {60.0f, 30.0f, 10.0f, 60.0f};
    const int32_t labels2[2] = {1, 0};
    medsam2_prompt refine = {0};
    refine.points = clicks2;
    refine.labels = labels2;
    refine.num_points = 2;
    refine.mask_input = low_res + (size_t)best * low * low;
    refine.mask_input_len = (size_t)low * low;
    uint8_t *mask1 = malloc(IMG_H * IMG_W);
    float score1 = 0.0f;
    CHECK(medsam2_predictor_predict(pred, &refine, 0, mask1, IMG_H * IMG_W, &score1, 1, NULL));
    write_file("image_refine_mask.u8", mask1, IMG_H * IMG_W);

    /* A box. */
    const float box[4] = {38.0f, 8.0f, 84.0f, 52.0f};
    medsam2_prompt bp = {0};
    bp.bbox = box;
    CHECK(medsam2_predictor_predict(pred, &bp, 0, mask1, IMG_H * IMG_W, &score1, 1, NULL));
    write_file("image_box_mask.u8", mask1, IMG_H * IMG_W);
    printf("image: box mask %zu pixels, score %.4f\n", count_nonzero_u8(mask1, IMG_H * IMG_W), score1);

    /* A CT slice in Hounsfield units, rows padded (row_stride), abdomen window. */
    enum { STRIDE_ELEMS = IMG_W + 5 };
    static int16_t ct_padded[IMG_H][STRIDE_ELEMS];
    static int16_t ct[IMG_H][IMG_W];
    for (int y = 0; y < IMG_H; y++)
        for (int x = 0; x < IMG_W; x++) {
            int dx = x - 40, dy = y - 40;
            int v = dx * dx + dy * dy < 15 * 15 ? 60 : -120;
            v += (int)(next_rand() % 40) - 20;
            ct[y][x] = ct_padded[y][x] = (int16_t)v;
        }
    write_file("ct_image.i16", ct, sizeof ct);
    medsam2_image ct_img = {0};
    ct_img.data = ct_padded;
    ct_img.pixel_type = MEDSAM2_PIXEL_I16;
    ct_img.width = IMG_W;
    ct_img.height = IMG_H;
    ct_img.channels = 1;
    ct_img.row_stride = STRIDE_ELEMS * sizeof(int16_t);
    CHECK(medsam2_window_preset("abdomen", &ct_img.window));
    CHECK(medsam2_predictor_set_image(pred, &ct_img));
    const float ct_click[2] = {40.0f, 40.0f};
    prompt.points = ct_click;
    CHECK(medsam2_predictor_predict(pred, &prompt, 0, mask1, IMG_H * IMG_W, &score1, 1, NULL));
    write_file("ct_point_mask.u8", mask1, IMG_H * IMG_W);
    printf("ct image: mask %zu pixels, score %.4f\n", count_nonzero_u8(mask1, IMG_H * IMG_W), score1);

    free(masks);
    free(low_res);
    free(mask1);
    CHECK(medsam2_predictor_free(pred));
}

struct progress_state {
    unsigned calls;
    uint32_t last_done, last_total;
};

static int on_progress(void *user, uint32_t done, uint32_t total) {
    struct progress_state *p = user;
    p->calls++;
    p->last_done = done;
    p->last_total = total;
    return 0; /* continue */
}

static void segment_volume(const medsam2_model *model) {
    g_rng = 777u;
    /* A CT volume: a sphere (object 1) and a box-shaped block (object 2). */
    const size_t n = (size_t)VOL_X * VOL_Y * VOL_Z;
    int16_t *vol = malloc(n * sizeof *vol);
    for (int z = 0; z < VOL_Z; z++)
        for (int y = 0; y < VOL_Y; y++)
            for (int x = 0; x < VOL_X; x++) {
                int dx = x - 14, dy = y - 16, dz = 2 * (z - 5);
                int v = -100;
                if (dx * dx + dy * dy + dz * dz < 10 * 10) v = 80;
                if (x >= 28 && x < 36 && y >= 6 && y < 26 && z >= 2 && z < 8) v = 300;
                v += (int)(next_rand() % 30) - 15;
                vol[((size_t)z * VOL_Y + y) * VOL_X + x] = (int16_t)v;
            }
    write_file("volume.i16", vol, n * sizeof *vol);

    medsam2_volume desc = {0};
    desc.voxels = vol;
    desc.pixel_type = MEDSAM2_PIXEL_I16;
    desc.dims[0] = VOL_X;
    desc.dims[1] = VOL_Y;
    desc.dims[2] = VOL_Z;
    desc.spacing[0] = 0.8;
    desc.spacing[1] = 0.8;
    desc.spacing[2] = 2.5;
    desc.origin[0] = -16.0;
    desc.origin[1] = -12.8;
    desc.origin[2] = 100.0;
    desc.direction[0] = desc.direction[4] = desc.direction[8] = 1.0;
    medsam2_intensity it = {0};
    it.mode = MEDSAM2_INTENSITY_WINDOW;
    it.stretch = MEDSAM2_STRETCH_CLIPPED_MINMAX;
    CHECK(medsam2_window_preset("abdomen", &it.window));

    medsam2_session *s = NULL;
    CHECK(medsam2_session_new(model, &desc, &it, MEDSAM2_AXIS_K, NULL, &s));
    uint32_t slices = 0, w = 0, h = 0;
    CHECK(medsam2_session_slice_shape(s, &slices, &w, &h));
    printf("volume: %u slices of %ux%u\n", slices, w, h);

    /* Object 1: a click at the sphere's centre, given in patient space. */
    const double centre_lps[3] = {-16.0 + 14 * 0.8, -12.8 + 16 * 0.8, 100.0 + 5 * 2.5};
    uint32_t slice = 0;
    float px = 0, py = 0;
    CHECK(medsam2_session_physical_to_slice(s, centre_lps, &slice, &px, &py));
    const float pt[2] = {px, py};
    const int32_t fg = 1;
    uint8_t *mask = malloc((size_t)w * h);
    CHECK(medsam2_session_add_points(s, slice, 1, pt, &fg, 1, 1, mask, (size_t)w * h));
    printf("volume: object 1 clicked on slice %u at (%.1f, %.1f): %zu pixels\n", slice, px, py,
           count_nonzero_u8(mask, (size_t)w * h));

    /* Object 2: a box on slice 4. */
    const float box[4] = {27.0f, 5.0f, 36.0f, 26.0f};
    CHECK(medsam2_session_add_box(s, 4, 2, box, mask, (size_t)w * h));

    struct progress_state prog = {0};
    CHECK(medsam2_session_propagate(s, MEDSAM2_DIRECTION_BOTH, -1, 0, on_progress, &prog));
    printf("volume: propagated, %u progress calls, last %u/%u\n", prog.calls, prog.last_done,
           prog.last_total);

    uint16_t *labels = malloc(n * sizeof *labels);
    CHECK(medsam2_session_get_labels(s, labels, n));
    write_file("volume_labels.u16", labels, n * sizeof *labels);
    printf("volume: object 1 %zu voxels, object 2 %zu voxels\n", count_label(labels, n, 1),
           count_label(labels, n, 2));

    /* Correction: a background click on a propagated slice, then propagate again. */
    const float bg_pt[2] = {14.0f, 24.0f};
    const int32_t bg = 0;
    CHECK(medsam2_session_add_points(s, 7, 1, bg_pt, &bg, 1, 0, NULL, 0));
    CHECK(medsam2_session_propagate(s, MEDSAM2_DIRECTION_BOTH, 7, 0, NULL, NULL));
    CHECK(medsam2_session_get_labels(s, labels, n));
    write_file("volume_corrected.u16", labels, n * sizeof *labels);

    CHECK(medsam2_session_remove_object(s, 2));
    CHECK(medsam2_session_get_labels(s, labels, n));
    write_file("volume_removed.u16", labels, n * sizeof *labels);
    size_t count = 0;
    CHECK(medsam2_session_object_ids(s, NULL, 0, &count));
    printf("volume: %zu object(s) left, object 1 %zu voxels\n", count, count_label(labels, n, 1));

    /* The whole volume as segment_volume does it: object 3, a box given by two
       LPS corners (the block on slice 4), then MedSAM2's two separate passes
       from every prompt so far, each object's largest 3-D component kept. */
    const double c0[3] = {-16.0 + 28 * 0.8, -12.8 + 6 * 0.8, 100.0 + 4 * 2.5};
    const double c1[3] = {-16.0 + 35 * 0.8, -12.8 + 25 * 0.8, 100.0 + 4 * 2.5};
    uint32_t box_slice = 0;
    CHECK(medsam2_session_add_box_physical(s, 3, c0, c1, &box_slice));
    medsam2_segment_options so = {0};
    so.propagation = MEDSAM2_PROPAGATION_SEPARATE;
    so.largest_component = 1;
    CHECK(medsam2_session_segment(s, &so, labels, n, NULL, NULL));
    write_file("volume_segment.u16", labels, n * sizeof *labels);
    printf("volume: segmented (box on slice %u): object 1 %zu voxels, object 3 %zu voxels\n",
           box_slice, count_label(labels, n, 1), count_label(labels, n, 3));

    CHECK(medsam2_session_reset(s));
    CHECK(medsam2_session_get_labels(s, labels, n));
    if (count_label(labels, n, 0) != n) {
        fprintf(stderr, "labels not empty after reset\n");
        exit(1);
    }

    free(labels);
    free(mask);
    free(vol);
    CHECK(medsam2_session_free(s));
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s CONFIG CHECKPOINT OUT_DIR [--volume-only]\n", argv[0]);
        return 2;
    }
    g_out_dir = argv[3];
    int volume_only = argc > 4 && strcmp(argv[4], "--volume-only") == 0;
    if (medsam2_abi_version() != MEDSAM2_ABI_VERSION) {
        fprintf(stderr, "library ABI %u, header ABI %u\n", medsam2_abi_version(), MEDSAM2_ABI_VERSION);
        return 1;
    }
    printf("medsam2 %s (ABI %u)\n", medsam2_version(), medsam2_abi_version());

    medsam2_model *model = NULL;
    CHECK(medsam2_model_load(argv[1], argv[2], "cpu", "f32", &model));
    uint32_t size = 0;
    CHECK(medsam2_model_image_size(model, &size));
    printf("model: input %ux%u\n", size, size);

    if (!volume_only) segment_image(model);
    segment_volume(model);

    CHECK(medsam2_model_free(model));
    printf("ok\n");
    return 0;
}
