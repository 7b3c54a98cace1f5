//! Binary screening metrics over predicted probabilities and labels.
//!
//! Conventions used throughout:
//! - `scores[i]` is the model's probability of DR for sample `i` (usually in [0, 1]; any finite
//!   value works, only the order and the thresholds matter). NaN or infinite scores are errors.
//! - `labels[i]` is `true` for DR (positive) and `false` for normal (negative).
//! - A sample is predicted positive when `score >= threshold` (inclusive, as in
//!   `drscreen_core::decision::decide`).
//! - Rates and AUC are `f64` in [0, 1]. A ratio whose denominator is zero (e.g. precision when
//!   nothing is predicted positive) is reported as 0, as scikit-learn's `zero_division=0` does.
//! - Functions return an error for empty input, `scores`/`labels` of different length, a
//!   non-finite score, or a single-class label set where the metric needs both classes.

use anyhow::{bail, ensure, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Lower end of the seed's max-accuracy threshold search.
pub const SEED_THRESHOLD_LO: f64 = 0.30;
/// Upper end (inclusive) of the seed's max-accuracy threshold search.
pub const SEED_THRESHOLD_HI: f64 = 0.70;
/// Step of the seed's max-accuracy threshold search.
pub const SEED_THRESHOLD_STEP: f64 = 0.01;

/// Checks the inputs every metric needs: non-empty, equal lengths, finite scores.
fn check_inputs(scores: &[f32], labels: &[bool]) -> Result<()> {
    ensure!(
        !scores.is_empty(),
        "no scores: metrics need at least one sample"
    );
    ensure!(
        scores.len() == labels.len(),
        "{} scores but {} labels",
        scores.len(),
        labels.len()
    );
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        bail!("score {i} is {} (scores must be finite)", scores[i]);
    }
    Ok(())
}

/// [`check_inputs`], then the number of (positives, negatives); errors unless both are > 0.
fn check_both_classes(scores: &[f32], labels: &[bool], what: &str) -> Result<(usize, usize)> {
    check_inputs(scores, labels)?;
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    ensure!(
        pos > 0 && neg > 0,
        "{what} needs both classes, but the labels have {pos} DR and {neg} normal"
    );
    Ok((pos, neg))
}

/// `num / den`, or 0 when `den == 0`.
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Compares finite scores (NaN never reaches here); `-0.0 == 0.0`, as for `>=` thresholds.
fn cmp_scores(a: f32, b: f32) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

/// Precision, recall and F1 of one class, each in [0, 1] (0 where undefined).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassStats {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Number of samples whose true label is this class.
    pub support: usize,
}

impl ClassStats {
    fn new(correct: usize, predicted: usize, actual: usize) -> Self {
        let precision = ratio(correct, predicted);
        let recall = ratio(correct, actual);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Self {
            precision,
            recall,
            f1,
            support: actual,
        }
    }
}

/// The 2x2 confusion matrix at one threshold; DR is the positive class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Confusion {
    /// DR predicted DR.
    pub tp: usize,
    /// Normal predicted DR.
    pub fp: usize,
    /// Normal predicted normal.
    pub tn: usize,
    /// DR predicted normal (a missed diseased eye).
    pub fn_: usize,
}

impl Confusion {
    /// Counts at `threshold` (`score >= threshold` is predicted DR). One class alone is allowed.
    pub fn at_threshold(scores: &[f32], labels: &[bool], threshold: f32) -> Result<Self> {
        check_inputs(scores, labels)?;
        ensure!(!threshold.is_nan(), "threshold is NaN");
        let mut c = Self::default();
        for (&s, &l) in scores.iter().zip(labels) {
            match (l, s >= threshold) {
                (true, true) => c.tp += 1,
                (true, false) => c.fn_ += 1,
                (false, true) => c.fp += 1,
                (false, false) => c.tn += 1,
            }
        }
        Ok(c)
    }

    /// Total number of samples.
    pub fn n(&self) -> usize {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// TP / (TP + FN): the fraction of DR eyes referred, in [0, 1].
    pub fn sensitivity(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// TN / (TN + FP): the fraction of normal eyes not referred, in [0, 1].
    pub fn specificity(&self) -> f64 {
        ratio(self.tn, self.tn + self.fp)
    }

    /// (TP + TN) / n, in [0, 1].
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.n())
    }

    /// Precision, recall (= sensitivity) and F1 of the DR class.
    pub fn dr(&self) -> ClassStats {
        ClassStats::new(self.tp, self.tp + self.fp, self.tp + self.fn_)
    }

