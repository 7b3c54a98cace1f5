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
use super::config::{Monitor, TrainConfig};
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
    pub lr: f64,
    pub train_images_per_sec: f64,
    pub seconds: f64,
    pub best: bool,
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
        Monitor::ValAccuracy => m.val_accuracy,
        Monitor::ValLoss => -m.val_loss,
    }
}

/// Balanced epoch order: every photo of the majority class once, the minority class drawn with
/// replacement up to the same count (or the plain shuffled split without oversampling).
fn epoch_order(labels: &[bool], oversample: bool, rng: &mut impl Rng) -> Vec<usize> {
    let (pos, neg): (Vec<usize>, Vec<usize>) = (0..labels.len()).partition(|&i| labels[i]);
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
        (0..labels.len()).collect()
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
    let noise = cfg.model.activation_noise;
    ensure!(
        noise.is_finite() && noise >= 0.0,
        "model.activation_noise must be a number of uint8 steps >= 0 (0: none), got {noise}"
    );
    let out = &cfg.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    let device = training_device();
    let arch = Arch::mobilenet_v2(cfg.model.width_mult, cache.manifest.spec.size);
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
    let mut opt = nn::Adam::default().build(&vs, state.lr)?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_file(out, METRICS))?;

    for epoch in state.epochs_done + 1..=o.epochs {
        let t0 = Instant::now();
        tch::manual_seed((o.seed.wrapping_mul(1000) + epoch as u64) as i64);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(o.seed ^ (epoch as u64) << 32);
        let mut order = epoch_order(&train.labels, o.oversample, &mut rng);
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
                "epoch {msg} [{bar:30}] {pos}/{len} {per_sec} loss {prefix}",
            )
            .unwrap(),
        );
        pb.set_message(format!("{epoch}/{}", o.epochs));
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0usize, 0usize);
        let t_train = Instant::now();
        for b in &batches {
            let x = augment(&batch_tensor(&train, b, device), &cfg.augment);
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
        let mut m = EpochMetrics {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            val_loss,
            val_accuracy,
            val_auc,
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
        } else {
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
            eprintln!(
                "epoch {epoch}: train loss {:.4} acc {:.3} | val loss {:.4} acc {:.3} auc {:.3} | {:.0} img/s{}",
                m.train_loss, m.train_accuracy, m.val_loss, m.val_accuracy, m.val_auc, m.train_images_per_sec,
                if m.best { " *" } else { "" }
            );
        }
        if state.stopped_early {
            break;
        }
    }
    Ok(state)
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
        let order = epoch_order(&labels, true, &mut rng);
        assert_eq!(order.len(), 160);
        assert_eq!(order.iter().filter(|&&i| labels[i]).count(), 80);
        let mut negs: Vec<usize> = order.iter().copied().filter(|&i| !labels[i]).collect();
        negs.sort();
        assert_eq!(negs, (20..100).collect::<Vec<_>>());
        assert_eq!(epoch_order(&labels, false, &mut rng).len(), 100);
    }
}
