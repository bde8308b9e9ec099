#!/usr/bin/env python3
"""Write the committed sample phantom and print its README prompt.

    scripts/reference/.venv/bin/python scripts/train_demo/make_sample.py [--out tests/fixtures/demo]

Writes ``phantom_img.nii.gz`` (int16 HU) and ``phantom_seg.nii.gz`` (u8 lesion
label) from ``phantom.make_phantom(SEED, n_slices=14, easy=True,
lesion_kind="organ", key=6.5)`` (a liver lesion with clear contrast) and
prints the box prompt: the label's bounding box on its largest slice as
``Z,X0,Y0,X1,Y1`` (X = column, Y = row, inclusive), the box that
``segment_volume --box`` takes and ``medsam2_tools::volume_job::mask_bbox``
computes.  The files are byte-identical when regenerated.

``--heldout DIR --count N`` instead writes N held-out evaluation phantoms
(seeds 900000, 900001, ..., not the training stream's; a phantom whose
lesion has fewer than 100 voxels is skipped, as training skips clips whose
prompted slice has fewer than 6 lesion pixels) as ``phantom_XXX_img.nii.gz`` /
``phantom_XXX_seg.nii.gz`` for ``evaluate_prompts --data DIR``.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from phantom import make_phantom, write_nifti  # noqa: E402

SEED = 3
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def key_box(label):
    k = int(np.argmax(label.sum((1, 2))))
    ys, xs = np.nonzero(label[k])
    return k, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "demo"))
    ap.add_argument("--heldout", help="write held-out evaluation phantoms to this folder instead")
    ap.add_argument("--count", type=int, default=20)
    args = ap.parse_args()
    if args.heldout:
        os.makedirs(args.heldout, exist_ok=True)
        i, seed = 0, 900000
        while i < args.count:
            p = make_phantom(seed, n_slices=16)
            seed += 1
            if p["label"].sum() < 100:
                continue
            name = os.path.join(args.heldout, f"phantom_{i:03d}")
            i += 1
            write_nifti(name + "_img.nii.gz", p["hu"].astype(np.int16), p["spacing"], np.int16)
            write_nifti(name + "_seg.nii.gz", p["label"], p["spacing"], np.uint8)
            print(name, p["info"], int(p["label"].sum()))
        return
    os.makedirs(args.out, exist_ok=True)
    p = make_phantom(SEED, n_slices=14, easy=True, lesion_kind="organ", key=6.5)
    write_nifti(os.path.join(args.out, "phantom_img.nii.gz"), p["hu"].astype(np.int16), p["spacing"], np.int16)
    write_nifti(os.path.join(args.out, "phantom_seg.nii.gz"), p["label"], p["spacing"], np.uint8)
    k, (x0, y0, x1, y1) = key_box(p["label"])
    print(f"info: {p['info']}, spacing {p['spacing']}")
    print(f"--box {k},{x0},{y0},{x1},{y1}")


if __name__ == "__main__":
    main()