    /// Precision (= NPV), recall (= specificity) and F1 of the normal class.
    pub fn normal(&self) -> ClassStats {
        ClassStats::new(self.tn, self.tn + self.fn_, self.tn + self.fp)
    }

    /// Cohen's kappa, `(p_o - p_e) / (1 - p_e)`, in [-1, 1]; 0 when `p_e == 1` (one class only
    /// in both the labels and the predictions, so agreement carries no information).
    pub fn kappa(&self) -> f64 {
        let n = self.n() as f64;
        if n == 0.0 {
            return 0.0;
        }
        let po = (self.tp + self.tn) as f64 / n;
        let pe = ((self.tp + self.fp) as f64 * (self.tp + self.fn_) as f64
            + (self.tn + self.fn_) as f64 * (self.tn + self.fp) as f64)
            / (n * n);
        if pe >= 1.0 {
            0.0
        } else {
            (po - pe) / (1.0 - pe)
        }
    }
}

/// Distinct scores in descending order, and each sample's index into them.
fn group_scores(scores: &[f32]) -> (Vec<f32>, Vec<usize>) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| cmp_scores(scores[b], scores[a]));
    let mut distinct: Vec<f32> = Vec::new();
    let mut group_of = vec![0; scores.len()];
    for i in order {
        if distinct.last() != Some(&scores[i]) {
            distinct.push(scores[i]);
        }
        group_of[i] = distinct.len() - 1;
    }
    (distinct, group_of)
}

/// AUC from per-group positive/negative counts (groups in descending score order): the
/// Mann-Whitney U / (P N), each positive-negative pair scoring 1 if the positive is higher and
/// 1/2 if tied. Exact integer arithmetic until the final division. P and N must be > 0.
fn auc_from_counts(pos: &[u64], neg: &[u64]) -> f64 {
    let (mut above, mut twice_u, mut p, mut n) = (0u64, 0u64, 0u64, 0u64);
    for (&pg, &ng) in pos.iter().zip(neg) {
        // Each negative here beats no positive above it, ties with the `pg` positives here.
        twice_u += ng * (2 * above + pg);
        above += pg;
        p += pg;
        n += ng;
    }
    twice_u as f64 / (2.0 * p as f64 * n as f64)
}

/// The ROC curve as `(fpr, tpr, threshold)` points, from `(0, 0, +inf)` (nothing referred) to
/// `(1, 1, min score)`: one point per distinct score, in descending threshold order, so tied
/// scores move the curve diagonally in one step. `fpr` and `tpr` are in [0, 1] and non-decreasing.
/// Needs both classes.
pub fn roc_curve(scores: &[f32], labels: &[bool]) -> Result<Vec<(f64, f64, f32)>> {
    let (p, n) = check_both_classes(scores, labels, "the ROC curve")?;
    let (distinct, group_of) = group_scores(scores);
    let mut pos = vec![0usize; distinct.len()];
    let mut neg = vec![0usize; distinct.len()];
    for (&g, &l) in group_of.iter().zip(labels) {
        if l {
            pos[g] += 1;
        } else {
            neg[g] += 1;
        }
    }
    let mut curve = Vec::with_capacity(distinct.len() + 1);
    curve.push((0.0, 0.0, f32::INFINITY));
    let (mut tp, mut fp) = (0, 0);
    for (g, &t) in distinct.iter().enumerate() {
        tp += pos[g];
        fp += neg[g];
        curve.push((ratio(fp, n), ratio(tp, p), t));
    }
    Ok(curve)
}

/// Area under the ROC curve of [`roc_curve`] (trapezoidal), in [0, 1]. It equals the
/// Mann-Whitney U statistic / (positives x negatives) with ties counted 1/2: the probability that
/// a random DR eye scores above a random normal eye. Perfect ranking = 1, reversed = 0, all scores
/// equal = 0.5. Needs both classes.
pub fn roc_auc(scores: &[f32], labels: &[bool]) -> Result<f64> {
    check_both_classes(scores, labels, "AUC")?;
    let (distinct, group_of) = group_scores(scores);
    let mut pos = vec![0u64; distinct.len()];
    let mut neg = vec![0u64; distinct.len()];
    for (&g, &l) in group_of.iter().zip(labels) {
        if l {
            pos[g] += 1;
        } else {
            neg[g] += 1;
        }
    }
    Ok(auc_from_counts(&pos, &neg))
}

