//! `host-trainer export CHECKPOINT --out models/NAME.onnx [--quantize --calib N] [--val-metrics F]
//! [--external-metrics F] [--golden PHOTO ...]`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use host_trainer::export::equalize::Equalization;
use host_trainer::export::gptq::WeightRounding;
use host_trainer::export::qat::{QatLoss, QatOptions};
use host_trainer::export::quantize::{BiasCorrection, Calibration, Form};
use host_trainer::export::run::{export, golden_path, ExportOptions, QuantOptions};
use host_trainer::paths::data_dir;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Checkpoint (`best.safetensors`) inside a run folder from `host-trainer train`.
    pub checkpoint: PathBuf,
    /// Model file to write (`.onnx`); the golden file goes beside it.
    #[arg(long)]
    pub out: PathBuf,
    /// Validation `metrics.json` (thresholds, figures); default RUN/eval-val/metrics.json.
    #[arg(long)]
    pub val_metrics: Option<PathBuf>,
    /// External-set `metrics.json` for the contract's data summary.
    #[arg(long)]
    pub external_metrics: Option<PathBuf>,
    /// Golden photos (default: 64 real photos from the data folder and models/golden/*).
    #[arg(long)]
    pub golden: Vec<PathBuf>,
    /// Write a static int8 model (calibrated on training photos from the run's cache).
    #[arg(long)]
    pub quantize: bool,
    /// Training photos to calibrate on (with --quantize).
    #[arg(long, default_value_t = 100, requires = "quantize")]
    pub calib: usize,
    /// Move each calibration photo's index on by this much (0, 1, 2, ...: other photos from the
    /// same spread, to measure how much the int8 file depends on which photos calibrated it).
    #[arg(long, default_value_t = 0, requires = "quantize")]
    pub calib_offset: usize,
    /// How activation ranges are chosen (with --quantize).
    #[arg(long, value_enum, default_value_t = Calibration::MinMax, requires = "quantize")]
    pub calibration: Calibration,
    /// How the int8 biases take out the quantization's mean error (with --quantize): empirical
    /// measures it on the calibration photos convolution by convolution, with everything
    /// upstream quantized; analytic corrects each convolution's own weight rounding only.
    #[arg(long, value_enum, default_value_t = BiasCorrection::Empirical, requires = "quantize")]
    pub bias_correction: BiasCorrection,
    /// ONNX form of the int8 convolutions (with --quantize): convinteger computes to the same
    /// bits in tract and onnxruntime, qlinearconv does not; convinteger-float-sums also leaves
    /// each residual projection unquantized for its sum (see quantize.rs).
    #[arg(long, value_enum, default_value_t = Form::ConvInteger, requires = "quantize")]
    pub form: Form,
    /// Write the int8 model even if it misses its bounds against the float model on the
    /// validation split (p99 |diff| <= 0.03, agreement >= 98 %, AUC drop <= 0.01, size <= 30 %).
    #[arg(long, requires = "quantize")]
    pub allow_out_of_bounds: bool,
    /// Quantization-aware fine-tuning before the int8 model is written (with --quantize): passes
    /// over the training photos, distilling the float network into its fake-int8 backbone.
    /// 0: post-training quantization with bias correction only.
    #[arg(long, default_value_t = 0, requires = "quantize")]
    pub qat_epochs: usize,
    /// Adam learning rate of the fine-tuning.
    #[arg(long, default_value_t = QatOptions::default().lr, requires = "quantize")]
    pub qat_lr: f64,
    /// Fine-tune only the folded biases (with --qat-epochs).
    #[arg(long, requires = "quantize")]
    pub qat_biases_only: bool,
    /// Feed the fine-tuning the TTA views as they are, without the run's training augmentation.
    #[arg(long, requires = "quantize")]
    pub qat_no_augment: bool,
    /// What the fine-tuning matches per view: the probability (the bounds' figure) or the logit
    /// (every photo teaches, not only those near 0.5).
    #[arg(long, value_enum, default_value_t = QatOptions::default().loss, requires = "quantize")]
    pub qat_loss: QatLoss,
    /// Keep float weights (between uint8 activations) for this convolution or block, e.g.
    /// `features.1`, or `depthwise` for every depthwise convolution (with --quantize; repeat for
    /// more). `quant_sensitivity` says which matter.
    #[arg(long, requires = "quantize")]
    pub float_weights: Vec<String>,
    /// Cross-layer equalization before calibration (with --quantize): scales small output
    /// channels of ReLU6 convolutions (all) and of the residual streams (streams) up and the
    /// convolutions that read them down, so that they use more of the shared uint8 activation
    /// range (see equalize.rs).
    #[arg(long, value_enum, default_value_t = Equalization::All, requires = "quantize")]
    pub equalization: Equalization,
    /// A scaled channel's largest calibration value ends at most at the tensor's largest over
    /// this factor (with --equalization; in a residual stream, each of the stream's tensors'):
    /// room for photos brighter than the calibration set's. Streams files before 2026-12-04 had
    /// none in their streams (1).
    #[arg(long, default_value_t = 2.0, requires = "quantize")]
    pub equalize_headroom: f32,
    /// The headroom of the residual streams alone (with --equalization streams), where it
    /// should differ from the ReLU6 pairs': a pair's channel that passes 6 is clamped in float
    /// too, a stream's only by the int8 range. Default: --equalize-headroom.
    #[arg(long, requires = "quantize")]
    pub streams_headroom: Option<f32>,
    /// How the convolutions' int8 weights are rounded (with --quantize): gptq rounds each output
    /// row against the calibration photos' inputs so that the convolution's output error is
    /// smallest; gptq-compensated first fits the weights to the float network's outputs from
    /// the int8 model's inputs; gptq-compensated-search also tries steps down to half of
    /// max |w| / 127 per row and keeps the one with the least output error (all three need
    /// --bias-correction empirical); nearest rounds each weight on its own.
    #[arg(long, value_enum, default_value_t = WeightRounding::GptqCompensated, requires = "quantize")]
    pub weight_rounding: WeightRounding,
    /// Give every second calibration photo a camera-like colour change (per-channel gains
    /// 0.85-1.15, gamma 0.8-1.25), so that the int8 model is fitted on inputs that vary as other
    /// cameras' do (with --quantize).
    #[arg(long, requires = "quantize")]
    pub calib_jitter: bool,
    /// Hold the residual streams' tensors (every projection's output and every residual sum,
    /// the network's signed tensors) at 16 bits, as two uint8 planes that the 1x1 convolutions
    /// reading them run as one ConvInteger each (with --quantize, convinteger forms).
    #[arg(long, requires = "quantize")]
    pub wide_streams: bool,
    /// Golden photos whose preprocessed inputs go into NAME.golden-inputs.npy.
    #[arg(long, default_value_t = 16)]
    pub npy_samples: usize,
}

