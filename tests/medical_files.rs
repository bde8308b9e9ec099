//! Medical file formats: the real CT samples read with the values their writers
//! stored, every format round-trips, and the conversion/evaluation library
//! functions behind `examples/convert.rs` and `examples/evaluate.rs` work.
//!
//! The expected numbers were obtained with Python (numpy 2.4, nibabel 5.4,
//! pynrrd 1.1) from `../shared/data/ct-lesion`:
//! `np.load(npz)`, `nib.load(f).affine / .dataobj`, `nrrd.read(f)`, summing the
//! arrays as int64 and indexing a few voxels. The data are not in the repository:
//! tests look in `$MEDSAM2_DATA` or `../shared/data/ct-lesion` and skip (with a
//! message) when they are absent.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use medsam2_core::medical::{
    self, metrics, nifti, npz::Npz, nrrd, nrrd::NrrdEncoding, DataType, Geometry, Volume, VoxelData,
};

/// A fresh temporary directory for this test process.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medsam2-medical-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sum(v: &Volume) -> u64 {
    v.data().as_u8().unwrap().iter().map(|&x| x as u64).sum()
}

/// `sum(value * (linear_index % 1000003))`, the checksum printed by the Python probe.
fn weighted_sum(v: &Volume) -> u64 {
    v.data()
        .as_u8()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, &x)| x as u64 * (i as u64 % 1_000_003))
        .sum()
}

const LPS_FROM_RAS_IDENTITY: [[f64; 3]; 3] = [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]];
const IDENTITY: [[f64; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
/// ITK direction stored in every sample `.npz` (`[-0, 1, 0, 1, -0, 0, 0, 0, -1]`).
const NPZ_DIRECTION: [[f64; 3]; 3] = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]];

struct Case {
    name: &'static str,
    depth: usize,
    spacing_xy: f64,
    img_sum: u64,
    img_wsum: u64,
    gt_sum: u64,
    /// `imgs[5, 256, 250:254]` = voxels (250..254, 256, 5).
    row: [u8; 4],
    lesion_z: (usize, usize),
    has_nifti_nrrd: bool,
}

const CASES: [Case; 4] = [
    Case {
        name: "CT_Lesion_000001_02_01_008-023",
        depth: 16,
        spacing_xy: 0.31445300579071045,
        img_sum: 182_998_967,
        img_wsum: 85_882_004_826_638,
        gt_sum: 11697,
        row: [211, 202, 197, 197],
        lesion_z: (5, 11),
        has_nifti_nrrd: false,
    },
    Case {
        name: "CT_Lesion_000002_03_01_035-047",
        depth: 13,
        spacing_xy: 0.9765620231628418,
        img_sum: 123_238_472,
        img_wsum: 58_532_723_381_102,
        gt_sum: 3961,
        row: [111, 100, 114, 116],
        lesion_z: (3, 9),
        has_nifti_nrrd: true,
    },
    Case {
        name: "CT_Lesion_000010_01_01_078-090",
        depth: 13,
        spacing_xy: 0.7720000147819519,
        img_sum: 138_909_489,
        img_wsum: 66_210_690_822_974,
        gt_sum: 51266,
        row: [255, 252, 255, 246],
        lesion_z: (0, 12),
        has_nifti_nrrd: false,
    },
    Case {
        name: "CT_Lesion_000015_01_01_081-093",
        depth: 13,
        spacing_xy: 0.9375,
        img_sum: 112_779_632,
        img_wsum: 53_460_473_211_343,
        gt_sum: 3956,
        row: [218, 223, 238, 221],
        lesion_z: (3, 11),
        has_nifti_nrrd: true,
    },
];

fn check_case_voxels(v: &Volume, c: &Case, what: &str) {
    assert_eq!(v.dims(), [512, 512, c.depth], "{what}");
    assert_eq!(v.data_type(), DataType::U8, "{what}");
    assert_eq!(sum(v), c.img_sum, "{what}");
    assert_eq!(weighted_sum(v), c.img_wsum, "{what}");
    for (t, &e) in c.row.iter().enumerate() {
        assert_eq!(v.get([250 + t, 256, 5]), Some(e as f64), "{what} voxel {t}");
    }
    assert_eq!(v.get([0, 0, 0]), Some(0.0), "{what}");
}

