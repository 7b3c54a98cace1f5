//! `export`: a run's checkpoint -> ONNX with its contract, checked in tract against tch, and a
//! golden file of host outputs beside it.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use drscreen_core::contract::{DataSummary, OperatingPoint, Precision, Text, Thresholds};
use drscreen_core::{
    aggregate, decide, write_views, Decision, ModelContract, Workspace, CONTRACT_KEY,
};
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Tensor};
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use super::equalize::{equalize, Equalization, EqualizeReport};
use super::gptq::WeightRounding;
use super::onnx::{float_model, unit_key, Weights};
use super::qat::{
    analytic_bias_correction, distill, empirical_bias_correction, views_tensor, CorrectionReport,
    FloatParts, QatOptions, QatReport,
};
use super::quantize::{
    calibrate, calibration_indices, int8_model, stream_keys, BiasCorrection, Calibration,
    Exceptions, Form,
};
use crate::data::cache::Cache;
use crate::data::split::Split;
use crate::eval::evaluate::predict_tta;
use crate::eval::evaluate::{load_run, Loaded};
use crate::eval::metrics::roc_auc;
use crate::eval::metrics::Metrics;
use crate::eval::report::read_json;
use crate::model::arch::Arch;

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
    /// tract's per-view probabilities for the written model at export time (for an int8 model
    /// these differ from the host's float `per_view` by the quantization error).
    #[serde(default)]
    pub tract_per_view: Vec<f32>,
}

/// How the int8 model was made and how far it is from the float one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuantReport {
    pub form: Form,
    pub calibration: Calibration,
    /// Older golden files predate the choice: theirs was analytic.
    #[serde(default)]
    pub bias_correction: BiasCorrection,
    /// What the empirical bias correction did, when it ran.
    #[serde(default)]
    pub correction: Option<CorrectionReport>,
    pub calibration_photos: usize,
    /// Photos of the validation split the figures below come from (all TTA views each).
    pub val_photos: usize,
    /// |int8 in tract - float in tch| of the TTA probability: 99th percentile and max.
    pub p99_abs_diff: f32,
    pub max_abs_diff: f32,
    /// Share of photos with the same decision at the contract's threshold.
    pub decision_agreement: f64,
    pub auc_float: f64,
    pub auc_int8: f64,
    pub float_bytes: usize,
    pub int8_bytes: usize,
    /// Calibration, with the equalization and its second calibration when there is one.
    pub calibration_seconds: f64,
    /// Quantization-aware fine-tuning, when it was done (the int8 model is written from its
    /// weights, without bias correction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qat: Option<QatReport>,
    /// Convolutions written with float weights between uint8 activations (`--float-weights`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub float_weights: Vec<String>,
    /// Cross-layer equalization before calibration, when it was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equalization: Option<EqualizeReport>,
    /// How the convolutions' weights were rounded (files before GPTQ: nearest).
    #[serde(default = "nearest")]
    pub weight_rounding: WeightRounding,
    /// Whether every second calibration photo had a camera-like colour change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub calibration_jitter: bool,
    /// How far the calibration photos' indices were moved on ([`calibration_indices`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub calibration_offset: usize,
    /// Whether the residual streams' tensors are 16-bit ([`stream_keys`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wide_streams: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn nearest() -> WeightRounding {
    WeightRounding::Nearest
}

/// How far one set of probabilities (an int8 model's) is from another (the float model's), in
/// the terms the int8 bounds use.
#[derive(Debug, Clone, Copy)]
pub struct Gap {
    /// 99th percentile and max of |int8 - float|.
    pub p99: f32,
    pub max: f32,
    /// Share of photos on the same side of `threshold`.
    pub agreement: f64,
}

impl Gap {
    /// `float` and `int8` pair photo for photo (non-empty, same length).
    pub fn of(float: &[f32], int8: &[f32], threshold: f32) -> Self {
        let mut diffs: Vec<f32> = float.iter().zip(int8).map(|(a, b)| (a - b).abs()).collect();
        diffs.sort_by(f32::total_cmp);
        let p99 = diffs[((diffs.len() as f64 * 0.99).ceil() as usize).clamp(1, diffs.len()) - 1];
        let agree = float
            .iter()
            .zip(int8)
            .filter(|(a, b)| (**a >= threshold) == (**b >= threshold))
            .count();
        Gap {
            p99,
            max: *diffs.last().unwrap_or(&0.0),
            agreement: agree as f64 / float.len() as f64,
        }
    }

