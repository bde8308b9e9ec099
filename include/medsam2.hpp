// medsam2: SAM 2 / MedSAM-2 segmentation, C++ API.
// SPDX-License-Identifier: Apache-2.0
//
// Header-only RAII wrapper over the C API of medsam2.h (C++17). Every failing
// call throws an exception derived from medsam2::Error that carries the C
// status code and the library's message.
//
//   medsam2::Model model = medsam2::Model::load("sam2.1_hiera_t", "weights.safetensors");
//   medsam2::ImagePredictor predictor(model);
//   predictor.set_image_rgb(rgb, width, height);
//   medsam2::Prediction p = predictor.predict(medsam2::Prompt().add_point(120, 80));
//
//   medsam2::VolumeSession session(model, medsam2::VolumeView::of(voxels, {nx, ny, nz}),
//                                  medsam2::Intensity::window_preset("abdomen"));
//   session.add_points(slice, 1, {{x, y}}, {1});
//   session.propagate();
//   std::vector<uint16_t> labels = session.labels();
//
// Thread safety is that of the C API: a Model (a shared, reference-counted
// handle) may be used from any number of threads; an ImagePredictor or a
// VolumeSession by one thread at a time.
#ifndef MEDSAM2_HPP
#define MEDSAM2_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "medsam2.h"

namespace medsam2 {

// ---------------------------------------------------------------- exceptions

/// Base of every exception thrown by this wrapper.
class Error : public std::runtime_error {
public:
    Error(medsam2_status status, const std::string &message)
        : std::runtime_error(message), status_(status) {}
    /// The C status code.
    medsam2_status status() const noexcept { return status_; }

private:
    medsam2_status status_;
};

/// MEDSAM2_ERR_INVALID_ARGUMENT.
class InvalidArgument : public Error { using Error::Error; };
/// MEDSAM2_ERR_NULL_POINTER.
class NullPointer : public Error { using Error::Error; };
/// MEDSAM2_ERR_BUFFER_TOO_SMALL.
class BufferTooSmall : public Error { using Error::Error; };
/// MEDSAM2_ERR_IO.
class IoError : public Error { using Error::Error; };
/// MEDSAM2_ERR_CHECKPOINT.
class CheckpointError : public Error { using Error::Error; };
/// MEDSAM2_ERR_CONFIG.
class ConfigError : public Error { using Error::Error; };
/// MEDSAM2_ERR_BACKEND_UNAVAILABLE.
class BackendUnavailable : public Error { using Error::Error; };
/// MEDSAM2_ERR_CANCELLED.
class Cancelled : public Error { using Error::Error; };
/// MEDSAM2_ERR_INVALID_STATE.
class InvalidState : public Error { using Error::Error; };
/// MEDSAM2_ERR_INTERNAL and MEDSAM2_ERR_PANIC.
class InternalError : public Error { using Error::Error; };

namespace detail {

[[noreturn]] inline void throw_status(medsam2_status s) {
    std::string msg = std::string(medsam2_status_string(static_cast<int32_t>(s))) + ": " +
                      medsam2_last_error();
    switch (s) {
    case MEDSAM2_ERR_INVALID_ARGUMENT: throw InvalidArgument(s, msg);
    case MEDSAM2_ERR_NULL_POINTER: throw NullPointer(s, msg);
    case MEDSAM2_ERR_BUFFER_TOO_SMALL: throw BufferTooSmall(s, msg);
    case MEDSAM2_ERR_IO: throw IoError(s, msg);
    case MEDSAM2_ERR_CHECKPOINT: throw CheckpointError(s, msg);
    case MEDSAM2_ERR_CONFIG: throw ConfigError(s, msg);
    case MEDSAM2_ERR_BACKEND_UNAVAILABLE: throw BackendUnavailable(s, msg);
    case MEDSAM2_ERR_CANCELLED: throw Cancelled(s, msg);
    case MEDSAM2_ERR_INVALID_STATE: throw InvalidState(s, msg);
    default: throw InternalError(s, msg);
    }
}

inline void check(medsam2_status s) {
    if (s != MEDSAM2_OK) throw_status(s);
}

struct ModelDeleter {
    void operator()(medsam2_model *m) const noexcept { medsam2_model_free(m); }
};
struct PredictorDeleter {
    void operator()(medsam2_predictor *p) const noexcept { medsam2_predictor_free(p); }
};
struct SessionDeleter {
    void operator()(medsam2_session *s) const noexcept { medsam2_session_free(s); }
};

inline const char *c_str_or_null(const std::string &s) { return s.empty() ? nullptr : s.c_str(); }

} // namespace detail

// ---------------------------------------------------------------- library

/// The library version ("MAJOR.MINOR.PATCH").
inline std::string version() { return medsam2_version(); }

/// Throws if the library's ABI differs from this header's.
inline void check_abi() {
    if (medsam2_abi_version() != MEDSAM2_ABI_VERSION)
        throw Error(MEDSAM2_ERR_INVALID_STATE,
                    "libmedsam2 ABI " + std::to_string(medsam2_abi_version()) +
                        " does not match the header's ABI " + std::to_string(MEDSAM2_ABI_VERSION));
}

/// A CT window preset by name ("abdomen", "lung", "bone", "brain", ...).
inline medsam2_window window_preset(const std::string &name) {
    medsam2_window w{};
    detail::check(medsam2_window_preset(name.c_str(), &w));
    return w;
}

// ---------------------------------------------------------------- model

/// A loaded model. Copies share the same weights (reference counted); it is
/// safe to use one Model from several threads.
class Model {
public:
    /// Loads from a checkpoint file; `config` is a preset name or a YAML path.
    static Model load(const std::string &config, const std::string &checkpoint,
                      const std::string &device = "cpu", const std::string &dtype = "f32") {
        medsam2_model *m = nullptr;
        detail::check(medsam2_model_load(config.c_str(), checkpoint.c_str(),
                                         detail::c_str_or_null(device),
                                         detail::c_str_or_null(dtype), &m));
        return Model(m);
    }

