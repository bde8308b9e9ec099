//! Segmentation metrics against analytic shapes with known values: shifted
//! cubes, lines with a hand-computed HD95/NSD, concentric spheres, anisotropic
//! spacing, empty-mask edge cases and the per-label evaluation.

use medsam2_core::medical::metrics::{
    dice, evaluate, hausdorff_distance_95, iou, metrics_csv, metrics_table,
    normalized_surface_distance, surface_distances,
};
use medsam2_core::medical::{Geometry, Volume, VoxelData};

fn mask(dims: [usize; 3], f: impl Fn(usize, usize, usize) -> bool) -> Vec<bool> {
    let mut m = Vec::with_capacity(dims.iter().product());
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                m.push(f(i, j, k));
            }
        }
    }
    m
}

fn cube(dims: [usize; 3], lo: [usize; 3], side: usize) -> Vec<bool> {
    mask(dims, |i, j, k| {
        (lo[0]..lo[0] + side).contains(&i)
            && (lo[1]..lo[1] + side).contains(&j)
            && (lo[2]..lo[2] + side).contains(&k)
    })
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn shifted_cubes_with_anisotropic_spacing() {
    let dims = [40, 40, 40];
    let spacing = [0.5, 1.0, 2.0];
    let a = cube(dims, [10, 10, 10], 20);
    for (axis, shift) in [(0usize, 3usize), (1, 2), (2, 2)] {
        let mut lo = [10, 10, 10];
        lo[axis] += shift;
        let b = cube(dims, lo, 20);
        // Overlap (20 - shift) * 20 * 20 of 8000 voxels each.
        let inter = ((20 - shift) * 400) as f64;
        assert_eq!(dice(&a, &b), 2.0 * inter / 16000.0);
        assert_eq!(iou(&a, &b), inter / (16000.0 - inter));
        let sd = surface_distances(&a, &b, dims, spacing).unwrap();
        // Hausdorff distance of a translated cube = the translation length.
        let t = shift as f64 * spacing[axis];
        assert_eq!(sd.hausdorff(100.0), t, "axis {axis}");
        let hd95 = sd.hausdorff(95.0);
        assert!(hd95 > 0.0 && hd95 <= t, "axis {axis}: {hd95}");
        assert_eq!(sd.nsd(t), 1.0);
        assert!(sd.nsd(t - 1e-9) < 1.0);
        // Border voxel counts: a 20^3 cube has 20^3 - 18^3 = 2168 border voxels.
        assert_eq!(sd.pred_to_gt.len(), 2168);
        assert_eq!(sd.gt_to_pred.len(), 2168);
    }
}

#[test]
fn lines_give_hand_computed_hd95_and_nsd() {
    // A: 20 voxels along i at (j, k) = (5, 5); B: its first 10 voxels. Every voxel
    // of a 1-voxel line is a border voxel. d(A -> B) = 0 (x10), then (x - 9) * sx
    // for x = 10..19; d(B -> A) = 0.
    let dims = [30, 11, 11];
    for sx in [0.7, 1.4] {
        let spacing = [sx, 1.0, 3.0];
        let a = mask(dims, |i, j, k| i < 20 && j == 5 && k == 5);
        let b = mask(dims, |i, j, k| i < 10 && j == 5 && k == 5);
        // NumPy: np.percentile([0]*10 + [sx*i for i in 1..=10], 95) = sx * 9.05.
        let hd95 = hausdorff_distance_95(&a, &b, dims, spacing).unwrap();
        assert!(close(hd95, 9.05 * sx, 1e-12), "{hd95}");
        // Within 2.5*sx: 10 + 2 of A's 20, all 10 of B's -> 22 / 30.
        let nsd = normalized_surface_distance(&a, &b, dims, spacing, 2.5 * sx).unwrap();
        assert!(close(nsd, 22.0 / 30.0, 1e-15), "{nsd}");
        assert!(close(dice(&a, &b), 2.0 / 3.0, 1e-15));
        assert_eq!(iou(&a, &b), 0.5);
    }
    // Two single voxels 3 apart along i and 1 along k: distance sqrt((3*0.5)^2 + 2^2) = 2.5.
    let dims = [8, 8, 8];
    let a = mask(dims, |i, j, k| (i, j, k) == (2, 2, 2));
    let b = mask(dims, |i, j, k| (i, j, k) == (5, 2, 3));
    let spacing = [0.5, 1.0, 2.0];
    assert_eq!(hausdorff_distance_95(&a, &b, dims, spacing).unwrap(), 2.5);
    assert_eq!(
        normalized_surface_distance(&a, &b, dims, spacing, 2.49).unwrap(),
        0.0
    );
    assert_eq!(
        normalized_surface_distance(&a, &b, dims, spacing, 2.5).unwrap(),
        1.0
    );
    assert_eq!(dice(&a, &b), 0.0);
}

#[test]
fn concentric_spheres_match_analytic_values() {
    // Radii 12 mm and 15 mm around the centre, isotropic and anisotropic grids.
    for spacing in [[1.0f64, 1.0, 1.0], [0.8, 0.8, 1.6]] {
        let dims = [0, 1, 2].map(|a| (40.0 / spacing[a]).round() as usize);
        let c = [0, 1, 2].map(|a| (dims[a] as f64 - 1.0) / 2.0 * spacing[a]);
        let ball = |r: f64| {
            mask(dims, |i, j, k| {
                let p = [
                    i as f64 * spacing[0],
                    j as f64 * spacing[1],
                    k as f64 * spacing[2],
                ];
                (0..3).map(|a| (p[a] - c[a]).powi(2)).sum::<f64>() <= r * r
            })
        };
        let (a, b) = (ball(12.0), ball(15.0));
        let voxel = spacing[0] * spacing[1] * spacing[2];
        let va = a.iter().filter(|&&x| x).count() as f64 * voxel;
        let vb = b.iter().filter(|&&x| x).count() as f64 * voxel;
        let pi43 = 4.0 / 3.0 * std::f64::consts::PI;
        // Voxelised volumes within 2 % of 4/3 pi r^3.
        assert!(close(va / (pi43 * 1728.0), 1.0, 0.02), "{va}");
        assert!(close(vb / (pi43 * 3375.0), 1.0, 0.02), "{vb}");
        // Dice of nested balls = 2 r1^3 / (r1^3 + r2^3) = 0.6773.
        let d = dice(&a, &b);
        assert!(close(d, 2.0 * 1728.0 / (1728.0 + 3375.0), 0.01), "dice {d}");
        assert!(close(iou(&a, &b), 1728.0 / 3375.0, 0.01));
        // Surfaces 3 mm apart: HD95 = 3 mm up to the voxelisation (one voxel).
        let sd = surface_distances(&a, &b, dims, spacing).unwrap();
        let hd95 = sd.hausdorff(95.0);
        let vmax = spacing.iter().cloned().fold(0.0, f64::max);
        eprintln!(
            "spheres r=12/15 mm, spacing {spacing:?}: dice {d:.4} (analytic {:.4}), hd95 {hd95:.3} mm, nsd@1mm {:.4}",
            2.0 * 1728.0 / (1728.0 + 3375.0),
            sd.nsd(1.0)
        );
        assert!(close(hd95, 3.0, vmax), "{spacing:?}: hd95 {hd95}");
        // Almost no border voxel is within 1 mm, all are within 3 mm + a voxel.
        assert!(sd.nsd(1.0) < 0.05, "{}", sd.nsd(1.0));
        assert_eq!(sd.nsd(3.0 + vmax), 1.0);
        // Identical balls: perfect scores.
        let same = surface_distances(&a, &a, dims, spacing).unwrap();
        assert_eq!((same.hausdorff(95.0), same.nsd(0.0)), (0.0, 1.0));
    }
}

#[test]
fn anisotropic_spacing_scales_distances_per_axis() {
    let dims = [20, 20, 20];
    let a = cube(dims, [5, 5, 5], 6);
    let b = cube(dims, [5, 5, 9], 6); // shifted 4 voxels along k
    let base = surface_distances(&a, &b, dims, [1.0, 1.0, 1.0]).unwrap();
    let stretched = surface_distances(&a, &b, dims, [1.0, 1.0, 2.5]).unwrap();
    assert_eq!(base.hausdorff(100.0), 4.0);
    assert_eq!(stretched.hausdorff(100.0), 10.0);
    // Stretching the other axes only does not change the k-shift's Hausdorff distance.
    let other = surface_distances(&a, &b, dims, [3.0, 3.0, 1.0]).unwrap();
    assert_eq!(other.hausdorff(100.0), 4.0);
}

#[test]
fn empty_mask_edge_cases() {
    let dims = [6, 6, 6];
    let empty = vec![false; 216];
    let some = cube(dims, [1, 1, 1], 3);
    let s = [1.0; 3];
    // Both empty: perfect agreement.
    assert_eq!(dice(&empty, &empty), 1.0);
    assert_eq!(iou(&empty, &empty), 1.0);
    assert_eq!(
        normalized_surface_distance(&empty, &empty, dims, s, 2.0).unwrap(),
        1.0
    );
    assert_eq!(hausdorff_distance_95(&empty, &empty, dims, s).unwrap(), 0.0);
    // One empty: worst scores, HD95 infinite.
    for (p, g) in [(&empty, &some), (&some, &empty)] {
        assert_eq!(dice(p, g), 0.0);
        assert_eq!(iou(p, g), 0.0);
        assert_eq!(
            normalized_surface_distance(p, g, dims, s, 100.0).unwrap(),
            0.0
        );
        assert_eq!(hausdorff_distance_95(p, g, dims, s).unwrap(), f64::INFINITY);
    }
    // A mask touching the volume edge has its edge voxels on the surface.
    let full = vec![true; 216];
    let sd = surface_distances(&full, &full, dims, s).unwrap();
    assert_eq!(sd.pred_to_gt.len(), 216 - 64);
    assert!(surface_distances(&full[..10], &full, dims, s).is_err());
}

#[test]
fn per_label_evaluation_and_csv() {
    let dims = [30, 30, 30];
    let g = Geometry {
        spacing: [0.5, 1.0, 2.0],
        ..Geometry::default()
    };
    let label_vol = |cubes: &[(u8, [usize; 3], usize)]| {
        let mut d = vec![0u8; 27000];
        for &(l, lo, side) in cubes {
            for (o, m) in cube(dims, lo, side).iter().enumerate() {
                if *m {
                    d[o] = l;
                }
            }
        }
        Volume::new(dims, g, VoxelData::U8(d)).unwrap()
    };
    // Label 1: cube shifted by 2 along i; label 2: ground truth only; label 3: prediction only.
    let gt = label_vol(&[(1, [5, 5, 5], 10), (2, [20, 20, 20], 5)]);
    let pred = label_vol(&[(1, [7, 5, 5], 10), (3, [20, 2, 2], 4)]);
    let m = evaluate(&pred, &gt, 2.0).unwrap();
    assert_eq!(m.iter().map(|x| x.label).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(m[0].dice, 0.8);
    assert!(m[0].hd95 <= 1.0 && m[0].hd95 > 0.0, "{}", m[0].hd95);
    assert_eq!(m[0].nsd, 1.0); // the 1 mm shift is within 2 mm
    assert_eq!((m[0].pred_voxels, m[0].gt_voxels), (1000, 1000));
    for x in &m[1..] {
        assert_eq!(
            (x.dice, x.iou, x.nsd, x.hd95),
            (0.0, 0.0, 0.0, f64::INFINITY)
        );
    }
    let csv = metrics_csv(&m, 2.0);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "label,dice,iou,nsd_2mm,hd95_mm");
    assert_eq!(lines.len(), 4);
    assert!(lines[1].starts_with("1,0.800000,0.666667,1.000000,"));
    assert_eq!(lines[2], "2,0.000000,0.000000,0.000000,inf");
    assert!(metrics_table(&m, 2.0).contains("inf"));
    // Mismatched grids are errors.
    let small = Volume::new([2, 2, 2], g, VoxelData::U8(vec![0; 8])).unwrap();
    assert!(evaluate(&small, &gt, 2.0).is_err());
    let mut other = gt.clone();
    other
        .set_geometry(Geometry {
            spacing: [1.0, 1.0, 2.0],
            ..g
        })
        .unwrap();
    assert!(evaluate(&other, &gt, 2.0).is_err());
    // Float label volumes must hold whole numbers.
    let f = Volume::new(
        [2, 2, 2],
        g,
        VoxelData::F32(vec![0.0, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
    )
    .unwrap();
    assert!(evaluate(&f, &f, 2.0).is_err());
}