    /// Whether the p99 and agreement bounds hold.
    pub fn within_bounds(&self) -> bool {
        self.p99 <= INT8_P99_BOUND && self.agreement >= INT8_AGREEMENT_BOUND
    }
}

/// The bounds an int8 model must meet against the float one on the validation split.
pub const INT8_P99_BOUND: f32 = 0.03;
pub const INT8_AGREEMENT_BOUND: f64 = 0.98;
pub const INT8_AUC_DROP_BOUND: f64 = 0.01;
pub const INT8_SIZE_BOUND: f64 = 0.30;

impl QuantReport {
    /// What misses the bounds, if anything.
    pub fn misses(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.p99_abs_diff > INT8_P99_BOUND {
            v.push(format!(
                "p99 |diff| {:.4} > {INT8_P99_BOUND}",
                self.p99_abs_diff
            ));
        }
        if self.decision_agreement < INT8_AGREEMENT_BOUND {
            v.push(format!(
                "decision agreement {:.3} < {INT8_AGREEMENT_BOUND}",
                self.decision_agreement
            ));
        }
        if self.auc_float - self.auc_int8 > INT8_AUC_DROP_BOUND {
            v.push(format!(
                "AUC drop {:.4} > {INT8_AUC_DROP_BOUND}",
                self.auc_float - self.auc_int8
            ));
        }
        let ratio = self.int8_bytes as f64 / self.float_bytes as f64;
        if ratio > INT8_SIZE_BOUND {
            v.push(format!("size {ratio:.3} of float > {INT8_SIZE_BOUND}"));
        }
        v
    }
}

/// The golden file written beside a model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Golden {
    pub model: String,
    pub model_sha256: String,
    pub contract_version: u32,
    pub threshold: f32,
    #[serde(default)]
    pub precision: Precision,
    /// Host (tch, float) vs tract running this model on these samples: max |diff| of any view
    /// probability.
    pub tract_max_abs_diff: f32,
    /// For an int8 model: how it was made and its figures on the validation split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantReport>,
    pub samples: Vec<GoldenSample>,
}

/// `--quantize` options.
#[derive(Debug, Clone)]
pub struct QuantOptions {
    /// Training photos to calibrate on.
    pub calib: usize,
    /// Moves each calibration photo's index on by this much ([`calibration_indices`]).
    pub calib_offset: usize,
    pub calibration: Calibration,
    pub bias_correction: BiasCorrection,
    pub form: Form,
    /// Refuse to write a model that misses the int8 bounds.
    pub enforce_bounds: bool,
    /// Fine-tune the fake-int8 backbone against the float network before writing (see
    /// [`super::qat`]); `None`: post-training quantization with bias correction.
    pub qat: Option<QatOptions>,
    /// Convolutions (by name), whole blocks (`features.1`) or `depthwise` (every depthwise
    /// convolution) that keep float weights between their uint8 activations.
    pub float_weights: Vec<String>,
    /// Cross-layer equalization before calibration (see [`super::equalize`]) and its headroom.
    pub equalization: Equalization,
    pub equalize_headroom: f32,
    /// The residual streams' headroom (with [`Equalization::Streams`]).
    pub streams_headroom: f32,
    /// How the convolutions' int8 weights are rounded (GPTQ needs the empirical correction).
    pub weight_rounding: WeightRounding,
    /// Every second calibration photo goes in with a camera-like colour change
    /// ([`camera_jitter`]), so that ranges, roundings and biases are fitted on inputs that vary
    /// as other cameras' do.
    pub calib_jitter: bool,
    /// Hold the residual streams' tensors (every projection's output and every residual sum)
    /// at 16 bits, as two uint8 planes ([`stream_keys`]).
    pub wide_streams: bool,
}

/// Per-channel gain range and gamma range of [`camera_jitter`].
pub const JITTER_GAIN: (f32, f32) = (0.85, 1.15);
pub const JITTER_GAMMA: (f32, f32) = (0.8, 1.25);