    /// Loads from safetensors bytes held in memory (copied).
    static Model load_from_memory(const std::string &config, const void *data, std::size_t len,
                                  const std::string &device = "cpu",
                                  const std::string &dtype = "f32") {
        medsam2_model *m = nullptr;
        detail::check(medsam2_model_load_from_memory(
            config.c_str(), static_cast<const uint8_t *>(data), len,
            detail::c_str_or_null(device), detail::c_str_or_null(dtype), &m));
        return Model(m);
    }

    /// Side of the square model input.
    uint32_t image_size() const {
        uint32_t v = 0;
        detail::check(medsam2_model_image_size(get(), &v));
        return v;
    }

    /// Side of the low-resolution mask logits (image_size / 4).
    uint32_t low_res_size() const {
        uint32_t v = 0;
        detail::check(medsam2_model_low_res_size(get(), &v));
        return v;
    }

    /// Masks per prediction.
    uint32_t mask_count(bool multimask) const {
        uint32_t v = 0;
        detail::check(medsam2_model_mask_count(get(), multimask ? 1 : 0, &v));
        return v;
    }

    /// The C handle (owned by this object).
    const medsam2_model *get() const noexcept { return handle_.get(); }

private:
    explicit Model(medsam2_model *m) : handle_(m, detail::ModelDeleter()) {}
    std::shared_ptr<medsam2_model> handle_;
};

// ---------------------------------------------------------------- image predictor

/// A prompt in image pixels (x = column, y = row).
struct Prompt {
    std::vector<float> points; ///< x0, y0, x1, y1, ...
    std::vector<int32_t> labels; ///< 1 foreground, 0 background
    std::optional<std::array<float, 4>> box; ///< x0, y0, x1, y1
    std::vector<float> mask_input; ///< low-res logits (low_res_size^2) or empty

