/*
 * medsam2 C example: one-prompt segmentation (MedSAM-2's confidence memory
 * bank, ABI 2) of a stream of unrelated 2-D images through libmedsam2.
 *
 *   medsam2_one_prompt CONFIG CHECKPOINT OUT_DIR
 *
 * The program makes six synthetic images of different sizes, each with a
 * bright disc (the object) somewhere on a noisy background; image 4 is a CT
 * slice in Hounsfield units. It clicks on the disc of image 0 only, segments
 * images 1 and 2 from the bank, saves the bank to OUT_DIR/bank.safetensors and
 * to memory, loads it into two new sessions (from the file and from the
 * bytes), and segments images 3 to 5 with both (their masks must agree).
 * Inputs and results go to OUT_DIR as raw little-endian arrays:
 *
 *   op_sizes.u32      width, height of each image (6 x 2)
 *   op_click.f32      x, y of the click on image 0
 *   op_image<i>.u8    H x W x 3 RGB image i (op_image4.i16: H x W CT slice)
 *   op_mask<i>.u8     H x W mask of image i
 *   op_iou.f32        predicted IoU of each image
 *
 * Build: cc -I include medsam2_one_prompt.c -L target/release -lmedsam2
 * (or with CMake: find_package(medsam2), see CMakeLists.txt).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "medsam2.h"

#define NUM_IMAGES 6
#define CT_IMAGE 4

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

static void out_path(char *path, size_t n, const char *name) {
    snprintf(path, n, "%s/%s", g_out_dir, name);
}

static void write_file(const char *name, const void *data, size_t bytes) {
    char path[4096];
    out_path(path, sizeof path, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, bytes, f) != bytes) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

/* A small deterministic pseudo-random generator (same sequence everywhere). */
static uint32_t g_rng = 2024u;
static uint32_t next_rand(void) {
    g_rng = g_rng * 1103515245u + 12345u;
    return (g_rng >> 16) & 0x7fffu;
}

/* Image sizes and where each disc is: width, height, centre x, centre y, radius. */
static const int k_images[NUM_IMAGES][5] = {
    {64, 64, 40, 26, 12}, {80, 60, 30, 32, 14}, {56, 72, 28, 44, 11},
    {96, 64, 60, 30, 15}, {64, 64, 34, 34, 13}, {72, 48, 20, 22, 10},
};

/* The pixels of image i: RGB u8 (3 values per pixel), or for the CT image
   one int16 per pixel (HU). The caller frees the buffer. */
static void *make_image(int i) {
    const int w = k_images[i][0], h = k_images[i][1];
    const int cx = k_images[i][2], cy = k_images[i][3], r = k_images[i][4];
    if (i == CT_IMAGE) {
        int16_t *ct = malloc(sizeof(int16_t) * (size_t)w * h);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int dx = x - cx, dy = y - cy;
                int v = dx * dx + dy * dy < r * r ? 70 : -110;
                ct[y * w + x] = (int16_t)(v + (int)(next_rand() % 40) - 20);
            }
        return ct;
    }
    uint8_t *rgb = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int dx = x - cx, dy = y - cy;
            int inside = dx * dx + dy * dy < r * r;
            uint8_t *p = rgb + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(inside ? 210 + (int)(next_rand() % 30) : 25 + x / 3);
            p[1] = (uint8_t)(inside ? 170 + (int)(next_rand() % 30) : 35 + y / 3);
            p[2] = (uint8_t)(inside ? 70 : 30 + (int)(next_rand() % 40));
        }
    return rgb;
}

static medsam2_image describe(int i, const void *pixels) {
    medsam2_image img;
    memset(&img, 0, sizeof img);
    img.data = pixels;
    img.width = (uint32_t)k_images[i][0];
    img.height = (uint32_t)k_images[i][1];
    if (i == CT_IMAGE) {
        img.pixel_type = MEDSAM2_PIXEL_I16;
        img.channels = 1;
        CHECK(medsam2_window_preset("abdomen", &img.window));
    } else {
        img.pixel_type = MEDSAM2_PIXEL_U8;
        img.channels = 3;
    }
    return img;
}

static size_t count_nonzero(const uint8_t *p, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += p[i] != 0;
    return c;
}

static const char *action_name(uint32_t a) {
    switch (a) {
    case MEDSAM2_BANK_APPENDED: return "appended";
    case MEDSAM2_BANK_REPLACED: return "replaced";
    case MEDSAM2_BANK_KEPT_SIMILARITY: return "kept (similarity)";
    case MEDSAM2_BANK_KEPT_IOU: return "kept (IoU)";
    case MEDSAM2_BANK_FROZEN: return "frozen";
    default: return "?";
    }
}

