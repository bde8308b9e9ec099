// medsam2_itk_segment: segment a NIfTI / NRRD volume read with ITK from box
// prompts, and write the label image with ITK in the input's geometry.
// SPDX-License-Identifier: Apache-2.0
//
//   medsam2_itk_segment --volume ct.nii.gz --out seg.nii.gz
//       --checkpoint MedSAM2_latest.pt --config medsam2 --box 6,250,230,300,280
//
// The same job as `segment_volume` (examples/segment_volume.rs) for box
// prompts, with its defaults and results (`--box-physical` is its
// `--physical --box`; no clicks, masks or montage), through the C ABI and the header-only helper
// medsam2_itk.hpp: ITK reads the file (itk::ImageFileReader), the helper
// hands its buffer and geometry to a medsam2 session, and the labels come
// back as an itk::Image written by itk::ImageFileWriter. Run with --help.
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cli.hpp"
#include "itkImageFileWriter.h"
#include "medsam2_itk.hpp"

namespace {

const char *const USAGE = R"(usage: medsam2_itk_segment --volume IN --out OUT --checkpoint FILE [options]

Segment a 3-D volume (any format ITK reads: .nii, .nii.gz, .nrrd, .nhdr, .mha,
...) from box prompts on slices and write the label image (object id per
voxel, uint16) with ITK in the input's geometry. Same defaults and results
as `cargo run --release --example segment_volume` with the same box prompts.

  --volume IN            input volume (scalar, 3-D)
  --out OUT              output label image (.nii, .nii.gz, .nrrd, ...);
                         never the input file
  --checkpoint FILE      model weights (.pt, .pth, .safetensors)
  --config PRESET|YAML   model config (default medsam2)
  --box [OBJ:]Z,X0,Y0,X1,Y1
                         box on slice Z along --axis, X column and Y row in
                         voxel indices (for axis 2: X = i, Y = j)
  --box-physical [OBJ:]X0,Y0,Z0,X1,Y1,Z1
                         box by two opposite corners in LPS millimetres (ITK's
                         physical space), drawn on the slice nearest their middle
                         The n-th box without OBJ: is object n; repeatable.
  --window W             auto (default: uint8 as is, other types the abdomen
                         CT window W400 L40), none, percentile, a preset
                         (abdomen, soft-tissue, lung, bone, brain,
                         mediastinum) or WIDTH,LEVEL
  --axis 0|1|2           slicing axis (default 2, the last index axis)
  --propagation MODE     separate (default; MedSAM2: forward, then a fresh
                         backward pass), joint or forward
  --largest-component    keep each object's largest 26-connected component
  --fill-hole-area N     fill background holes of at most N pixels in each
                         slice's low-resolution mask (default 8, as the
                         official predictor on a GPU; 0 = off, as on a CPU)
  --device DEV           cpu (default), cuda[:N], metal[:N]
  --dtype T              f32 (default), f16, bf16
  --quiet                no progress output
)";

struct BoxArg {
    uint32_t obj_id;
    bool physical;
    std::string text;
};

struct Args {
    std::string volume, out, checkpoint, config = "medsam2";
    std::vector<BoxArg> boxes;
    std::string window = "auto";
    uint32_t axis = MEDSAM2_AXIS_K;
    std::string propagation = "separate";
    bool largest_component = false;
    int32_t fill_hole_area = 8;
    std::string device = "cpu", dtype = "f32";
    bool quiet = false;
};

