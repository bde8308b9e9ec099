// medsam2 for ITK: an itk::Image in, a medsam2 volume session and an
// itk::Image label map out.
// SPDX-License-Identifier: Apache-2.0
//
// Header-only (C++17, ITK 5, medsam2.hpp). What an ITK or 3D Slicer plugin
// needs to hand an image to medsam2 and get the labels back in the image's
// geometry:
//
//   auto image = reader->GetOutput();                    // itk::Image<T, 3>
//   medsam2_itk::Volume volume(image.GetPointer());      // buffer + geometry
//   medsam2::VolumeSession session(model, volume.view(),
//                                  medsam2_itk::default_intensity(volume));
//   session.add_box(slice, 1, {x0, y0, x1, y1});    // or add_box_physical (LPS mm)
//   auto labels = medsam2_itk::label_image(session.segment(), image.GetPointer());
//
// Pixel types: uint8_t, int16_t, uint16_t and float are handed over as they
// are (the library copies them once); every other scalar type is converted
// to float first. Geometry is ITK's own: physical = origin + direction *
// (spacing .* index), LPS millimetres, which is medsam2's convention too, so
// nothing is flipped. The buffered region is what is segmented; when it does
// not start at index 0 the origin handed over is the physical point of its
// first voxel, and the label image gets the same buffered region back.
#ifndef MEDSAM2_ITK_HPP
#define MEDSAM2_ITK_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "itkImage.h"
#include "itkImageRegionConstIterator.h"
#include "medsam2.hpp"

namespace medsam2_itk {

/// The 3-D images this helper takes and returns.
constexpr unsigned int Dimension = 3;
/// The label image: object id per voxel, 0 background (medsam2 labels are uint16).
using LabelImage = itk::Image<uint16_t, Dimension>;

/// Whether medsam2 takes voxels of type T without conversion.
template <class T>
constexpr bool is_native_pixel =
    std::is_same_v<T, uint8_t> || std::is_same_v<T, int16_t> || std::is_same_v<T, uint16_t> ||
    std::is_same_v<T, float>;

/// The geometry of an image's buffered region in medsam2's terms:
/// dims, spacing, origin (the physical point of the region's first voxel) and
/// direction (row-major, column c = index axis c, as ITK's GetDirection()).
inline void set_geometry(medsam2_volume &desc, const itk::ImageBase<Dimension> *image) {
    const auto region = image->GetBufferedRegion();
    itk::Point<double, Dimension> first;
    image->TransformIndexToPhysicalPoint(region.GetIndex(), first);
    const auto &dir = image->GetDirection();
    for (unsigned int a = 0; a < Dimension; a++) {
        const auto n = region.GetSize(a);
        if (n == 0 || n > UINT32_MAX)
            throw medsam2::InvalidArgument(MEDSAM2_ERR_INVALID_ARGUMENT,
                                           "image size along axis " + std::to_string(a) +
                                               " is " + std::to_string(n) +
                                               " (must be 1..4294967295)");
        desc.dims[a] = static_cast<uint32_t>(n);
        desc.spacing[a] = image->GetSpacing()[a];
        desc.origin[a] = first[a];
        for (unsigned int c = 0; c < Dimension; c++) desc.direction[3 * a + c] = dir(a, c);
    }
}

/// An ITK image as a medsam2 volume: a view of its buffer (or of a float
/// copy for types medsam2 does not take directly) with its geometry. The
/// image is kept alive by this object; the view is valid while it lives
/// (the library copies the voxels when a session is created).
class Volume {
public:
    /// From any scalar 3-D itk::Image.
    template <class TPixel> explicit Volume(const itk::Image<TPixel, Dimension> *image) {
        if (!image)
            throw medsam2::NullPointer(MEDSAM2_ERR_NULL_POINTER, "medsam2_itk::Volume: null image");
        static_assert(std::is_arithmetic_v<TPixel>,
                      "medsam2_itk::Volume takes scalar images (convert vector or RGB images "
                      "to a scalar type first)");
        source_ = image;
        set_geometry(view_.desc, image);
        if constexpr (is_native_pixel<TPixel>) {
            // The buffer is contiguous over the buffered region, i fastest:
            // medsam2's voxel order.
            view_.desc.voxels = image->GetBufferPointer();
            view_.desc.pixel_type = pixel_type<TPixel>();
        } else {
            converted_.reserve(view_.size());
            itk::ImageRegionConstIterator<itk::Image<TPixel, Dimension>> it(
                image, image->GetBufferedRegion());
            for (it.GoToBegin(); !it.IsAtEnd(); ++it) converted_.push_back(static_cast<float>(it.Get()));
            view_.desc.voxels = converted_.data();
            view_.desc.pixel_type = MEDSAM2_PIXEL_F32;
        }
    }

