//! Hostile and broken inputs for every parser of the library (NIfTI, NRRD,
//! npz, YAML configs, safetensors, PyTorch `.pt`): every truncation point of
//! small files, seeded random corruptions (the workspace's `SplitMix64`), size
//! fields at their maxima, decompression and expansion bombs, non-regular
//! files and outputs that alias inputs. Each case must end, quickly, in a
//! correct result or a one-line error, without a panic, and within a memory
//! budget measured by a counting global allocator in this test binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use medsam2_core::checkpoint::Checkpoint;
use medsam2_core::config::Sam2Config;
use medsam2_core::medical::{self, nifti, npz, nrrd, DataType, Geometry, Volume, VoxelData};
use medsam2_tools::volume_job::SplitMix64;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{peak_of, serial};

const MIB: usize = 1 << 20;

/// Asserts that an outcome is a one-line error or success, never a panic, and
/// returns whether it succeeded.
fn clean<T, E: std::fmt::Display>(what: &str, f: impl FnOnce() -> Result<T, E>) -> bool {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            let m = e.to_string();
            assert!(
                !m.is_empty() && !m.contains('\n'),
                "{what}: error is not one line: {m:?}"
            );
            false
        }
        Err(_) => panic!("{what}: panicked"),
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medsam2-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn small_volume(dtype: DataType) -> Volume {
    let n = 7 * 5 * 3;
    let data = match dtype {
        DataType::I16 => VoxelData::I16((0..n).map(|i| (i * 97 - 3000) as i16).collect()),
        DataType::F32 => VoxelData::F32((0..n).map(|i| i as f32 * 0.25).collect()),
        _ => VoxelData::U8((0..n).map(|i| (i * 31 % 256) as u8).collect()),
    };
    let g = Geometry {
        spacing: [0.8, 0.9, 2.5],
        origin: [-10.0, 5.0, 12.0],
        direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    };
    Volume::new([7, 5, 3], g, data).unwrap()
}

/// Every truncation and `flips` seeded corruptions of `good`, through `parse`:
/// clean outcomes, every truncation an error, a small memory peak.
fn hammer(name: &str, good: &[u8], flips: usize, parse: &dyn Fn(&[u8]) -> Result<(), String>) {
    let _g = serial();
    let t0 = Instant::now();
    let (_, peak) = peak_of(|| {
        assert!(parse(good).is_ok(), "{name}: the intact file must parse");
        for len in 0..good.len() {
            let ok = clean(name, || parse(&good[..len]));
            assert!(
                !ok,
                "{name}: truncated to {len} of {} bytes still parsed",
                good.len()
            );
        }
        let mut rng = SplitMix64::new(0x5eed ^ good.len() as u64);
        for _ in 0..flips {
            let mut b = good.to_vec();
            for _ in 0..1 + rng.next_u64() % 4 {
                let i = (rng.next_u64() % b.len() as u64) as usize;
                b[i] ^= 1 << (rng.next_u64() % 8);
            }
            clean(name, || parse(&b));
        }
    });
    eprintln!(
        "{name}: {} truncations + {flips} corruptions in {:.2} s, peak {:.1} MiB",
        good.len(),
        t0.elapsed().as_secs_f64(),
        peak as f64 / MIB as f64
    );
    assert!(
        peak < 64 * MIB,
        "{name}: peak {peak} bytes for a {}-byte input",
        good.len()
    );
}

