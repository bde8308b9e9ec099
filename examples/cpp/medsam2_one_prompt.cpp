// medsam2 C++ example: one-prompt segmentation (MedSAM-2's confidence memory
// bank, ABI 2) with the header-only wrapper medsam2.hpp.
//
//   medsam2_one_prompt_cpp CONFIG CHECKPOINT OUT_DIR
//
// The same stream, prompt, bank round trip and output files as the C example
// examples/c/medsam2_one_prompt.c (see there), through medsam2::OnePrompt;
// then shows that a bank is never written over another file (the config).
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "medsam2.hpp"

namespace {

constexpr int kNumImages = 6;
constexpr int kCtImage = 4;

// width, height, centre x, centre y, radius (as in the C example).
constexpr int kImages[kNumImages][5] = {
    {64, 64, 40, 26, 12}, {80, 60, 30, 32, 14}, {56, 72, 28, 44, 11},
    {96, 64, 60, 30, 15}, {64, 64, 34, 34, 13}, {72, 48, 20, 22, 10},
};

uint32_t g_rng = 2024u;
uint32_t next_rand() {
    g_rng = g_rng * 1103515245u + 12345u;
    return (g_rng >> 16) & 0x7fffu;
}

std::string g_out_dir;

void write_file(const std::string &name, const void *data, std::size_t bytes) {
    std::ofstream f(g_out_dir + "/" + name, std::ios::binary);
    f.write(static_cast<const char *>(data), static_cast<std::streamsize>(bytes));
    if (!f) throw std::runtime_error("cannot write " + name);
}

struct Image {
    int width = 0, height = 0;
    std::vector<uint8_t> rgb;
    std::vector<int16_t> ct;

    medsam2::ImageView view() const {
        if (!ct.empty())
            return medsam2::ImageView::windowed(ct.data(), static_cast<uint32_t>(width),
                                                static_cast<uint32_t>(height),
                                                medsam2::window_preset("abdomen"));
        return medsam2::ImageView::rgb(rgb.data(), static_cast<uint32_t>(width),
                                       static_cast<uint32_t>(height));
    }
};

Image make_image(int i) {
    Image im;
    im.width = kImages[i][0];
    im.height = kImages[i][1];
    const int cx = kImages[i][2], cy = kImages[i][3], r = kImages[i][4];
    for (int y = 0; y < im.height; y++)
        for (int x = 0; x < im.width; x++) {
            int dx = x - cx, dy = y - cy;
            bool inside = dx * dx + dy * dy < r * r;
            if (i == kCtImage) {
                int v = inside ? 70 : -110;
                im.ct.push_back(static_cast<int16_t>(v + static_cast<int>(next_rand() % 40) - 20));
            } else {
                // Same evaluation order as the C example.
                uint8_t r0 = static_cast<uint8_t>(inside ? 210 + static_cast<int>(next_rand() % 30)
                                                         : 25 + x / 3);
                uint8_t g0 = static_cast<uint8_t>(inside ? 170 + static_cast<int>(next_rand() % 30)
                                                         : 35 + y / 3);
                uint8_t b0 = static_cast<uint8_t>(inside ? 70 : 30 + static_cast<int>(next_rand() % 40));
                im.rgb.insert(im.rgb.end(), {r0, g0, b0});
            }
        }
    return im;
}

void report(const medsam2::OnePromptResult &r) {
    std::size_t n = 0;
    for (uint8_t v : r.mask) n += v != 0;
    std::printf("one-prompt: image %d (%ux%u): %zu pixels, IoU %.4f, %u memories used, bank %u\n",
                static_cast<int>(r.info.index), r.width, r.height, n, r.info.iou,
                r.info.num_picked, r.info.bank_len);
}

} // namespace

int main(int argc, char **argv) {
    if (argc < 4) {
        std::cerr << "usage: " << argv[0] << " CONFIG CHECKPOINT OUT_DIR\n";
        return 2;
    }
    g_out_dir = argv[3];
    try {
        medsam2::check_abi();
        medsam2::Model model = medsam2::Model::load(argv[1], argv[2]);

        std::vector<Image> images;
        std::vector<uint32_t> sizes;
        for (int i = 0; i < kNumImages; i++) {
            images.push_back(make_image(i));
            const Image &im = images.back();
            sizes.push_back(static_cast<uint32_t>(im.width));
            sizes.push_back(static_cast<uint32_t>(im.height));
            if (i == kCtImage)
                write_file("op_image" + std::to_string(i) + ".i16", im.ct.data(), im.ct.size() * 2);
            else
                write_file("op_image" + std::to_string(i) + ".u8", im.rgb.data(), im.rgb.size());
        }
        write_file("op_sizes.u32", sizes.data(), sizes.size() * sizeof(uint32_t));

        medsam2_one_prompt_options opts = medsam2::one_prompt_defaults(MEDSAM2_BANK_MODE_FIXED);
        opts.capacity = 4;
        std::vector<medsam2::OnePromptResult> results;
        std::vector<uint8_t> bank;
        const std::string bank_path = g_out_dir + "/bank.safetensors";
        {
            medsam2::OnePrompt stream(model, opts);
            const float click[2] = {static_cast<float>(kImages[0][2]),
                                    static_cast<float>(kImages[0][3])};
            write_file("op_click.f32", click, sizeof click);
            results.push_back(
                stream.add_prompt(images[0].view(), medsam2::Prompt().add_point(click[0], click[1])));
            report(results.back());
            for (int i = 1; i <= 2; i++) {
                results.push_back(stream.segment(images[i].view()));
                report(results.back());
            }
            stream.save_bank(bank_path);
            bank = stream.bank_bytes();
        }
        medsam2::OnePrompt from_file(model), from_memory(model);
        from_file.load_bank(bank_path);
        from_memory.load_bank_bytes(bank);
        std::printf("one-prompt: bank of %u entries after %u images saved (%zu bytes) and reloaded\n",
                    from_file.bank_len(), static_cast<unsigned>(from_file.images_seen()),
                    bank.size());
        for (int i = 3; i < kNumImages; i++) {
            results.push_back(from_file.segment(images[i].view()));
            report(results.back());
            medsam2::OnePromptResult other = from_memory.segment(images[i].view());
            if (other.mask != results.back().mask || other.info.iou != results.back().info.iou)
                throw std::runtime_error("the banks from the file and from memory disagree");
        }
        std::vector<float> ious;
        for (int i = 0; i < kNumImages; i++) {
            write_file("op_mask" + std::to_string(i) + ".u8", results[i].mask.data(),
                       results[i].mask.size());
            ious.push_back(results[i].info.iou);
        }
        write_file("op_iou.f32", ious.data(), ious.size() * sizeof(float));

        // A bank is never written over a file that is not a bank.
        try {
            from_file.save_bank(argv[1]);
            std::cerr << "saving a bank over the config succeeded\n";
            return 1;
        } catch (const medsam2::IoError &e) {
            std::cout << "caught expected IoError: " << e.what() << "\n";
        }
        std::cout << "ok\n";
    } catch (const medsam2::Error &e) {
        std::cerr << "medsam2 error " << e.status() << ": " << e.what() << "\n";
        return 1;
    } catch (const std::exception &e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
