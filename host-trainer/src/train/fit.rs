//! The training loop: oversampled batches, device augmentation, focal loss, Adam, per-epoch
//! validation, ReduceLROnPlateau, early stopping, best/last checkpoints and resume.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::augment::{augment, training_device};
use super::camera::augment_camera;
use super::config::{Monitor, Schedule, TrainConfig};
use super::loss::focal_loss;
use crate::data::cache::{Cache, SplitData};
use crate::data::split::Split;
use crate::model::{load_backbone, Arch, Net};

pub const BEST: &str = "best.safetensors";
pub const LAST: &str = "last.safetensors";
pub const STATE: &str = "state.json";
pub const METRICS: &str = "metrics.jsonl";
pub const RUN: &str = "run.json";

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_auc: f64,
    /// Validation AUC of each source (absent where a source's val part has one class).
    #[serde(default)]
    pub val_auc_by_source: std::collections::BTreeMap<String, f64>,
    pub lr: f64,
    pub train_images_per_sec: f64,
    pub seconds: f64,
    pub best: bool,
}

/// Deterministic mode for the life of a run: one libtorch intra-op thread and no cuDNN
/// autotuning; the thread count is restored when the run ends.
struct OneThread(i32);

impl OneThread {
    fn new() -> Self {
        let before = tch::get_num_threads();
        tch::set_num_threads(1);
        tch::Cuda::cudnn_set_benchmark(false);
        OneThread(before)
    }
}

impl Drop for OneThread {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}

/// Where training stands after an epoch (for resume).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub epochs_done: usize,
    pub best_score: f64,
    pub best_epoch: usize,
    pub lr: f64,
    pub since_best: usize,
    pub plateau_wait: usize,
    pub plateau_best: f64,
    pub stopped_early: bool,
}

/// What a run folder says about its model (read by evaluate and export).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub arch: Arch,
    pub config: TrainConfig,
    pub cache_spec: crate::data::cache::CacheSpec,
    pub positive: crate::data::labels::Positive,
    pub device: String,
}

/// A run folder's file.
pub fn run_file(out: &Path, name: &str) -> PathBuf {
    out.join(name)
}

/// RGB8 photos -> `[N, 3, H, W]` f32 in [0, 1] on `device`.
pub fn batch_tensor(data: &SplitData, idx: &[usize], device: Device) -> Tensor {
    let s = data.size as i64;
    let mut bytes = Vec::with_capacity(idx.len() * data.image(0).len());
    for &i in idx {
        bytes.extend_from_slice(data.image(i));
    }
    Tensor::from_slice(&bytes)
        .view([idx.len() as i64, s, s, 3])
        .to_device(device)
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
        / 255.0
}

/// A training batch: with camera augmentation (field-of-view caches), each photo's disc square
/// is augmented before the core's CLAHE, as a camera would change it; else the cached input.
fn train_batch(
    data: &SplitData,
    idx: &[usize],
    cfg: &super::camera::CameraConfig,
    seed: u64,
    spec: &drscreen_core::PreprocessSpec,
    device: Device,
) -> Result<Tensor> {
    if cfg.is_off() {
        return Ok(batch_tensor(data, idx, device));
    }
    use rayon::prelude::*;
    let s = data.size;
    let photos: Vec<Vec<u8>> = idx
        .par_iter()
        .enumerate()
        .map_init(drscreen_core::Workspace::default, |ws, (k, &i)| {
            let raw = data.raw_image(i).context(
                "camera augmentation needs a field-of-view cache (prepare without --whole-frame)",
            )?;
            let cam = augment_camera(raw, s, cfg, seed.wrapping_add(k as u64));
            ws.equalise(&cam, s, s, &spec.clahe)
                .map_err(|e| anyhow::anyhow!("CLAHE of an augmented photo: {e}"))
        })
        .collect::<Result<_>>()?;
    Ok(Tensor::from_slice(&photos.concat())
        .view([idx.len() as i64, s as i64, s as i64, 3])
        .to_device(device)
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
        / 255.0)
}

/// Identity-view probabilities of a whole split (eval mode), in batches.
pub fn predict(net: &Net, data: &SplitData, device: Device, batch: usize) -> Vec<f32> {
    let idx: Vec<usize> = (0..data.len()).collect();
    let mut out = Vec::with_capacity(data.len());
    tch::no_grad(|| {
        for chunk in idx.chunks(batch) {
            let p = net
                .probability(&batch_tensor(data, chunk, device))
                .to_device(Device::Cpu);
            out.extend(Vec::<f32>::try_from(p).expect("probabilities"));
        }
    });
    out
}