    /// Adds a click.
    Prompt &add_point(float x, float y, bool foreground = true) {
        points.push_back(x);
        points.push_back(y);
        labels.push_back(foreground ? 1 : 0);
        return *this;
    }
    /// Sets the box.
    Prompt &set_box(float x0, float y0, float x1, float y1) {
        box = std::array<float, 4>{x0, y0, x1, y1};
        return *this;
    }
    /// Sets the low-resolution mask input.
    Prompt &set_mask_input(std::vector<float> logits) {
        mask_input = std::move(logits);
        return *this;
    }

    /// The C view of this prompt (valid while this object is unchanged).
    medsam2_prompt c_prompt() const {
        medsam2_prompt p{};
        p.points = points.empty() ? nullptr : points.data();
        p.labels = labels.empty() ? nullptr : labels.data();
        p.num_points = labels.size();
        p.bbox = box ? box->data() : nullptr;
        p.mask_input = mask_input.empty() ? nullptr : mask_input.data();
        p.mask_input_len = mask_input.size();
        return p;
    }
};

/// The result of ImagePredictor::predict.
struct Prediction {
    uint32_t num_masks = 0;
    uint32_t width = 0;
    uint32_t height = 0;
    std::vector<uint8_t> masks; ///< num_masks x height x width, 0/1
    std::vector<float> scores;  ///< predicted IoU per mask

    /// Mask i (height x width bytes).
    const uint8_t *mask(std::size_t i) const { return masks.data() + i * width * height; }
    /// Index of the mask with the highest score.
    std::size_t best() const {
        std::size_t b = 0;
        for (std::size_t i = 1; i < scores.size(); i++)
            if (scores[i] > scores[b]) b = i;
        return b;
    }
};

/// Interactive segmentation of one image at a time (one thread at a time).
class ImagePredictor {
public:
    explicit ImagePredictor(const Model &model) : model_(model) {
        medsam2_predictor *p = nullptr;
        detail::check(medsam2_predictor_new(model.get(), &p));
        handle_.reset(p);
    }

    /// Sets an image described by the C struct (see medsam2_image).
    void set_image(const medsam2_image &image) {
        width_ = height_ = last_masks_ = 0;
        detail::check(medsam2_predictor_set_image(handle_.get(), &image));
        width_ = image.width;
        height_ = image.height;
    }

    /// Sets an interleaved 8-bit RGB image.
    void set_image_rgb(const uint8_t *rgb, uint32_t width, uint32_t height,
                       std::size_t row_stride = 0) {
        set_image(make(rgb, MEDSAM2_PIXEL_U8, width, height, 3, row_stride, medsam2_window{}));
    }

    /// Sets an 8-bit grey image.
    void set_image_grey(const uint8_t *grey, uint32_t width, uint32_t height,
                        std::size_t row_stride = 0) {
        set_image(make(grey, MEDSAM2_PIXEL_U8, width, height, 1, row_stride, medsam2_window{}));
    }

    /// Sets a 16-bit signed image (e.g. CT) through an intensity window.
    void set_image(const int16_t *data, uint32_t width, uint32_t height, medsam2_window window,
                   std::size_t row_stride = 0) {
        set_image(make(data, MEDSAM2_PIXEL_I16, width, height, 1, row_stride, window));
    }

    /// Sets a 16-bit unsigned image (e.g. MR) through an intensity window.
    void set_image(const uint16_t *data, uint32_t width, uint32_t height, medsam2_window window,
                   std::size_t row_stride = 0) {
        set_image(make(data, MEDSAM2_PIXEL_U16, width, height, 1, row_stride, window));
    }

    /// Sets a float image: through `window`, or (width 0) already in 0..1.
    void set_image(const float *data, uint32_t width, uint32_t height,
                   medsam2_window window = medsam2_window{}, std::size_t row_stride = 0) {
        set_image(make(data, MEDSAM2_PIXEL_F32, width, height, 1, row_stride, window));
    }

