// Command-line plumbing shared by the ITK example programs (not part of the
// reusable helper medsam2_itk.hpp): argument parsing, one-line errors,
// reading a scalar 3-D image of whatever pixel type the file holds.
// SPDX-License-Identifier: Apache-2.0
#ifndef MEDSAM2_ITK_CLI_HPP
#define MEDSAM2_ITK_CLI_HPP

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "itkImageFileReader.h"
#include "itkImageIOFactory.h"
#include "medsam2_itk.hpp"

namespace cli {

/// A user error: printed as one line `error: ...`, exit status 1.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// One line: newlines and runs of blanks become one space.
inline std::string one_line(const std::string &s) {
    std::string out;
    bool blank = false;
    for (char c : s) {
        bool b = c == '\n' || c == '\r' || c == '\t' || c == ' ';
        if (b) {
            blank = !out.empty();
            continue;
        }
        if (blank) out += ' ';
        blank = false;
        out += c;
    }
    return out;
}

/// A number as a user wrote it (`25`, `0.5`), for messages.
inline std::string show(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

/// A finite number, or a UsageError naming `what`.
inline double number(const std::string &s, const std::string &what) {
    const char *b = s.c_str();
    char *end = nullptr;
    errno = 0;
    double v = std::strtod(b, &end);
    while (end && (*end == ' ')) end++;
    if (s.empty() || end == b || *end != '\0' || errno == ERANGE || !std::isfinite(v))
        throw UsageError("bad " + what + " `" + s + "`: not a finite number");
    return v;
}

/// `n` comma-separated numbers.
inline std::vector<double> numbers(const std::string &s, std::size_t n, const std::string &what,
                                   const std::string &form) {
    std::vector<double> v;
    std::size_t start = 0;
    while (true) {
        std::size_t comma = s.find(',', start);
        v.push_back(number(s.substr(start, comma - start), what));
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    if (v.size() != n)
        throw UsageError("bad " + what + " `" + s + "`: expected " + form + " (" +
                         std::to_string(n) + " numbers)");
    return v;
}

/// Splits an optional `OBJ:` prefix off a prompt (0 when absent).
inline uint32_t split_object(std::string &s, const std::string &what) {
    std::size_t colon = s.find(':');
    if (colon == std::string::npos) return 0;
    std::string id = s.substr(0, colon);
    double v = number(id, what + " object id");
    if (v < 1 || v > MEDSAM2_MAX_OBJECT_ID || v != std::floor(v))
        throw UsageError("bad " + what + " `" + s + "`: object id `" + id +
                         "` must be 1..65535 (0 is the background)");
    s = s.substr(colon + 1);
    return static_cast<uint32_t>(v);
}

/// Whether two paths name the same existing file (however written).
inline bool same_file(const std::string &a, const std::string &b) {
    std::error_code ec;
    return std::filesystem::equivalent(a, b, ec) && !ec;
}

/// Calls `f(static_cast<TPixel *>(nullptr))` with TPixel the file's voxel
/// type when medsam2 takes it as is (uint8_t, int16_t, uint16_t, float), else
/// float (ITK's reader converts). Refuses files that are not scalar 3-D images.
template <class F> auto with_pixel_type(const std::string &path, F &&f) {
    if (!std::filesystem::exists(path)) throw UsageError(path + ": no such file");
    if (std::filesystem::is_directory(path))
        throw UsageError(path + ": is a directory, not an image file");
    auto io = itk::ImageIOFactory::CreateImageIO(path.c_str(), itk::IOFileModeEnum::ReadMode);
    if (!io) throw UsageError(path + ": not an image format ITK can read");
    io->SetFileName(path);
    io->ReadImageInformation();
    if (io->GetNumberOfComponents() != 1)
        throw UsageError(path + ": " + std::to_string(io->GetNumberOfComponents()) +
                         " components per voxel; a scalar image is needed");
    if (io->GetNumberOfDimensions() != 3)
        throw UsageError(path + ": " + std::to_string(io->GetNumberOfDimensions()) +
                         "-D image; a 3-D volume is needed");
    switch (io->GetComponentType()) {
    case itk::IOComponentEnum::UCHAR: return f(static_cast<uint8_t *>(nullptr));
    case itk::IOComponentEnum::SHORT: return f(static_cast<int16_t *>(nullptr));
    case itk::IOComponentEnum::USHORT: return f(static_cast<uint16_t *>(nullptr));
    default: return f(static_cast<float *>(nullptr));
    }
}

/// Reads a 3-D image of pixel type T.
template <class T> typename itk::Image<T, 3>::Pointer read_image(const std::string &path) {
    auto reader = itk::ImageFileReader<itk::Image<T, 3>>::New();
    reader->SetFileName(path);
    reader->Update();
    typename itk::Image<T, 3>::Pointer image = reader->GetOutput();
    image->DisconnectPipeline();
    return image;
}

} // namespace cli

#endif // MEDSAM2_ITK_CLI_HPP