fn lesion_z_range(gt: &Volume) -> (usize, usize) {
    let [nx, ny, nz] = gt.dims();
    let d = gt.data().as_u8().unwrap();
    let zs: Vec<usize> = (0..nz)
        .filter(|&z| d[z * nx * ny..(z + 1) * nx * ny].iter().any(|&x| x != 0))
        .collect();
    (zs[0], zs[zs.len() - 1])
}

#[test]
fn npz_samples_read_with_stored_values_and_geometry() {
    let Some(dir) = common::ct_data_dir() else {
        return;
    };
    for c in &CASES {
        let t0 = Instant::now();
        let npz = Npz::read(dir.join(format!("{}.npz", c.name))).unwrap();
        let dt = t0.elapsed();
        let img = npz.volume("imgs").unwrap();
        let gt = npz.volume("gts").unwrap();
        eprintln!("{}: npz read in {:.1} ms", c.name, dt.as_secs_f64() * 1e3);
        check_case_voxels(&img, c, c.name);
        assert_eq!(sum(&gt), c.gt_sum);
        assert_eq!(lesion_z_range(&gt), c.lesion_z);
        let g = img.geometry();
        assert_eq!(g.spacing, [c.spacing_xy, c.spacing_xy, 5.0]);
        assert_eq!(g.origin, [0.0; 3]);
        assert_eq!(g.direction, NPZ_DIRECTION);
        assert_eq!(gt.geometry(), g);
    }
}

#[test]
fn nifti_and_nrrd_samples_match_their_writers_and_the_npz() {
    let Some(dir) = common::ct_data_dir() else {
        return;
    };
    for c in CASES.iter().filter(|c| c.has_nifti_nrrd) {
        let npz = Npz::read(dir.join(format!("{}.npz", c.name))).unwrap();
        let (npz_img, npz_gt) = (npz.volume("imgs").unwrap(), npz.volume("gts").unwrap());

        let t0 = Instant::now();
        let nii_img = nifti::read_nifti(dir.join(format!("nifti/{}_img.nii.gz", c.name))).unwrap();
        let t_nii = t0.elapsed();
        let nii_seg = nifti::read_nifti(dir.join(format!("nifti/{}_seg.nii.gz", c.name))).unwrap();
        let t0 = Instant::now();
        let nrrd_img = nrrd::read_nrrd(dir.join(format!("nrrd/{}_img.nrrd", c.name))).unwrap();
        let t_nrrd = t0.elapsed();
        let nrrd_seg = nrrd::read_nrrd(dir.join(format!("nrrd/{}.seg.nrrd", c.name))).unwrap();
        eprintln!(
            "{}: .nii.gz read in {:.1} ms, .nrrd (gzip) in {:.1} ms",
            c.name,
            t_nii.as_secs_f64() * 1e3,
            t_nrrd.as_secs_f64() * 1e3
        );

        check_case_voxels(&nii_img, c, "nifti");
        check_case_voxels(&nrrd_img, c, "nrrd");
        // Same voxels in all three files.
        assert_eq!(nii_img.data(), npz_img.data());
        assert_eq!(nrrd_img.data(), npz_img.data());
        assert_eq!(nii_seg.data(), npz_gt.data());
        assert_eq!(nrrd_seg.data(), npz_gt.data());
        assert_eq!(sum(&nii_seg), c.gt_sum);

        // nibabel stored affine = diag(sx, sy, 5) (sform_code 2) in RAS: in LPS the
        // first two axes point the other way. pynrrd stored identity directions in
        // LPS. The npz keeps the original ITK direction. The writers disagree on
        // orientation, and each reader returns what its file says; spacings agree.
        let s = [c.spacing_xy, c.spacing_xy, 5.0];
        let nii_g = Geometry {
            spacing: s,
            origin: [0.0; 3],
            direction: LPS_FROM_RAS_IDENTITY,
        };
        let nrrd_g = Geometry {
            spacing: s,
            origin: [0.0; 3],
            direction: IDENTITY,
        };
        assert_eq!(nii_img.geometry(), &nii_g);
        assert_eq!(nii_seg.geometry(), &nii_g);
        assert_eq!(nrrd_img.geometry(), &nrrd_g);
        assert_eq!(nrrd_seg.geometry(), &nrrd_g);
        assert_eq!(npz_img.geometry().spacing, s);
        // Physical position of voxel (10, 20, 3): x and y flip sign between RAS-written
        // NIfTI and LPS-written NRRD.
        let p_nii = nii_img.index_to_physical([10.0, 20.0, 3.0]);
        let p_nrrd = nrrd_img.index_to_physical([10.0, 20.0, 3.0]);
        assert_eq!(p_nii, [-p_nrrd[0], -p_nrrd[1], p_nrrd[2]]);
        assert_eq!(p_nrrd, [10.0 * s[0], 20.0 * s[1], 15.0]);
    }
}