    /// Segments the current image.
    Prediction predict(const Prompt &prompt, bool multimask = false) {
        Prediction out;
        out.num_masks = model_.mask_count(multimask);
        out.width = width_;
        out.height = height_;
        out.masks.resize(static_cast<std::size_t>(out.num_masks) * width_ * height_);
        out.scores.resize(out.num_masks);
        medsam2_prompt p = prompt.c_prompt();
        uint32_t n = 0;
        last_masks_ = 0;
        detail::check(medsam2_predictor_predict(handle_.get(), &p, multimask ? 1 : 0,
                                                out.masks.data(), out.masks.size(),
                                                out.scores.data(), out.scores.size(), &n));
        last_masks_ = n;
        return out;
    }

    /// Full-size logits of the last prediction (num_masks x height x width).
    std::vector<float> last_logits() const {
        std::vector<float> v(static_cast<std::size_t>(last_masks_) * width_ * height_);
        detail::check(medsam2_predictor_last_logits(handle_.get(), v.data(), v.size()));
        return v;
    }

    /// Low-resolution logits of the last prediction (num_masks x L x L).
    std::vector<float> last_low_res_logits() const {
        std::size_t l = model_.low_res_size();
        std::vector<float> v(last_masks_ * l * l);
        detail::check(medsam2_predictor_last_low_res_logits(handle_.get(), v.data(), v.size()));
        return v;
    }

    /// Low-resolution logits of mask `i` of the last prediction (a mask_input).
    std::vector<float> last_low_res_logits(std::size_t i) const {
        std::size_t l = model_.low_res_size();
        std::vector<float> all = last_low_res_logits();
        if ((i + 1) * l * l > all.size())
            throw InvalidArgument(MEDSAM2_ERR_INVALID_ARGUMENT, "mask index out of range");
        return std::vector<float>(all.begin() + static_cast<std::ptrdiff_t>(i * l * l),
                                  all.begin() + static_cast<std::ptrdiff_t>((i + 1) * l * l));
    }

    /// Logit threshold of the binary masks (default 0).
    void set_mask_threshold(float t) {
        detail::check(medsam2_predictor_set_mask_threshold(handle_.get(), t));
    }

    /// Forgets the image.
    void clear_image() {
        detail::check(medsam2_predictor_clear_image(handle_.get()));
        width_ = height_ = last_masks_ = 0;
    }

    /// The C handle (owned by this object).
    medsam2_predictor *get() const noexcept { return handle_.get(); }

private:
    static medsam2_image make(const void *data, medsam2_pixel_type t, uint32_t w, uint32_t h,
                              uint32_t c, std::size_t stride, medsam2_window win) {
        medsam2_image img{};
        img.data = data;
        img.pixel_type = t;
        img.width = w;
        img.height = h;
        img.channels = c;
        img.row_stride = stride;
        img.window = win;
        return img;
    }

    Model model_;
    std::unique_ptr<medsam2_predictor, detail::PredictorDeleter> handle_;
    uint32_t width_ = 0;
    uint32_t height_ = 0;
    uint32_t last_masks_ = 0; // masks of the last successful prediction
};

// ---------------------------------------------------------------- volumes

/// A view of the caller's voxels with their geometry (see medsam2_volume).
struct VolumeView {
    medsam2_volume desc{};

    /// Voxels of type T (uint8_t, int16_t, uint16_t or float), `dims` = {nx, ny, nz},
    /// `i` fastest; 1 mm spacing, origin 0 and identity direction unless set.
    template <class T>
    static VolumeView of(const T *voxels, std::array<uint32_t, 3> dims,
                         std::array<double, 3> spacing = {1.0, 1.0, 1.0},
                         std::array<double, 3> origin = {0.0, 0.0, 0.0},
                         std::array<double, 9> direction = {1, 0, 0, 0, 1, 0, 0, 0, 1}) {
        VolumeView v;
        v.desc.voxels = voxels;
        v.desc.pixel_type = pixel_type<T>();
        for (int i = 0; i < 3; i++) {
            v.desc.dims[i] = dims[i];
            v.desc.spacing[i] = spacing[i];
            v.desc.origin[i] = origin[i];
        }
        for (int i = 0; i < 9; i++) v.desc.direction[i] = direction[i];
        return v;
    }

