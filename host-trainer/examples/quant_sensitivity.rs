//! Where the int8 error comes from: the fake-int8 simulation (the one `export --quantize`
//! checks against the int8 file in tract) on the validation split, with one part at a time left in
//! float: one block's weights, one block's activations, the head's weights, every depthwise or
//! every dense convolution's weights, all weights, all activations, and one kind of tensor across
//! the network (the stem's output, the expansion, depthwise or projection outputs, the residual
//! sums, the last 1x1's output, the projection outputs and residual sums together).
//!
//! `source scripts/torch-env.sh; cargo run --release -p host-trainer --example quant_sensitivity -- RUN
//! [--calib 100] [--threshold T (default: the run's eval-val target-sensitivity one)] [--top 15] [--empirical] [--calibration min-max|percentile|entropy] [--only-base] [--only "features.1 weights,head weights"]`
//!
//! Prints, for the whole int8 network and for each part left in float, the figures issue 4 bounds
//! (p99 and max |int8 - float| of the TTA probability, decision agreement at the threshold), the
//! mean logit shift and the per-view logit noise (the standard deviation of the int8 - float
//! logit over every view); then the greedy set of parts to leave in float until the bounds hold.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{Context, Result};
use drscreen_core::SEED_VIEWS;
use host_trainer::data::cache::Cache;
use host_trainer::data::split::Split;
use host_trainer::eval::evaluate::{load_run, predict_tta};
use host_trainer::eval::report::read_json;
use host_trainer::export::equalize::{equalize, Equalization};
use host_trainer::export::gptq::WeightRounding;
use host_trainer::export::onnx::{residual_key, unit_key};
use host_trainer::export::qat::{
    empirical_bias_correction, fake_int8_probability, views_tensor, FloatParts,
};
use host_trainer::export::quantize::{calibrate, calibration_indices, Calibration};
use host_trainer::export::run::{weights, Gap};
use host_trainer::model::arch::{Block, ConvUnit};
use tch::Device;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name} needs a value")),
        None => Ok(default),
    }
}

/// A clap value-enum option by its printed name (`--calibration min-max`).
fn enum_arg<T: clap::ValueEnum>(args: &[String], name: &str, default: T) -> Result<T> {
    match args.iter().position(|a| a == name) {
        Some(i) => {
            let v = args
                .get(i + 1)
                .with_context(|| format!("{name} needs a value"))?;
            T::from_str(v, true).map_err(|e| anyhow::anyhow!("{name}: {e}"))
        }
        None => Ok(default),
    }
}

/// The columns after the first of the tables `show` writes rows of.
const COLUMNS: &str =
    "| p99 | max | agreement | mean logit shift | per-view logit noise |\n|---|---|---|---|---|---|";

/// Which units of the blocks a kind of tensor takes.
type Pick = fn(&ConvUnit) -> bool;

/// The bounds' figures, the mean logit difference and the per-view logit noise.
#[derive(Debug, Clone, Copy)]
struct Figures {
    gap: Gap,
    logit_shift: f64,
    /// Standard deviation of the per-view int8 - float logit difference: an average over every
    /// view, where the p99 of 83 photos is one photo's.
    logit_noise: f64,
}

fn logit(p: f32) -> f64 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln() as f64
}

