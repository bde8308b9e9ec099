#!/usr/bin/env python3
"""Voxel agreement of two label volumes (NIfTI-1, .nii or .nii.gz, integer
labels), e.g. the main job's output in bf16 against f32 on the same device.

    python3 scripts/device/mask_agreement.py A.nii.gz B.nii.gz [--min 0.995]

Prints `agreement X% (N of M voxels differ)` and exits 1 below --min.
Reads the header by hand (numpy only) so it runs where nibabel is absent.
"""

import argparse
import gzip
import struct
import sys

import numpy as np

DTYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 256: np.int8, 512: np.uint16, 768: np.uint32}


def read_labels(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 352:
        sys.exit(f"error: {path}: too short for a NIfTI-1 header")
    endian = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
    if struct.unpack(endian + "i", raw[:4])[0] != 348:
        sys.exit(f"error: {path}: not a NIfTI-1 file")
    dim = struct.unpack(endian + "8h", raw[40:56])
    code = struct.unpack(endian + "h", raw[70:72])[0]
    offset = int(struct.unpack(endian + "f", raw[108:112])[0])
    if code not in DTYPES:
        sys.exit(f"error: {path}: datatype {code} is not an integer label type")
    shape = dim[1 : 1 + dim[0]]
    n = int(np.prod(shape))
    dt = np.dtype(DTYPES[code]).newbyteorder(endian)
    data = np.frombuffer(raw, dtype=dt, count=n, offset=offset)
    return shape, data


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--min", type=float, default=0.995)
    args = ap.parse_args()
    sa, a = read_labels(args.a)
    sb, b = read_labels(args.b)
    if sa != sb:
        sys.exit(f"error: shapes differ: {sa} vs {sb}")
    diff = int(np.count_nonzero(a != b))
    agree = 1.0 - diff / max(a.size, 1)
    fg = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    print(f"agreement {agree * 100:.3f}% ({diff} of {a.size} voxels differ; foreground {fg[0]} vs {fg[1]}; need {args.min * 100:.1f}%)")
    sys.exit(0 if agree >= args.min else 1)


if __name__ == "__main__":
    main()
