#!/usr/bin/env python3
"""Reference data for the DICOM series reader and the Slicer segmentation files.

Writes DICOM series with pydicom from synthetic volumes (or from a NIfTI
volume), broken variants of them, and what SimpleITK's ImageSeriesReader reads
from each good series (geometry in JSON, voxels as raw little-endian arrays).
The Rust tests (tests/medical_dicom.rs) compare the Rust reader with it.

    python make_series.py synthetic OUT          # good and broken synthetic series
    python make_series.py from-nifti IMG.nii.gz OUT/NAME
    python make_series.py fixtures tests/fixtures/dicom   # the committed tiny set
    python make_series.py check-seg FILE.seg.nrrd  # read with pynrrd, print JSON
    python make_series.py make-seg OUT.seg.nrrd    # a Slicer-style file (2 layers)
    python make_series.py nifti2 OUT.nii / read-nifti2 IN.nii  (nibabel NIfTI-2)

Everything is deterministic (fixed seeds and UIDs).
"""

import json
import os
import shutil
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
)
import SimpleITK as sitk

ROOT = "1.2.826.0.1.3680043.10.1422"  # a fixed UID root for test data


def uid(*parts):
    return ROOT + "." + ".".join(str(p) for p in parts)


def ds_number(x):
    """A DS string (at most 16 characters) for x."""
    for prec in range(12, 0, -1):
        s = f"{x:.{prec}g}"
        if len(s) <= 16:
            return s
    raise ValueError(x)


