//! `evaluate`: a run's checkpoint on a cached split with the contract's TTA (through
//! drscreen-core, exactly as the device builds its batch), thresholds, metrics and reports.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use drscreen_core::{aggregate, write_views, View, SEED_VIEWS};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use super::metrics::{
    bootstrap_threshold_ci, roc_curve, threshold_across_sources, Metrics, OperatingPointMetrics,
};
use super::plots;
use super::report::{read_json, write_json, write_markdown};
use crate::data::cache::{Cache, SplitData};
use crate::data::split::Split;
use crate::model::Net;
use crate::train::fit::{run_file, RunInfo, BEST, RUN};

/// A trained network loaded from a run folder, ready for inference on `device`.
pub struct Loaded {
    pub info: RunInfo,
    pub net: Net,
    pub vs: nn::VarStore,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("arch", &self.info.arch.input_size)
            .finish()
    }
}

/// Loads `run/run.json` and a checkpoint (default `best.safetensors`).
pub fn load_run(run: &Path, checkpoint: Option<&Path>, device: Device) -> Result<Loaded> {
    let rp = run_file(run, RUN);
    let info: RunInfo = serde_json::from_str(
        &std::fs::read_to_string(&rp).with_context(|| format!("reading {}", rp.display()))?,
    )
    .with_context(|| format!("parsing {}", rp.display()))?;
    let mut vs = nn::VarStore::new(device);
    let net = Net::new(&vs.root(), info.arch.clone(), 0);
    let ck = checkpoint
        .map(Path::to_path_buf)
        .unwrap_or_else(|| run_file(run, BEST));
    vs.load(&ck).with_context(|| {
        format!(
            "loading checkpoint {} (is it from this architecture?)",
            ck.display()
        )
    })?;
    Ok(Loaded { info, net, vs })
}

/// Per-photo TTA result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prediction {
    pub id: String,
    /// Source (data spec name) of the photo.
    pub source: String,
    pub level: u8,
    pub label: bool,
    pub per_view: Vec<f32>,
    pub probability: f32,
}

/// TTA probabilities for every photo of a split: views built by drscreen-core, one batch of
/// `photos_per_batch * views` per forward pass.
pub fn predict_tta(
    net: &Net,
    data: &SplitData,
    views: &[View],
    device: Device,
    photos_per_batch: usize,
) -> Result<Vec<Prediction>> {
    let s = data.size;
    let per = 3 * s * s;
    let mut out = Vec::with_capacity(data.len());
    let idx: Vec<usize> = (0..data.len()).collect();
    let mut buf = Vec::new();
    for chunk in idx.chunks(photos_per_batch.max(1)) {
        buf.resize(chunk.len() * views.len() * per, 0f32);
        for (k, &i) in chunk.iter().enumerate() {
            write_views(
                data.image(i),
                s,
                s,
                views,
                &mut buf[k * views.len() * per..(k + 1) * views.len() * per],
            )?;
        }
        let x = Tensor::from_slice(&buf)
            .view([(chunk.len() * views.len()) as i64, 3, s as i64, s as i64])
            .to_device(device);
        let p: Vec<f32> = tch::no_grad(|| net.probability(&x))
            .to_device(Device::Cpu)
            .try_into()?;
        for (k, &i) in chunk.iter().enumerate() {
            let r = aggregate(&p[k * views.len()..(k + 1) * views.len()])?;
            out.push(Prediction {
                id: data.ids[i].clone(),
                source: data.sources[i].clone(),
                level: data.levels[i],
                label: data.labels[i],
                per_view: r.per_view.to_vec(),
                probability: r.mean,
            });
        }
    }
    Ok(out)
}

/// Options of `evaluate`.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub run: PathBuf,
    pub cache: PathBuf,
    pub split: Split,
    pub checkpoint: Option<PathBuf>,
    /// Apply these thresholds (a `metrics.json` from the validation evaluation) instead of choosing.
    pub thresholds_from: Option<PathBuf>,
    pub target_sensitivity: f64,
    pub n_boot: usize,
    pub out: PathBuf,
    /// Use only the identity view (no TTA) for comparison.
    pub no_tta: bool,
}