    /// Number of voxels.
    std::size_t size() const {
        return static_cast<std::size_t>(desc.dims[0]) * desc.dims[1] * desc.dims[2];
    }

private:
    template <class T> static constexpr medsam2_pixel_type pixel_type() {
        if constexpr (std::is_same_v<T, uint8_t>) return MEDSAM2_PIXEL_U8;
        else if constexpr (std::is_same_v<T, int16_t>) return MEDSAM2_PIXEL_I16;
        else if constexpr (std::is_same_v<T, uint16_t>) return MEDSAM2_PIXEL_U16;
        else {
            static_assert(std::is_same_v<T, float>, "voxels must be uint8_t, int16_t, uint16_t or float");
            return MEDSAM2_PIXEL_F32;
        }
    }
};

/// Intensity mappings (see medsam2_intensity).
struct Intensity {
    /// A CT window.
    static medsam2_intensity window(medsam2_window w,
                                    uint32_t stretch = MEDSAM2_STRETCH_CLIPPED_MINMAX) {
        medsam2_intensity it{};
        it.mode = MEDSAM2_INTENSITY_WINDOW;
        it.window = w;
        it.stretch = stretch;
        return it;
    }
    /// A CT window preset by name.
    static medsam2_intensity window_preset(const std::string &name,
                                           uint32_t stretch = MEDSAM2_STRETCH_CLIPPED_MINMAX) {
        return window(medsam2::window_preset(name), stretch);
    }
    /// Percentiles of the non-zero voxels (MR: 0.5, 99.5).
    static medsam2_intensity percentile(double lower = 0.5, double upper = 99.5) {
        medsam2_intensity it{};
        it.mode = MEDSAM2_INTENSITY_PERCENTILE;
        it.lower_percentile = lower;
        it.upper_percentile = upper;
        return it;
    }
    /// u8 voxels as they are.
    static medsam2_intensity none() {
        medsam2_intensity it{};
        it.mode = MEDSAM2_INTENSITY_NONE;
        return it;
    }
};

/// Direction of a propagation.
enum class Direction : uint32_t {
    Forward = MEDSAM2_DIRECTION_FORWARD,
    Backward = MEDSAM2_DIRECTION_BACKWARD,
    Both = MEDSAM2_DIRECTION_BOTH,
};

/// How VolumeSession::segment propagates the prompts (see medsam2_propagation).
enum class Propagation : uint32_t {
    /// Forward then backward from the first prompted slice, in one session.
    Joint = MEDSAM2_PROPAGATION_JOINT,
    /// MedSAM2: forward; reset; backward from the last prompted slice; union
    /// (segment_volume's default).
    Separate = MEDSAM2_PROPAGATION_SEPARATE,
    /// Forward only from the first prompted slice.
    Forward = MEDSAM2_PROPAGATION_FORWARD,
};

/// Settings of VolumeSession::segment (the defaults are segment_volume's).
struct SegmentOptions {
    Propagation propagation = Propagation::Separate;
    /// Keep each object's largest 3-D component.
    bool largest_component = false;
    /// Voxels whose logit is > this belong to the object.
    float mask_threshold = 0.0f;
};

/// Progress callback: (slices done, total) -> true to continue, false to cancel.
using ProgressCallback = std::function<bool(uint32_t done, uint32_t total)>;

namespace detail {
/// Runs `call(fn, user)` with a C progress trampoline for `progress`: a
/// C++ exception thrown by `progress` stops the call and is rethrown after it
/// (never unwinding through the C library); otherwise the status is checked.
template <class Call> void with_progress(ProgressCallback &progress, Call call) {
    struct State {
        ProgressCallback *cb;
        std::exception_ptr error;
    } state{&progress, nullptr};
    medsam2_progress_fn fn = nullptr;
    if (progress) {
        fn = [](void *user, uint32_t done, uint32_t total) -> int {
            auto *st = static_cast<State *>(user);
            try {
                return (*st->cb)(done, total) ? 0 : 1;
            } catch (...) {
                st->error = std::current_exception();
                return 1;
            }
        };
    }
    medsam2_status s = call(fn, static_cast<void *>(&state));
    if (state.error) std::rethrow_exception(state.error);
    check(s);
}
} // namespace detail

/// A volume segmentation session (one thread at a time).
class VolumeSession {
public:
    VolumeSession(const Model &model, const VolumeView &volume, const medsam2_intensity &intensity,
                  uint32_t axis = MEDSAM2_AXIS_K, const medsam2_session_options *options = nullptr)
        : model_(model) {
        medsam2_session *s = nullptr;
        detail::check(medsam2_session_new(model.get(), &volume.desc, &intensity, axis, options, &s));
        handle_.reset(s);
        detail::check(medsam2_session_slice_shape(s, &num_slices_, &width_, &height_));
        num_voxels_ = volume.size();
    }

