//! `export`: a run's checkpoint -> ONNX with its contract, checked in tract against tch, and a
//! golden file of host outputs beside it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use drscreen_core::contract::{DataSummary, OperatingPoint, PositiveClass, Text, Thresholds};
use drscreen_core::{
    aggregate, decide, write_views, Decision, ModelContract, Workspace, CONTRACT_KEY,
};
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Tensor};
use tract_onnx::prelude::*;

use super::onnx::{float_model, Weights};
use crate::data::labels::Positive;
use crate::eval::evaluate::{load_run, Loaded};
use crate::eval::metrics::Metrics;
use crate::eval::report::read_json;

/// One golden sample: what the host computed for a photo.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GoldenSample {
    /// Where the photo is: `data:<path under the data folder>` or a path relative to the repo.
    pub source: String,
    pub file_sha256: String,
    /// SHA-256 of the preprocessed RGB8 model input (before /255 and TTA).
    pub input_sha256: String,
    pub per_view: Vec<f32>,
    pub probability: f32,
    pub decision: Decision,
}

/// The golden file written beside a model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Golden {
    pub model: String,
    pub model_sha256: String,
    pub contract_version: u32,
    pub threshold: f32,
    /// Host (tch) vs tract on these samples, float model: max |diff| of any view probability.
    pub tract_max_abs_diff: f32,
    pub samples: Vec<GoldenSample>,
}

/// Options of `export`.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub run: PathBuf,
    pub checkpoint: Option<PathBuf>,
    pub out: PathBuf,
    /// `metrics.json` of the validation evaluation (thresholds and validation figures).
    pub val_metrics: PathBuf,
    /// `metrics.json` of an external evaluation, for the contract's data summary.
    pub external_metrics: Option<PathBuf>,
    /// Golden photos: `(source label, path)`.
    pub golden: Vec<(String, PathBuf)>,
}

fn text(s: &str) -> Text {
    let mut t = Text::new();
    for c in s.chars() {
        if t.push(c).is_err() {
            break;
        }
    }
    t
}

/// Named tensors of the loaded checkpoint.
pub fn weights(loaded: &Loaded) -> Result<Weights> {
    let mut w = Weights::new();
    for (name, t) in loaded.vs.variables() {
        let t = t
            .to_device(Device::Cpu)
            .to_kind(tch::Kind::Float)
            .contiguous();
        let shape = t.size();
        let data: Vec<f32> = t.flatten(0, -1).try_into()?;
        w.insert(name, (data, shape));
    }
    Ok(w)
}

/// The contract of a run, with thresholds and figures from its evaluations.
pub fn contract(
    loaded: &Loaded,
    val: &Metrics,
    val_ctx: &serde_json::Value,
    external: Option<(&Metrics, &serde_json::Value)>,
) -> Result<ModelContract> {
    let spec = &loaded.info.cache_spec;
    let mut c = ModelContract::default();
    c.input.width = spec.size as u32;
    c.input.height = spec.size as u32;
    c.clahe = spec.preprocess().clahe;
    c.resize = spec.interpolation;
    c.positive_class = match loaded.info.positive {
        Positive::AnyDr => PositiveClass::AnyDr,
        Positive::ReferableDr => PositiveClass::ReferableDr,
    };
    c.thresholds = Thresholds {
        max_accuracy: val.max_accuracy.threshold,
        target_sensitivity: val.target_sensitivity.threshold,
        sensitivity_target: val.sensitivity_target as f32,
        default: OperatingPoint::TargetSensitivity,
    };
    let cache = crate::data::cache::Cache::open(&loaded.info.config.cache)?;
    let count = |s| cache.manifest.splits.get(&s).map_or(0, |i| i.count as u32);
    c.data = DataSummary {
        dataset: text(
            &val_ctx["labels"]
                .as_str()
                .unwrap_or("")
                .replace("../shared/data/", ""),
        ),
        train_images: count(crate::data::split::Split::Train),
        val_images: count(crate::data::split::Split::Val),
        val_auc: Some(val.auc as f32),
        val_sensitivity: Some(val.target_sensitivity.sensitivity as f32),
        val_specificity: Some(val.target_sensitivity.specificity as f32),
        external_dataset: external.map(|(_, ctx)| {
            text(
                &ctx["labels"]
                    .as_str()
                    .unwrap_or("")
                    .replace("../shared/data/", ""),
            )
        }),
        external_auc: external.map(|(m, _)| m.auc as f32),
    };
    c.validate()
        .map_err(|e| anyhow::anyhow!("contract does not validate: {e}"))?;
    Ok(c)
}

/// Writes `bytes` to `path` via a temporary file in the same folder: a failure leaves no
/// half-written model at `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("model")
    ));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("moving {} to {}", tmp.display(), path.display()))
}