/// A volume of `dtype` with values spanning the type's range.
fn test_volume(dtype: DataType, geometry: Geometry) -> Volume {
    let dims = [5, 4, 3];
    let n: usize = 60;
    let data = match dtype {
        DataType::U8 => VoxelData::U8((0..n).map(|i| (i * 53 % 256) as u8).collect()),
        DataType::I8 => VoxelData::I8((0..n).map(|i| (i as i32 * 53 % 256 - 128) as i8).collect()),
        DataType::U16 => VoxelData::U16((0..n).map(|i| (i * 1097 % 65536) as u16).collect()),
        DataType::I16 => VoxelData::I16((0..n).map(|i| (i as i32 * 1097 - 32768) as i16).collect()),
        DataType::U32 => VoxelData::U32(
            (0..n)
                .map(|i| (i as u32).wrapping_mul(71_582_788))
                .collect(),
        ),
        DataType::I32 => VoxelData::I32(
            (0..n)
                .map(|i| (i as i32).wrapping_mul(-71_582_788))
                .collect(),
        ),
        DataType::F32 => VoxelData::F32(
            (0..n)
                .map(|i| (i as f32 - 30.0) * 1.37e-3 + 1e30 * (i == 7) as u8 as f32)
                .collect(),
        ),
        DataType::F64 => VoxelData::F64(
            (0..n)
                .map(|i| (i as f64 - 30.0) * std::f64::consts::PI * 1e-7)
                .collect(),
        ),
    };
    Volume::new(dims, geometry, data).unwrap()
}

/// Rotation about an oblique axis, with anisotropic spacing and an origin.
fn oblique_geometry() -> Geometry {
    let (a, b) = (0.4f64, -0.9f64);
    let rz = [
        [a.cos(), -a.sin(), 0.0],
        [a.sin(), a.cos(), 0.0],
        [0.0, 0.0, 1.0],
    ];
    let rx = [
        [1.0, 0.0, 0.0],
        [0.0, b.cos(), -b.sin()],
        [0.0, b.sin(), b.cos()],
    ];
    let mut d = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            d[r][c] = (0..3).map(|k| rz[r][k] * rx[k][c]).sum();
        }
    }
    Geometry {
        spacing: [0.7, 1.3, 2.5],
        origin: [-120.5, 33.25, 7.0],
        direction: d,
    }
}

/// A permuted, flipped direction with `f32`-exact numbers (NIfTI stores `f32`).
fn permuted_geometry() -> Geometry {
    Geometry {
        spacing: [0.9765625, 0.5, 3.0],
        origin: [-250.25, 100.5, -30.0],
        direction: [[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]],
    }
}