    uint32_t num_slices() const noexcept { return num_slices_; }
    uint32_t slice_width() const noexcept { return width_; }
    uint32_t slice_height() const noexcept { return height_; }

    /// Clicks (x0, y0, x1, y1, ...) with labels (1 object, 0 background) on a
    /// slice; returns the object's mask on that slice.
    std::vector<uint8_t> add_points(uint32_t slice, uint32_t obj_id, const std::vector<float> &xy,
                                    const std::vector<int32_t> &labels,
                                    bool clear_old_points = true) {
        if (xy.size() != 2 * labels.size())
            throw InvalidArgument(MEDSAM2_ERR_INVALID_ARGUMENT, "need two coordinates per label");
        std::vector<uint8_t> mask(slice_pixels());
        detail::check(medsam2_session_add_points(handle_.get(), slice, obj_id, xy.data(),
                                                 labels.data(), labels.size(),
                                                 clear_old_points ? 1 : 0, mask.data(),
                                                 mask.size()));
        return mask;
    }

    /// A box (x0, y0, x1, y1) on a slice; returns the object's mask on that slice.
    std::vector<uint8_t> add_box(uint32_t slice, uint32_t obj_id, std::array<float, 4> box) {
        std::vector<uint8_t> mask(slice_pixels());
        detail::check(medsam2_session_add_box(handle_.get(), slice, obj_id, box.data(),
                                              mask.data(), mask.size()));
        return mask;
    }

    /// A mask (width x height, nonzero = object) on a slice; returns the object's new mask.
    std::vector<uint8_t> add_mask(uint32_t slice, uint32_t obj_id,
                                  const std::vector<uint8_t> &mask) {
        std::vector<uint8_t> out(slice_pixels());
        detail::check(medsam2_session_add_mask(handle_.get(), slice, obj_id, mask.data(),
                                               mask.size(), out.data(), out.size()));
        return out;
    }

    /// Removes an object's prompts on one slice.
    void clear_prompts(uint32_t slice, uint32_t obj_id) {
        detail::check(medsam2_session_clear_prompts(handle_.get(), slice, obj_id));
    }

    /// Propagates the prompts; throws Cancelled if `progress` returns false
    /// (or rethrows what `progress` threw). The session stays usable.
    void propagate(Direction direction = Direction::Both, int64_t start_slice = -1,
                   uint32_t max_slices = 0, ProgressCallback progress = {}) {
        detail::with_progress(progress, [&](medsam2_progress_fn fn, void *user) {
            return medsam2_session_propagate(handle_.get(), static_cast<uint32_t>(direction),
                                             start_slice, max_slices, fn, user);
        });
    }