/// What the host computed for one golden photo.
struct HostViews {
    file_sha256: String,
    /// Preprocessed RGB8 model input.
    rgb: Vec<u8>,
    /// The TTA views, `views x 3 x H x W`.
    batch: Vec<f32>,
    /// tch probability of each view.
    probs: Vec<f32>,
}

/// Host (tch) TTA probabilities of one photo, as the device will build them.
fn host_views(
    loaded: &Loaded,
    contract: &ModelContract,
    ws: &mut Workspace,
    photo: &Path,
) -> Result<HostViews> {
    let bytes = std::fs::read(photo).with_context(|| format!("reading {}", photo.display()))?;
    let p = drscreen_core::decode::decode_rgb8(&bytes)
        .with_context(|| format!("decoding {}", photo.display()))?;
    let spec = contract.preprocess_spec();
    let rgb = ws.preprocess(&p.rgb, p.width, p.height, &spec)?;
    let n = contract.tta.len();
    let mut batch = vec![0f32; n * rgb.len()];
    write_views(
        &rgb,
        spec.out_width,
        spec.out_height,
        &contract.tta,
        &mut batch,
    )?;
    let x = Tensor::from_slice(&batch).view([
        n as i64,
        3,
        spec.out_height as i64,
        spec.out_width as i64,
    ]);
    let probs: Vec<f32> = tch::no_grad(|| loaded.net.probability(&x)).try_into()?;
    Ok(HostViews {
        file_sha256: format!("{:x}", Sha256::digest(&bytes)),
        rgb,
        batch,
        probs,
    })
}

/// Exports the float model and its golden file; returns the golden record.
pub fn export(o: &ExportOptions) -> Result<Golden> {
    ensure!(
        o.out.extension().is_some_and(|e| e == "onnx"),
        "--out {} must end in .onnx",
        o.out.display()
    );
    let loaded = load_run(&o.run, o.checkpoint.as_deref(), Device::Cpu)?;
    let (val, val_ctx) = read_json(&o.val_metrics)?;
    let ext = o.external_metrics.as_deref().map(read_json).transpose()?;
    let contract = contract(&loaded, &val, &val_ctx, ext.as_ref().map(|(m, c)| (m, c)))?;
    let json = serde_json::to_string(&contract)?;
    let proto = float_model(
        &loaded.info.arch,
        &weights(&loaded)?,
        vec![(CONTRACT_KEY.to_string(), json)],
    )?;
    let bytes = proto.encode_to_vec();

    // Check the file in tract before it is written.
    let n_views = contract.tta.len();
    let s = contract.input.width as usize;
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])?
        .with_input_fact(0, f32::fact([n_views, 3, s, s]).into())?
        .into_optimized()?
        .into_runnable()?;
    let mut ws = Workspace::default();
    let mut samples = Vec::new();
    let mut max_diff = 0f32;
    let mut inputs = Vec::new();
    for (label, path) in &o.golden {
        let HostViews {
            file_sha256,
            rgb,
            batch,
            probs: host,
        } = host_views(&loaded, &contract, &mut ws, path)?;
        inputs.extend_from_slice(&rgb);
        let input = tract_ndarray::Array4::from_shape_vec((n_views, 3, s, s), batch)?.into_tensor();
        let out = plan.run(tvec!(input.into()))?;
        let edge: Vec<f32> = out[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect();
        for (a, b) in host.iter().zip(&edge) {
            max_diff = max_diff.max((a - b).abs());
        }
        let agg = aggregate(&host)?;
        samples.push(GoldenSample {
            source: label.clone(),
            file_sha256,
            input_sha256: format!("{:x}", Sha256::digest(&rgb)),
            per_view: host,
            probability: agg.mean,
            decision: decide(agg.mean, contract.threshold())?,
        });
    }
    if max_diff > 1e-3 {
        bail!("tract and tch disagree by {max_diff} on the golden photos: the export is wrong, nothing written");
    }
    write_atomic(&o.out, &bytes)?;
    let golden = Golden {
        model: o.out.file_name().unwrap().to_string_lossy().into_owned(),
        model_sha256: format!("{:x}", Sha256::digest(&bytes)),
        contract_version: contract.contract_version,
        threshold: contract.threshold(),
        tract_max_abs_diff: max_diff,
        samples,
    };
    write_atomic(
        &golden_path(&o.out),
        serde_json::to_string_pretty(&golden)?.as_bytes(),
    )?;
    let npy = drscreen_core::npy::to_npy(&[golden.samples.len(), s, s, 3], &inputs)
        .context("golden inputs shape")?;
    write_atomic(&o.out.with_extension("golden-inputs.npy"), &npy)?;
    Ok(golden)
}

/// `models/NAME.onnx` -> `models/NAME.golden.json`.
pub fn golden_path(model: &Path) -> PathBuf {
    model.with_extension("golden.json")
}