static void report(medsam2_one_prompt *s, int i, const uint8_t *mask) {
    medsam2_one_prompt_result r;
    CHECK(medsam2_one_prompt_last_result(s, &r));
    printf("one-prompt: image %d (%dx%d): %zu pixels, IoU %.4f, %u memories used, bank %s -> %u\n",
           (int)r.index, k_images[i][0], k_images[i][1],
           count_nonzero(mask, (size_t)k_images[i][0] * k_images[i][1]), r.iou, r.num_picked,
           action_name(r.bank_action), r.bank_len);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s CONFIG CHECKPOINT OUT_DIR\n", argv[0]);
        return 2;
    }
    g_out_dir = argv[3];
    if (medsam2_abi_version() != MEDSAM2_ABI_VERSION) {
        fprintf(stderr, "library ABI %u, header ABI %u\n", medsam2_abi_version(), MEDSAM2_ABI_VERSION);
        return 1;
    }
    medsam2_model *model = NULL;
    CHECK(medsam2_model_load(argv[1], argv[2], "cpu", "f32", &model));

    void *pixels[NUM_IMAGES];
    uint8_t *masks[NUM_IMAGES];
    float ious[NUM_IMAGES];
    uint32_t sizes[NUM_IMAGES][2];
    for (int i = 0; i < NUM_IMAGES; i++) {
        size_t n = (size_t)k_images[i][0] * k_images[i][1];
        pixels[i] = make_image(i);
        masks[i] = malloc(n);
        sizes[i][0] = (uint32_t)k_images[i][0];
        sizes[i][1] = (uint32_t)k_images[i][1];
        char name[64];
        if (i == CT_IMAGE) {
            snprintf(name, sizeof name, "op_image%d.i16", i);
            write_file(name, pixels[i], n * sizeof(int16_t));
        } else {
            snprintf(name, sizeof name, "op_image%d.u8", i);
            write_file(name, pixels[i], n * 3);
        }
    }
    write_file("op_sizes.u32", sizes, sizeof sizes);

    /* A session with a small bank: the defaults, capacity 4. */
    medsam2_one_prompt_options opts;
    CHECK(medsam2_one_prompt_options_default(MEDSAM2_BANK_MODE_FIXED, &opts));
    opts.capacity = 4;
    medsam2_one_prompt *s = NULL;
    CHECK(medsam2_one_prompt_new(model, &opts, &s));

    /* The one prompt: a click on the disc of image 0. */
    const float click[2] = {(float)k_images[0][2], (float)k_images[0][3]};
    write_file("op_click.f32", click, sizeof click);
    const int32_t fg = 1;
    medsam2_prompt prompt;
    memset(&prompt, 0, sizeof prompt);
    prompt.points = click;
    prompt.labels = &fg;
    prompt.num_points = 1;
    medsam2_image img = describe(0, pixels[0]);
    CHECK(medsam2_one_prompt_add_prompt(s, &img, &prompt, masks[0], (size_t)img.width * img.height,
                                        &ious[0]));
    report(s, 0, masks[0]);

    /* Then images without prompts. */
    for (int i = 1; i <= 2; i++) {
        img = describe(i, pixels[i]);
        CHECK(medsam2_one_prompt_segment(s, &img, masks[i], (size_t)img.width * img.height, &ious[i]));
        report(s, i, masks[i]);
    }

    /* Save the bank to a file and to memory; continue in two new sessions. */
    char bank_path[4096];
    out_path(bank_path, sizeof bank_path, "bank.safetensors");
    CHECK(medsam2_one_prompt_save_bank(s, bank_path));
    size_t bank_size = 0;
    CHECK(medsam2_one_prompt_bank_to_bytes(s, NULL, 0, &bank_size));
    uint8_t *bank = malloc(bank_size);
    CHECK(medsam2_one_prompt_bank_to_bytes(s, bank, bank_size, &bank_size));
    CHECK(medsam2_one_prompt_free(s));

    medsam2_one_prompt *from_file = NULL, *from_memory = NULL;
    CHECK(medsam2_one_prompt_new(model, NULL, &from_file));
    CHECK(medsam2_one_prompt_load_bank(from_file, bank_path));
    CHECK(medsam2_one_prompt_new(model, NULL, &from_memory));
    CHECK(medsam2_one_prompt_load_bank_from_memory(from_memory, bank, bank_size));
    free(bank);
    uint32_t bank_len = 0;
    uint64_t seen = 0;
    CHECK(medsam2_one_prompt_bank_len(from_file, &bank_len));
    CHECK(medsam2_one_prompt_images_seen(from_file, &seen));
    printf("one-prompt: bank of %u entries after %u images saved (%zu bytes) and reloaded\n", bank_len,
           (unsigned)seen, bank_size);

    int same = 1;
    for (int i = 3; i < NUM_IMAGES; i++) {
        size_t n = (size_t)k_images[i][0] * k_images[i][1];
        uint8_t *other = malloc(n);
        float other_iou = 0.0f;
        img = describe(i, pixels[i]);
        CHECK(medsam2_one_prompt_segment(from_file, &img, masks[i], n, &ious[i]));
        report(from_file, i, masks[i]);
        CHECK(medsam2_one_prompt_segment(from_memory, &img, other, n, &other_iou));
        same &= memcmp(other, masks[i], n) == 0 && other_iou == ious[i];
        free(other);
    }
    if (!same) {
        fprintf(stderr, "the banks loaded from the file and from memory disagree\n");
        return 1;
    }
    printf("one-prompt: the banks from the file and from memory give the same masks\n");

    for (int i = 0; i < NUM_IMAGES; i++) {
        char name[64];
        snprintf(name, sizeof name, "op_mask%d.u8", i);
        write_file(name, masks[i], (size_t)k_images[i][0] * k_images[i][1]);
        free(masks[i]);
        free(pixels[i]);
    }
    write_file("op_iou.f32", ious, sizeof ious);

    CHECK(medsam2_one_prompt_free(from_file));
    CHECK(medsam2_one_prompt_free(from_memory));
    CHECK(medsam2_model_free(model));
    printf("ok\n");
    return 0;
}