    Volume(const Volume &) = delete;
    Volume &operator=(const Volume &) = delete;

    /// The volume for medsam2::VolumeSession (valid while this object lives).
    const medsam2::VolumeView &view() const noexcept { return view_; }
    /// The medsam2 pixel type handed over (MEDSAM2_PIXEL_*).
    medsam2_pixel_type pixel_type() const noexcept { return view_.desc.pixel_type; }
    /// Whether the source's voxels were converted to float.
    bool converted() const noexcept { return !converted_.empty(); }
    /// The source image.
    const itk::ImageBase<Dimension> *image() const noexcept { return source_.GetPointer(); }

private:
    template <class T> static constexpr medsam2_pixel_type pixel_type() {
        if constexpr (std::is_same_v<T, uint8_t>) return MEDSAM2_PIXEL_U8;
        else if constexpr (std::is_same_v<T, int16_t>) return MEDSAM2_PIXEL_I16;
        else if constexpr (std::is_same_v<T, uint16_t>) return MEDSAM2_PIXEL_U16;
        else return MEDSAM2_PIXEL_F32;
    }

    itk::ImageBase<Dimension>::ConstPointer source_;
    std::vector<float> converted_;
    medsam2::VolumeView view_;
};

/// segment_volume's `--window auto`: uint8 voxels are taken as already
/// windowed (as they are), every other type gets the abdomen CT window
/// W400 L40 (min/max of the clipped volume stretched to 0..255).
inline medsam2_intensity default_intensity(const Volume &volume) {
    if (volume.pixel_type() == MEDSAM2_PIXEL_U8 && !volume.converted())
        return medsam2::Intensity::none();
    return medsam2::Intensity::window_preset("abdomen");
}

/// A session over an ITK image (intensity as `default_intensity` unless given).
template <class TPixel>
medsam2::VolumeSession make_session(const medsam2::Model &model,
                                    const itk::Image<TPixel, Dimension> *image,
                                    uint32_t axis = MEDSAM2_AXIS_K,
                                    const medsam2_session_options *options = nullptr) {
    Volume volume(image);
    return medsam2::VolumeSession(model, volume.view(), default_intensity(volume), axis, options);
}

/// The label buffer of a session (medsam2::VolumeSession::segment() or
/// labels(), voxel order of the volume) as an itk::Image with `reference`'s buffered region,
/// spacing, origin and direction.
inline LabelImage::Pointer label_image(const std::vector<uint16_t> &labels,
                                       const itk::ImageBase<Dimension> *reference) {
    if (!reference)
        throw medsam2::NullPointer(MEDSAM2_ERR_NULL_POINTER, "label_image: null reference");
    const auto region = reference->GetBufferedRegion();
    if (labels.size() != region.GetNumberOfPixels())
        throw medsam2::InvalidArgument(
            MEDSAM2_ERR_INVALID_ARGUMENT,
            "label_image: " + std::to_string(labels.size()) + " labels for an image of " +
                std::to_string(region.GetNumberOfPixels()) + " voxels");
    auto out = LabelImage::New();
    out->CopyInformation(reference); // spacing, origin, direction, largest region
    out->SetRegions(region);
    out->SetLargestPossibleRegion(reference->GetLargestPossibleRegion());
    out->Allocate();
    std::copy(labels.begin(), labels.end(), out->GetBufferPointer());
    return out;
}

} // namespace medsam2_itk

#endif // MEDSAM2_ITK_HPP
