//! Fuzz-style robustness: truncated and corrupted NIfTI, NRRD and NPY files
//! give errors quickly, never panics or huge allocations. (The `.npz` archive
//! itself is fuzzed in the unit tests of `medical::npz`, which can build archives.)

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use medsam2_core::medical::{
    nifti, npz, nrrd, nrrd::NrrdEncoding, DataType, Geometry, MedicalError, Volume, VoxelData,
};

// The workspace's one seeded generator.
use medsam2_core::confidence_bank::SplitMix64 as Rng;

fn small_volume(dtype: DataType) -> Volume {
    let g = Geometry {
        spacing: [0.8, 0.8, 2.5],
        origin: [-100.0, 50.0, 12.0],
        direction: [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]],
    };
    let n = 6 * 5 * 4;
    let data = match dtype {
        DataType::I16 => VoxelData::I16((0..n).map(|i| (i * 97 - 3000) as i16).collect()),
        DataType::F32 => VoxelData::F32((0..n).map(|i| i as f32 * 0.25).collect()),
        _ => VoxelData::U8((0..n).map(|i| (i * 31 % 256) as u8).collect()),
    };
    Volume::new([6, 5, 4], g, data).unwrap()
}

/// Parses `bytes` with `parse`, failing the test (with context) on a panic.
fn no_panic<T>(parse: &dyn Fn(&[u8]) -> Result<T, MedicalError>, bytes: &[u8], what: &str) -> bool {
    match catch_unwind(AssertUnwindSafe(|| parse(bytes))) {
        Ok(r) => r.is_ok(),
        Err(_) => panic!("parser panicked on {what}"),
    }
}

/// Every truncation is an error; random byte corruptions never panic.
fn fuzz(
    name: &str,
    good: &[u8],
    parse: &dyn Fn(&[u8]) -> Result<Volume, MedicalError>,
    seed: u64,
) -> usize {
    let t0 = Instant::now();
    assert!(
        parse(good).is_ok(),
        "{name}: the uncorrupted file must parse"
    );
    for len in 0..good.len() {
        assert!(
            !no_panic(parse, &good[..len], &format!("{name} truncated to {len}")),
            "{name}: truncated to {len} of {} bytes still parsed",
            good.len()
        );
    }
    let mut rng = Rng::new(seed);
    let mut errors = 0;
    let trials = 2000;
    for t in 0..trials {
        let mut b = good.to_vec();
        let flips = 1 + rng.below(4);
        for _ in 0..flips {
            let i = rng.below(b.len());
            b[i] ^= 1 + rng.below(255) as u8;
        }
        if !no_panic(parse, &b, &format!("{name} corruption #{t}")) {
            errors += 1;
        }
    }
    // Header-only corruptions: flips confined to the first 352 bytes.
    let hdr = good.len().min(352);
    for t in 0..trials {
        let mut b = good.to_vec();
        let i = rng.below(hdr);
        b[i] = rng.next_u64() as u8;
        no_panic(parse, &b, &format!("{name} header corruption #{t}"));
    }
    let dt = t0.elapsed().as_secs_f64();
    eprintln!(
        "{name}: {} truncations + {} corruptions in {dt:.2} s, {errors}/{trials} multi-byte corruptions rejected",
        good.len(),
        2 * trials
    );
    assert!(dt < 5.0, "{name}: fuzzing took {dt} s");
    errors
}

#[test]
fn nifti_truncation_and_corruption() {
    for dtype in [DataType::U8, DataType::I16, DataType::F32] {
        let v = small_volume(dtype);
        let raw = nifti::encode_nifti(&v, false).unwrap();
        fuzz(
            &format!("nii {}", dtype.name()),
            &raw,
            &nifti::parse_nifti,
            1 + dtype as u64,
        );
        let gz = nifti::encode_nifti(&v, true).unwrap();
        let rejected = fuzz(
            &format!("nii.gz {}", dtype.name()),
            &gz,
            &nifti::parse_nifti,
            99 + dtype as u64,
        );
        // gzip's CRC catches essentially every payload corruption.
        assert!(
            rejected > 1900,
            "nii.gz: only {rejected} corruptions rejected"
        );
    }
}