/// Linear-interpolation quantile (numpy's default) of sorted `v`, `q` in [0, 1].
fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    let pos = q * (v.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    match v.get(i + 1) {
        Some(&next) => v[i] + frac * (next - v[i]),
        None => v[i],
    }
}

/// 95% percentile bootstrap confidence interval `(lo, hi)` of [`roc_auc`], `0 <= lo <= hi <= 1`.
///
/// Stratified: each of the `n_boot` (>= 1) replicates resamples the positives and the negatives
/// separately, with replacement and at their original counts, so every replicate has both classes.
/// `lo` and `hi` are the 2.5% and 97.5% quantiles (linear interpolation) of the replicate AUCs.
/// Deterministic for a given `seed` (ChaCha8). Needs both classes.
pub fn bootstrap_auc_ci(
    scores: &[f32],
    labels: &[bool],
    n_boot: usize,
    seed: u64,
) -> Result<(f64, f64)> {
    check_both_classes(scores, labels, "the bootstrap AUC interval")?;
    ensure!(n_boot >= 1, "the bootstrap needs at least one replicate");
    let (distinct, group_of) = group_scores(scores);
    let pos_groups: Vec<usize> = (0..labels.len())
        .filter(|&i| labels[i])
        .map(|i| group_of[i])
        .collect();
    let neg_groups: Vec<usize> = (0..labels.len())
        .filter(|&i| !labels[i])
        .map(|i| group_of[i])
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pos = vec![0u64; distinct.len()];
    let mut neg = vec![0u64; distinct.len()];
    let mut aucs = Vec::with_capacity(n_boot);
    for _ in 0..n_boot {
        pos.fill(0);
        neg.fill(0);
        for _ in 0..pos_groups.len() {
            pos[pos_groups[rng.gen_range(0..pos_groups.len())]] += 1;
        }
        for _ in 0..neg_groups.len() {
            neg[neg_groups[rng.gen_range(0..neg_groups.len())]] += 1;
        }
        aucs.push(auc_from_counts(&pos, &neg));
    }
    aucs.sort_by(f64::total_cmp);
    Ok((quantile_sorted(&aucs, 0.025), quantile_sorted(&aucs, 0.975)))
}

/// Everything reported at one operating point (threshold).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OperatingPointMetrics {
    /// `score >= threshold` is predicted DR.
    pub threshold: f32,
    pub confusion: Confusion,
    /// In [0, 1]; equals `dr.recall`.
    pub sensitivity: f64,
    /// In [0, 1]; equals `normal.recall`.
    pub specificity: f64,
    /// In [0, 1].
    pub accuracy: f64,
    /// The normal class (precision = negative predictive value).
    pub normal: ClassStats,
    /// The DR class (precision = positive predictive value).
    pub dr: ClassStats,
    /// Cohen's kappa, in [-1, 1].
    pub kappa: f64,
}

impl OperatingPointMetrics {
    /// The metrics at `threshold`.
    pub fn at(scores: &[f32], labels: &[bool], threshold: f32) -> Result<Self> {
        let c = Confusion::at_threshold(scores, labels, threshold)?;
        Ok(Self {
            threshold,
            confusion: c,
            sensitivity: c.sensitivity(),
            specificity: c.specificity(),
            accuracy: c.accuracy(),
            normal: c.normal(),
            dr: c.dr(),
            kappa: c.kappa(),
        })
    }

    /// This point in ROC space: `(fpr, tpr)` = `(1 - specificity, sensitivity)`.
    pub fn roc_point(&self) -> (f64, f64) {
        (1.0 - self.specificity, self.sensitivity)
    }
}