/// Runs the evaluation and writes `metrics.json`, `report.md`, `predictions.csv` and the plots
/// `roc.svg`, `grades.svg`, `calibration.svg`.
pub fn evaluate(o: &EvalOptions) -> Result<Metrics> {
    let device = crate::train::augment::training_device();
    let loaded = load_run(&o.run, o.checkpoint.as_deref(), device)?;
    let cache = Cache::open(&o.cache)?;
    if let Some(why) = cache.manifest.spec.mismatch(&loaded.info.cache_spec) {
        anyhow::bail!(
            "cache {} was not preprocessed as the model of {} expects: {why}",
            o.cache.display(),
            o.run.display()
        );
    }
    let data = cache.split(o.split)?;
    let views: Vec<View> = if o.no_tta {
        vec![View::Identity]
    } else {
        SEED_VIEWS.to_vec()
    };
    let preds = predict_tta(&loaded.net, &data, &views, device, 16)?;
    let scores: Vec<f32> = preds.iter().map(|p| p.probability).collect();
    let labels: Vec<bool> = preds.iter().map(|p| p.label).collect();
    let mut metrics = Metrics::compute(&scores, &labels, o.target_sensitivity, o.n_boot, 7)?;
    if let Some(tf) = &o.thresholds_from {
        let (chosen, _) = read_json(tf)?;
        metrics.max_accuracy =
            OperatingPointMetrics::at(&scores, &labels, chosen.max_accuracy.threshold)?;
        metrics.target_sensitivity =
            OperatingPointMetrics::at(&scores, &labels, chosen.target_sensitivity.threshold)?;
        metrics.sensitivity_target = chosen.sensitivity_target;
        metrics.threshold_ci = chosen.threshold_ci;
    } else {
        // Every source reaches the target sensitivity: the lowest of the sources' thresholds,
        // with its bootstrap interval (the device's borderline band).
        let mut names: Vec<&str> = preds.iter().map(|p| p.source.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let source: Vec<usize> = preds
            .iter()
            .map(|p| names.binary_search(&p.source.as_str()).unwrap_or(0))
            .collect();
        let t = threshold_across_sources(&scores, &labels, &source, o.target_sensitivity)?;
        metrics.target_sensitivity = OperatingPointMetrics::at(&scores, &labels, t)?;
        metrics.threshold_ci = Some(bootstrap_threshold_ci(
            &scores,
            &labels,
            &source,
            o.target_sensitivity,
            o.n_boot,
            11,
        )?);
    }
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let context = serde_json::json!({
        "run": o.run, "cache": o.cache, "split": o.split, "views": views.len(),
        "thresholds_from": o.thresholds_from, "device": format!("{device:?}"),
        "sources": cache.manifest.sources_summary(), "positive": cache.manifest.positive,
        "by_source": by_source(&preds, &metrics, o.n_boot)?,
    });
    write_json(&o.out.join("metrics.json"), &metrics, &context)?;
    let title = format!(
        "{} split of {} ({} photos)",
        o.split.name(),
        o.cache.display(),
        scores.len()
    );
    write_markdown(&o.out.join("report.md"), &title, &metrics)?;
    let name = format!("{} split", o.split.name());
    plots::write_roc(
        &o.out.join("roc.svg"),
        &name,
        &roc_curve(&scores, &labels)?,
        &metrics,
    )?;
    let grades: Vec<u8> = preds.iter().map(|p| p.level).collect();
    plots::write_grades(
        &o.out.join("grades.svg"),
        &name,
        &scores,
        &grades,
        metrics.target_sensitivity.threshold,
    )?;
    plots::write_calibration(&o.out.join("calibration.svg"), &name, &scores, &labels)?;
    let mut csv = std::fs::File::create(o.out.join("predictions.csv"))?;
    writeln!(
        csv,
        "id,source,level,label,{},probability",
        (0..views.len())
            .map(|v| format!("view{v}"))
            .collect::<Vec<_>>()
            .join(",")
    )?;
    for p in &preds {
        let v: Vec<String> = p.per_view.iter().map(|x| format!("{x:.6}")).collect();
        writeln!(
            csv,
            "{},{},{},{},{},{:.6}",
            p.id,
            p.source,
            p.level,
            p.label as u8,
            v.join(","),
            p.probability
        )?;
    }
    Ok(metrics)
}

/// AUC (with its bootstrap CI) and the pooled thresholds' sensitivity and specificity for each
/// source of the split; a source with one class only gets its counts and operating points.
fn by_source(preds: &[Prediction], pooled: &Metrics, n_boot: usize) -> Result<serde_json::Value> {
    let mut names: Vec<&str> = preds.iter().map(|p| p.source.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut out = serde_json::Map::new();
    for name in names {
        let part: Vec<&Prediction> = preds.iter().filter(|p| p.source == name).collect();
        let scores: Vec<f32> = part.iter().map(|p| p.probability).collect();
        let labels: Vec<bool> = part.iter().map(|p| p.label).collect();
        let op = OperatingPointMetrics::at(&scores, &labels, pooled.target_sensitivity.threshold)?;
        let both = labels.iter().any(|&l| l) && labels.iter().any(|&l| !l);
        let (auc, ci) = if both {
            let m = Metrics::compute(&scores, &labels, pooled.sensitivity_target, n_boot, 7)?;
            (Some(m.auc), Some(m.auc_ci))
        } else {
            (None, None)
        };
        out.insert(
            name.to_owned(),
            serde_json::json!({
                "n": part.len(), "positives": labels.iter().filter(|&&l| l).count(),
                "auc": auc, "auc_ci": ci,
                "threshold": op.threshold, "sensitivity": op.sensitivity, "specificity": op.specificity,
            }),
        );
    }
    Ok(serde_json::Value::Object(out))
}