def new_image(sop_class, series, instance, description, modality, syntax=ExplicitVRLittleEndian):
    """A dataset with the file meta and the patient / study / series / frame
    of reference attributes every synthetic image shares."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid(series, 2, instance)
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = uid(0, 1)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid(0, 9)
    ds.SeriesInstanceUID = uid(series, 1)
    ds.SeriesNumber = series
    ds.SeriesDescription = description
    ds.InstanceNumber = instance
    ds.Modality = modality
    ds.PatientName = "Synthetic^Phantom"
    ds.PatientID = "SYNTH"
    ds.FrameOfReferenceUID = uid(0, 8)
    return ds


def write_series(
    out,
    vol,  # [nz, ny, nx] stored values
    spacing,  # (x, y, z)
    origin,
    direction,  # 3x3, columns = axes
    series=1,
    modality="CT",
    slope=1.0,
    intercept=0.0,
    signed=False,
    bits=16,
    syntax=ExplicitVRLittleEndian,
    names=None,
    reverse_files=False,
    description="synthetic",
):
    os.makedirs(out, exist_ok=True)
    direction = np.asarray(direction, dtype=float)
    nz, ny, nx = vol.shape
    row, col, normal = direction[:, 0], direction[:, 1], direction[:, 2]
    paths = []
    for k in range(nz):
        pos = np.asarray(origin) + k * spacing[2] * normal
        sop_class = CTImageStorage if modality == "CT" else MRImageStorage
        ds = new_image(sop_class, series, k + 1, description, modality,
                       ExplicitVRLittleEndian if syntax == RLELossless else syntax)
        ds.ImagePositionPatient = [ds_number(v) for v in pos]
        ds.ImageOrientationPatient = [ds_number(v) for v in list(row) + list(col)]
        ds.PixelSpacing = [ds_number(spacing[1]), ds_number(spacing[0])]
        ds.SliceThickness = ds_number(spacing[2])
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = bits
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 1 if signed else 0
        if slope != 1.0 or intercept != 0.0 or modality == "CT":
            ds.RescaleSlope = ds_number(slope)
            ds.RescaleIntercept = ds_number(intercept)
        dtype = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16, (16, True): np.int16}[
            (bits, signed)
        ]
        ds.PixelData = np.ascontiguousarray(vol[k].astype(dtype)).tobytes()
        if syntax == RLELossless:
            ds.compress(RLELossless)
        name = names[k] if names else f"IM{(nz - 1 - k) if reverse_files else k:04d}.dcm"
        path = os.path.join(out, name)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced(path, vol, spacing, origin, direction, slope, intercept, order, series=60):
    """One Enhanced CT file: vol's slices as frames (in the order `order` of
    slice indices), plane positions per frame, orientation, pixel measures and
    rescale shared (the functional-group layout of scanners' enhanced
    exports). The same volume as write_series(vol, ...) gives."""
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedCTImageStorage

    os.makedirs(os.path.dirname(path), exist_ok=True)
    direction = np.asarray(direction, dtype=float)
    nz, ny, nx = vol.shape
    row, col, normal = direction[:, 0], direction[:, 1], direction[:, 2]
    ds = new_image(EnhancedCTImageStorage, series, 1, "enhanced", "CT")
    ds.NumberOfFrames = nz
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0

    def item(**kw):
        d = Dataset()
        for k, v in kw.items():
            setattr(d, k, v)
        return d

    shared = item(
        PixelMeasuresSequence=Sequence([item(PixelSpacing=[ds_number(spacing[1]), ds_number(spacing[0])],
                                             SliceThickness=ds_number(spacing[2]))]),
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=[ds_number(v) for v in list(row) + list(col)])]),
        PixelValueTransformationSequence=Sequence([item(RescaleSlope=ds_number(slope), RescaleIntercept=ds_number(intercept),
                                                        RescaleType="HU")]),
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in order:
        pos = np.asarray(origin) + k * spacing[2] * normal
        per_frame.append(item(PlanePositionSequence=Sequence([item(ImagePositionPatient=[ds_number(v) for v in pos])])))
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.ascontiguousarray(vol[list(order)].astype(np.uint16)).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def sitk_reference(series_dir, out_prefix, series_uid=None):
    """What SimpleITK reads: geometry JSON + raw voxels."""
    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(series_dir)
    if series_uid is None:
        assert len(ids) == 1, ids
        series_uid = ids[0]
    files = reader.GetGDCMSeriesFileNames(series_dir, series_uid)
    reader.SetFileNames(files)
    img = reader.Execute()
    arr = sitk.GetArrayFromImage(img)  # [z, y, x]
    raw = out_prefix + ".raw"
    arr.astype("<f8").tofile(raw)
    info = {
        "size": list(img.GetSize()),
        "spacing": list(img.GetSpacing()),
        "origin": list(img.GetOrigin()),
        "direction": list(img.GetDirection()),
        "pixel_type": img.GetPixelIDTypeAsString(),
        "files": [os.path.basename(f) for f in files],
        "series_uid": series_uid,
        "raw": os.path.basename(raw),
    }
    with open(out_prefix + ".json", "w") as f:
        json.dump(info, f, indent=1)


def rotation(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def phantom(nz, ny, nx, seed):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:nz, 0:ny, 0:nx]
    ball = ((x - nx / 2) ** 2 + (y - ny / 2) ** 2 + (z - nz / 2) ** 2) < (min(nx, ny, nz) / 2.5) ** 2
    vol = rng.integers(0, 200, size=(nz, ny, nx)) + 1000 * ball + 7 * z
    return vol.astype(np.int64)


def synthetic(out):
    refs = os.path.join(out, "ref")
    os.makedirs(refs, exist_ok=True)
    vol = phantom(12, 20, 24, seed=1)
    sp = (0.7, 0.9, 2.5)
    rot = rotation(0.2, -0.15, 0.4)
    good = {}
    # CT, oblique, stored uint16 + rescale to HU, files named against z order.
    good["ct_oblique"] = dict(vol=vol, spacing=sp, origin=(-120.5, 33.25, 410.0), direction=rot,
                              slope=1.0, intercept=-1024.0, reverse_files=True)
    # MR, fractional rescale, signed, axial with the normal pointing down.
    flip = np.diag([1.0, 1.0, 1.0])
    flip[:, 1] = [0, -1, 0]
    flip[:, 2] = [0, 0, -1]
    good["mr_fractional"] = dict(vol=vol - 300, spacing=(1.1, 1.1, 3.0), origin=(10, -20, 30), direction=flip,
                                 modality="MR", slope=0.5, intercept=3.25, signed=True)
    # Sagittal, 8-bit, implicit VR little endian, no rescale.
    sag = np.array([[0.0, 0, 1], [1, 0, 0], [0, -1, 0]])  # row along y, column along -z, normal along x
    good["sagittal_u8_implicit"] = dict(vol=np.clip(vol // 6, 0, 255), spacing=(0.5, 0.5, 1.25),
                                        origin=(0, 0, 0), direction=sag, modality="MR", bits=8,
                                        syntax=ImplicitVRLittleEndian)
    good["ct_rle"] = dict(vol=vol, spacing=sp, origin=(1, 2, 3), direction=np.eye(3), slope=1.0,
                          intercept=-1024.0, syntax=RLELossless)
    good["ct_deflated"] = dict(vol=vol, spacing=sp, origin=(1, 2, 3), direction=np.eye(3), slope=1.0,
                               intercept=-1024.0, syntax=DeflatedExplicitVRLittleEndian)
    for i, (name, kw) in enumerate(good.items()):
        d = os.path.join(out, name)
        kw = dict(kw)
        v = kw.pop("vol")
        write_series(d, v, series=10 + i, description=name, **kw)
        sitk_reference(d, os.path.join(refs, name))
    # JPEG lossless (process 14), written by SimpleITK/GDCM (pydicom cannot encode JPEG).
    write_jpeg_series(os.path.join(out, "ct_jpeg_lossless"), vol - 1024, sp, (-3.5, 8.0, 100.0))
    sitk_reference(os.path.join(out, "ct_jpeg_lossless"), os.path.join(refs, "ct_jpeg_lossless"))
    # The oblique CT again as one Enhanced CT file, frames stored out of z
    # order: the same volume as ct_oblique's SimpleITK reference.
    ob = good["ct_oblique"]
    order = [5, 0, 11, 3, 8, 1, 10, 2, 7, 4, 9, 6]
    assert sorted(order) == list(range(vol.shape[0]))
    write_enhanced(os.path.join(out, "ct_enhanced", "enhanced.dcm"), ob["vol"], ob["spacing"], ob["origin"],
                   ob["direction"], ob["slope"], ob["intercept"], order)
    # Non-image files mixed in: a text file and a DICOM object without pixels.
    d = os.path.join(out, "ct_oblique")
    with open(os.path.join(d, "README.txt"), "w") as f:
        f.write("not a DICOM file\n")
    write_no_pixels(os.path.join(d, "report.dcm"))

    # Two series in one folder.
    d = os.path.join(out, "two_series")
    write_series(d, vol[:4], sp, (0, 0, 0), np.eye(3), series=30, names=[f"a{k}.dcm" for k in range(4)])
    write_series(d, vol[:5], sp, (0, 0, 0), np.eye(3), series=31, names=[f"b{k}.dcm" for k in range(5)])
    sitk_reference(d, os.path.join(refs, "two_series_31"), uid(31, 1))
    # A third series that cannot be used (a screenshot without position): only
    # an error when it is the one chosen.
    p = write_series(d, vol[:1], sp, (0, 0, 0), np.eye(3), series=32, names=["c0.dcm"])
    edit(p[0], lambda ds: delattr(ds, "ImagePositionPatient"))

    # Broken series, one inconsistency each; broken.json names the file and the error.
    broken = {}

    def base(name, **kw):
        d = os.path.join(out, "broken", name)
        args = dict(spacing=sp, origin=(0, 0, 0), direction=np.eye(3), series=40 + len(broken))
        args.update(kw)
        return d, write_series(d, vol[:6], **args)

    d, p = base("missing_slice")
    os.remove(p[3])
    broken["missing_slice"] = dict(file=os.path.basename(p[4]), error="missing slice")
    d, p = base("duplicate_slice")
    ds = pydicom.dcmread(p[2])
    ds.SOPInstanceUID = uid(99, 1)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(os.path.join(d, "IM0002_copy.dcm"))
    broken["duplicate_slice"] = dict(file="IM0002_copy.dcm", error="duplicate slice")
    d, p = base("uneven_spacing")
    edit(p[3], lambda ds: setattr(ds, "ImagePositionPatient", [0, 0, ds_number(3 * sp[2] + 0.8)]))
    broken["uneven_spacing"] = dict(file=os.path.basename(p[3]), error="uneven slice spacing")
    d, p = base("varying_orientation")
    edit(p[2], lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0.995037, 0.0995037]))
    broken["varying_orientation"] = dict(file=os.path.basename(p[2]), error="ImageOrientationPatient")
    d, p = base("varying_pixel_size")
    edit(p[4], lambda ds: setattr(ds, "PixelSpacing", [0.8, 0.7]))
    broken["varying_pixel_size"] = dict(file=os.path.basename(p[4]), error="PixelSpacing")
    # Gantry tilt: positions advance along y as well as z (15 degrees).
    d = os.path.join(out, "broken", "gantry_tilt")
    p = write_series(d, vol[:6], sp, (0, 0, 0), np.eye(3), series=47)
    for k, f in enumerate(p):
        t = np.tan(np.radians(15)) * k * sp[2]
        edit(f, lambda ds, t=t, k=k: (setattr(ds, "ImagePositionPatient", [0, ds_number(t), ds_number(k * sp[2])]),
                                      setattr(ds, "GantryDetectorTilt", 15)))
    broken["gantry_tilt"] = dict(file=os.path.basename(p[1]), error="gantry tilt")
    # A multi-frame file whose frames have no positions of their own.
    p = write_enhanced(os.path.join(out, "broken", "multiframe_no_positions", "mf.dcm"), vol[:3], sp, (0, 0, 0),
                       np.eye(3), 1.0, -1024.0, [0, 1, 2], series=48)
    edit(p, lambda ds: delattr(ds, "PerFrameFunctionalGroupsSequence"))
    broken["multiframe_no_positions"] = dict(file="mf.dcm", error="without a PerFrameFunctionalGroupsSequence item")
    # A multi-frame file whose pixel data holds one of its three frames.
    p = write_enhanced(os.path.join(out, "broken", "multiframe_short_pixels", "mf3.dcm"), vol[:3], sp, (0, 0, 0),
                       np.eye(3), 1.0, -1024.0, [0, 1, 2], series=49)
    edit(p, lambda ds: setattr(ds, "PixelData", ds.PixelData[: len(ds.PixelData) // 3]))
    broken["multiframe_short_pixels"] = dict(file="mf3.dcm", error="3 frame(s) of 24x20 pixels")
    with open(os.path.join(out, "broken", "broken.json"), "w") as f:
        json.dump(broken, f, indent=1)


def write_jpeg_series(out, vol, spacing, origin):
    """Axial int16 slices, JPEG lossless, one file each."""
    os.makedirs(out, exist_ok=True)
    img = sitk.GetImageFromArray(vol.astype(np.int16))
    img.SetSpacing(tuple(float(v) for v in spacing))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetUseCompression(True)
    writer.SetCompressor("JPEG")
    for k in range(vol.shape[0]):
        s = img[:, :, k]
        s.SetMetaData("0008|0060", "CT")
        s.SetMetaData("0020|000e", uid(50, 1))
        s.SetMetaData("0020|0013", str(k + 1))
        z = origin[2] + k * spacing[2]
        s.SetMetaData("0020|0032", "\\".join(ds_number(v) for v in (origin[0], origin[1], z)))
        s.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        s.SetMetaData("0028|0030", f"{ds_number(spacing[1])}\\{ds_number(spacing[0])}")
        writer.SetFileName(os.path.join(out, f"IM{k:04d}.dcm"))
        writer.Execute(s)


def edit(path, fn):
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path)


def write_no_pixels(path):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = uid(7, 7)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = uid(7, 1)
    ds.Modality = "SR"
    ds.save_as(path, enforce_file_format=True)


def from_nifti(nifti, out):
    img = sitk.ReadImage(nifti)
    arr = sitk.GetArrayFromImage(img).astype(np.int64)  # [z, y, x]
    d = out
    write_series(d, arr + 1024, img.GetSpacing(), img.GetOrigin(),
                 np.array(img.GetDirection()).reshape(3, 3), series=60, slope=1.0, intercept=-1024.0,
                 description=os.path.basename(nifti))
    sitk_reference(d, d.rstrip("/") + "_ref")


def fixtures(out):
    """The tiny committed set (tests/fixtures/dicom): one series and its reference."""
    for name in ("tiny_ct", "tiny_ct_ref.json", "tiny_ct_ref.raw"):
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    os.makedirs(out, exist_ok=True)
    vol = phantom(4, 5, 6, seed=3)
    d = os.path.join(out, "tiny_ct")
    write_series(d, vol, (0.8, 0.6, 2.0), (-5.5, 7.25, -30.0), rotation(0.1, 0.2, -0.3), series=80,
                 slope=1.0, intercept=-1024.0, reverse_files=True, description="tiny")
    sitk_reference(d, os.path.join(out, "tiny_ct_ref"))
    with open(os.path.join(d, "notes.txt"), "w") as f:
        f.write("a non-DICOM file the reader skips\n")


def check_seg(path):
    import nrrd

    data, header = nrrd.read(path)
    out = {"shape": list(data.shape), "dtype": str(data.dtype), "header": {}}
    for k, v in header.items():
        out["header"][k] = v.tolist() if hasattr(v, "tolist") else v
    out["sum"] = int(np.asarray(data, dtype=np.int64).sum())
    print(json.dumps(no_nan(out), default=str, allow_nan=False))


def no_nan(v):
    """NaN (pynrrd's "none" direction) as null, for strict JSON."""
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, list):
        return [no_nan(x) for x in v]
    if isinstance(v, dict):
        return {k: no_nan(x) for k, x in v.items()}
    return v