/// The seed's threshold search: candidates `lo + i * step` for `i = 0, 1, ...` up to `hi`
/// inclusive (computed in f64, then cast to f32, so 0.30 + 19 x 0.01 is exactly `0.49_f32`), and
/// the first (lowest) candidate of maximal accuracy. The seed uses
/// [`SEED_THRESHOLD_LO`]..=[`SEED_THRESHOLD_HI`] by [`SEED_THRESHOLD_STEP`].
/// Needs `lo <= hi` and `step > 0`, all finite; one class alone is allowed.
pub fn max_accuracy_threshold(
    scores: &[f32],
    labels: &[bool],
    lo: f64,
    hi: f64,
    step: f64,
) -> Result<OperatingPointMetrics> {
    check_inputs(scores, labels)?;
    ensure!(
        lo.is_finite() && hi.is_finite() && step.is_finite() && step > 0.0 && lo <= hi,
        "bad threshold grid lo={lo} hi={hi} step={step} (need finite lo <= hi and step > 0)"
    );
    // The tolerance keeps `hi` itself when (hi - lo) / step is an integer up to rounding.
    let steps = ((hi - lo) / step + 1e-9).floor() as usize;
    let mut best: Option<(usize, f32)> = None;
    for i in 0..=steps {
        let t = (lo + i as f64 * step) as f32;
        let correct = scores
            .iter()
            .zip(labels)
            .filter(|&(&s, &l)| (s >= t) == l)
            .count();
        if best.is_none_or(|(c, _)| correct > c) {
            best = Some((correct, t));
        }
    }
    let (_, t) = best.expect("the grid has at least one candidate");
    OperatingPointMetrics::at(scores, labels, t)
}

/// A threshold of the highest sensitivity-`>= target` operating point (target in (0, 1]), so
/// specificity is as high as possible while referring at least `target` of the DR eyes. The
/// lowest score it refers is a DR eye's; the threshold sits halfway from it down to the next
/// lower score (of either class), which refers the same eyes of this split, so the eye that
/// sets it is not on the boundary, where a 1e-7 difference between the host's and the device's
/// arithmetic would decide it. (With no lower score, the threshold is that DR score.) The
/// returned metrics carry the achieved sensitivity (which ties can push above the target) and
/// specificity. Needs both classes.
pub fn threshold_for_sensitivity(
    scores: &[f32],
    labels: &[bool],
    target: f64,
) -> Result<OperatingPointMetrics> {
    check_both_classes(scores, labels, "a target-sensitivity threshold")?;
    ensure!(
        target > 0.0 && target <= 1.0,
        "target sensitivity {target} is not in (0, 1]"
    );
    let mut pos: Vec<f32> = scores
        .iter()
        .zip(labels)
        .filter(|&(_, &l)| l)
        .map(|(&s, _)| s)
        .collect();
    pos.sort_by(|&a, &b| cmp_scores(b, a));
    // Smallest k with k / P >= target (the same f64 division as `Confusion::sensitivity`);
    // threshold = k-th highest DR score. Any higher threshold refers at most k - 1 DR eyes.
    let k = (1..=pos.len())
        .find(|&k| ratio(k, pos.len()) >= target)
        .expect("k = P gives sensitivity 1 >= target");
    let lowest_referred = pos[k - 1];
    let below = scores
        .iter()
        .copied()
        .filter(|&x| x < lowest_referred)
        .max_by(f32::total_cmp);
    let threshold = match below.map(|b| (b, b + (lowest_referred - b) / 2.0)) {
        // (Two adjacent floats have no midpoint: then the DR score itself.)
        Some((b, halfway)) if halfway > b => halfway,
        _ => lowest_referred,
    };
    OperatingPointMetrics::at(scores, labels, threshold)
}

/// The threshold of a split drawn from several sources (`source[i]` names sample i's): the
/// lowest of the sources' [`threshold_for_sensitivity`] thresholds, so that each source with both
/// classes reaches `target` on its own and a large easy source cannot set the point for a small
/// hard one. With one source this is [`threshold_for_sensitivity`]'s threshold.
pub fn threshold_across_sources(
    scores: &[f32],
    labels: &[bool],
    source: &[usize],
    target: f64,
) -> Result<f32> {
    ensure!(
        scores.len() == labels.len() && labels.len() == source.len(),
        "scores, labels and sources differ in length"
    );
    let mut ids: Vec<usize> = source.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut lowest: Option<f32> = None;
    for id in ids {
        let (s, l): (Vec<f32>, Vec<bool>) = (0..scores.len())
            .filter(|&i| source[i] == id)
            .map(|i| (scores[i], labels[i]))
            .unzip();
        if !(l.iter().any(|&x| x) && l.iter().any(|&x| !x)) {
            continue;
        }
        let t = threshold_for_sensitivity(&s, &l, target)?.threshold;
        lowest = Some(lowest.map_or(t, |m: f32| m.min(t)));
    }
    lowest.ok_or_else(|| anyhow::anyhow!("no source of the split has both classes: no threshold"))
}