    /// A box from two opposite LPS corners (mm), prompted on the slice nearest
    /// their middle (as segment_volume --physical); returns that slice.
    uint32_t add_box_physical(uint32_t obj_id, std::array<double, 3> corner0,
                              std::array<double, 3> corner1) {
        uint32_t slice = 0;
        detail::check(medsam2_session_add_box_physical(handle_.get(), obj_id, corner0.data(),
                                                       corner1.data(), &slice));
        return slice;
    }

    /// Segments the volume from every prompt added so far, as segment_volume
    /// does (medsam2_session_segment): the label volume, voxel order of the
    /// input. Throws Cancelled if `progress` returns false (or rethrows what it
    /// threw); the session stays usable.
    std::vector<uint16_t> segment(const SegmentOptions &options = {},
                                  ProgressCallback progress = {}) {
        medsam2_segment_options o{};
        o.propagation = static_cast<medsam2_propagation>(options.propagation);
        o.largest_component = options.largest_component ? 1 : 0;
        o.mask_threshold = options.mask_threshold;
        std::vector<uint16_t> v(num_voxels_);
        detail::with_progress(progress, [&](medsam2_progress_fn fn, void *user) {
            return medsam2_session_segment(handle_.get(), &o, v.data(), v.size(), fn, user);
        });
        return v;
    }

    /// The label volume (object id per voxel, 0 background), voxel order of the input.
    std::vector<uint16_t> labels() const {
        std::vector<uint16_t> v(num_voxels_);
        detail::check(medsam2_session_get_labels(handle_.get(), v.data(), v.size()));
        return v;
    }

    /// The labels of one slice (width x height).
    std::vector<uint16_t> slice_labels(uint32_t slice) const {
        std::vector<uint16_t> v(slice_pixels());
        detail::check(medsam2_session_get_slice_labels(handle_.get(), slice, v.data(), v.size()));
        return v;
    }

    /// One object's mask on one slice (width x height, 0/1).
    std::vector<uint8_t> object_mask(uint32_t slice, uint32_t obj_id) const {
        std::vector<uint8_t> v(slice_pixels());
        detail::check(
            medsam2_session_get_object_mask(handle_.get(), slice, obj_id, v.data(), v.size()));
        return v;
    }

    /// The object ids, in creation order.
    std::vector<uint32_t> object_ids() const {
        std::size_t n = 0;
        detail::check(medsam2_session_object_ids(handle_.get(), nullptr, 0, &n));
        std::vector<uint32_t> ids(n);
        if (n) detail::check(medsam2_session_object_ids(handle_.get(), ids.data(), n, &n));
        return ids;
    }

    /// A physical LPS point (mm) -> (slice, x, y).
    std::tuple<uint32_t, float, float> physical_to_slice(std::array<double, 3> lps) const {
        uint32_t slice = 0;
        float x = 0, y = 0;
        detail::check(
            medsam2_session_physical_to_slice(handle_.get(), lps.data(), &slice, &x, &y));
        return {slice, x, y};
    }

    /// Removes an object.
    void remove_object(uint32_t obj_id) {
        detail::check(medsam2_session_remove_object(handle_.get(), obj_id));
    }

    /// Forgets all objects and masks.
    void reset() { detail::check(medsam2_session_reset(handle_.get())); }

    /// The C handle (owned by this object).
    medsam2_session *get() const noexcept { return handle_.get(); }

private:
    std::size_t slice_pixels() const { return static_cast<std::size_t>(width_) * height_; }

    Model model_;
    std::unique_ptr<medsam2_session, detail::SessionDeleter> handle_;
    uint32_t num_slices_ = 0, width_ = 0, height_ = 0;
    std::size_t num_voxels_ = 0;
};

} // namespace medsam2

#endif // MEDSAM2_HPP