fn score(m: &EpochMetrics, monitor: Monitor) -> f64 {
    match monitor {
        Monitor::ValAuc => m.val_auc,
        Monitor::ValAucBySource => {
            if m.val_auc_by_source.is_empty() {
                m.val_auc
            } else {
                m.val_auc_by_source.values().sum::<f64>() / m.val_auc_by_source.len() as f64
            }
        }
        Monitor::ValAccuracy => m.val_accuracy,
        Monitor::ValLoss => -m.val_loss,
    }
}

/// Each photo's draws this epoch from its source's weight: `floor(w)` times, once more with
/// probability `w - floor(w)`.
fn weighted_pool(weights: &[f64], rng: &mut impl Rng) -> Vec<usize> {
    let mut pool = Vec::with_capacity(weights.len());
    for (i, &w) in weights.iter().enumerate() {
        let whole = w.floor() as usize + rng.gen_bool(w - w.floor()) as usize;
        pool.extend(std::iter::repeat_n(i, whole));
    }
    pool
}

/// Balanced epoch order over the source-weighted pool: every drawn photo of the majority class
/// once, the minority class drawn with replacement up to the same count (or the plain shuffled
/// pool without oversampling).
fn epoch_order(
    labels: &[bool],
    weights: &[f64],
    oversample: bool,
    rng: &mut impl Rng,
) -> Vec<usize> {
    let pool = weighted_pool(weights, rng);
    let (pos, neg): (Vec<usize>, Vec<usize>) = pool.iter().partition(|&&i| labels[i]);
    let mut order: Vec<usize> = if oversample && !pos.is_empty() && !neg.is_empty() {
        let (major, minor) = if pos.len() >= neg.len() {
            (pos, neg)
        } else {
            (neg, pos)
        };
        let extra: Vec<usize> = (0..major.len())
            .map(|_| minor[rng.gen_range(0..minor.len())])
            .collect();
        major.into_iter().chain(extra).collect()
    } else {
        pool
    };
    order.shuffle(rng);
    order
}

