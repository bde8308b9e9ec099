// medsam2 C++ example: the same work as examples/c/medsam2_segment.c through
// the header-only RAII wrapper medsam2.hpp (exceptions instead of status
// codes). It writes the same files, which must be byte-identical to the C
// program's.
//
//   medsam2_segment_cpp CONFIG CHECKPOINT OUT_DIR
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "medsam2.hpp"

namespace {

constexpr uint32_t kImgW = 100, kImgH = 72;
constexpr uint32_t kVolX = 40, kVolY = 32, kVolZ = 10;

std::string g_out_dir;

template <class T> void write_file(const std::string &name, const std::vector<T> &v) {
    std::ofstream f(g_out_dir + "/" + name, std::ios::binary);
    f.write(reinterpret_cast<const char *>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
    if (!f) throw std::runtime_error("cannot write " + name);
}

// The C example's pseudo-random generator (same sequence).
uint32_t g_rng = 0;
uint32_t next_rand() {
    g_rng = g_rng * 1103515245u + 12345u;
    return (g_rng >> 16) & 0x7fffu;
}

template <class T> std::size_t count(const std::vector<T> &v, T value) {
    std::size_t c = 0;
    for (T x : v) c += x == value;
    return c;
}

void segment_image(const medsam2::Model &model) {
    g_rng = 12345u;
    std::vector<uint8_t> rgb(kImgH * kImgW * 3);
    for (uint32_t y = 0; y < kImgH; y++)
        for (uint32_t x = 0; x < kImgW; x++) {
            int dx = int(x) - 60, dy = int(y) - 30;
            bool inside = dx * dx + dy * dy < 18 * 18;
            uint8_t *p = &rgb[(y * kImgW + x) * 3];
            p[0] = uint8_t(inside ? 220 : 20 + x / 2);
            p[1] = uint8_t(inside ? 180 : 30 + y / 2);
            p[2] = uint8_t(inside ? 60 : 40 + int(next_rand() % 32));
        }
    write_file("image_rgb.u8", rgb);

    medsam2::ImagePredictor predictor(model);
    predictor.set_image_rgb(rgb.data(), kImgW, kImgH);

    medsam2::Prediction p = predictor.predict(medsam2::Prompt().add_point(60, 30), true);
    write_file("image_point_masks.u8", p.masks);
    write_file("image_point_scores.f32", p.scores);
    std::size_t best = p.best();
    std::printf("image: %u masks, best %zu\n", p.num_masks, best);

    medsam2::Prompt refine;
    refine.add_point(60, 30).add_point(10, 60, false).set_mask_input(predictor.last_low_res_logits(best));
    write_file("image_refine_mask.u8", predictor.predict(refine).masks);

    medsam2::Prediction box = predictor.predict(medsam2::Prompt().set_box(38, 8, 84, 52));
    write_file("image_box_mask.u8", box.masks);

    // The error path as a C++ user sees it: a click outside the image.
    try {
        predictor.predict(medsam2::Prompt().add_point(500, 30));
        throw std::runtime_error("a click outside the image was accepted");
    } catch (const medsam2::InvalidArgument &e) {
        std::printf("caught expected InvalidArgument: %s\n", e.what());
    }

    // CT slice, rows padded, abdomen window.
    constexpr uint32_t stride = kImgW + 5;
    std::vector<int16_t> padded(kImgH * stride), ct(kImgH * kImgW);
    for (uint32_t y = 0; y < kImgH; y++)
        for (uint32_t x = 0; x < kImgW; x++) {
            int dx = int(x) - 40, dy = int(y) - 40;
            int v = dx * dx + dy * dy < 15 * 15 ? 60 : -120;
            v += int(next_rand() % 40) - 20;
            ct[y * kImgW + x] = padded[y * stride + x] = int16_t(v);
        }
    write_file("ct_image.i16", ct);
    predictor.set_image(padded.data(), kImgW, kImgH, medsam2::window_preset("abdomen"),
                        stride * sizeof(int16_t));
    write_file("ct_point_mask.u8", predictor.predict(medsam2::Prompt().add_point(40, 40)).masks);
}

void segment_volume(const medsam2::Model &model) {
    g_rng = 777u;
    std::vector<int16_t> vol(std::size_t(kVolX) * kVolY * kVolZ);
    for (uint32_t z = 0; z < kVolZ; z++)
        for (uint32_t y = 0; y < kVolY; y++)
            for (uint32_t x = 0; x < kVolX; x++) {
                int dx = int(x) - 14, dy = int(y) - 16, dz = 2 * (int(z) - 5);
                int v = -100;
                if (dx * dx + dy * dy + dz * dz < 10 * 10) v = 80;
                if (x >= 28 && x < 36 && y >= 6 && y < 26 && z >= 2 && z < 8) v = 300;
                v += int(next_rand() % 30) - 15;
                vol[(std::size_t(z) * kVolY + y) * kVolX + x] = int16_t(v);
            }
    write_file("volume.i16", vol);

    medsam2::VolumeSession session(
        model,
        medsam2::VolumeView::of(vol.data(), {kVolX, kVolY, kVolZ}, {0.8, 0.8, 2.5}, {-16.0, -12.8, 100.0}),
        medsam2::Intensity::window_preset("abdomen"));

    auto [slice, x, y] = session.physical_to_slice({-16.0 + 14 * 0.8, -12.8 + 16 * 0.8, 100.0 + 5 * 2.5});
    session.add_points(slice, 1, {x, y}, {1});
    session.add_box(4, 2, {27, 5, 36, 26});

    // Cancel after two slices: the session stays usable.
    unsigned calls = 0;
    try {
        session.propagate(medsam2::Direction::Both, -1, 0, [&](uint32_t, uint32_t) { return ++calls < 2; });
        throw std::runtime_error("propagation was not cancelled");
    } catch (const medsam2::Cancelled &) {
        std::printf("cancelled after %u slices\n", calls);
    }

    unsigned last_done = 0, last_total = 0;
    session.propagate(medsam2::Direction::Both, -1, 0, [&](uint32_t done, uint32_t total) {
        last_done = done;
        last_total = total;
        return true;
    });
    std::printf("volume: propagated %u/%u\n", last_done, last_total);
    write_file("volume_labels.u16", session.labels());

    session.add_points(7, 1, {14, 24}, {0}, false);
    session.propagate(medsam2::Direction::Both, 7);
    write_file("volume_corrected.u16", session.labels());

    session.remove_object(2);
    std::vector<uint16_t> labels = session.labels();
    write_file("volume_removed.u16", labels);
    std::printf("volume: %zu object(s) left, object 1 %zu voxels\n", session.object_ids().size(),
                count<uint16_t>(labels, 1));
    // As segment_volume: a box from two LPS corners, MedSAM2's separate passes,
    // the largest 3-D component.
    uint32_t box_slice = session.add_box_physical(3, {-16.0 + 28 * 0.8, -12.8 + 6 * 0.8, 110.0},
                                                  {-16.0 + 35 * 0.8, -12.8 + 25 * 0.8, 110.0});
    medsam2::SegmentOptions so;
    so.largest_component = true;
    unsigned seg_calls = 0;
    labels = session.segment(so, [&](uint32_t, uint32_t) { return ++seg_calls > 0; });
    write_file("volume_segment.u16", labels);
    std::printf("volume: segmented (box on slice %u, %u progress calls): object 3 %zu voxels\n",
                box_slice, seg_calls, count<uint16_t>(labels, 3));
    session.reset();
    if (count<uint16_t>(session.labels(), 0) != vol.size()) throw std::runtime_error("labels not empty after reset");
}

} // namespace

int main(int argc, char **argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: %s CONFIG CHECKPOINT OUT_DIR\n", argv[0]);
        return 2;
    }
    g_out_dir = argv[3];
    try {
        medsam2::check_abi();
        std::printf("medsam2 %s\n", medsam2::version().c_str());
        medsam2::Model model = medsam2::Model::load(argv[1], argv[2]);
        segment_image(model);
        segment_volume(model);
        try {
            medsam2::Model::load(argv[1], "/nonexistent/weights.safetensors");
        } catch (const medsam2::IoError &e) {
            std::printf("caught expected IoError: %s\n", e.what());
        }
    } catch (const medsam2::Error &e) {
        std::fprintf(stderr, "medsam2 error %d: %s\n", int(e.status()), e.what());
        return 1;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    std::printf("ok\n");
    return 0;
}