def make_seg(path):
    """A Slicer-style two-layer segmentation: segments 0 and 1 overlap."""
    import nrrd

    data = np.zeros((2, 6, 5, 4), dtype=np.uint8)  # layers, x, y, z
    data[0, 1:4, 1:3, 0:2] = 1  # segment 0 "liver"
    data[1, 2:5, 1:4, 1:3] = 1  # segment 1 "tumour", overlaps liver
    data[0, 0, 4, 3] = 2  # segment 2 "vessel" in layer 0, label 2
    header = {
        "type": "unsigned char",
        "dimension": 4,
        "space": "left-posterior-superior",
        "kinds": ["list", "domain", "domain", "domain"],
        "space directions": np.array([[np.nan] * 3, [0.5, 0, 0], [0, 0.75, 0], [0, 0, 2.0]]),
        "space origin": np.array([-10.0, 5.0, 30.0]),
        "encoding": "gzip",
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
        "Segmentation_ConversionParameters": "",
    }
    segs = [("Segment_1", "liver", "0.9 0.6 0.4", 0, 1, "1 3 1 2 0 1"),
            ("Segment_2", "tumour", "0.2 0.8 0.3", 1, 1, "2 4 1 3 1 2"),
            ("Segment_3", "vessel", "0.8 0.1 0.1", 0, 2, "0 0 4 4 3 3")]
    for i, (sid, name, color, layer, value, extent) in enumerate(segs):
        header[f"Segment{i}_ID"] = sid
        header[f"Segment{i}_Name"] = name
        header[f"Segment{i}_NameAutoGenerated"] = "0"
        header[f"Segment{i}_Color"] = color
        header[f"Segment{i}_ColorAutoGenerated"] = "0"
        header[f"Segment{i}_Layer"] = str(layer)
        header[f"Segment{i}_LabelValue"] = str(value)
        header[f"Segment{i}_Extent"] = extent
        header[f"Segment{i}_Tags"] = "Segmentation.Status:inprogress|"
    nrrd.write(path, data, header)