/// A calibration photo (RGB8, interleaved) as another camera might give it: each channel scaled
/// by its own gain and the whole photo raised to one gamma, both drawn from `seed`, then rounded
/// and clipped to 0..=255.
pub fn camera_jitter(photo: &[u8], seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let gains: [f32; 3] = std::array::from_fn(|_| rng.gen_range(JITTER_GAIN.0..=JITTER_GAIN.1));
    let gamma: f32 = rng.gen_range(JITTER_GAMMA.0..=JITTER_GAMMA.1);
    // One table per channel: 256 entries instead of a pow per value.
    let lut: [[u8; 256]; 3] = std::array::from_fn(|c| {
        std::array::from_fn(|v| {
            let x = (v as f32 / 255.0).powf(gamma) * gains[c];
            (x * 255.0).round().clamp(0.0, 255.0) as u8
        })
    });
    photo
        .iter()
        .enumerate()
        .map(|(i, &v)| lut[i % 3][v as usize])
        .collect()
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
    /// Write the static int8 model instead of the float one.
    pub quantize: Option<QuantOptions>,
    /// Preprocessed inputs of the first this-many golden photos go into `NAME.golden-inputs.npy`
    /// (for the onnxruntime check script).
    pub npy_samples: usize,
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
    var_weights(&loaded.vs)
}

