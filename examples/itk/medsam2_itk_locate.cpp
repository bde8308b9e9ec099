// medsam2_itk_locate: where physical (LPS mm) points fall in a volume, as ITK
// computes it (TransformPhysicalPointToIndex / ...ContinuousIndex) and as
// medsam2 does (medsam2_session_physical_to_slice) for the same image handed
// over by medsam2_itk.hpp: a check that both agree on the geometry,
// including rotated (non-identity) directions.
// SPDX-License-Identifier: Apache-2.0
//
//   medsam2_itk_locate --volume ct.nrrd --checkpoint w.safetensors --config medsam2
//       --point 10.5,-20,33 [--point ...] [--axis 2]
//
// One line per point:
//   point X Y Z: itk index I J K continuous CI CJ CK; medsam2 slice S x X y Y
// ("outside" where ITK finds the point outside the image or medsam2 refuses it).
#include <cstdio>
#include <string>
#include <vector>

#include "cli.hpp"
#include "medsam2_itk.hpp"

namespace {

const char *const USAGE = R"(usage: medsam2_itk_locate --volume IN --checkpoint FILE [--config PRESET|YAML] [--axis 0|1|2] --point X,Y,Z ...

Prints, for each LPS point (mm), ITK's voxel index (nearest and continuous) and
medsam2's slice and slice pixel for the same image.
)";

} // namespace

int main(int argc, char **argv) {
    try {
        medsam2::check_abi();
        std::string volume_path, checkpoint, config = "medsam2";
        uint32_t axis = MEDSAM2_AXIS_K;
        std::vector<std::array<double, 3>> points;
        for (int i = 1; i < argc; i++) {
            std::string f = argv[i];
            auto value = [&]() -> std::string {
                if (i + 1 >= argc) throw cli::UsageError(f + " needs a value");
                return argv[++i];
            };
            if (f == "--help" || f == "-h") {
                std::fputs(USAGE, stdout);
                return 0;
            } else if (f == "--volume") volume_path = value();
            else if (f == "--checkpoint") checkpoint = value();
            else if (f == "--config") config = value();
            else if (f == "--axis") {
                std::string v = value();
                if (v != "0" && v != "1" && v != "2")
                    throw cli::UsageError("bad axis `" + v + "`: use 0, 1 or 2");
                axis = static_cast<uint32_t>(v[0] - '0');
            } else if (f == "--point") {
                auto v = cli::numbers(value(), 3, "--point", "X,Y,Z in LPS mm");
                points.push_back({v[0], v[1], v[2]});
            } else throw cli::UsageError("unknown argument `" + f + "` (see --help)");
        }
        if (volume_path.empty() || checkpoint.empty() || points.empty())
            throw cli::UsageError("--volume, --checkpoint and --point are required (see --help)");

        // Only the geometry matters: read any pixel type as float.
        using Image = itk::Image<float, 3>;
        Image::Pointer image = cli::read_image<float>(volume_path);
        medsam2_itk::Volume volume(image.GetPointer());
        medsam2::Model model = medsam2::Model::load(config, checkpoint);
        medsam2::VolumeSession session(model, volume.view(), medsam2_itk::default_intensity(volume),
                                       axis);
        for (const auto &p : points) {
            Image::PointType pt;
            for (int a = 0; a < 3; a++) pt[a] = p[a];
            std::printf("point %.17g %.17g %.17g:", p[0], p[1], p[2]);
            Image::IndexType index;
            if (image->TransformPhysicalPointToIndex(pt, index)) {
                auto ci = image->TransformPhysicalPointToContinuousIndex<double>(pt);
                std::printf(" itk index %ld %ld %ld continuous %.17g %.17g %.17g;",
                            static_cast<long>(index[0]), static_cast<long>(index[1]),
                            static_cast<long>(index[2]), ci[0], ci[1], ci[2]);
            } else {
                std::printf(" itk outside;");
            }
            try {
                auto [slice, x, y] = session.physical_to_slice(p);
                std::printf(" medsam2 slice %u x %.9g y %.9g\n", slice, x, y);
            } catch (const medsam2::InvalidArgument &e) {
                std::printf(" medsam2 outside (%s)\n", cli::one_line(e.what()).c_str());
            }
        }
        return 0;
    } catch (const itk::ExceptionObject &e) {
        std::fprintf(stderr, "error: %s\n", cli::one_line(e.GetDescription()).c_str());
    } catch (const std::exception &e) {
        std::fprintf(stderr, "error: %s\n", cli::one_line(e.what()).c_str());
    }
    return 1;
}