/// 95% percentile bootstrap interval `(lo, hi)` of [`threshold_across_sources`]: each replicate
/// resamples every source's positives and negatives separately, with replacement and at their
/// counts, and chooses the threshold again. A probability inside it is one the validation data
/// cannot place on either side of the threshold: the device calls it borderline. Deterministic
/// for a given `seed`.
pub fn bootstrap_threshold_ci(
    scores: &[f32],
    labels: &[bool],
    source: &[usize],
    target: f64,
    n_boot: usize,
    seed: u64,
) -> Result<(f32, f32)> {
    ensure!(n_boot >= 1, "the bootstrap needs at least one replicate");
    let point = threshold_across_sources(scores, labels, source, target)?;
    let mut strata: Vec<Vec<usize>> = Vec::new();
    let mut keys: Vec<(usize, bool)> = Vec::new();
    for i in 0..scores.len() {
        let k = (source[i], labels[i]);
        match keys.iter().position(|&x| x == k) {
            Some(j) => strata[j].push(i),
            None => {
                keys.push(k);
                strata.push(vec![i]);
            }
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ts: Vec<f64> = Vec::with_capacity(n_boot);
    let (mut s, mut l, mut g) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n_boot {
        s.clear();
        l.clear();
        g.clear();
        for (k, idx) in keys.iter().zip(&strata) {
            for _ in 0..idx.len() {
                s.push(scores[idx[rng.gen_range(0..idx.len())]]);
                l.push(k.1);
                g.push(k.0);
            }
        }
        ts.push(threshold_across_sources(&s, &l, &g, target)? as f64);
    }
    ts.sort_by(f64::total_cmp);
    let (lo, hi) = (
        quantile_sorted(&ts, 0.025) as f32,
        quantile_sorted(&ts, 0.975) as f32,
    );
    // The interval always holds the point estimate (a skewed bootstrap can leave it outside).
    Ok((lo.min(point), hi.max(point)))
}

/// The evaluation of one split: AUC with its interval and the two operating points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Number of samples.
    pub n: usize,
    /// Number of DR (positive) samples; `n - positives` are normal.
    pub positives: usize,
    /// [`roc_auc`], in [0, 1].
    pub auc: f64,
    /// [`bootstrap_auc_ci`] 95% interval `(lo, hi)`; serialised as `[lo, hi]`.
    pub auc_ci: (f64, f64),
    /// Bootstrap replicates behind `auc_ci`.
    pub n_boot: usize,
    /// Bootstrap seed behind `auc_ci`.
    pub seed: u64,
    /// The seed's operating point: [`max_accuracy_threshold`] over 0.30..=0.70 by 0.01.
    pub max_accuracy: OperatingPointMetrics,
    /// The sensitivity `target_sensitivity` was chosen to reach, in (0, 1].
    pub sensitivity_target: f64,
    /// [`threshold_for_sensitivity`] at `sensitivity_target` ([`threshold_across_sources`]
    /// where `evaluate` knows the sources).
    pub target_sensitivity: OperatingPointMetrics,
    /// [`bootstrap_threshold_ci`] of `target_sensitivity`'s threshold, where it was chosen on
    /// this split: the device's borderline band.
    #[serde(default)]
    pub threshold_ci: Option<(f32, f32)>,
}

impl Metrics {
    /// Computes every metric; needs both classes, `target_sensitivity` in (0, 1], `n_boot >= 1`.
    pub fn compute(
        scores: &[f32],
        labels: &[bool],
        target_sensitivity: f64,
        n_boot: usize,
        seed: u64,
    ) -> Result<Self> {
        let (positives, _) = check_both_classes(scores, labels, "Metrics::compute")?;
        Ok(Self {
            n: scores.len(),
            positives,
            auc: roc_auc(scores, labels)?,
            auc_ci: bootstrap_auc_ci(scores, labels, n_boot, seed)?,
            n_boot,
            seed,
            max_accuracy: max_accuracy_threshold(
                scores,
                labels,
                SEED_THRESHOLD_LO,
                SEED_THRESHOLD_HI,
                SEED_THRESHOLD_STEP,
            )?,
            sensitivity_target: target_sensitivity,
            target_sensitivity: threshold_for_sensitivity(scores, labels, target_sensitivity)?,
            threshold_ci: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random scores on a 0.05 grid (many ties) with DR eyes scoring higher on average.
    fn random_data(n: usize, seed: u64) -> (Vec<f32>, Vec<bool>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let l = rng.gen_bool(0.3);
                let raw: f64 = rng.gen_range(0.0..0.8) + if l { 0.25 } else { 0.0 };
                (((raw.min(1.0) * 20.0).round() / 20.0) as f32, l)
            })
            .unzip()
    }

    #[test]
    fn the_threshold_across_sources_is_the_lowest_and_its_interval_holds_it() {
        // Source 0 separates well; source 1's DR eyes score low: its threshold must decide.
        let (mut s, mut l, mut g) = (Vec::new(), Vec::new(), Vec::new());
        for (src, shift) in [(0usize, 0.3f32), (1, 0.0)] {
            let (sc, la) = random_data(300, 11 + src as u64);
            for (x, y) in sc.into_iter().zip(la) {
                s.push((x * 0.7 + if y { shift } else { 0.0 }).min(1.0));
                l.push(y);
                g.push(src);
            }
        }
        let part = |src: usize| -> (Vec<f32>, Vec<bool>) {
            (0..s.len())
                .filter(|&i| g[i] == src)
                .map(|i| (s[i], l[i]))
                .unzip()
        };
        let (s0, l0) = part(0);
        let (s1, l1) = part(1);
        let t0 = threshold_for_sensitivity(&s0, &l0, 0.9).unwrap().threshold;
        let t1 = threshold_for_sensitivity(&s1, &l1, 0.9).unwrap().threshold;
        assert!(t1 < t0, "{t1} {t0}");
        let t = threshold_across_sources(&s, &l, &g, 0.9).unwrap();
        assert_eq!(t, t1);
        assert!(Confusion::at_threshold(&s0, &l0, t).unwrap().sensitivity() >= 0.9);
        assert!(Confusion::at_threshold(&s1, &l1, t).unwrap().sensitivity() >= 0.9);
        let (lo, hi) = bootstrap_threshold_ci(&s, &l, &g, 0.9, 200, 3).unwrap();
        assert!(lo <= t && t <= hi && lo < hi, "{lo} {t} {hi}");
        assert_eq!(
            (lo, hi),
            bootstrap_threshold_ci(&s, &l, &g, 0.9, 200, 3).unwrap(),
            "deterministic"
        );
        // One source alone: the plain target-sensitivity threshold.
        let one = vec![0; s0.len()];
        assert_eq!(threshold_across_sources(&s0, &l0, &one, 0.9).unwrap(), t0);
        // No source with both classes: an error, not a made-up threshold.
        assert!(threshold_across_sources(&[0.2, 0.4], &[true, true], &[0, 1], 0.9).is_err());
    }

    /// Brute-force Mann-Whitney U / (P N), ties 1/2.
    fn mann_whitney(scores: &[f32], labels: &[bool]) -> f64 {
        let (mut u, mut pairs) = (0.0, 0.0);
        for (&sp, _) in scores.iter().zip(labels).filter(|p| *p.1) {
            for (&sn, _) in scores.iter().zip(labels).filter(|p| !*p.1) {
                pairs += 1.0;
                u += match sp.partial_cmp(&sn).unwrap() {
                    Ordering::Greater => 1.0,
                    Ordering::Equal => 0.5,
                    Ordering::Less => 0.0,
                };
            }
        }
        u / pairs
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// DR scores 0.9 0.8 0.6 0.3 0.2, normal 0.7 0.45 0.4 0.15 0.1; at 0.5: TP 3, FN 2, FP 1, TN 4.
    fn tiny() -> (Vec<f32>, Vec<bool>) {
        let s = [0.9, 0.7, 0.8, 0.45, 0.6, 0.4, 0.3, 0.15, 0.2, 0.1];
        let l = [
            true, false, true, false, true, false, true, false, true, false,
        ];
        (s.to_vec(), l.to_vec())
    }

    #[test]
    fn confusion_and_kappa_by_hand() {
        let (s, l) = tiny();
        let c = Confusion::at_threshold(&s, &l, 0.5).unwrap();
        assert_eq!(
            c,
            Confusion {
                tp: 3,
                fp: 1,
                tn: 4,
                fn_: 2
            }
        );
        assert!(close(c.sensitivity(), 0.6));
        assert!(close(c.specificity(), 0.8));
        assert!(close(c.accuracy(), 0.7));
        let dr = c.dr();
        assert!(close(dr.precision, 0.75) && close(dr.recall, 0.6) && close(dr.f1, 2.0 / 3.0));
        assert_eq!(dr.support, 5);
        let normal = c.normal();
        assert!(close(normal.precision, 4.0 / 6.0) && close(normal.recall, 0.8));
        assert!(close(normal.f1, 8.0 / 11.0));
        // p_o = 0.7; p_e = (4 x 5 + 6 x 5) / 100 = 0.5; kappa = 0.2 / 0.5.
        assert!(close(c.kappa(), 0.4));
        // The threshold is inclusive: 0.6 itself is DR.
        assert_eq!(Confusion::at_threshold(&s, &l, 0.6).unwrap().tp, 3);
        // Nothing predicted DR: precision 0 by convention, kappa 0.
        let none = Confusion::at_threshold(&s, &l, 2.0).unwrap();
        assert_eq!(
            (none.dr().precision, none.dr().f1, none.kappa()),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn auc_extremes() {
        let l = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &l).unwrap(), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &l).unwrap(), 0.0);
        assert_eq!(roc_auc(&[0.5; 4], &l).unwrap(), 0.5);
        let roc = roc_curve(&[0.5; 4], &l).unwrap();
        assert_eq!(roc, vec![(0.0, 0.0, f32::INFINITY), (1.0, 1.0, 0.5)]);
    }

    #[test]
    fn roc_curve_handles_ties() {
        let (s, l) = ([0.8, 0.8, 0.8, 0.3, 0.1], [true, true, false, true, false]);
        let roc = roc_curve(&s, &l).unwrap();
        let want = [
            (0.0, 0.0, f32::INFINITY),
            (0.5, 2.0 / 3.0, 0.8),
            (0.5, 1.0, 0.3),
            (1.0, 1.0, 0.1),
        ];
        assert_eq!(roc.len(), want.len());
        for (got, want) in roc.iter().zip(want) {
            assert!(close(got.0, want.0) && close(got.1, want.1) && got.2 == want.2);
        }
    }

    #[test]
    fn auc_equals_mann_whitney_with_ties() {
        for seed in 0..5 {
            let (s, l) = random_data(400, seed);
            let auc = roc_auc(&s, &l).unwrap();
            assert!(close(auc, mann_whitney(&s, &l)), "seed {seed}");
            // ... and the trapezoidal area of the curve.
            let roc = roc_curve(&s, &l).unwrap();
            let trapz: f64 = roc
                .windows(2)
                .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
                .sum();
            assert!(close(auc, trapz), "seed {seed}");
        }
    }

    #[test]
    fn bootstrap_ci_contains_auc_and_is_deterministic() {
        let (s, l) = random_data(300, 7);
        let auc = roc_auc(&s, &l).unwrap();
        let (lo, hi) = bootstrap_auc_ci(&s, &l, 500, 42).unwrap();
        assert!(lo <= auc && auc <= hi && lo < hi, "{lo} {auc} {hi}");
        assert!(hi - lo < 0.3);
        assert_eq!(bootstrap_auc_ci(&s, &l, 500, 42).unwrap(), (lo, hi));
        assert_ne!(bootstrap_auc_ci(&s, &l, 500, 43).unwrap(), (lo, hi));
    }

    #[test]
    fn max_accuracy_threshold_by_hand() {
        // Correct counts over the grid: 0.30-0.35: 4, 0.36-0.48: 5, 0.49: 6 (0.49 is DR and
        // 0.48 normal), 0.50-0.52: 5, 0.53-0.60: 6 again, 0.61-0.70: 5. First maximum: 0.49.
        let s = [0.49, 0.6, 0.9, 0.1, 0.35, 0.48, 0.52];
        let l = [true, true, true, false, false, false, false];
        let p = max_accuracy_threshold(&s, &l, 0.30, 0.70, 0.01).unwrap();
        assert_eq!(p.threshold, 0.49_f32);
        assert!(close(p.accuracy, 6.0 / 7.0));
        // hi is inclusive.
        let top = max_accuracy_threshold(&[0.7, 0.69], &[true, false], 0.3, 0.7, 0.01).unwrap();
        assert_eq!(top.threshold, 0.7_f32);
        assert!(max_accuracy_threshold(&s, &l, 0.7, 0.3, 0.01).is_err());
        assert!(max_accuracy_threshold(&s, &l, 0.3, 0.7, 0.0).is_err());
    }

    #[test]
    fn threshold_for_sensitivity_reaches_target_and_is_highest() {
        let (s, l) = tiny();
        // 4 of 5 DR eyes: the 4th-highest DR score is 0.3, the next lower score 0.2.
        let p = threshold_for_sensitivity(&s, &l, 0.8).unwrap();
        assert!((p.threshold - 0.25).abs() < 1e-6, "{}", p.threshold);
        assert!(close(p.sensitivity, 0.8) && close(p.specificity, 0.4));
        // All DR eyes: the lowest DR score is 0.2, the next lower score 0.15.
        let all = threshold_for_sensitivity(&s, &l, 1.0).unwrap();
        assert!((all.threshold - 0.175).abs() < 1e-6, "{}", all.threshold);
        // Nothing below the lowest DR score: the threshold is that score.
        let top = threshold_for_sensitivity(&[0.2, 0.9], &[true, false], 1.0).unwrap();
        assert_eq!(top.threshold, 0.2);
        for seed in 0..5 {
            let (s, l) = random_data(500, 100 + seed);
            for target in [0.5, 0.8, 0.9, 0.95, 1.0] {
                let p = threshold_for_sensitivity(&s, &l, target).unwrap();
                assert!(p.sensitivity >= target, "seed {seed} target {target}");
                let lowest = s
                    .iter()
                    .copied()
                    .filter(|&x| x >= p.threshold)
                    .min_by(f32::total_cmp)
                    .unwrap();
                let highest_not = s
                    .iter()
                    .copied()
                    .filter(|&x| x < p.threshold)
                    .max_by(f32::total_cmp);
                // Halfway between the lowest referred score and the highest one not referred.
                if let Some(b) = highest_not {
                    assert!((p.threshold - (b + (lowest - b) / 2.0)).abs() <= f32::EPSILON);
                }
                // The next distinct score above the lowest referred one misses the target.
                if let Some(&next) = s
                    .iter()
                    .filter(|&&x| x > lowest)
                    .min_by(|a, b| a.total_cmp(b))
                {
                    let c = Confusion::at_threshold(&s, &l, next).unwrap();
                    assert!(c.sensitivity() < target, "seed {seed} target {target}");
                }
            }
        }
        assert!(threshold_for_sensitivity(&s, &l, 0.0).is_err());
        assert!(threshold_for_sensitivity(&s, &l, 1.1).is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let e = |r: Result<f64>| r.unwrap_err().to_string();
        assert!(e(roc_auc(&[], &[])).contains("no scores"));
        assert!(e(roc_auc(&[0.1, 0.2], &[true])).contains("2 scores but 1 labels"));
        assert!(e(roc_auc(&[0.1, f32::NAN], &[true, false])).contains("score 1 is NaN"));
        assert!(e(roc_auc(&[0.1, 0.2], &[true, true])).contains("both classes"));
        let one = ([0.1, 0.2], [false, false]);
        assert!(roc_curve(&one.0, &one.1).is_err());
        assert!(bootstrap_auc_ci(&one.0, &one.1, 10, 0).is_err());
        assert!(bootstrap_auc_ci(&[0.1, 0.2], &[true, false], 0, 0).is_err());
        assert!(threshold_for_sensitivity(&one.0, &one.1, 0.9).is_err());
        assert!(Metrics::compute(&one.0, &one.1, 0.9, 10, 0).is_err());
        assert!(Confusion::at_threshold(&[], &[], 0.5).is_err());
        assert!(Confusion::at_threshold(&[0.1], &[true], f32::NAN).is_err());
        assert!(max_accuracy_threshold(&[f32::NAN], &[true], 0.3, 0.7, 0.01).is_err());
        // Accuracy needs no second class.
        assert!(max_accuracy_threshold(&one.0, &one.1, 0.3, 0.7, 0.01).is_ok());
    }

    #[test]
    fn metrics_compute_and_serde_round_trip() {
        let (s, l) = random_data(300, 9);
        let m = Metrics::compute(&s, &l, 0.9, 200, 1).unwrap();
        assert_eq!((m.n, m.positives), (300, l.iter().filter(|&&x| x).count()));
        assert_eq!(m.auc, roc_auc(&s, &l).unwrap());
        assert!(m.target_sensitivity.sensitivity >= 0.9);
        let c = m.max_accuracy.confusion;
        assert_eq!((c.n(), c.tp + c.fn_), (m.n, m.positives));
        let back: Metrics = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back.max_accuracy.confusion, m.max_accuracy.confusion);
        assert_eq!(
            back.target_sensitivity.threshold,
            m.target_sensitivity.threshold
        );
        assert!((back.auc - m.auc).abs() < 1e-15 && (back.auc_ci.1 - m.auc_ci.1).abs() < 1e-15);
    }
}
