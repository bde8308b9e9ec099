//! Tables and CSV of an evaluation: per-case rows and the summary.

use super::*;

/// Mean and population standard deviation of the finite values, and how many
/// values were not finite.
pub fn mean_std(values: &[f64]) -> (f64, f64, usize) {
    let fin: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let bad = values.len() - fin.len();
    if fin.is_empty() {
        return (f64::NAN, f64::NAN, bad);
    }
    let m = fin.iter().sum::<f64>() / fin.len() as f64;
    let var = fin.iter().map(|v| (v - m).powi(2)).sum::<f64>() / fin.len() as f64;
    (m, var.sqrt(), bad)
}

fn fmt_num(x: f64, prec: usize) -> String {
    if x.is_finite() {
        format!("{x:.prec$}")
    } else if x.is_nan() {
        "nan".into()
    } else {
        "inf".into()
    }
}

/// CSV of the per-case rows: `case,label,strategy,dice,iou,nsd_<tol>mm,hd95_mm,pred_voxels,gt_voxels,prompted_slices,slices,seconds`.
pub fn eval_csv(rows: &[EvalRow], nsd_tol_mm: f64) -> String {
    let mut s = format!(
        "case,label,strategy,dice,iou,{},hd95_mm,pred_voxels,gt_voxels,prompted_slices,slices,seconds\n",
        metrics::nsd_column(nsd_tol_mm)
    );
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{:.4}\n",
            r.case,
            r.label,
            r.strategy,
            fmt_num(r.metrics.dice, 6),
            fmt_num(r.metrics.iou, 6),
            fmt_num(r.metrics.nsd, 6),
            fmt_num(r.metrics.hd95, 6),
            r.metrics.pred_voxels,
            r.metrics.gt_voxels,
            r.prompts,
            r.slices,
            r.seconds
        ));
    }
    s
}

/// Metrics of one strategy and label over the cases.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    /// Strategy name.
    pub strategy: String,
    /// Label.
    pub label: u32,
    /// Cases.
    pub n: usize,
    /// `(mean, population std)` of Dice.
    pub dice: (f64, f64),
    /// `(mean, population std)` of NSD.
    pub nsd: (f64, f64),
    /// `(mean, population std)` of the finite HD95 values (mm).
    pub hd95: (f64, f64),
    /// Cases whose HD95 is infinite (an empty prediction).
    pub hd95_inf: usize,
}

/// Summary per strategy and label, in first-seen order.
pub fn summary_rows(rows: &[EvalRow]) -> Vec<SummaryRow> {
    let mut keys: Vec<(String, u32)> = Vec::new();
    for r in rows {
        let k = (r.strategy.to_string(), r.label);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(strategy, label)| {
            let sel: Vec<&EvalRow> = rows
                .iter()
                .filter(|r| r.strategy == strategy && r.label == label)
                .collect();
            let get = |f: fn(&EvalRow) -> f64| sel.iter().map(|r| f(r)).collect::<Vec<f64>>();
            let (dm, ds, _) = mean_std(&get(|r| r.metrics.dice));
            let (nm, ns, _) = mean_std(&get(|r| r.metrics.nsd));
            let (hm, hs, hd95_inf) = mean_std(&get(|r| r.metrics.hd95));
            SummaryRow {
                strategy,
                label,
                n: sel.len(),
                dice: (dm, ds),
                nsd: (nm, ns),
                hd95: (hm, hs),
                hd95_inf,
            }
        })
        .collect()
}

/// CSV of [`summary_rows`]: `strategy,label,n,dice_mean,dice_std,nsd_mean,nsd_std,hd95_mean,hd95_std,hd95_inf`.
pub fn summary_csv(rows: &[EvalRow]) -> String {
    let mut s = String::from(
        "strategy,label,n,dice_mean,dice_std,nsd_mean,nsd_std,hd95_mean,hd95_std,hd95_inf\n",
    );
    for r in summary_rows(rows) {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            r.strategy,
            r.label,
            r.n,
            fmt_num(r.dice.0, 6),
            fmt_num(r.dice.1, 6),
            fmt_num(r.nsd.0, 6),
            fmt_num(r.nsd.1, 6),
            fmt_num(r.hd95.0, 6),
            fmt_num(r.hd95.1, 6),
            r.hd95_inf
        ));
    }
    s
}

/// The per-case rows and the summary as fixed-width text tables.
pub fn eval_table(rows: &[EvalRow], nsd_tol_mm: f64) -> String {
    let cw = rows.iter().map(|r| r.case.len()).max().unwrap_or(4).max(4);
    let nsd = metrics::nsd_column(nsd_tol_mm);
    let mut s = format!(
        "{:<cw$} {:>5} {:<12} {:>7} {:>8} {:>9} {:>9} {:>9} {:>7} {:>8}\n",
        "case",
        "label",
        "strategy",
        "dice",
        nsd,
        "hd95_mm",
        "pred_vox",
        "gt_vox",
        "prompts",
        "s/slice"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<cw$} {:>5} {:<12} {:>7.4} {:>8.4} {:>9} {:>9} {:>9} {:>7} {:>8.3}\n",
            r.case,
            r.label,
            r.strategy,
            r.metrics.dice,
            r.metrics.nsd,
            fmt_num(r.metrics.hd95, 2),
            r.metrics.pred_voxels,
            r.metrics.gt_voxels,
            r.prompts,
            r.seconds / r.slices.max(1) as f64
        ));
    }
    s.push_str(&format!(
        "\nsummary (mean ± population std over cases; HD95 over finite values)\n{:<12} {:>5} {:>3} {:>17} {:>17} {:>19} {:>8}\n",
        "strategy", "label", "n", "dice", nsd, "hd95_mm", "hd95_inf"
    ));
    for r in summary_rows(rows) {
        s.push_str(&format!(
            "{:<12} {:>5} {:>3} {:>17} {:>17} {:>19} {:>8}\n",
            r.strategy,
            r.label,
            r.n,
            format!("{} ± {}", fmt_num(r.dice.0, 4), fmt_num(r.dice.1, 4)),
            format!("{} ± {}", fmt_num(r.nsd.0, 4), fmt_num(r.nsd.1, 4)),
            format!("{} ± {}", fmt_num(r.hd95.0, 2), fmt_num(r.hd95.1, 2)),
            r.hd95_inf
        ));
    }
    s
}