/// Named tensors of a var store.
pub fn var_weights(vs: &tch::nn::VarStore) -> Result<Weights> {
    let mut w = Weights::new();
    for (name, t) in vs.variables() {
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
    external: Option<(&Metrics, &serde_json::Value)>,
) -> Result<ModelContract> {
    let spec = &loaded.info.cache_spec;
    let mut c = ModelContract::default();
    c.input.width = spec.size as u32;
    c.input.height = spec.size as u32;
    c.clahe = spec.preprocess().clahe;
    c.resize = spec.interpolation;
    c.positive_class = loaded.info.positive.into();
    c.thresholds = Thresholds {
        max_accuracy: val.max_accuracy.threshold,
        target_sensitivity: val.target_sensitivity.threshold,
        sensitivity_target: val.sensitivity_target as f32,
        default: OperatingPoint::TargetSensitivity,
        borderline: val.threshold_ci.map(|(lo, hi)| [lo, hi]),
    };
    if let Some(fov) = spec.fov {
        c.contract_version = drscreen_core::CONTRACT_VERSION;
        c.fov = Some(fov);
    }
    let cache = crate::data::cache::Cache::open(&loaded.info.config.cache)?;
    let count = |s| cache.manifest.splits.get(&s).map_or(0, |i| i.count as u32);
    let names = |ctx: &serde_json::Value| {
        // "idrid (CC BY 4.0) + aptos2019 (...)" -> "idrid + aptos2019"
        ctx["sources"]
            .as_str()
            .unwrap_or("")
            .split(" + ")
            .map(|s| s.split(" (").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    let mut sources = heapless::Vec::new();
    for s in &cache.manifest.sources {
        let n = |split| s.splits.get(&split).map_or(0, |i| i.count as u32);
        let entry = drscreen_core::contract::DataSource {
            name: heapless::String::try_from(s.source.name.as_str())
                .map_err(|_| anyhow::anyhow!("source name `{}` is over 24 bytes", s.source.name))?,
            licence: text(&s.source.licence),
            open_licence: s.source.open_licence,
            train_images: n(crate::data::split::Split::Train),
            val_images: n(crate::data::split::Split::Val),
        };
        sources.push(entry).map_err(|_| {
            anyhow::anyhow!(
                "a contract lists at most {} sources",
                drscreen_core::contract::MAX_SOURCES
            )
        })?;
    }
    c.data = DataSummary {
        dataset: text(
            &cache
                .manifest
                .sources
                .iter()
                .map(|s| s.source.name.as_str())
                .collect::<Vec<_>>()
                .join(" + "),
        ),
        sources,
        train_images: count(crate::data::split::Split::Train),
        val_images: count(crate::data::split::Split::Val),
        val_auc: Some(val.auc as f32),
        val_sensitivity: Some(val.target_sensitivity.sensitivity as f32),
        val_specificity: Some(val.target_sensitivity.specificity as f32),
        external_dataset: external.map(|(_, ctx)| text(&names(ctx))),
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

/// An optimised tract plan.
type Plan = std::sync::Arc<TypedRunnableModel>;

/// Makes the contract `c` the model's only metadata entry.
fn set_contract(proto: &mut ModelProto, c: &ModelContract) -> Result<()> {
    proto.metadata_props = vec![tract_onnx::pb::StringStringEntryProto {
        key: CONTRACT_KEY.to_string(),
        value: serde_json::to_string(c)?,
    }];
    Ok(())
}

/// tract's plan for one `size` px view: the device runs each TTA view as its own call of a batch-1
/// plan (tract 0.23 runs a batch of views 9-13x slower; see edge-runtime's `engine`), so the
/// export checks and times the file the same way.
fn tract_plan(bytes: &[u8], size: usize) -> Result<Plan> {
    edge_runtime::engine::avoid_tract_amx_kernels();
    tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])?
        .with_input_fact(0, f32::fact([1, 3, size, size]).into())?
        .into_optimized()?
        .into_runnable()
}

/// Median tract latency of all `views` of one screening, one call each on one thread (after a
/// warm-up run), milliseconds.
fn time_plan(plan: &Plan, views: usize, size: usize) -> Result<f32> {
    let batch: Vec<f32> = (0..views * 3 * size * size)
        .map(|i| (i % 251) as f32 / 251.0)
        .collect();
    run_plan(plan, &batch, size)?;
    let mut t: Vec<f32> = (0..5)
        .map(|_| {
            let t0 = std::time::Instant::now();
            run_plan(plan, &batch, size).map(|_| t0.elapsed().as_secs_f32() * 1e3)
        })
        .collect::<Result<_>>()?;
    t.sort_by(f32::total_cmp);
    Ok(t[2])
}

/// One probability per view of `batch` (`views x 3 x size x size`), one tract call per view.
fn run_plan(plan: &Plan, batch: &[f32], size: usize) -> Result<Vec<f32>> {
    let mut probs = Vec::new();
    for view in batch.chunks_exact(3 * size * size) {
        let input = tract_onnx::prelude::Tensor::from_shape(&[1, 3, size, size], view)?;
        let out = plan.run(tvec!(input.into()))?;
        probs.extend(out[0].to_plain_array_view::<f32>()?.iter().copied());
    }
    Ok(probs)
}

/// The convolutions named by `--float-weights`: a convolution's name, a block's name for all of
/// its convolutions, or `depthwise` for every depthwise (grouped) convolution. The stem is
/// refused here, before minutes of calibration: it reads the float photo, not a uint8 tensor.
fn float_weight_units(arch: &Arch, names: &[String]) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    let stem = arch.units().next().map(unit_key);
    for name in names {
        let before = out.len();
        for b in &arch.blocks {
            for u in &b.units {
                let depthwise = name == "depthwise" && u.groups > 1;
                if depthwise || &b.name == name || &unit_key(u) == name {
                    ensure!(
                        Some(unit_key(u)) != stem,
                        "--float-weights {name}: {} is the first convolution, which reads the photo and cannot keep float weights",
                        u.conv
                    );
                    out.insert(unit_key(u));
                }
            }
        }
        ensure!(
            out.len() > before,
            "--float-weights {name}: no such block or convolution (`depthwise`, or blocks {})",
            arch.blocks
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(out)
}

/// Calibrates on the run's training photos, builds the int8 model and measures it against the
/// float network (tch) on the validation split.
fn quantize(
    loaded: &Loaded,
    contract: &ModelContract,
    w: &Weights,
    q: &QuantOptions,
    float_bytes: usize,
) -> Result<(ModelProto, QuantReport, Plan)> {
    // Options that do not go together are refused before minutes of calibration.
    ensure!(
        q.weight_rounding == WeightRounding::Nearest
            || q.bias_correction == BiasCorrection::Empirical,
        "--weight-rounding {:?} runs inside the empirical bias correction: use --bias-correction empirical or --weight-rounding nearest",
        q.weight_rounding
    );
    let float_weights = float_weight_units(&loaded.info.arch, &q.float_weights)?;
    ensure!(
        q.qat.is_none() || float_weights.is_empty(),
        "--float-weights with --qat-epochs: the fine-tuning does not simulate float weights yet; use one or the other"
    );
    ensure!(
        q.qat.is_none() || !q.wide_streams,
        "--wide-streams with --qat-epochs: the fine-tuning does not simulate 16-bit tensors yet; use one or the other"
    );
    ensure!(
        !q.wide_streams || q.form.is_convinteger(),
        "--wide-streams is written in the convinteger forms only, not --form {:?}",
        q.form
    );
    let exceptions = Exceptions {
        float_weights,
        wide: if q.wide_streams {
            stream_keys(&loaded.info.arch)
        } else {
            HashSet::new()
        },
    };
    let cache = Cache::open(&loaded.info.config.cache)?;
    let train = cache.split(Split::Train)?;
    let idx = calibration_indices(train.len(), q.calib, q.calib_offset)?;
    let jittered: Vec<Vec<u8>> = if q.calib_jitter {
        idx.iter()
            .enumerate()
            .filter(|(k, _)| k % 2 == 1)
            .map(|(k, &i)| camera_jitter(train.image(i), k as u64))
            .collect()
    } else {
        Vec::new()
    };
    let photos: Vec<&[u8]> = idx
        .iter()
        .enumerate()
        .map(|(k, &i)| match (q.calib_jitter, k % 2) {
            (true, 1) => jittered[k / 2].as_slice(),
            _ => train.image(i),
        })
        .collect();
    let t0 = std::time::Instant::now();
    eprintln!(
        "int8: calibrating the activation ranges on {} training photos x {} views{} (minutes on a small CPU)",
        photos.len(),
        contract.tta.len(),
        match q.equalization {
            Equalization::None => "",
            _ => ", twice: before and after cross-layer equalization",
        }
    );
    let mut cal = calibrate(&loaded.info.arch, w, &photos, &contract.tta, q.calibration)?;
    // The equalized weights compute what `w` does; their ranges are calibrated again.
    let (equalized, equalization) = match q.equalization {
        Equalization::None => (None, None),
        which => {
            let (e, report) = equalize(
                &loaded.info.arch,
                w,
                &cal,
                which,
                q.equalize_headroom,
                q.streams_headroom,
            )?;
            cal = calibrate(&loaded.info.arch, &e, &photos, &contract.tta, q.calibration)?;
            (Some(e), Some(report))
        }
    };
    let w = equalized.as_ref().unwrap_or(w);
    let calibration_seconds = t0.elapsed().as_secs_f64();
    let arch = &loaded.info.arch;
    // The checkpoint the int8 model is written from, and whether it still needs the analytic
    // bias correction.
    eprintln!("int8: calibrated in {calibration_seconds:.0} s; rounding the weights and correcting the biases layer by layer");
    let (start, analytic, correction) = match q.bias_correction {
        BiasCorrection::Analytic => (w.clone(), true, None),
        BiasCorrection::Empirical => {
            let xs = views_tensor(&photos, arch.input_size, &contract.tta)?;
            let parts = FloatParts {
                weights: exceptions.float_weights.clone(),
                wide: exceptions.wide.clone(),
                ..FloatParts::written(q.form)
            };
            let (c, report) =
                empirical_bias_correction(arch, w, &cal, &xs, &parts, q.weight_rounding)?;
            (c, false, Some(report))
        }
    };
    let (proto, qat) = match &q.qat {
        None => (
            int8_model(arch, &start, &cal, q.form, analytic, &exceptions, vec![])?,
            None,
        ),
        Some(o) => {
            let aug = o.augment.then_some(&loaded.info.config.augment);
            let corrected;
            let from = if analytic {
                corrected = analytic_bias_correction(arch, &start, &cal)?;
                &corrected
            } else {
                &start
            };
            let (tuned, report) = distill(
                &loaded.net,
                from,
                &cal,
                &train,
                &contract.tta,
                aug,
                o,
                q.form,
            )?;
            let proto = int8_model(arch, &tuned, &cal, q.form, false, &exceptions, vec![])?;
            (proto, Some(report))
        }
    };
    let bytes = proto.encode_to_vec();

    let val = cache.split(Split::Val)?;
    ensure!(
        !val.is_empty(),
        "the cache has no validation photos to check the int8 model on"
    );
    let host = predict_tta(&loaded.net, &val, &contract.tta, Device::Cpu, 4)?;
    let (n, s) = (contract.tta.len(), val.size);
    let plan = tract_plan(&bytes, s)?;
    let mut batch = vec![0f32; n * 3 * s * s];
    let mut int8 = Vec::with_capacity(val.len());
    for i in 0..val.len() {
        write_views(val.image(i), s, s, &contract.tta, &mut batch)?;
        let p = run_plan(&plan, &batch, s)?;
        int8.push(aggregate(&p)?.mean);
    }
    let float: Vec<f32> = host.iter().map(|p| p.probability).collect();
    let gap = Gap::of(&float, &int8, contract.threshold());
    Ok((
        proto,
        QuantReport {
            form: q.form,
            calibration: q.calibration,
            bias_correction: q.bias_correction,
            correction,
            calibration_photos: photos.len(),
            val_photos: val.len(),
            p99_abs_diff: gap.p99,
            max_abs_diff: gap.max,
            decision_agreement: gap.agreement,
            auc_float: roc_auc(&float, &val.labels).unwrap_or(f64::NAN),
            auc_int8: roc_auc(&int8, &val.labels).unwrap_or(f64::NAN),
            float_bytes,
            int8_bytes: bytes.len(),
            calibration_seconds,
            qat,
            float_weights: {
                let mut v: Vec<String> = exceptions.float_weights.into_iter().collect();
                v.sort();
                v
            },
            wide_streams: q.wide_streams,
            equalization,
            weight_rounding: q.weight_rounding,
            calibration_jitter: q.calib_jitter,
            calibration_offset: q.calib_offset,
        },
        plan,
    ))
}

/// Exports the model (float, or int8 with `quantize`) and its golden file; returns the golden
/// record. Nothing is written unless every check passes.
pub fn export(o: &ExportOptions) -> Result<Golden> {
    ensure!(
        o.out.extension().is_some_and(|e| e == "onnx"),
        "--out {} must end in .onnx",
        o.out.display()
    );
    let loaded = load_run(&o.run, o.checkpoint.as_deref(), Device::Cpu)?;
    let (val, _) = read_json(&o.val_metrics)?;
    let ext = o.external_metrics.as_deref().map(read_json).transpose()?;
    let mut contract = contract(&loaded, &val, ext.as_ref().map(|(m, c)| (m, c)))?;
    let w = weights(&loaded)?;
    let n_views = contract.tta.len();
    let s = contract.input.width as usize;
    // Built without metadata: the contract goes in last, once the latencies are known.
    let float_proto = float_model(&loaded.info.arch, &w, vec![])?;
    let float_bytes = float_proto.encode_to_vec();
    let float_plan = tract_plan(&float_bytes, s)?;
    let float_ms = time_plan(&float_plan, n_views, s)?;
    let (int8, quantization) = match &o.quantize {
        None => (None, None),
        Some(q) => {
            let (proto, report, plan) = quantize(&loaded, &contract, &w, q, float_bytes.len())?;
            let misses = report.misses();
            if q.enforce_bounds && !misses.is_empty() {
                bail!(
                    "the int8 model misses its bounds against the float model on {} validation photos: {}; nothing written (try another --calibration, more --calib photos)",
                    report.val_photos,
                    misses.join(", ")
                );
            }
            (Some((proto, plan)), Some(report))
        }
    };
    // Which format a device loads by default: the faster one in tract, measured here.
    contract.deployment.tract_ms_float = Some(float_ms);
    if let Some((_, p)) = &int8 {
        let int8_ms = time_plan(p, n_views, s)?;
        contract.deployment.tract_ms_int8 = Some(int8_ms);
        contract.deployment.precision = Precision::Int8;
        contract.deployment.device_default = if int8_ms < float_ms {
            Precision::Int8
        } else {
            Precision::Float32
        };
    }
    let (mut proto, plan) = match int8 {
        Some((proto, plan)) => (proto, Some(plan)),
        None => (float_proto, None),
    };
    set_contract(&mut proto, &contract)?;
    let bytes = proto.encode_to_vec();

    // Check the files in tract before anything is written: the float network must match tch.
    let mut ws = Workspace::default();
    let mut samples = Vec::new();
    let (mut float_diff, mut model_diff) = (0f32, 0f32);
    let mut inputs = Vec::new();
    for (k, (label, path)) in o.golden.iter().enumerate() {
        let HostViews {
            file_sha256,
            rgb,
            batch,
            probs: host,
        } = host_views(&loaded, &contract, &mut ws, path)?;
        if k < o.npy_samples {
            inputs.extend_from_slice(&rgb);
        }
        let edge_float = run_plan(&float_plan, &batch, s)?;
        let edge = match &plan {
            None => edge_float.clone(),
            Some(p) => run_plan(p, &batch, s)?,
        };
        for ((a, b), c) in host.iter().zip(&edge_float).zip(&edge) {
            float_diff = float_diff.max((a - b).abs());
            model_diff = model_diff.max((a - c).abs());
        }
        let agg = aggregate(&host)?;
        samples.push(GoldenSample {
            source: label.clone(),
            file_sha256,
            input_sha256: format!("{:x}", Sha256::digest(&rgb)),
            per_view: host,
            probability: agg.mean,
            decision: decide(agg.mean, contract.threshold())?,
            tract_per_view: edge,
        });
    }
    if float_diff > 1e-3 {
        bail!("tract and tch disagree by {float_diff} on the golden photos: the export is wrong, nothing written");
    }
    write_atomic(&o.out, &bytes)?;
    let golden = Golden {
        model: o.out.file_name().unwrap().to_string_lossy().into_owned(),
        model_sha256: format!("{:x}", Sha256::digest(&bytes)),
        contract_version: contract.contract_version,
        threshold: contract.threshold(),
        precision: contract.deployment.precision,
        tract_max_abs_diff: model_diff,
        quantization,
        samples,
    };
    write_atomic(
        &golden_path(&o.out),
        serde_json::to_string_pretty(&golden)?.as_bytes(),
    )?;
    let kept = o.npy_samples.min(golden.samples.len());
    let npy =
        drscreen_core::npy::to_npy(&[kept, s, s, 3], &inputs).context("golden inputs shape")?;
    write_atomic(&o.out.with_extension("golden-inputs.npy"), &npy)?;
    Ok(golden)
}

/// `models/NAME.onnx` -> `models/NAME.golden.json`.
pub fn golden_path(model: &Path) -> PathBuf {
    model.with_extension("golden.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_jitter_is_seeded_and_moves_each_channel_within_its_bounds() {
        // A grey ramp: every value in every channel.
        let photo: Vec<u8> = (0..=255u8).flat_map(|v| [v, v, v]).collect();
        assert_eq!(camera_jitter(&photo, 7), camera_jitter(&photo, 7));
        assert_ne!(camera_jitter(&photo, 7), camera_jitter(&photo, 8));
        let j = camera_jitter(&photo, 7);
        assert_eq!(j.len(), photo.len());
        // Black stays black; each channel is monotone and within the extreme gain/gamma maps.
        assert_eq!(&j[..3], &[0, 0, 0]);
        let mut moved = [false; 3];
        for (c, moved_c) in moved.iter_mut().enumerate() {
            let ch: Vec<u8> = j.iter().skip(c).step_by(3).copied().collect();
            assert!(
                ch.windows(2).all(|w| w[0] <= w[1]),
                "channel {c} not monotone"
            );
            for (v, &y) in ch.iter().enumerate() {
                let x = v as f32 / 255.0;
                let lo = (x.powf(JITTER_GAMMA.1) * JITTER_GAIN.0 * 255.0).floor();
                let hi = (x.powf(JITTER_GAMMA.0) * JITTER_GAIN.1 * 255.0)
                    .ceil()
                    .min(255.0);
                assert!((lo..=hi).contains(&(y as f32)), "channel {c}: {v} -> {y}");
                *moved_c |= y as usize != v;
            }
        }
        assert_eq!(moved, [true; 3]);
        // The channels get different gains.
        assert!(j[3 * 128] != j[3 * 128 + 1] || j[3 * 128 + 1] != j[3 * 128 + 2]);
    }

    #[test]
    fn float_weights_name_units_blocks_or_every_depthwise_convolution() {
        let arch = Arch::mobilenet_v2(1.0, 96);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let dw = float_weight_units(&arch, &names(&["depthwise"])).unwrap();
        // MobileNetV2: one 3x3 depthwise convolution in each of the 17 inverted-residual blocks.
        assert_eq!(dw.len(), 17);
        assert!(arch
            .units()
            .all(|u| dw.contains(&unit_key(u)) == (u.groups > 1)));
        let block = float_weight_units(&arch, &names(&["features.1"])).unwrap();
        assert_eq!(
            block,
            HashSet::from(["features.1.conv.0.0".into(), "features.1.conv.1".into()])
        );
        let err = float_weight_units(&arch, &names(&["features.99"])).unwrap_err();
        assert!(err.to_string().contains("features.99"), "{err}");
        // The stem, by its block or its own name, is refused before any calibration.
        for stem in ["features.0", "features.0.0"] {
            let err = float_weight_units(&arch, &names(&["features.1", stem])).unwrap_err();
            assert!(err.to_string().contains("first convolution"), "{err}");
        }
    }
}
