//! Site calibration: the operating point of one clinic's camera, set from a few dozen of that
//! camera's own graded photos.
//!
//! Cameras shift a model's scores: a threshold chosen on the training cameras' validation photos
//! can catch far fewer diseased eyes on a camera the model never saw (docs/results.md). A site
//! file holds the threshold chosen on the clinic's own photos, for one model file; `screen`,
//! `watch` and `device` take it with `--site` (or `DRSCREEN_SITE`), and every record names it.
//!
//! The rule ([`choose_threshold`]): the highest threshold at which the one-sided lower
//! confidence bound (Clopper-Pearson) of sensitivity on the site's diseased eyes still reaches
//! the target. Choosing where the *measured* sensitivity reaches the target would fall short on
//! the next photos about half the time; the bound makes it hold with the stated confidence, and it
//! also sets how few photos are too few: at a 0.95 confidence and a 0.90 target, 29 diseased eyes
//! with none missed is the least that can show it.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use drscreen_core::contract::PositiveClass;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the site file format this build writes and reads.
pub const SITE_FORMAT: u32 = 1;

/// A proportion with its 95 % Wilson interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Proportion {
    pub hits: u32,
    pub of: u32,
    pub value: f32,
    pub ci95: [f32; 2],
}

impl Proportion {
    pub fn new(hits: u32, of: u32) -> Self {
        let (lo, hi) = wilson(hits, of);
        Proportion {
            hits,
            of,
            value: if of == 0 {
                f32::NAN
            } else {
                hits as f32 / of as f32
            },
            ci95: [lo as f32, hi as f32],
        }
    }
}

/// One site's calibration of one model file (the JSON `calibrate` writes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteCalibration {
    pub format: u32,
    /// The clinic's name for the site and camera.
    pub site: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// The model file this threshold belongs to: any other model is refused.
    pub model_sha256: String,
    pub positive_class: PositiveClass,
    /// The model's own (validation) threshold, for comparison.
    pub model_threshold: f32,
    pub target_sensitivity: f32,
    /// Confidence of the one-sided bound that must reach the target (0.95).
    pub confidence: f32,
    pub threshold: f32,
    /// A probability inside this band is borderline (refer or retake): the 95 % bootstrap
    /// interval of the threshold over resampled diseased eyes, widened to hold the threshold.
    pub borderline: [f32; 2],
    /// SHA-256 of the graded table the calibration read.
    pub labels_sha256: String,
    /// Photos in the table, and those the quality gate judged ungradable (left out).
    pub photos: u32,
    pub ungradable: u32,
    /// On the gradable calibration photos, at `threshold`.
    pub sensitivity: Proportion,
    /// The one-sided lower confidence bound of `sensitivity` (at `confidence`).
    pub sensitivity_lower_bound: f32,
    pub specificity: Proportion,
}

/// What a record says about the site calibration it was screened under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRef {
    pub site: String,
    /// SHA-256 of the site file's bytes.
    pub sha256: String,
}

/// A loaded site file, checked against the model it is used with.
#[derive(Debug, Clone)]
pub struct Site {
    pub calibration: SiteCalibration,
    pub reference: SiteRef,
}

impl Site {
    /// Reads `path` and checks that it belongs to the model with this SHA-256 and positive class.
    pub fn load(path: &Path, model_sha256: &str, positive_class: PositiveClass) -> Result<Site> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the site calibration {}", path.display()))?;
        let calibration: SiteCalibration = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a drscreen site calibration (write one with `edge-runtime calibrate`)",
                path.display()
            )
        })?;
        let c = &calibration;
        ensure!(
            c.format == SITE_FORMAT,
            "{}: site file format {} is not one this build reads ({SITE_FORMAT}): update edge-runtime or calibrate again",
            path.display(),
            c.format
        );
        ensure!(
            c.model_sha256 == model_sha256,
            "{} calibrates model {}, but the model loaded is {}: a threshold belongs to one model file; \
             run `edge-runtime calibrate` for this model, or load the model it was made for",
            path.display(),
            short(&c.model_sha256),
            short(model_sha256)
        );
        ensure!(
            c.positive_class == positive_class,
            "{}: calibrated for {:?}, the model decides {:?}",
            path.display(),
            c.positive_class,
            positive_class
        );
        let [lo, hi] = c.borderline;
        ensure!(
            (0.0..=1.0).contains(&c.threshold) && lo <= c.threshold && c.threshold <= hi,
            "{}: threshold {} or band [{lo}, {hi}] is not valid (the band must hold the threshold, all in [0, 1]); calibrate again",
            path.display(),
            c.threshold
        );
        Ok(Site {
            reference: SiteRef {
                site: c.site.clone(),
                sha256: format!("{:x}", Sha256::digest(&bytes)),
            },
            calibration,
        })
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// The 95 % Wilson score interval of `hits / n` (`[0, 1]` when `n` is 0).
pub fn wilson(hits: u32, n: u32) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (z, n, p) = (1.959_964, n as f64, hits as f64 / n as f64);
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// P(X >= k) for X ~ Binomial(n, p).
fn binomial_upper_tail(k: u32, n: u32, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    // log C(n, i) built up term by term; the sum runs from the top, where the terms are largest
    // for the p this is asked about (near k / n).
    let mut log_choose = 0.0f64; // log C(n, n)
    let mut sum = 0.0f64;
    for i in (k..=n).rev() {
        sum += (log_choose + i as f64 * lp + (n - i) as f64 * lq).exp();
        // C(n, i - 1) = C(n, i) * i / (n - i + 1)
        log_choose += (i as f64).ln() - ((n - i + 1) as f64).ln();
    }
    sum.min(1.0)
}

