// Checks of medsam2_itk.hpp on images a plugin meets and files never give:
// a buffered region that does not start at index 0, a rotated direction,
// pixel types medsam2 does not take as they are. Run by
// medsam2-ffi/tests/itk_client.rs; prints one line per failed check and
// `N passed, M failed`.
// SPDX-License-Identifier: Apache-2.0
//
//   medsam2_itk_selftest CHECKPOINT CONFIG
#include <cmath>
#include <cstdio>
#include <string>

#include "itkImageRegionIterator.h"
#include "medsam2_itk.hpp"

namespace {

int passed = 0, failed = 0;

void check(bool ok, const std::string &what) {
    if (ok) {
        passed++;
    } else {
        failed++;
        std::printf("FAILED: %s\n", what.c_str());
    }
}

bool near(double a, double b, double tol = 1e-9) { return std::fabs(a - b) <= tol; }

/// A 3-D image whose buffered region starts at (2, 3, 1), oblique direction.
template <class T> typename itk::Image<T, 3>::Pointer make_image() {
    using Image = itk::Image<T, 3>;
    auto image = Image::New();
    typename Image::IndexType start = {{2, 3, 1}};
    typename Image::SizeType size = {{12, 10, 5}};
    image->SetRegions(typename Image::RegionType(start, size));
    typename Image::SpacingType spacing;
    spacing[0] = 0.7, spacing[1] = 0.9, spacing[2] = 2.5;
    image->SetSpacing(spacing);
    typename Image::PointType origin;
    origin[0] = -10.25, origin[1] = 33.5, origin[2] = 7.75;
    image->SetOrigin(origin);
    const double a = 0.3, b = 0.2;
    typename Image::DirectionType d; // Rz(a) * Rx(b)
    d(0, 0) = std::cos(a), d(0, 1) = -std::sin(a) * std::cos(b), d(0, 2) = std::sin(a) * std::sin(b);
    d(1, 0) = std::sin(a), d(1, 1) = std::cos(a) * std::cos(b), d(1, 2) = -std::cos(a) * std::sin(b);
    d(2, 0) = 0, d(2, 1) = std::sin(b), d(2, 2) = std::cos(b);
    image->SetDirection(d);
    image->Allocate();
    itk::ImageRegionIterator<Image> it(image, image->GetBufferedRegion());
    for (it.GoToBegin(); !it.IsAtEnd(); ++it) {
        auto idx = it.GetIndex();
        it.Set(static_cast<T>(idx[0] * 7 - idx[1] * 3 + idx[2] * 11 - 40));
    }
    return image;
}

} // namespace