#[test]
fn nrrd_truncation_and_corruption() {
    for dtype in [DataType::U8, DataType::I16, DataType::F32] {
        let v = small_volume(dtype);
        let raw = nrrd::encode_nrrd(&v, NrrdEncoding::Raw).unwrap();
        fuzz(
            &format!("nrrd raw {}", dtype.name()),
            &raw,
            &nrrd::parse_nrrd,
            7 + dtype as u64,
        );
        let gz = nrrd::encode_nrrd(&v, NrrdEncoding::Gzip).unwrap();
        fuzz(
            &format!("nrrd gzip {}", dtype.name()),
            &gz,
            &nrrd::parse_nrrd,
            77 + dtype as u64,
        );
    }
}

#[test]
fn npy_truncation_and_corruption() {
    let mut h = String::from("{'descr': '<i2', 'fortran_order': False, 'shape': (4, 5, 6), }");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut good = b"\x93NUMPY\x01\x00".to_vec();
    good.extend_from_slice(&(h.len() as u16).to_le_bytes());
    good.extend_from_slice(h.as_bytes());
    for i in 0..120i16 {
        good.extend_from_slice(&(i * 300).to_le_bytes());
    }
    let parse = |b: &[u8]| {
        npz::parse_npy(b).and_then(|a| {
            Volume::new(
                [
                    a.shape.get(2).copied().unwrap_or(1),
                    a.shape.get(1).copied().unwrap_or(1),
                    a.shape.first().copied().unwrap_or(1),
                ],
                Geometry::default(),
                a.data,
            )
        })
    };
    fuzz("npy i16", &good, &parse, 4242);
}

/// Headers that declare enormous volumes are rejected before any allocation.
#[test]
fn huge_declared_sizes_fail_fast() {
    let t0 = Instant::now();
    let v = small_volume(DataType::F32);
    // NIfTI: dims 32767^3 of f64 with a tiny payload.
    let mut b = nifti::encode_nifti(&v, false).unwrap();
    for a in 1..=3 {
        b[40 + 2 * a..42 + 2 * a].copy_from_slice(&32767i16.to_le_bytes());
    }
    b[70..72].copy_from_slice(&64i16.to_le_bytes());
    b[72..74].copy_from_slice(&64i16.to_le_bytes());
    assert!(matches!(
        nifti::parse_nifti(&b),
        Err(MedicalError::TooLarge { .. })
    ));
    // The same, gzip-compressed: the declared size is over the limit.
    let gz = gzip_stored(&b);
    assert!(nifti::parse_nifti(&gz).is_err());
    // Within the limit (500^3 f32 < MAX_VOXEL_BYTES) but far beyond the data:
    // a truncation error, no big buffer.
    let mut b2 = nifti::encode_nifti(&v, false).unwrap();
    for a in 1..=3 {
        b2[40 + 2 * a..42 + 2 * a].copy_from_slice(&500i16.to_le_bytes());
    }
    assert!(matches!(
        nifti::parse_nifti(&b2),
        Err(MedicalError::Format { .. })
    ));
    assert!(matches!(
        nifti::parse_nifti(&gzip_stored(&b2)),
        Err(MedicalError::Format { .. })
    ));
    // NRRD: absurd sizes.
    for sizes in [
        "100000 100000 100000",
        "18446744073709551615 2 2",
        "4000 4000 4000",
    ] {
        let h = format!("NRRD0004\ntype: double\ndimension: 3\nsizes: {sizes}\nencoding: gzip\n\n");
        let mut f = h.into_bytes();
        f.extend_from_slice(&[
            0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
        assert!(nrrd::parse_nrrd(&f).is_err(), "{sizes}");
    }
    // NPY: a huge shape with no data.
    let h = "{'descr': '<f8', 'fortran_order': False, 'shape': (4000, 4000, 4000), }\n";
    let mut f = b"\x93NUMPY\x01\x00".to_vec();
    f.extend_from_slice(&(h.len() as u16).to_le_bytes());
    f.extend_from_slice(h.as_bytes());
    assert!(npz::parse_npy(&f).is_err());
    assert!(t0.elapsed().as_secs_f64() < 1.0);
}

/// A gzip stream of `data` using stored (uncompressed) deflate blocks.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    let chunks: Vec<&[u8]> = data.chunks(65535).collect();
    for (i, c) in chunks.iter().enumerate() {
        out.push((i + 1 == chunks.len()) as u8);
        out.extend_from_slice(&(c.len() as u16).to_le_bytes());
        out.extend_from_slice(&(!(c.len() as u16)).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