#[test]
fn every_format_round_trips_all_types_and_geometry() {
    let dir = temp_dir("roundtrip");
    for dtype in DataType::ALL {
        for (gname, g) in [
            ("oblique", oblique_geometry()),
            ("permuted", permuted_geometry()),
        ] {
            let v = test_volume(dtype, g);
            for ext in ["nii", "nii.gz", "nrrd"] {
                let p = dir.join(format!("v_{}_{gname}.{ext}", dtype.name()));
                medical::write_volume(&p, &v).unwrap();
                let back = medical::read_volume(&p).unwrap();
                let what = format!("{} {gname} .{ext}", dtype.name());
                assert_eq!(back.dims(), v.dims(), "{what}");
                assert_eq!(back.data(), v.data(), "{what}");
                let tol = match (ext, gname) {
                    // NIfTI stores the affine in f32.
                    (e, "oblique") if e.starts_with("nii") => 2e-5,
                    (_, "oblique") => 1e-12,
                    _ => 0.0,
                };
                assert!(
                    back.geometry().approx_eq(v.geometry(), tol),
                    "{what}: {:?} vs {:?}",
                    back.geometry(),
                    v.geometry()
                );
            }
            // Raw NRRD encoding too, in memory.
            let bytes = nrrd::encode_nrrd(&v, NrrdEncoding::Raw).unwrap();
            let back = nrrd::parse_nrrd(&bytes).unwrap();
            assert_eq!(back.data(), v.data());
            assert!(back.geometry().approx_eq(v.geometry(), 1e-12));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nifti_scaling_qform_and_big_endian_are_honoured() {
    let v = test_volume(DataType::I16, permuted_geometry());
    let mut b = nifti::encode_nifti(&v, false).unwrap();
    // scl_slope = 2, scl_inter = -1024 -> f32 voxels 2x - 1024.
    b[112..116].copy_from_slice(&2.0f32.to_le_bytes());
    b[116..120].copy_from_slice(&(-1024.0f32).to_le_bytes());
    let s = nifti::parse_nifti(&b).unwrap();
    let orig = v.data().to_f64_vec();
    assert_eq!(s.data().data_type(), DataType::F32);
    for (a, o) in s.data().to_f64_vec().iter().zip(&orig) {
        assert_eq!(*a, 2.0 * o - 1024.0);
    }
    // With sform_code = 0 the qform is used; it holds the same geometry.
    let mut q = nifti::encode_nifti(&v, false).unwrap();
    q[254..256].copy_from_slice(&0i16.to_le_bytes());
    let vq = nifti::parse_nifti(&q).unwrap();
    assert!(
        vq.geometry().approx_eq(v.geometry(), 1e-6),
        "{:?}",
        vq.geometry()
    );
    // Neither: pixdim scaling only ("method 1"), LPS of an identity RAS grid.
    q[252..254].copy_from_slice(&0i16.to_le_bytes());
    let v0 = nifti::parse_nifti(&q).unwrap();
    assert_eq!(v0.geometry().spacing, v.geometry().spacing);
    assert_eq!(v0.geometry().direction, LPS_FROM_RAS_IDENTITY);
    // A big-endian file: swap every header field and voxel.
    let le = nifti::encode_nifti(&v, false).unwrap();
    let be = to_big_endian_nifti(&le);
    let vb = nifti::parse_nifti(&be).unwrap();
    assert_eq!(vb.data(), v.data());
    assert_eq!(vb.geometry(), nifti::parse_nifti(&le).unwrap().geometry());
}

/// Byte-swaps the numeric fields of a little-endian NIfTI-1 header and i16 voxels.
fn to_big_endian_nifti(le: &[u8]) -> Vec<u8> {
    let mut b = le.to_vec();
    let swap = |b: &mut Vec<u8>, off: usize, n: usize| b[off..off + n].reverse();
    swap(&mut b, 0, 4); // sizeof_hdr
    swap(&mut b, 32, 4); // extents
    swap(&mut b, 36, 2); // session_error
    for i in 0..8 {
        swap(&mut b, 40 + 2 * i, 2); // dim
    }
    for off in [56, 60, 64] {
        swap(&mut b, off, 4); // intent_p*
    }
    for off in [68, 70, 72, 74] {
        swap(&mut b, off, 2); // intent_code datatype bitpix slice_start
    }
    for i in 0..8 {
        swap(&mut b, 76 + 4 * i, 4); // pixdim
    }
    for off in [108, 112, 116] {
        swap(&mut b, off, 4);
    }
    swap(&mut b, 120, 2);
    for off in [124, 128, 132, 136, 140, 144] {
        swap(&mut b, off, 4);
    }
    swap(&mut b, 252, 2);
    swap(&mut b, 254, 2);
    for i in 0..18 {
        swap(&mut b, 256 + 4 * i, 4); // quatern, qoffset, srow
    }
    for off in (352..b.len()).step_by(2) {
        swap(&mut b, off, 2);
    }
    b
}

#[test]
fn convert_and_evaluate_library_functions_on_samples() {
    let Some(dir) = common::ct_data_dir() else {
        return;
    };
    let tmp = temp_dir("convert");
    let case = "CT_Lesion_000002_03_01_035-047";
    let npz_path = dir.join(format!("{case}.npz"));
    let reference = medical::read_volume(&npz_path).unwrap();
    // npz -> nii.gz -> nrrd -> nii -> nrrd (all through `convert`).
    let chain = ["a.nii.gz", "b.nrrd", "c.nii", "d.nrrd"];
    let mut prev = npz_path.clone();
    for name in chain {
        let out = tmp.join(name);
        let t0 = Instant::now();
        medical::convert(&prev, &out, medical::NPZ_IMAGE_KEY).unwrap();
        eprintln!(
            "convert {} -> {name}: {:.1} ms",
            prev.display(),
            t0.elapsed().as_secs_f64() * 1e3
        );
        let v = medical::read_volume(&out).unwrap();
        assert_eq!(v.data(), reference.data(), "{name}");
        assert_eq!(v.geometry(), reference.geometry(), "{name}");
        prev = out;
    }
    assert!(medical::convert(&npz_path, tmp.join("x.npz"), "imgs").is_err());
    assert!(medical::convert(&npz_path, tmp.join("x.png"), "imgs").is_err());
    assert!(medical::convert(tmp.join("missing.nii"), tmp.join("y.nii"), "imgs").is_err());

    // Ground truth against itself in three formats: perfect scores.
    let gt_nii = dir.join(format!("nifti/{case}_seg.nii.gz"));
    let gt_nrrd = dir.join(format!("nrrd/{case}.seg.nrrd"));
    let t0 = Instant::now();
    let m = metrics::evaluate_files(&gt_nrrd, &gt_nii, "gts", "gts", 2.0).unwrap();
    eprintln!(
        "evaluate (nrrd vs nii.gz, incl. reading): {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(m.len(), 1);
    assert_eq!(
        (m[0].label, m[0].dice, m[0].iou, m[0].nsd, m[0].hd95),
        (1, 1.0, 1.0, 1.0, 0.0)
    );
    assert_eq!((m[0].pred_voxels, m[0].gt_voxels), (3961, 3961));
    let m2 = metrics::evaluate_files(&npz_path, &gt_nii, "gts", "gts", 2.0).unwrap();
    assert_eq!(m2, m);

    // A prediction shifted by one voxel along i: Dice < 1, HD95 at most one spacing.
    let gt = medical::read_volume(&gt_nii).unwrap();
    let [nx, ny, nz] = gt.dims();
    let src = gt.data().as_u8().unwrap();
    let mut shifted = vec![0u8; src.len()];
    for k in 0..nz {
        for j in 0..ny {
            for i in 1..nx {
                shifted[i + nx * (j + ny * k)] = src[i - 1 + nx * (j + ny * k)];
            }
        }
    }
    let pred_path = tmp.join("pred.nii.gz");
    medical::write_volume(&pred_path, &gt.with_data(VoxelData::U8(shifted)).unwrap()).unwrap();
    let m3 = metrics::evaluate_files(&pred_path, &gt_nrrd, "gts", "gts", 2.0).unwrap();
    assert_eq!(m3.len(), 1);
    let sx = 0.9765620231628418;
    assert!(m3[0].dice < 1.0 && m3[0].dice > 0.8, "{:?}", m3[0]);
    assert!(m3[0].hd95 > 0.0 && m3[0].hd95 <= sx + 1e-9, "{:?}", m3[0]);
    assert_eq!(m3[0].nsd, 1.0); // every border distance <= 1 spacing < 2 mm
    let csv = metrics::metrics_csv(&m3, 2.0);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "label,dice,iou,nsd_2mm,hd95_mm");
    assert_eq!(lines.len(), 2);
    assert!(lines[1].starts_with("1,0."));
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn real_volume_slices_to_frames_and_labels_assemble_back() {
    use medical::intensity::{self, Normalization, Stretch, Window};
    use medical::slicing::{self, Axis, LabelAssembler};
    let Some(dir) = common::ct_data_dir() else {
        return;
    };
    let c = &CASES[1];
    let npz = Npz::read(dir.join(format!("{}.npz", c.name))).unwrap();
    let (img, gt) = (npz.volume("imgs").unwrap(), npz.volume("gts").unwrap());
    // Axial frames are `imgs[k]` (H x W): pixel (x, y) of frame k = imgs[k, y, x].
    let frames = slicing::slices_u8(&img, Axis::K).unwrap();
    assert_eq!(frames.len(), c.depth);
    assert_eq!((frames[5].width, frames[5].height), (512, 512));
    for (t, &e) in c.row.iter().enumerate() {
        assert_eq!(frames[5].get(250 + t, 256), Some(e));
    }
    let rgb = slicing::gray_to_rgb(&frames[5]);
    assert_eq!(&rgb[3 * (256 * 512 + 250)..][..3], &[c.row[0]; 3]);
    // The samples are already windowed to 0..255: the identity map keeps them.
    let same = intensity::to_u8(&img, &Normalization::Identity, Stretch::Bounds).unwrap();
    assert_eq!(same.data(), img.data());
    let unit = intensity::to_unit_f32(
        &img,
        &Normalization::Window(Window::new(255.0, 127.5).unwrap()),
        Stretch::Bounds,
    )
    .unwrap();
    assert_eq!(
        unit.get([250, 256, 5]),
        Some((c.row[0] as f64 / 255.0) as f32 as f64)
    );
    // Ground-truth masks per frame (any axis) assemble back into the label volume.
    for axis in [Axis::K, Axis::J, Axis::I] {
        let mut asm = LabelAssembler::new(&img, axis);
        for f in 0..slicing::num_slices(gt.dims(), axis) {
            let m = slicing::label_slice_mask(&gt, axis, f, 1.0).unwrap();
            asm.add_mask(f, 1, &m.data).unwrap();
        }
        let labels = asm.finish().unwrap();
        assert_eq!(labels.data(), gt.data(), "{axis:?}");
        assert_eq!(labels.geometry(), img.geometry());
    }
    // A prompt at a lesion voxel, given in physical coordinates.
    let [nx, ny, _] = gt.dims();
    let d = gt.data().as_u8().unwrap();
    let o = d.iter().position(|&v| v == 1).unwrap();
    let voxel = [
        (o % nx) as f64,
        ((o / nx) % ny) as f64,
        (o / (nx * ny)) as f64,
    ];
    let p = img.index_to_physical(voxel);
    let fp = slicing::physical_to_slice_point(&img, Axis::K, p).unwrap();
    assert_eq!(fp.slice, c.lesion_z.0);
    assert!((fp.x - voxel[0]).abs() < 1e-9 && (fp.y - voxel[1]).abs() < 1e-9);
}

#[test]
fn detached_nrrd_header_reads_its_data_file() {
    let dir = temp_dir("nhdr");
    let v = test_volume(DataType::I16, permuted_geometry());
    let attached = nrrd::encode_nrrd(&v, NrrdEncoding::Raw).unwrap();
    let split = attached.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    let header = String::from_utf8(attached[..split - 1].to_vec()).unwrap();
    std::fs::write(dir.join("v.nhdr"), format!("{header}data file: v.raw\n")).unwrap();
    std::fs::write(dir.join("v.raw"), &attached[split..]).unwrap();
    let back = medical::read_volume(dir.join("v.nhdr")).unwrap();
    assert_eq!(back.data(), v.data());
    assert_eq!(back.geometry(), v.geometry());
    // Without a path there is nothing to resolve the data file against.
    let nhdr = std::fs::read(dir.join("v.nhdr")).unwrap();
    assert!(nrrd::parse_nrrd(&nhdr).is_err());
    std::fs::remove_file(dir.join("v.raw")).unwrap();
    assert!(medical::read_volume(dir.join("v.nhdr")).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