int main(int argc, char **argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: medsam2_itk_selftest CHECKPOINT CONFIG\n");
        return 2;
    }
    try {
        medsam2::Model model = medsam2::Model::load(argv[2], argv[1]);

        // Native type: the view points into ITK's buffer; the geometry is
        // that of the buffered region's first voxel.
        auto image = make_image<int16_t>();
        medsam2_itk::Volume volume(image.GetPointer());
        const medsam2_volume &d = volume.view().desc;
        check(d.voxels == image->GetBufferPointer(), "i16 voxels are ITK's buffer");
        check(d.pixel_type == MEDSAM2_PIXEL_I16 && !volume.converted(), "i16 pixel type");
        check(d.dims[0] == 12 && d.dims[1] == 10 && d.dims[2] == 5, "dims of the buffered region");
        itk::Point<double, 3> first;
        image->TransformIndexToPhysicalPoint(image->GetBufferedRegion().GetIndex(), first);
        for (int a = 0; a < 3; a++) {
            check(near(d.origin[a], first[a]), "origin is the first buffered voxel");
            check(near(d.spacing[a], image->GetSpacing()[a]), "spacing");
            for (int c = 0; c < 3; c++)
                check(near(d.direction[3 * a + c], image->GetDirection()(a, c)), "direction");
        }

        // medsam2 places ITK's physical points on the same voxels (indices
        // relative to the buffered region).
        medsam2::VolumeSession session(model, volume.view(),
                                       medsam2_itk::default_intensity(volume));
        for (auto rel : {std::array<long, 3>{0, 0, 0}, {11, 9, 4}, {4, 7, 2}, {9, 1, 3}}) {
            itk::Index<3> idx;
            for (int a = 0; a < 3; a++) idx[a] = image->GetBufferedRegion().GetIndex()[a] + rel[a];
            itk::Point<double, 3> p;
            image->TransformIndexToPhysicalPoint(idx, p);
            auto [slice, x, y] = session.physical_to_slice({p[0], p[1], p[2]});
            check(slice == rel[2] && near(x, rel[0], 1e-3) && near(y, rel[1], 1e-3),
                  "physical point of index (" + std::to_string(idx[0]) + ", " +
                      std::to_string(idx[1]) + ", " + std::to_string(idx[2]) + ") -> slice " +
                      std::to_string(slice) + " x " + std::to_string(x) + " y " +
                      std::to_string(y));
        }

        // Labels come back on the same region and geometry, in place.
        session.add_box(2, 1, {3.0f, 2.0f, 9.0f, 8.0f});
        std::vector<uint16_t> labels = session.segment();
        auto out = medsam2_itk::label_image(labels, image.GetPointer());
        check(out->GetBufferedRegion() == image->GetBufferedRegion(), "label region");
        check(out->GetLargestPossibleRegion() == image->GetLargestPossibleRegion(),
              "label largest region");
        check(out->GetOrigin() == image->GetOrigin() && out->GetSpacing() == image->GetSpacing() &&
                  out->GetDirection() == image->GetDirection(),
              "label geometry");
        std::size_t on = 0, same = 0;
        const auto start = image->GetBufferedRegion().GetIndex();
        for (uint32_t k = 0; k < 5; k++)
            for (uint32_t j = 0; j < 10; j++)
                for (uint32_t i = 0; i < 12; i++) {
                    itk::Index<3> idx = {{start[0] + i, start[1] + j, start[2] + k}};
                    uint16_t v = labels[i + 12 * (j + 10 * k)];
                    on += v != 0;
                    same += out->GetPixel(idx) == v;
                }
        check(same == labels.size(), "labels in place");
        check(on > 0, "the box gave a mask");
        check(session.slice_labels(2) ==
                  std::vector<uint16_t>(labels.begin() + 2 * 120, labels.begin() + 3 * 120),
              "slice 2 labels");
        bool threw = false;
        try {
            medsam2_itk::label_image(std::vector<uint16_t>(7), image.GetPointer());
        } catch (const medsam2::InvalidArgument &) {
            threw = true;
        }
        check(threw, "a label buffer of the wrong size is refused");

        // Other types are converted to float, values kept, same geometry.
        auto i32 = make_image<int32_t>();
        medsam2_itk::Volume converted(i32.GetPointer());
        const medsam2_volume &c = converted.view().desc;
        check(converted.converted() && c.pixel_type == MEDSAM2_PIXEL_F32, "i32 -> f32");
        check(c.voxels != static_cast<const void *>(i32->GetBufferPointer()), "i32 copied");
        const float *f = static_cast<const float *>(c.voxels);
        bool values = true;
        for (std::size_t n = 0; n < 600; n++)
            values &= f[n] == static_cast<float>(i32->GetBufferPointer()[n]);
        check(values, "i32 values kept");
        for (int a = 0; a < 3; a++) check(near(c.origin[a], d.origin[a]), "i32 origin");
        auto u8 = make_image<uint8_t>();
        medsam2_itk::Volume grey(u8.GetPointer());
        check(medsam2_itk::default_intensity(grey).mode == MEDSAM2_INTENSITY_NONE,
              "u8: as is by default");
        check(medsam2_itk::default_intensity(volume).mode == MEDSAM2_INTENSITY_WINDOW &&
                  near(medsam2_itk::default_intensity(volume).window.width, 400) &&
                  near(medsam2_itk::default_intensity(volume).window.level, 40),
              "i16: abdomen window by default");
        auto s8 = make_image<int8_t>();
        medsam2_itk::Volume small(s8.GetPointer());
        check(medsam2_itk::default_intensity(small).mode == MEDSAM2_INTENSITY_WINDOW,
              "i8 (converted): abdomen window by default");
    } catch (const std::exception &e) {
        std::printf("FAILED: %s\n", e.what());
        failed++;
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