def nifti2_write(path):
    """A NIfTI-2 file written by nibabel (oblique affine, int16, scaled)."""
    import nibabel as nib

    rng = np.random.default_rng(5)
    data = rng.integers(-500, 500, size=(7, 6, 5)).astype(np.int16)
    aff = np.eye(4)
    aff[:3, :3] = rotation(0.1, -0.2, 0.3) @ np.diag([0.6, 0.8, 2.5])
    aff[:3, 3] = [12.5, -40.25, 7.0]
    img = nib.Nifti2Image(data, aff)
    img.header.set_qform(aff, code=1)
    img.header.set_sform(aff, code=1)
    nib.save(img, path)
    print(json.dumps({"affine": aff.tolist(), "data": data.flatten(order="F").tolist()}))


def nifti2_read(path):
    import nibabel as nib

    img = nib.load(path)
    print(json.dumps({"class": type(img).__name__, "sizeof_hdr": int(img.header["sizeof_hdr"]),
                      "affine": img.affine.tolist(), "shape": list(img.shape),
                      "data": np.asarray(img.dataobj).flatten(order="F").tolist()}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "synthetic":
        synthetic(sys.argv[2])
    elif cmd == "from-nifti":
        from_nifti(sys.argv[2], sys.argv[3])
    elif cmd == "fixtures":
        fixtures(sys.argv[2])
    elif cmd == "check-seg":
        check_seg(sys.argv[2])
    elif cmd == "make-seg":
        make_seg(sys.argv[2])
    elif cmd == "nifti2":
        nifti2_write(sys.argv[2])
    elif cmd == "read-nifti2":
        nifti2_read(sys.argv[2])
    else:
        sys.exit(f"unknown command {cmd}")