#[test]
fn volume_files_truncated_and_corrupted() {
    for dt in [DataType::U8, DataType::I16, DataType::F32] {
        let v = small_volume(dt);
        for gz in [false, true] {
            let bytes = nifti::encode_nifti(&v, gz).unwrap();
            hammer(&format!("nifti {dt:?} gz={gz}"), &bytes, 1500, &|b| {
                nifti::parse_nifti(b).map(|_| ()).map_err(|e| e.to_string())
            });
        }
        for enc in [nrrd::NrrdEncoding::Raw, nrrd::NrrdEncoding::Gzip] {
            let bytes = nrrd::encode_nrrd(&v, enc).unwrap();
            hammer(&format!("nrrd {dt:?} {enc:?}"), &bytes, 1500, &|b| {
                nrrd::parse_nrrd(b).map(|_| ()).map_err(|e| e.to_string())
            });
        }
    }
    let npz_bytes = npz_archive(&[("imgs.npy", npy("|u1", "(3, 5, 7)", &[7u8; 105]), true)]);
    hammer("npz", &npz_bytes, 1500, &|b| {
        npz::Npz::parse(b)
            .and_then(|z| z.volume("imgs"))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
}

/// A NIfTI-1 header for `dims` of `datatype` (code) / `bitpix`.
fn nifti_header(dims: [i16; 3], datatype: i16, bitpix: i16) -> Vec<u8> {
    let v = small_volume(DataType::U8);
    let mut h = nifti::encode_nifti(&v, false).unwrap()[..352].to_vec();
    for (i, d) in dims.iter().enumerate() {
        h[42 + 2 * i..44 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    h[70..72].copy_from_slice(&datatype.to_le_bytes());
    h[72..74].copy_from_slice(&bitpix.to_le_bytes());
    h
}

fn gzip(parts: &[&[u8]], zeros: usize) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
    for p in parts {
        e.write_all(p).unwrap();
    }
    let block = vec![0u8; MIB];
    let mut left = zeros;
    while left > 0 {
        let k = left.min(MIB);
        e.write_all(&block[..k]).unwrap();
        left -= k;
    }
    e.finish().unwrap()
}

#[test]
fn size_fields_at_their_maxima_and_decompression_bombs() {
    let _g = serial();
    // dims at 32767^3 (f64): refused before any allocation.
    let h = nifti_header([32767, 32767, 32767], 64, 64);
    let (r, peak) = peak_of(|| nifti::parse_nifti(&h));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("MAX_VOXEL_BYTES"), "{e}");
    assert!(peak < MIB, "peak {peak}");
    // dim[0] = 8 is named as such, not as a bad sizeof_hdr.
    let mut h8 = h.clone();
    h8[40..42].copy_from_slice(&8i16.to_le_bytes());
    let e = nifti::parse_nifti(&h8).unwrap_err().to_string();
    assert!(e.contains("dim[0] = 8"), "{e}");
    // Within the limit but absent: a truncation error, no big reservation.
    let h = nifti_header([1024, 1024, 256], 2, 8);
    let (r, peak) = peak_of(|| nifti::parse_nifti(&h));
    assert!(r.unwrap_err().to_string().contains("truncated"));
    assert!(peak < MIB, "peak {peak}");
    let gz = gzip(&[&h], 0);
    let (r, peak) = peak_of(|| nifti::parse_nifti(&gz));
    assert!(r.is_err());
    assert!(peak < 16 * MIB, "gzip header alone: peak {peak}");

    // A gzip bomb that is a valid volume: 256 MiB of zeros in ~250 KiB.
    // Peak stays within ~1x its decoded size (plus a chunk), not 4-5x.
    let h = nifti_header([1024, 1024, 256], 2, 8);
    let bomb = gzip(&[&h], 256 * MIB);
    let t0 = Instant::now();
    let (r, peak) = peak_of(|| nifti::parse_nifti(&bomb).map(|v| v.num_voxels()));
    assert_eq!(r.unwrap(), 256 * MIB);
    eprintln!(
        "nifti gzip bomb: {} KiB -> 256 MiB decoded, peak {:.0} MiB, {:.2} s",
        bomb.len() / 1024,
        peak as f64 / MIB as f64,
        t0.elapsed().as_secs_f64()
    );
    assert!(peak <= 2 * 256 * MIB + 8 * MIB, "peak {peak}");
    // A stream that goes on after its voxels: stopped after MAX_TRAILING_BYTES.
    let h = nifti_header([64, 64, 64], 2, 8);
    let bomb = gzip(&[&h], 64 * 64 * 64 + 200 * MIB);
    let (r, peak) = peak_of(|| nifti::parse_nifti(&bomb));
    assert!(r.unwrap_err().to_string().contains("after the voxels"));
    assert!(peak < 16 * MIB, "trailing bomb: peak {peak}");

    // NRRD: sizes at their maxima; a gzip bomb declaring more than the limit.
    let huge = b"NRRD0004\ntype: double\ndimension: 3\nsizes: 4294967295 4294967295 4294967295\nencoding: gzip\n\n";
    let (r, peak) = peak_of(|| nrrd::parse_nrrd(huge));
    assert!(r.is_err());
    assert!(peak < MIB);
    let mut f =
        b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 1024 1024 2048\nencoding: gzip\n\n".to_vec();
    f.extend(gzip(&[], 64 * MIB));
    let (r, peak) = peak_of(|| nrrd::parse_nrrd(&f));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("MAX_VOXEL_BYTES"), "{e}");
    assert!(peak < MIB, "peak {peak}");
    let mut f =
        b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 1024 1024 64\nencoding: gzip\n\n".to_vec();
    f.extend(gzip(&[], 16 * MIB));
    let (r, peak) = peak_of(|| nrrd::parse_nrrd(&f));
    assert!(r.unwrap_err().to_string().contains("truncated"));
    assert!(peak < 40 * MIB, "short NRRD gzip stream: peak {peak}");

    // npz: only the wanted member is decoded; a bomb member next to it is not.
    let d = scratch("npz");
    let p = d.join("case.npz");
    let mut bomb_member = npy("|u1", "(512, 1024, 1024)", &[]);
    bomb_member.extend(vec![0u8; 512 * MIB]);
    let z = npz_archive(&[
        ("imgs.npy", npy("|u1", "(3, 5, 7)", &[1u8; 105]), true),
        ("junk.npy", bomb_member, true),
    ]);
    std::fs::write(&p, &z).unwrap();
    eprintln!("npz with a 512 MiB member: {} KiB", z.len() / 1024);
    let t0 = Instant::now();
    let (r, peak) = peak_of(|| medical::read_volume(&p).map(|v| v.num_voxels()));
    assert_eq!(r.unwrap(), 105);
    assert!(peak < 4 * MIB, "npz: peak {peak}");
    assert!(
        t0.elapsed().as_secs_f64() < 1.0,
        "npz: decoded the unused member"
    );
    // A member whose shape claims more than its data.
    let z = npz_archive(&[(
        "imgs.npy",
        npy("<f8", "(1024, 1024, 100)", &[0u8; 64]),
        true,
    )]);
    let (r, peak) = peak_of(|| npz::Npz::parse(&z));
    assert!(r.is_err());
    assert!(peak < 16 * MIB, "npz shape claim: peak {peak}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// A `.npy` file.
fn npy(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(body);
    out
}

/// A zip archive of `(name, bytes, deflated)` members.
fn npz_archive(members: &[(&str, Vec<u8>, bool)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data, deflate) in members {
        let method = if *deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(method)
            .large_file(data.len() > u32::MAX as usize / 2);
        w.start_file(*name, o).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[cfg(unix)]
#[test]
fn non_regular_files_and_escaping_data_files_are_refused() {
    let _g = serial();
    let d = scratch("special");
    let fifo = d.join("pipe.nii");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .map(|s| s.success());
    let zero = d.join("zero.nii.gz");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let dir = d.join("folder.nrrd");
    std::fs::create_dir(&dir).unwrap();
    let mut cases = vec![(zero.clone(), "a device"), (dir.clone(), "a directory")];
    if ok.unwrap_or(false) {
        cases.push((fifo.clone(), "a FIFO"));
    }
    for (p, kind) in &cases {
        let t0 = Instant::now();
        let e = medical::read_volume(p).unwrap_err().to_string();
        assert!(
            e.contains(kind) && !e.contains('\n'),
            "{}: {e}",
            p.display()
        );
        assert!(t0.elapsed().as_secs_f64() < 1.0);
        let e = Checkpoint::open(p.with_extension("pt"))
            .map(|_| ())
            .unwrap_err();
        assert!(!e.to_string().contains('\n'));
        let e = Sam2Config::from_yaml_file(p).unwrap_err().to_string();
        assert!(e.contains(kind), "config {}: {e}", p.display());
    }
    // Checkpoints: the kind is named, not "no such file".
    let ck = d.join("ckpt.pt");
    std::fs::create_dir(&ck).unwrap();
    let e = Checkpoint::open(&ck).unwrap_err().to_string();
    assert!(e.contains("a directory, not a regular file"), "{e}");
    let ck = d.join("dev.safetensors");
    std::os::unix::fs::symlink("/dev/zero", &ck).unwrap();
    let e = Checkpoint::open(&ck).unwrap_err().to_string();
    assert!(e.contains("a device, not a regular file"), "{e}");

    // NRRD detached data files: only regular files inside the header's folder.
    let raw = [1u8, 2, 3, 4, 5, 6, 7, 8];
    std::fs::write(d.join("data.raw"), raw).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(d.join("sub").join("inner.raw"), raw).unwrap();
    std::os::unix::fs::symlink("/dev/zero", d.join("zero.raw")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", d.join("out.raw")).unwrap();
    let header = |name: &str| {
        format!(
            "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: raw\ndata file: {name}\n"
        )
    };
    for (name, good) in [
        ("data.raw", true),
        ("sub/inner.raw", true),
        ("/etc/passwd", false),
        ("../../../../etc/passwd", false),
        ("sub/../../x.raw", false),
        ("/dev/zero", false),
        ("zero.raw", false),
        ("out.raw", false),
    ] {
        let p = d.join("h.nhdr");
        std::fs::write(&p, header(name)).unwrap();
        let t0 = Instant::now();
        let r = medical::read_volume(&p);
        assert!(t0.elapsed().as_secs_f64() < 1.0);
        match (r, good) {
            (Ok(v), true) => assert_eq!(v.data(), &VoxelData::U8(raw.to_vec())),
            (Err(e), false) => assert!(!e.to_string().contains('\n'), "{e}"),
            (r, _) => panic!("data file {name}: {:?}", r.map(|v| v.dims())),
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn outputs_never_overwrite_inputs_and_writes_are_atomic() {
    let _g = serial();
    let d = scratch("outputs");
    let input = d.join("ct.nii.gz");
    let v = small_volume(DataType::I16);
    medical::write_volume(&input, &v).unwrap();
    let before = std::fs::read(&input).unwrap();
    let link = d.join("alias.nii.gz");
    std::fs::hard_link(&input, &link).unwrap();
    let sym = d.join("sym.nii.gz");
    #[cfg(unix)]
    std::os::unix::fs::symlink(&input, &sym).unwrap();
    #[cfg(not(unix))]
    std::fs::copy(&input, &sym).unwrap();
    for out in [&input, &link, &d.join(".").join("ct.nii.gz"), &sym] {
        let e = medical::convert(&input, out, "imgs")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("same file as the input"),
            "{}: {e}",
            out.display()
        );
    }
    assert_eq!(std::fs::read(&input).unwrap(), before, "the input changed");
    // A conversion to a new file works and leaves no temporary file.
    let out = d.join("out.nrrd");
    medical::convert(&input, &out, "imgs").unwrap();
    assert_eq!(medical::read_volume(&out).unwrap().data(), v.data());
    let names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    // An output in a folder that does not exist fails before reading.
    let e = medical::convert(&input, d.join("no/such/dir/x.nii"), "imgs").unwrap_err();
    assert!(!e.to_string().contains('\n'));
    std::fs::remove_dir_all(&d).unwrap();
}

fn tiny_config() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sam2.1-tiny-a/config.yaml"),
    )
    .unwrap()
}

#[test]
fn yaml_configs_truncated_corrupted_and_bombs() {
    let _g = serial();
    let good = tiny_config();
    {
        let t0 = Instant::now();
        let (_, peak) = peak_of(|| {
            assert!(Sam2Config::from_yaml_str(&good).is_ok());
            let b = good.as_bytes();
            for len in (0..b.len()).step_by(3) {
                let t = String::from_utf8_lossy(&b[..len]);
                clean("yaml truncated", || Sam2Config::from_yaml_str(&t));
            }
            let mut rng = SplitMix64::new(7);
            for _ in 0..600 {
                let mut c = b.to_vec();
                let i = (rng.next_u64() % c.len() as u64) as usize;
                let alphabet = b" :-[]{}${}&*!|>'\"\n0123456789";
                c[i] = alphabet[(rng.next_u64() % alphabet.len() as u64) as usize];
                let t = String::from_utf8_lossy(&c).into_owned();
                clean("yaml corrupted", || Sam2Config::from_yaml_str(&t));
            }
        });
        eprintln!(
            "yaml: truncations + 600 corruptions in {:.2} s, peak {:.1} MiB",
            t0.elapsed().as_secs_f64(),
            peak as f64 / MIB as f64
        );
        assert!(peak < 256 * MIB, "yaml: peak {peak}");
    }
    // Interpolation bomb: each level doubles the one below (2^40 nodes).
    let mut bomb = String::from("model:\n  _target_: x\nl0: [1, 2, 3, 4, 5, 6, 7, 8]\n");
    for i in 1..=40 {
        bomb.push_str(&format!(
            "l{i}: [\"${{l{}}}\", \"${{l{}}}\"]\n",
            i - 1,
            i - 1
        ));
    }
    bomb.push_str("top: ${l40}\n");
    let t0 = Instant::now();
    let (r, peak) = peak_of(|| Sam2Config::from_yaml_str(&bomb));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("MAX_CONFIG_NODES"), "{e}");
    assert!(
        peak < 256 * MIB && t0.elapsed().as_secs_f64() < 5.0,
        "interpolation bomb: peak {peak}"
    );
    // Alias bomb (billion laughs) and deep nesting.
    let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..=9 {
        let p = i - 1;
        laughs.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    laughs.push_str("model: *a9\n");
    let (r, peak) = peak_of(|| Sam2Config::from_yaml_str(&laughs));
    assert!(r.is_err());
    assert!(peak < 512 * MIB, "alias bomb: peak {peak}");
    for depth in [1000, 100_000] {
        let nest = format!("model: {}{}\n", "[".repeat(depth), "]".repeat(depth));
        let (r, peak) = peak_of(|| clean("nesting", || Sam2Config::from_yaml_str(&nest)));
        assert!(!r);
        assert!(peak < 256 * MIB, "nesting {depth}: peak {peak}");
    }
    // Sizes at their maxima.
    for (from, to, limit) in [
        ("image_size: 96", "image_size: 1000000", "MAX_IMAGE_SIZE"),
        ("embed_dim: 8", "embed_dim: 4000000000", "MAX_CONFIG_WIDTH"),
        ("num_layers: 2", "num_layers: 1000000", "MAX_CONFIG_DEPTH"),
    ] {
        assert!(good.contains(from), "fixture config lacks `{from}`");
        let t = good.replacen(from, to, 1);
        let (r, peak) = peak_of(|| Sam2Config::from_yaml_str(&t));
        let e = r.unwrap_err().to_string();
        assert!(e.contains(limit) && !e.contains('\n'), "{to}: {e}");
        assert!(peak < 16 * MIB);
    }
    let big = "#".repeat(medsam2_core::limits::MAX_CONFIG_BYTES + 1);
    assert!(Sam2Config::from_yaml_str(&big)
        .unwrap_err()
        .to_string()
        .contains("MAX_CONFIG_BYTES"));
}

fn heads_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sam2.1-heads-c")
}

/// Opens a `.pt` from bytes (through a file, as the loader reads by path).
fn open_pt(dir: &Path, bytes: &[u8]) -> Result<(), String> {
    let p = dir.join("x.pt");
    std::fs::write(&p, bytes).unwrap();
    Checkpoint::open(&p).map(|_| ()).map_err(|e| e.to_string())
}

/// The `.pt` fixture rebuilt with its `data.pkl` replaced by `pkl` (storages
/// kept when `storages`).
fn pt_with_pickle(pkl: &[u8], storages: bool) -> Vec<u8> {
    let src = std::fs::read(heads_fixture().join("weights_fp32.pt")).unwrap();
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(src)).unwrap();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let o =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let name = f.name().unwrap().to_string();
        if name.ends_with("data.pkl") {
            w.start_file(name, o).unwrap();
            w.write_all(pkl).unwrap();
        } else if storages || !name.contains("/data/") {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut b).unwrap();
            w.start_file(name, o).unwrap();
            w.write_all(&b).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

fn fixture_pickle() -> Vec<u8> {
    let src = std::fs::read(heads_fixture().join("weights_fp32.pt")).unwrap();
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(src)).unwrap();
    let name = z
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("data.pkl"))
        .unwrap();
    let mut b = Vec::new();
    std::io::Read::read_to_end(&mut z.by_name(&name).unwrap(), &mut b).unwrap();
    b
}

#[test]
fn checkpoints_truncated_corrupted_and_crafted() {
    let d = scratch("ckpt");
    // No panic text may reach stderr: count what the panic hook sees on
    // this thread (other tests may fail on theirs).
    static HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);
    let me = std::thread::current().id();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |i| {
        if std::thread::current().id() == me {
            HOOK_CALLS.fetch_add(1, Ordering::Relaxed);
        }
        prev(i)
    }));
    let _g = serial();
    let t0 = Instant::now();
    let (_, peak) = peak_of(|| {
        // safetensors: truncations (strided), corruptions, lying headers.
        let st = std::fs::read(heads_fixture().join("weights.safetensors")).unwrap();
        let step = st.len() / 400;
        for len in (0..st.len()).step_by(step) {
            let b = st[..len].to_vec();
            assert!(!clean("safetensors truncated", || {
                Checkpoint::from_safetensors_bytes(b)
            }));
        }
        let mut rng = SplitMix64::new(11);
        for _ in 0..300 {
            let mut b = st.clone();
            let hl = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize + 8;
            let i = (rng.next_u64() % hl as u64) as usize;
            b[i] ^= 1 << (rng.next_u64() % 8);
            clean("safetensors corrupted", || {
                Checkpoint::from_safetensors_bytes(b)
            });
        }
        for head in [u64::MAX, 1 << 40, 0] {
            let mut b = head.to_le_bytes().to_vec();
            b.extend_from_slice(b"{}");
            assert!(!clean("safetensors header size", || {
                Checkpoint::from_safetensors_bytes(b)
            }));
        }
        let lying =
            br#"{"a":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4000000000000]}}"#;
        let mut b = (lying.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(lying);
        assert!(!clean("safetensors lying shape", || {
            Checkpoint::from_safetensors_bytes(b)
        }));

        // .pt: the file truncated (strided), its pickle truncated at every 31st
        // byte, and corrupted.
        let pt = std::fs::read(heads_fixture().join("weights_fp32.pt")).unwrap();
        assert!(open_pt(&d, &pt).is_ok());
        for len in (0..pt.len()).step_by(pt.len() / 150) {
            let (ok, _) = (clean("pt truncated", || open_pt(&d, &pt[..len])), ());
            assert!(!ok, "pt truncated to {len} opened");
        }
        let pkl = fixture_pickle();
        for len in (0..pkl.len()).step_by(31) {
            let z = pt_with_pickle(&pkl[..len], false);
            assert!(!clean("pickle truncated", || open_pt(&d, &z)));
        }
        let mut rng = SplitMix64::new(12);
        for _ in 0..120 {
            let mut b = pkl.clone();
            for _ in 0..1 + rng.next_u64() % 3 {
                let i = (rng.next_u64() % b.len() as u64) as usize;
                b[i] = rng.next_u64() as u8;
            }
            let z = pt_with_pickle(&b, true);
            clean("pickle corrupted", || open_pt(&d, &z));
        }
        // Crafted pickles: a memo bomb, a 4 GiB string, a short persistent id
        // (candle's reader panics on it), a tensor larger than its storage.
        let mut bomb = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..48 {
            bomb.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        bomb.push(b'.');
        let e = open_pt(&d, &pt_with_pickle(&bomb, false)).unwrap_err();
        assert!(e.contains("MAX_PICKLE_OBJECTS"), "{e}");
        let e = open_pt(
            &d,
            &pt_with_pickle(&[b'X', 0xff, 0xff, 0xff, 0xff, b'.'], false),
        )
        .unwrap_err();
        assert!(!e.contains('\n'));
        // {"w": _rebuild_tensor_v2(persid(("storage",)), 0, (2,), (1,), False, None)}
        let mut p = vec![0x80, 2, b'}', b'X', 1, 0, 0, 0, b'w'];
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        p.extend([b'X', 7, 0, 0, 0]);
        p.extend(b"storage");
        p.extend([
            0x85, b'Q', b'K', 0, b'K', 2, 0x85, b'K', 1, 0x85, 0x89, b'N', b't', b'R', b's', b'.',
        ]);
        let e = open_pt(&d, &pt_with_pickle(&p, false)).unwrap_err();
        assert!(e.contains("`w`") && !e.contains('\n'), "{e}");
        let mut big = pkl.clone();
        // Claim a huge shape for the first (2,...)-shaped tensor: rewrite a BININT1 size.
        if let Some(i) = big.windows(3).position(|w| w == [b'K', 32, b'K']) {
            big[i] = b'J';
            big.splice(i + 1..i + 2, 0x7fff_ffffu32.to_le_bytes());
            let r = open_pt(&d, &pt_with_pickle(&big, true));
            assert!(r.is_err(), "a tensor larger than its storage opened");
        }
    });
    eprintln!(
        "checkpoints: {:.2} s, peak {:.1} MiB",
        t0.elapsed().as_secs_f64(),
        peak as f64 / MIB as f64
    );
    assert_eq!(
        HOOK_CALLS.load(Ordering::Relaxed),
        0,
        "panic text reached the hook"
    );
    assert!(peak < 256 * MIB, "checkpoints: peak {peak}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn nan_weights_bf16_on_cpu_and_backtraces() {
    let _g = serial();
    use medsam2_core::checkpoint::{ComputeDType, DeviceKind};
    use medsam2_core::modeling::sam2_base::Sam2Base;
    let cfg_text = std::fs::read_to_string(heads_fixture().join("config.yaml")).unwrap();
    let cfg = Sam2Config::from_yaml_str(&cfg_text).unwrap();
    // All-NaN weights: refused at load, naming a tensor.
    let st = std::fs::read(heads_fixture().join("weights.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&st).unwrap();
    let nan: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let n = v.data().len() / 4;
            let b = (0..n).flat_map(|_| f32::NAN.to_le_bytes()).collect();
            (k, b, v.shape().to_vec())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = nan
        .iter()
        .map(|(k, b, s)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    let ck = Checkpoint::from_safetensors_bytes(bytes).unwrap();
    let e = Sam2Base::load(cfg.clone(), &ck, ComputeDType::F32, DeviceKind::Cpu)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("NaN or infinite") && !e.contains('\n'), "{e}");
    // bf16 on the CPU loads (bf16 linear layers, or f32 without AVX512-BF16).
    let ck = Checkpoint::open(heads_fixture().join("weights.safetensors")).unwrap();
    let m = Sam2Base::load(cfg, &ck, ComputeDType::BF16, DeviceKind::Cpu).expect("bf16 on the CPU");
    assert_eq!(m.dtype(), candle_core::DType::F32, "CPU tensors stay f32");
    // A candle error carrying a backtrace (as with RUST_BACKTRACE=1) prints on one line.
    let inner = candle_core::Error::Msg("shape mismatch".into());
    let with_bt = candle_core::Error::WithBacktrace {
        inner: Box::new(inner),
        backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
    };
    let e = medsam2_core::Error::from(with_bt).to_string();
    assert_eq!(e, "tensor backend: shape mismatch");
    assert_eq!(
        medsam2_core::error::one_line("a\nstack backtrace:\n   0: foo\n             at x.rs:1"),
        "a"
    );
}

#[test]
fn prompts_are_capped() {
    let _g = serial();
    use medsam2_core::limits::MAX_PROMPT_POINTS;
    use medsam2_core::sam2_image_predictor::{validate_prompt, Prompt};
    let mut p = Prompt::point(1.0, 1.0);
    for i in 0..10_000 {
        p = p.with_point((i % 50) as f32, 2.0, 1);
    }
    let (r, peak) = peak_of(|| validate_prompt(&p, 64, 64, 16));
    let e = r.unwrap_err().to_string();
    assert!(e.contains("MAX_PROMPT_POINTS"), "{e}");
    assert!(peak < MIB);
    let mut ok = Prompt::point(1.0, 1.0);
    for _ in 1..MAX_PROMPT_POINTS {
        ok = ok.with_point(3.0, 2.0, 0);
    }
    assert!(validate_prompt(&ok, 64, 64, 16).is_ok());
}