/// Real golden photos taken from each data set.
const REAL_PER_SET: usize = 32;

/// The default golden photos: real IDRiD and SRahim photos (by `data:` label) and the synthetic
/// ones committed under `models/golden/`.
fn default_golden(repo: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut v = Vec::new();
    // 32 IDRiD and 32 SRahim photos, evenly spaced through each folder's sorted listing.
    for set in ["idrid", "srahim"] {
        let dir = data_dir().join(set).join("images");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".jpg") || n.ends_with(".jpeg") || n.ends_with(".png"))
            .collect();
        names.sort();
        anyhow::ensure!(
            names.len() >= REAL_PER_SET,
            "{} has {} photos, the golden set needs {REAL_PER_SET}",
            dir.display(),
            names.len()
        );
        for i in 0..REAL_PER_SET {
            let name = &names[i * names.len() / REAL_PER_SET];
            v.push((format!("data:{set}/images/{name}"), dir.join(name)));
        }
    }
    let dir = repo.join("models/golden");
    let mut synth: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "jpeg" || e == "jpg" || e == "png")
        })
        .collect();
    synth.sort();
    for p in synth {
        v.push((
            format!("models/golden/{}", p.file_name().unwrap().to_string_lossy()),
            p,
        ));
    }
    Ok(v)
}

pub fn run(a: &Args) -> Result<()> {
    let run = a
        .checkpoint
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let golden = if a.golden.is_empty() {
        default_golden(&repo)?
    } else {
        a.golden
            .iter()
            .map(|p| (p.display().to_string(), p.clone()))
            .collect()
    };
    let g = export(&ExportOptions {
        run: run.clone(),
        checkpoint: Some(a.checkpoint.clone()),
        out: a.out.clone(),
        val_metrics: a
            .val_metrics
            .clone()
            .unwrap_or_else(|| run.join("eval-val/metrics.json")),
        external_metrics: a.external_metrics.clone(),
        golden,
        quantize: a.quantize.then_some(QuantOptions {
            calib: a.calib,
            calib_offset: a.calib_offset,
            calibration: a.calibration,
            bias_correction: a.bias_correction,
            form: a.form,
            enforce_bounds: !a.allow_out_of_bounds,
            qat: (a.qat_epochs > 0).then_some(QatOptions {
                epochs: a.qat_epochs,
                lr: a.qat_lr,
                biases_only: a.qat_biases_only,
                augment: !a.qat_no_augment,
                loss: a.qat_loss,
                ..QatOptions::default()
            }),
            float_weights: a.float_weights.clone(),
            equalization: a.equalization,
            equalize_headroom: a.equalize_headroom,
            streams_headroom: a.streams_headroom.unwrap_or(a.equalize_headroom),
            weight_rounding: a.weight_rounding,
            calib_jitter: a.calib_jitter,
            wide_streams: a.wide_streams,
        }),
        npy_samples: a.npy_samples,
    })?;
    println!(
        "wrote {} (sha256 {}), golden {} ({} photos, tract vs tch max |diff| of any view {:.2e})",
        a.out.display(),
        &g.model_sha256[..16],
        golden_path(&a.out).display(),
        g.samples.len(),
        g.tract_max_abs_diff
    );
    if let Some(q) = &g.quantization {
        println!(
            "int8 ({:?}, {:?} on {} photos, {:.0} s) vs float on {} validation photos: p99 |diff| {:.4}, max {:.4}, decisions agree {:.1} %, AUC {:.4} -> {:.4}, size {} -> {} bytes ({:.1} %)",
            q.form, q.calibration, q.calibration_photos, q.calibration_seconds, q.val_photos,
            q.p99_abs_diff, q.max_abs_diff, 100.0 * q.decision_agreement, q.auc_float, q.auc_int8,
            q.float_bytes, q.int8_bytes, 100.0 * q.int8_bytes as f64 / q.float_bytes as f64
        );
        if let Some(t) = &q.qat {
            println!(
                "quantization-aware fine-tuning: {} epochs over {} photos, lr {}, {:?} MSE {:.2e} -> {:.2e}, {:.0} s",
                t.epochs, t.photos, t.lr, t.loss, t.first_epoch_mse, t.last_epoch_mse, t.seconds
            );
        }
    }
    Ok(())
}