/// Trains per `cfg`; with `resume`, continues from `out/last.safetensors` and `out/state.json`.
pub fn train(cfg: &TrainConfig, resume: bool, progress: bool) -> Result<TrainState> {
    let cache = Cache::open(&cfg.cache)?;
    let train = cache.split(Split::Train)?;
    let val = cache.split(Split::Val)?;
    ensure!(
        train.labels.iter().any(|&l| l) && train.labels.iter().any(|&l| !l),
        "the train split needs both classes"
    );
    ensure!(
        val.labels.iter().any(|&l| l) && val.labels.iter().any(|&l| !l),
        "the val split needs both classes (AUC)"
    );
    let o = &cfg.optim;
    ensure!(o.batch_size >= 2, "batch_size must be >= 2 (BatchNorm)");
    cfg.augment.camera.validate()?;
    let fov = cache.manifest.spec.fov.is_some();
    ensure!(
        fov || cfg.augment.camera.is_off(),
        "augment.camera needs a field-of-view cache: {} is whole-frame (prepare it without --whole-frame)",
        cfg.cache.display()
    );
    let spec = cache.manifest.spec.preprocess();
    let weight_of: std::collections::HashMap<&str, f64> = cache
        .manifest
        .sources
        .iter()
        .map(|s| (s.source.name.as_str(), s.source.weight))
        .collect();
    let weights: Vec<f64> = train
        .sources
        .iter()
        .map(|s| weight_of[s.as_str()])
        .collect();
    let noise = cfg.model.activation_noise;
    ensure!(
        noise.is_finite() && noise >= 0.0,
        "model.activation_noise must be a number of uint8 steps >= 0 (0: none), got {noise}"
    );
    let _one_thread = o.deterministic.then(OneThread::new);
    let out = &cfg.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    let device = training_device();
    let arch = Arch::mobilenet_v2(cfg.model.width_mult, cache.manifest.spec.size);
    // The new head's initial weights come from torch's generator: seed it, or two runs of the
    // same config start from different heads.
    tch::manual_seed(o.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let net = Net::new(&vs.root(), arch.clone(), cfg.model.trainable_units)
        .with_activation_noise(cfg.model.activation_noise);
    let info = RunInfo {
        arch,
        config: cfg.clone(),
        cache_spec: cache.manifest.spec.clone(),
        positive: cache.manifest.positive,
        device: format!("{device:?}"),
    };
    std::fs::write(run_file(out, RUN), serde_json::to_string_pretty(&info)?)?;

    let mut state = if resume {
        let sp = run_file(out, STATE);
        let text = std::fs::read_to_string(&sp)
            .with_context(|| format!("resume: reading {}", sp.display()))?;
        vs.load(run_file(out, LAST))
            .with_context(|| format!("resume: loading {}", run_file(out, LAST).display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", sp.display()))?
    } else {
        if !cfg.model.pretrained.as_os_str().is_empty() {
            load_backbone(&mut vs, &cfg.model.pretrained)?;
        }
        let _ = std::fs::remove_file(run_file(out, METRICS));
        TrainState {
            epochs_done: 0,
            best_score: f64::NEG_INFINITY,
            best_epoch: 0,
            lr: o.lr,
            since_best: 0,
            plateau_wait: 0,
            plateau_best: f64::NEG_INFINITY,
            stopped_early: false,
        }
    };
    if state.stopped_early || state.epochs_done >= o.epochs {
        return Ok(state);
    }
    let mut opt = if o.weight_decay > 0.0 {
        nn::AdamW {
            wd: o.weight_decay,
            ..Default::default()
        }
        .build(&vs, state.lr)?
    } else {
        nn::Adam::default().build(&vs, state.lr)?
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_file(out, METRICS))?;

    let t_run = Instant::now();
    let first_epoch = state.epochs_done + 1;
    for epoch in state.epochs_done + 1..=o.epochs {
        let t0 = Instant::now();
        tch::manual_seed((o.seed.wrapping_mul(1000) + epoch as u64) as i64);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(o.seed ^ (epoch as u64) << 32);
        let mut order = epoch_order(&train.labels, &weights, o.oversample, &mut rng);
        if o.max_batches_per_epoch > 0 {
            order.truncate(o.max_batches_per_epoch * o.batch_size);
        }
        let batches: Vec<&[usize]> = order
            .chunks(o.batch_size)
            .filter(|b| b.len() >= 2)
            .collect();
        let pb = if progress {
            ProgressBar::new(batches.len() as u64)
        } else {
            ProgressBar::hidden()
        };
        pb.set_style(
            ProgressStyle::with_template(
                "epoch {msg} [{bar:30}] {pos}/{len} {per_sec} loss {prefix}, {elapsed} in, ETA {eta}",
            )
            .unwrap(),
        );
        pb.set_message(format!("{epoch}/{}", o.epochs));
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        let t_train = Instant::now();
        for (k, b) in batches.iter().enumerate() {
            if o.schedule == Schedule::Cosine {
                let t = ((epoch - 1) as f64 + k as f64 / batches.len() as f64) / o.epochs as f64;
                state.lr = o.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
                opt.set_lr(state.lr);
            }
            let batch_seed = (o.seed << 40) ^ ((epoch as u64) << 24) ^ ((k as u64) << 8);
            let x = train_batch(&train, b, &cfg.augment.camera, batch_seed, &spec, device)?;
            let x = augment(&x, &cfg.augment, fov);
            let y: Vec<f32> = b.iter().map(|&i| train.labels[i] as u8 as f32).collect();
            let y = Tensor::from_slice(&y).to_device(device);
            let logits = net.forward_t(&x, true);
            let loss = focal_loss(&logits, &y, o.focal_gamma, o.focal_alpha);
            opt.backward_step(&loss);
            let l = loss.double_value(&[]);
            if !l.is_finite() {
                bail!("training diverged at epoch {epoch}: loss {l}");
            }
            loss_sum += l * b.len() as f64;
            let pred = logits.squeeze_dim(1).ge(0.0).to_kind(Kind::Float);
            correct += pred.eq_tensor(&y).sum(Kind::Int64).int64_value(&[]) as usize;
            seen += b.len();
            pb.set_prefix(format!("{:.4}", loss_sum / seen as f64));
            pb.inc(1);
        }
        pb.finish_and_clear();
        let train_secs = t_train.elapsed().as_secs_f64();

        let probs = predict(&net, &val, device, 64);
        let (val_loss, val_accuracy, val_auc) =
            val_metrics(&probs, &val.labels, o.focal_gamma, o.focal_alpha)?;
        let mut val_auc_by_source = std::collections::BTreeMap::new();
        for name in weight_of.keys() {
            let (p, l): (Vec<f32>, Vec<bool>) = (0..val.len())
                .filter(|&i| val.sources[i] == *name)
                .map(|i| (probs[i], val.labels[i]))
                .unzip();
            if l.iter().any(|&x| x) && l.iter().any(|&x| !x) {
                val_auc_by_source.insert(name.to_string(), crate::eval::metrics::roc_auc(&p, &l)?);
            }
        }
        let mut m = EpochMetrics {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            val_loss,
            val_accuracy,
            val_auc,
            val_auc_by_source,
            lr: state.lr,
            train_images_per_sec: seen as f64 / train_secs,
            seconds: 0.0,
            best: false,
        };
        let s = score(&m, o.monitor);
        if s > state.best_score {
            state.best_score = s;
            state.best_epoch = epoch;
            state.since_best = 0;
            m.best = true;
            vs.save(run_file(out, BEST))?;
        } else {
            state.since_best += 1;
        }
        if s > state.plateau_best {
            state.plateau_best = s;
            state.plateau_wait = 0;
        } else if o.schedule == Schedule::Plateau {
            state.plateau_wait += 1;
            if state.plateau_wait >= o.plateau_patience {
                state.lr *= o.plateau_factor;
                opt.set_lr(state.lr);
                state.plateau_wait = 0;
            }
        }
        state.epochs_done = epoch;
        state.stopped_early = state.since_best >= o.early_stopping_patience;
        m.seconds = t0.elapsed().as_secs_f64();
        vs.save(run_file(out, LAST))?;
        std::fs::write(run_file(out, STATE), serde_json::to_string_pretty(&state)?)?;
        writeln!(log, "{}", serde_json::to_string(&m)?)?;
        log.flush()?;
        if progress {
            let by_source: Vec<String> = m
                .val_auc_by_source
                .iter()
                .map(|(k, v)| format!("{k} {v:.3}"))
                .collect();
            let elapsed = t_run.elapsed().as_secs_f64();
            let per_epoch = elapsed / (epoch + 1 - first_epoch) as f64;
            eprintln!(
                "epoch {epoch}/{}: train loss {:.4} acc {:.3} | val loss {:.4} acc {:.3} auc {:.3} ({}) | {:.0} img/s, {:.0} s; run {}, about {} to go{}",
                o.epochs, m.train_loss, m.train_accuracy, m.val_loss, m.val_accuracy, m.val_auc, by_source.join(", "),
                m.train_images_per_sec, m.seconds,
                minutes(elapsed),
                minutes(per_epoch * (o.epochs - epoch) as f64),
                if m.best { " *" } else { "" }
            );
        }
        if state.stopped_early {
            break;
        }
    }
    Ok(state)
}

/// `seconds` as "12 min" (or "40 s" under two minutes).
fn minutes(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else {
        format!("{:.0} min", seconds / 60.0)
    }
}

/// Focal loss, accuracy at 0.5 and ROC AUC of validation probabilities.
fn val_metrics(probs: &[f32], labels: &[bool], gamma: f64, alpha: f64) -> Result<(f64, f64, f64)> {
    let p = Tensor::from_slice(probs).clamp(1e-7, 1.0 - 1e-7);
    let odds: Tensor = &p / (1.0 - &p);
    let logits = odds.log().view([-1, 1]);
    let y = Tensor::from_slice(&labels.iter().map(|&l| l as u8 as f32).collect::<Vec<_>>());
    let loss = focal_loss(&logits, &y, gamma, alpha).double_value(&[]);
    let acc = probs
        .iter()
        .zip(labels)
        .filter(|(p, l)| (**p >= 0.5) == **l)
        .count() as f64
        / labels.len() as f64;
    let auc = crate::eval::metrics::roc_auc(probs, labels)?;
    Ok((loss, acc, auc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversampled_epochs_are_balanced_and_cover_the_majority() {
        let labels: Vec<bool> = (0..100).map(|i| i < 20).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let ones = vec![1.0; 100];
        let order = epoch_order(&labels, &ones, true, &mut rng);
        assert_eq!(order.len(), 160);
        assert_eq!(order.iter().filter(|&&i| labels[i]).count(), 80);
        let mut negs: Vec<usize> = order.iter().copied().filter(|&i| !labels[i]).collect();
        negs.sort();
        assert_eq!(negs, (20..100).collect::<Vec<_>>());
        assert_eq!(epoch_order(&labels, &ones, false, &mut rng).len(), 100);
    }

    #[test]
    fn a_source_weight_scales_its_photos_draws_per_epoch() {
        // Photos 0-49 weigh 2, 50-99 weigh 0.5: about 100 and 25 draws.
        let labels = vec![false; 100];
        let w: Vec<f64> = (0..100).map(|i| if i < 50 { 2.0 } else { 0.5 }).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let order = epoch_order(&labels, &w, false, &mut rng);
        let heavy = order.iter().filter(|&&i| i < 50).count();
        let light = order.len() - heavy;
        assert_eq!(heavy, 100);
        assert!((13..=37).contains(&light), "{light}");
    }
}