/// The one-sided Clopper-Pearson lower bound of a proportion `k / n` at `confidence`: the `p`
/// at which `P(X >= k) = 1 - confidence`.
pub fn lower_bound(k: u32, n: u32, confidence: f64) -> f64 {
    if k == 0 || n == 0 {
        return 0.0;
    }
    let alpha = 1.0 - confidence;
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if binomial_upper_tail(k, n, mid) < alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The fewest diseased eyes that can show sensitivity `target` at `confidence` (all caught):
/// the least `n` with `(1 - confidence)^(1/n) >= target`.
pub fn min_positives(target: f64, confidence: f64) -> u32 {
    ((1.0 - confidence).ln() / target.ln()).ceil().max(1.0) as u32
}

/// The fewest of `n` diseased eyes a threshold must catch for the one-sided lower confidence
/// bound of its sensitivity to reach `target`; None when even all `n` are not enough.
pub fn required_caught(n: u32, target: f64, confidence: f64) -> Option<u32> {
    if n == 0 || lower_bound(n, n, confidence) < target {
        return None;
    }
    // The bound rises with k: bisect for the first k that reaches the target.
    let (mut lo, mut hi) = (0u32, n); // bound(lo) < target <= bound(hi)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if lower_bound(mid, n, confidence) >= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// The `k`-th highest of `values` (1-based).
fn kth_highest(values: &[f32], k: u32) -> f32 {
    let mut desc = values.to_vec();
    desc.sort_by(|a, b| b.total_cmp(a));
    desc[k as usize - 1]
}

/// The site threshold for these diseased eyes' probabilities: the highest `t` (a probability one
/// of them has, so `p >= t` refers it) at which the eyes caught, `k` of `n`, have a one-sided
/// lower confidence bound of at least `target`. None when `n` is too small even with all caught.
pub fn choose_threshold(positives: &[f32], target: f64, confidence: f64) -> Option<f32> {
    let k = required_caught(positives.len() as u32, target, confidence)?;
    // Ties at the k-th value catch more than k eyes: still at least k.
    Some(kth_highest(positives, k))
}

/// The 95 % percentile interval of [`choose_threshold`] over `draws` bootstrap resamples of the
/// diseased eyes (seeded: the same eyes give the same band), widened to hold `threshold`.
pub fn bootstrap_band(
    positives: &[f32],
    target: f64,
    confidence: f64,
    threshold: f32,
    draws: usize,
) -> [f32; 2] {
    // A resample has as many eyes as the sample, so it needs as many caught.
    let Some(k) = required_caught(positives.len() as u32, target, confidence) else {
        return [threshold, threshold];
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x517e_ca1b);
    let mut sample = vec![0.0f32; positives.len()];
    let mut ts: Vec<f32> = (0..draws)
        .map(|_| {
            for s in sample.iter_mut() {
                *s = positives[rng.gen_range(0..positives.len())];
            }
            kth_highest(&sample, k)
        })
        .collect();
    if ts.is_empty() {
        return [threshold, threshold];
    }
    ts.sort_by(f32::total_cmp);
    let at = |q: f64| ts[((q * (ts.len() - 1) as f64).round() as usize).min(ts.len() - 1)];
    [at(0.025).min(threshold), at(0.975).max(threshold)]
}

/// One graded, gradable calibration photo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Graded {
    pub probability: f32,
    pub diseased: bool,
}

/// A calibration from gradable graded photos, or an error saying how many more diseased eyes it
/// needs. `photos` and `ungradable` count the whole table.
#[allow(clippy::too_many_arguments)]
pub fn calibrate(
    graded: &[Graded],
    target: f64,
    confidence: f64,
    site: &str,
    model_sha256: &str,
    positive_class: PositiveClass,
    model_threshold: f32,
    labels_sha256: String,
    photos: u32,
    ungradable: u32,
) -> Result<SiteCalibration> {
    ensure!(
        (0.5..1.0).contains(&target) && (0.5..1.0).contains(&confidence),
        "the target sensitivity and the confidence must each lie in [0.5, 1) (got {target}, {confidence})"
    );
    let pos: Vec<f32> = graded
        .iter()
        .filter(|g| g.diseased)
        .map(|g| g.probability)
        .collect();
    let neg: Vec<f32> = graded
        .iter()
        .filter(|g| !g.diseased)
        .map(|g| g.probability)
        .collect();
    let need = min_positives(target, confidence);
    let Some(threshold) = choose_threshold(&pos, target, confidence) else {
        bail!(
            "{} gradable diseased eyes: showing sensitivity {target:.2} at {:.0} % confidence needs at least {need} \
             (more when some are missed); grade more of this camera's photos and calibrate again",
            pos.len(),
            confidence * 100.0
        );
    };
    ensure!(
        !neg.is_empty(),
        "no gradable healthy eyes: the calibration cannot say how many healthy eyes the threshold refers; add some"
    );
    let caught = pos.iter().filter(|&&p| p >= threshold).count() as u32;
    let cleared = neg.iter().filter(|&&p| p < threshold).count() as u32;
    let n = pos.len() as u32;
    Ok(SiteCalibration {
        format: SITE_FORMAT,
        site: site.to_string(),
        created: crate::record::now_rfc3339(),
        model_sha256: model_sha256.to_string(),
        positive_class,
        model_threshold,
        target_sensitivity: target as f32,
        confidence: confidence as f32,
        threshold,
        borderline: bootstrap_band(&pos, target, confidence, threshold, 2000),
        labels_sha256,
        photos,
        ungradable,
        sensitivity: Proportion::new(caught, n),
        sensitivity_lower_bound: lower_bound(caught, n, confidence) as f32,
        specificity: Proportion::new(cleared, neg.len() as u32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_bound_matches_known_values() {
        // All caught: the bound is (1 - confidence)^(1/n).
        for n in [1u32, 10, 29, 100] {
            let want = 0.05f64.powf(1.0 / n as f64);
            assert!((lower_bound(n, n, 0.95) - want).abs() < 1e-9, "{n}");
        }
        // 45 of 50 at 95 % one-sided: 0.8011 (Beta(45, 6) 5th percentile).
        assert!((lower_bound(45, 50, 0.95) - 0.8011).abs() < 5e-4);
        assert_eq!(min_positives(0.90, 0.95), 29);
        assert_eq!(lower_bound(0, 10, 0.95), 0.0);
    }

    #[test]
    fn the_threshold_is_the_highest_whose_bound_reaches_the_target() {
        // 100 diseased eyes at 0.01 .. 1.00.
        let pos: Vec<f32> = (1..=100).map(|i| i as f32 / 100.0).collect();
        let t = choose_threshold(&pos, 0.90, 0.95).unwrap();
        let k = pos.iter().filter(|&&p| p >= t).count() as u32;
        assert!(lower_bound(k, 100, 0.95) >= 0.90);
        // One step higher misses one more eye and the bound falls short.
        assert!(lower_bound(k - 1, 100, 0.95) < 0.90);
        // 96 of 100 is where a 0.90 bound at 95 % starts (95 of 100 gives 0.898).
        assert_eq!(k, 96, "{t}");
        assert!(choose_threshold(&pos[..28], 0.90, 0.95).is_none());
        assert_eq!(choose_threshold(&pos[..29], 0.90, 0.95), Some(0.01));
    }

    #[test]
    fn calibrate_refuses_too_few_diseased_eyes_and_reports_its_point() {
        let eyes = |n_pos: usize| -> Vec<Graded> {
            (0..n_pos)
                .map(|i| Graded {
                    probability: 0.3 + 0.6 * i as f32 / n_pos as f32,
                    diseased: true,
                })
                .chain((0..60).map(|i| Graded {
                    probability: 0.5 * i as f32 / 60.0,
                    diseased: false,
                }))
                .collect()
        };
        let run = |g: &[Graded]| {
            calibrate(
                g,
                0.90,
                0.95,
                "test",
                "ab",
                PositiveClass::ReferableDr,
                0.5,
                "cd".into(),
                g.len() as u32,
                0,
            )
        };
        let e = run(&eyes(20)).unwrap_err().to_string();
        assert!(
            e.contains("20 gradable diseased eyes") && e.contains("at least 29"),
            "{e}"
        );
        let c = run(&eyes(80)).unwrap();
        assert!(c.sensitivity_lower_bound >= 0.90, "{c:?}");
        assert!(c.sensitivity.value >= 0.95);
        let [lo, hi] = c.borderline;
        assert!(lo <= c.threshold && c.threshold <= hi && lo < hi, "{c:?}");
        // Healthy eyes below 0.3 are cleared; the rest are referred.
        assert_eq!(
            c.specificity.hits,
            (0..60)
                .filter(|&i| 0.5 * (i as f32) / 60.0 < c.threshold)
                .count() as u32
        );
        let no_healthy: Vec<Graded> = eyes(80).into_iter().filter(|g| g.diseased).collect();
        assert!(run(&no_healthy).is_err());
    }

    #[test]
    fn wilson_matches_a_known_interval() {
        let (lo, hi) = wilson(45, 50);
        assert!(
            (lo - 0.7864).abs() < 1e-3 && (hi - 0.9565).abs() < 1e-3,
            "{lo} {hi}"
        );
    }
}