/// `float` / `int8`: TTA probabilities per photo; `*_views`: per view, views of a photo together.
fn figures(
    float: &[f32],
    int8: &[f32],
    float_views: &[f32],
    int8_views: &[f32],
    t: f32,
) -> Figures {
    let shift = float
        .iter()
        .zip(int8)
        .map(|(a, b)| logit(*b) - logit(*a))
        .sum::<f64>()
        / float.len() as f64;
    let d: Vec<f64> = float_views
        .iter()
        .zip(int8_views)
        .map(|(a, b)| logit(*b) - logit(*a))
        .collect();
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / d.len() as f64;
    Figures {
        gap: Gap::of(float, int8, t),
        logit_shift: shift,
        logit_noise: var.sqrt(),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run = PathBuf::from(
        args.first()
            .context("usage: quant_sensitivity RUN [--calib N]")?,
    );
    let calib: usize = arg(&args, "--calib", 100)?;
    let top: usize = arg(&args, "--top", 15)?;
    let loaded = load_run(&run, None, Device::Cpu)?;
    // Default: the run's own target-sensitivity threshold (`evaluate --split val`).
    let t: f32 = if args.iter().any(|a| a == "--threshold") {
        arg(&args, "--threshold", 0.0)?
    } else {
        read_json(&run.join("eval-val/metrics.json"))?
            .0
            .target_sensitivity
            .threshold
    };
    let w = weights(&loaded)?;
    let arch = &loaded.info.arch;
    let cache = Cache::open(&loaded.info.config.cache)?;
    let train = cache.split(Split::Train)?;
    let idx = calibration_indices(train.len(), calib, 0)?;
    let photos: Vec<&[u8]> = idx.iter().map(|&i| train.image(i)).collect();
    let method = enum_arg(&args, "--calibration", Calibration::MinMax)?;
    let mut cal = calibrate(arch, &w, &photos, &SEED_VIEWS, method)?;
    // `--equalize H [--equalization depthwise|all|streams]`: cross-layer equalization with
    // headroom H before the simulation (then calibrated again on the equalized weights).
    let mut w = w;
    if args.iter().any(|a| a == "--equalize") {
        let h: f32 = arg(&args, "--equalize", 2.0)?;
        let which = enum_arg(&args, "--equalization", Equalization::All)?;
        let (eq, report) = equalize(arch, &w, &cal, which, h, h)?;
        println!("equalized: {report:?}");
        w = eq;
        cal = calibrate(arch, &w, &photos, &SEED_VIEWS, method)?;
    }
    // `--empirical`: the biases corrected on the calibration photos with everything upstream
    // quantized (export's default); otherwise the analytic correction.
    let empirical = args.iter().any(|a| a == "--empirical");
    // `--rounding nearest|gptq|gptq-compensated` (with `--empirical`): how the weights are rounded.
    let rounding = enum_arg(&args, "--rounding", WeightRounding::Nearest)?;
    let cal_xs = empirical
        .then(|| views_tensor(&photos, arch.input_size, &SEED_VIEWS))
        .transpose()?;
    let val = cache.split(Split::Val)?;
    let float_pred = predict_tta(&loaded.net, &val, &SEED_VIEWS, Device::Cpu, 4)?;
    let float: Vec<f32> = float_pred.iter().map(|p| p.probability).collect();
    let float_views: Vec<f32> = float_pred.iter().flat_map(|p| p.per_view.clone()).collect();
    let v = SEED_VIEWS.len();
    let val_photos: Vec<&[u8]> = (0..val.len()).map(|i| val.image(i)).collect();
    let xs = views_tensor(&val_photos, val.size, &SEED_VIEWS)?;
    let sim = |parts: &FloatParts| -> Result<Figures> {
        let corrected = match &cal_xs {
            Some(c) => Some(empirical_bias_correction(arch, &w, &cal, c, parts, rounding)?.0),
            None => None,
        };
        let start = corrected.as_ref().unwrap_or(&w);
        let mut p: Vec<f32> = Vec::with_capacity(val.len() * v);
        for chunk in xs.split(40, 0) {
            let q: Vec<f32> = fake_int8_probability(
                &loaded.net,
                start,
                &cal,
                &chunk,
                parts,
                corrected.is_none(),
            )?
            .try_into()?;
            p.extend(q);
        }
        let mean: Vec<f32> = p
            .chunks(v)
            .map(|c| c.iter().sum::<f32>() / v as f32)
            .collect();
        Ok(figures(&float, &mean, &float_views, &p, t))
    };
    let show = |name: &str, f: &Figures| {
        println!(
            "| {name} | {:.4} | {:.4} | {:.1} % | {:+.3} | {:.3} |",
            f.gap.p99,
            f.gap.max,
            f.gap.agreement * 100.0,
            f.logit_shift,
            f.logit_noise
        )
    };
    println!(
        "{} validation photos x {v} views, {} calibration photos, threshold {t}, {} bias correction\n",
        val.len(),
        photos.len(),
        if empirical { "empirical" } else { "analytic" }
    );
    println!("| left in float {COLUMNS}");
    let base = sim(&FloatParts::default())?;
    show("nothing (the int8 model)", &base);
    if args.iter().any(|a| a == "--only-base") {
        return Ok(());
    }

    // Candidates: the head; each block's weights; each block's activations (its units' outputs
    // and its residual sum). Per block, not per unit: one simulation of the 83 x 5 views takes
    // ~30 s on 2 cores at 224 px.
    let mut candidates: Vec<(String, FloatParts)> = vec![(
        "head weights".into(),
        FloatParts {
            head: true,
            ..Default::default()
        },
    )];
    for block in &arch.blocks {
        let units: HashSet<String> = block.units.iter().map(unit_key).collect();
        let mut tensors = units.clone();
        if block.residual {
            tensors.insert(residual_key(block));
        }
        candidates.push((
            format!("{} weights", block.name),
            FloatParts {
                weights: units,
                ..Default::default()
            },
        ));
        candidates.push((
            format!("{} activations", block.name),
            FloatParts {
                activations: tensors,
                ..Default::default()
            },
        ));
    }
    // The two halves of the error: every weight, or every activation, left in float.
    let all = |f: fn(&FloatParts) -> &HashSet<String>| -> HashSet<String> {
        candidates
            .iter()
            .flat_map(|(_, p)| f(p).iter().cloned())
            .collect()
    };
    let (weights_all, activations_all) = (all(|p| &p.weights), all(|p| &p.activations));
    candidates.push((
        "all weights".into(),
        FloatParts {
            weights: weights_all,
            head: true,
            ..Default::default()
        },
    ));
    candidates.push((
        "all activations".into(),
        FloatParts {
            activations: activations_all,
            ..Default::default()
        },
    ));
    // Every depthwise (grouped) convolution's weights, or every other backbone convolution's.
    let by_kind = |depthwise: bool| -> HashSet<String> {
        arch.blocks
            .iter()
            .flat_map(|b| &b.units)
            .filter(|u| (u.groups > 1) == depthwise)
            .map(unit_key)
            .collect()
    };
    for (name, depthwise) in [("depthwise weights", true), ("dense weights", false)] {
        candidates.push((
            name.into(),
            FloatParts {
                weights: by_kind(depthwise),
                ..Default::default()
            },
        ));
    }
    // One kind of tensor left unquantized across the network: which kind the activations'
    // noise comes from. The stem's output and the last 1x1's (pooled) apart from the blocks'.
    let n = arch.blocks.len();
    let inner = arch.blocks.get(1..n.saturating_sub(1)).unwrap_or_default();
    let outputs = |blocks: &[Block], pick: Pick| -> HashSet<String> {
        blocks
            .iter()
            .flat_map(|b| &b.units)
            .filter(|u| pick(u))
            .map(unit_key)
            .collect()
    };
    let projections = outputs(inner, |u| !u.relu6);
    let sums: HashSet<String> = arch
        .blocks
        .iter()
        .filter(|b| b.residual)
        .map(residual_key)
        .collect();
    let kinds = [
        (
            "expansion outputs",
            outputs(inner, |u| u.relu6 && u.groups == 1),
        ),
        ("depthwise outputs", outputs(inner, |u| u.groups > 1)),
        ("projection outputs", projections.clone()),
        ("stem output", outputs(&arch.blocks[..n.min(1)], |_| true)),
        (
            "last 1x1 output",
            outputs(&arch.blocks[n.saturating_sub(1)..], |_| true),
        ),
        ("residual sums", sums.clone()),
        // The signed tensors together: every linear projection's output and every residual sum.
        (
            "projection outputs and residual sums",
            projections.union(&sums).cloned().collect(),
        ),
    ];
    for (name, activations) in kinds {
        candidates.push((
            name.into(),
            FloatParts {
                activations,
                ..Default::default()
            },
        ));
    }
    // `--only "A,B"`: just these candidates (by the names printed).
    if let Some(only) = args.iter().position(|a| a == "--only") {
        let names: Vec<&str> = args
            .get(only + 1)
            .context("--only needs a value")?
            .split(',')
            .map(str::trim)
            .collect();
        candidates.retain(|(name, _)| names.contains(&name.as_str()));
        anyhow::ensure!(
            candidates.len() == names.len(),
            "--only: some of {names:?} are not candidates"
        );
    }
    let mut scored = Vec::new();
    for (k, (name, parts)) in candidates.iter().enumerate() {
        let t0 = std::time::Instant::now();
        let f = sim(parts)?;
        eprintln!(
            "[{}/{}] {name}: p99 {:.4} ({:.0} s)",
            k + 1,
            candidates.len(),
            f.gap.p99,
            t0.elapsed().as_secs_f64()
        );
        scored.push((name.clone(), parts.clone(), f));
    }
    scored.sort_by(|a, b| a.2.gap.p99.total_cmp(&b.2.gap.p99));
    for (name, _, f) in scored.iter().take(top) {
        show(name, f);
    }

    // Greedy: leave the best remaining part in float until the bounds hold (at most 10 parts).
    println!("\nGreedy, cumulative:\n\n| + left in float {COLUMNS}");
    let mut acc = FloatParts::default();
    let mut f = base;
    for (name, parts, _) in scored.iter().take(10) {
        if f.gap.within_bounds() {
            break;
        }
        acc.weights.extend(parts.weights.iter().cloned());
        acc.activations.extend(parts.activations.iter().cloned());
        acc.head |= parts.head;
        f = sim(&acc)?;
        show(name, &f);
    }
    println!(
        "\nbounds (p99 <= 0.03, agreement >= 98 %): {}",
        if f.gap.within_bounds() {
            "met"
        } else {
            "missed"
        }
    );
    Ok(())
}