Args parse_args(int argc, char **argv) {
    Args a;
    uint32_t next_id = 1;
    auto value = [&](int &i) -> std::string {
        if (i + 1 >= argc) throw cli::UsageError(std::string(argv[i]) + " needs a value");
        return argv[++i];
    };
    for (int i = 1; i < argc; i++) {
        std::string f = argv[i];
        if (f == "--help" || f == "-h") {
            std::cout << USAGE;
            std::exit(0);
        } else if (f == "--volume") a.volume = value(i);
        else if (f == "--out") a.out = value(i);
        else if (f == "--checkpoint") a.checkpoint = value(i);
        else if (f == "--config") a.config = value(i);
        else if (f == "--box" || f == "--box-physical") {
            BoxArg b{0, f == "--box-physical", value(i)};
            b.obj_id = cli::split_object(b.text, f);
            if (b.obj_id == 0) b.obj_id = next_id++; // the n-th box without OBJ: is object n
            a.boxes.push_back(b);
        } else if (f == "--window") a.window = value(i);
        else if (f == "--axis") {
            std::string v = value(i);
            if (v != "0" && v != "1" && v != "2")
                throw cli::UsageError("bad axis `" + v + "`: use 0, 1 or 2");
            a.axis = static_cast<uint32_t>(v[0] - '0');
        } else if (f == "--propagation") a.propagation = value(i);
        else if (f == "--largest-component") a.largest_component = true;
        else if (f == "--fill-hole-area") {
            std::string v = value(i);
            char *end = nullptr;
            long n = std::strtol(v.c_str(), &end, 10);
            if (v.empty() || *end != '\0' || n < 0 || n > 1000000)
                throw cli::UsageError("bad --fill-hole-area `" + v + "`: a pixel count, 0 = off");
            a.fill_hole_area = static_cast<int32_t>(n);
        }
        else if (f == "--device") a.device = value(i);
        else if (f == "--dtype") a.dtype = value(i);
        else if (f == "--quiet") a.quiet = true;
        else throw cli::UsageError("unknown argument `" + f + "` (see --help)");
    }
    if (a.volume.empty()) throw cli::UsageError("--volume is required (see --help)");
    if (a.out.empty()) throw cli::UsageError("--out is required (see --help)");
    if (a.checkpoint.empty()) throw cli::UsageError("--checkpoint is required (see --help)");
    if (a.boxes.empty()) throw cli::UsageError("no prompt: give --box or --box-physical");
    if (a.propagation != "separate" && a.propagation != "joint" && a.propagation != "both" &&
        a.propagation != "forward")
        throw cli::UsageError("bad propagation `" + a.propagation +
                              "`: joint, separate or forward");
    return a;
}

/// segment_volume's --window, as the C ABI's intensity mapping.
medsam2_intensity intensity_of(const std::string &spec, const medsam2_itk::Volume &volume) {
    std::string s;
    for (char c : spec) s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (s == "auto") return medsam2_itk::default_intensity(volume);
    if (s == "none" || s == "identity") {
        if (volume.pixel_type() != MEDSAM2_PIXEL_U8)
            throw cli::UsageError("--window none needs a uint8 volume; use a window or percentile");
        return medsam2::Intensity::none();
    }
    if (s == "percentile" || s == "mr") return medsam2::Intensity::percentile(0.5, 99.5);
    std::size_t comma = s.find(',');
    if (comma != std::string::npos) {
        double w = cli::number(s.substr(0, comma), "window width");
        double l = cli::number(s.substr(comma + 1), "window level");
        if (w <= 0) throw cli::UsageError("bad window `" + spec + "`: the width must be > 0");
        return medsam2::Intensity::window(medsam2_window{l, w});
    }
    medsam2_window w{};
    if (medsam2_window_preset(s.c_str(), &w) != MEDSAM2_OK)
        throw cli::UsageError("unknown window `" + spec +
                              "`: use auto, none, percentile, W,L or a preset (abdomen, "
                              "soft-tissue, lung, bone, brain, mediastinum)");
    return medsam2::Intensity::window(w);
}

/// Checks a pixel lies on the slice (half a pixel of slack at the edges, then
/// clamped to the pixel centres), as segment_volume does.
float on_slice(double v, uint32_t n, const std::string &arg, const std::string &flag) {
    if (!(v >= -0.5 && v <= n - 0.5))
        throw cli::UsageError(flag + " `" + arg + "` is outside the volume: pixel coordinate " +
                              cli::show(v) + " is not in 0.." + std::to_string(n - 1));
    return static_cast<float>(std::min(std::max(v, 0.0), static_cast<double>(n - 1)));
}

/// Gives the --box / --box-physical prompts to the session, objects in id
/// order (as segment_volume); prints one line per prompt.
void add_boxes(const Args &args, medsam2::VolumeSession &session) {
    std::vector<BoxArg> boxes = args.boxes;
    std::stable_sort(boxes.begin(), boxes.end(),
                     [](const BoxArg &a, const BoxArg &b) { return a.obj_id < b.obj_id; });
    std::set<std::pair<uint32_t, uint32_t>> prompted; // (object, slice)
    const uint32_t n = session.num_slices(), w = session.slice_width(), h = session.slice_height();
    for (const BoxArg &b : boxes) {
        const std::string flag = b.physical ? "--box-physical" : "--box";
        uint32_t slice;
        if (b.physical) {
            auto v = cli::numbers(b.text, 6, flag, "X0,Y0,Z0,X1,Y1,Z1 in LPS mm");
            try {
                slice = session.add_box_physical(b.obj_id, {v[0], v[1], v[2]}, {v[3], v[4], v[5]});
            } catch (const medsam2::InvalidArgument &e) {
                throw cli::UsageError(flag + " `" + b.text + "` is outside the volume: " + e.what());
            }
            std::printf("prompt:  object %u slice %u: box (%g, %g, %g)-(%g, %g, %g) mm\n",
                        b.obj_id, slice, v[0], v[1], v[2], v[3], v[4], v[5]);
        } else {
            auto v = cli::numbers(b.text, 5, flag, "Z,X0,Y0,X1,Y1 in voxels");
            if (v[0] != std::floor(v[0]) || v[0] < 0 || v[0] >= n)
                throw cli::UsageError(flag + " `" + b.text + "` is outside the volume: slice " +
                                      cli::show(v[0]) + " is not one of 0.." +
                                      std::to_string(n - 1) + " along axis " +
                                      std::to_string(args.axis));
            slice = static_cast<uint32_t>(v[0]);
            const std::array<float, 4> xyxy = {
                on_slice(std::min(v[1], v[3]), w, b.text, flag),
                on_slice(std::min(v[2], v[4]), h, b.text, flag),
                on_slice(std::max(v[1], v[3]), w, b.text, flag),
                on_slice(std::max(v[2], v[4]), h, b.text, flag)};
            session.add_box(slice, b.obj_id, xyxy);
            std::printf("prompt:  object %u slice %u: box (%g, %g)-(%g, %g)\n", b.obj_id, slice,
                        xyxy[0], xyxy[1], xyxy[2], xyxy[3]);
        }
        if (!prompted.insert({b.obj_id, slice}).second)
            throw cli::UsageError(flag + " `" + b.text + "`: object " + std::to_string(b.obj_id) +
                                  " already has a box on slice " + std::to_string(slice));
    }
}

std::size_t count_objects(const std::vector<BoxArg> &boxes) {
    std::set<uint32_t> ids;
    for (const BoxArg &b : boxes) ids.insert(b.obj_id);
    return ids.size();
}

bool ends_with(const std::string &s, const std::string &suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// Writes the labels with ITK. Single-file formats are written to a
/// temporary file in the destination folder and renamed into place, so a
/// failed write leaves an existing file intact (header + data formats such
/// as .nhdr or .mhd name their data file inside and are written in place).
void write_atomic(medsam2_itk::LabelImage *labels, const std::string &path) {
    std::string lower;
    for (char c : path) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const bool single = ends_with(lower, ".nii") || ends_with(lower, ".nii.gz") ||
                        ends_with(lower, ".nrrd") || ends_with(lower, ".mha");
    const std::filesystem::path target(path);
    std::filesystem::path tmp = target;
    if (single)
        tmp.replace_filename(
            ".medsam2-" +
            std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + "-" +
            target.filename().string());
    auto writer = itk::ImageFileWriter<medsam2_itk::LabelImage>::New();
    writer->SetFileName(tmp.string());
    writer->SetInput(labels);
    writer->SetUseCompression(true);
    try {
        writer->Update();
        // Some ITK writers report a file they cannot open on stderr only.
        if (!std::filesystem::is_regular_file(tmp))
            throw cli::UsageError(path + ": could not be written");
        if (single) std::filesystem::rename(tmp, target);
    } catch (...) {
        std::error_code ec;
        if (single) std::filesystem::remove(tmp, ec);
        throw;
    }
}

template <class TPixel> int run(const Args &args) {
    using Image = itk::Image<TPixel, 3>;
    typename Image::Pointer image = cli::read_image<TPixel>(args.volume);
    medsam2_itk::Volume volume(image.GetPointer());
    const medsam2_intensity intensity = intensity_of(args.window, volume);

    auto t0 = std::chrono::steady_clock::now();
    medsam2::Model model = medsam2::Model::load(args.config, args.checkpoint, args.device, args.dtype);
    double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    medsam2_session_options options{};
    options.feature_cache_slices = 32; // segment_volume's --cache-frames default
    // As segment_volume: overlapping objects are resolved by score.
    options.non_overlap_masks = count_objects(args.boxes) > 1 ? 1 : 0;
    // The C options: 0 = the default (8), negative = off.
    options.fill_hole_area = args.fill_hole_area == 0 ? -1 : args.fill_hole_area;
    medsam2::VolumeSession session(model, volume.view(), intensity, args.axis, &options);
    add_boxes(args, session);

    auto t1 = std::chrono::steady_clock::now();
    medsam2::ProgressCallback progress;
    if (!args.quiet)
        progress = [](uint32_t done, uint32_t total) {
            std::fprintf(stderr, "\rpropagating %u/%u slices", done, total);
            if (done == total) std::fprintf(stderr, "\n");
            return true;
        };
    medsam2::SegmentOptions seg;
    seg.propagation = args.propagation == "separate" ? medsam2::Propagation::Separate
                      : args.propagation == "forward" ? medsam2::Propagation::Forward
                                                      : medsam2::Propagation::Joint;
    seg.largest_component = args.largest_component;
    const std::vector<uint16_t> labels = session.segment(seg, progress);
    double seg_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();

    medsam2_itk::LabelImage::Pointer out = medsam2_itk::label_image(labels, image.GetPointer());
    write_atomic(out, args.out);

    std::map<uint16_t, std::size_t> voxels;
    for (uint16_t l : labels)
        if (l) voxels[l]++;
    const auto sp = image->GetSpacing();
    std::printf("volume:  %s (%u x %u x %u voxels, spacing %.3f x %.3f x %.3f mm)\n",
                args.volume.c_str(), volume.view().desc.dims[0], volume.view().desc.dims[1],
                volume.view().desc.dims[2], sp[0], sp[1], sp[2]);
    std::printf("model:   %s loaded in %.2f s; %u slices along axis %u, %s propagation %.2f s\n",
                args.config.c_str(), load_s, session.num_slices(), args.axis,
                args.propagation.c_str(), seg_s);
    for (uint32_t id : session.object_ids())
        std::printf("object %u: %zu voxels, %.3f ml\n", id, voxels[static_cast<uint16_t>(id)],
                    voxels[static_cast<uint16_t>(id)] * sp[0] * sp[1] * sp[2] / 1000.0);
    std::printf("wrote:   %s (uint16 labels, input geometry)\n", args.out.c_str());
    return 0;
}

} // namespace

int main(int argc, char **argv) {
    try {
        medsam2::check_abi();
        Args args = parse_args(argc, argv);
        if (args.out == args.volume || cli::same_file(args.out, args.volume))
            throw cli::UsageError("--out " + args.out + " is the input volume; refusing to overwrite it");
        const std::filesystem::path out_dir =
            std::filesystem::path(args.out).parent_path().empty()
                ? std::filesystem::path(".")
                : std::filesystem::path(args.out).parent_path();
        if (!std::filesystem::is_directory(out_dir))
            throw cli::UsageError("--out " + args.out + ": folder " + out_dir.string() +
                                  " does not exist");
        if (!itk::ImageIOFactory::CreateImageIO(args.out.c_str(), itk::IOFileModeEnum::WriteMode))
            throw cli::UsageError("--out " + args.out + ": not an image format ITK can write");
        if (!std::filesystem::is_regular_file(args.checkpoint))
            throw cli::UsageError("--checkpoint " + args.checkpoint + ": no such file");
        return cli::with_pixel_type(args.volume, [&](auto *tag) {
            return run<std::remove_pointer_t<decltype(tag)>>(args);
        });
    } catch (const itk::ExceptionObject &e) {
        std::fprintf(stderr, "error: %s\n", cli::one_line(e.GetDescription()).c_str());
    } catch (const std::exception &e) {
        std::fprintf(stderr, "error: %s\n", cli::one_line(e.what()).c_str());
    }
    return 1;
}
