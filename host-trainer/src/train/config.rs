//! Training configuration (TOML). `TrainConfig::default()` is the seed's recipe; every value is a key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What early stopping, the plateau schedule and the best checkpoint watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    /// Validation ROC AUC (threshold-free; the default for screening).
    ValAuc,
    /// The mean of each source's validation ROC AUC (a large, easy source does not outvote a
    /// small one).
    ValAucBySource,
    /// Validation accuracy at 0.5 (the seed's choice).
    ValAccuracy,
    /// Validation focal loss (lower is better).
    ValLoss,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// MobileNetV2 width multiplier.
    pub width_mult: f64,
    /// ImageNet backbone weights (`.safetensors`, torchvision names); empty for random init.
    pub pretrained: PathBuf,
    /// Backbone conv units left trainable from the end; the head is always trainable. 17 = the
    /// seed's "last 50 layers" of Keras' MobileNetV2: `Conv_1`, `block_12`..`block_16` and the
    /// projection of `block_11` (features.18, 17..13 and 12's last unit in torchvision names).
    pub trainable_units: usize,
    /// Quantization-noise training: uniform noise this many uint8 steps wide on every activation
    /// an int8 file quantizes, while training only (`Net::with_activation_noise`); 0 = none.
    pub activation_noise: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub focal_gamma: f64,
    pub focal_alpha: f64,
    pub early_stopping_patience: usize,
    pub plateau_factor: f64,
    pub plateau_patience: usize,
    pub monitor: Monitor,
    /// Oversample the minority class (with replacement, fresh each epoch) to the majority count.
    pub oversample: bool,
    pub seed: u64,
    /// Stop after this many batches per epoch (0 = all); for smoke tests and benchmarks.
    pub max_batches_per_epoch: usize,
    /// Decoupled weight decay (AdamW) when > 0; 0 is the seed's Adam.
    pub weight_decay: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Bit-reproducible training: one libtorch intra-op thread (its CPU kernels split sums by
    /// thread count), cuDNN's autotuner off, everything seeded from `seed`. Slower; what stays
    /// nondeterministic on a GPU (atomic adds in some CUDA backward kernels) is in docs/results.md.
    pub deterministic: bool,
}

/// How the learning rate moves over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// ReduceLROnPlateau on the monitored score (the seed's).
    Plateau,
    /// Cosine decay from `lr` to 0 over `epochs`, stepped every batch.
    Cosine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    pub hflip: bool,
    /// Rotation range as a fraction of a full turn (0.1 = +-36 degrees).
    pub rotation: f64,
    /// Zoom range (0.1 = +-10 %).
    pub zoom: f64,
    /// Contrast range (0.1 = factor in [0.9, 1.1]).
    pub contrast: f64,
    /// Framing jitter: a shift of up to this fraction of the side along each axis.
    pub translate: f64,
    /// Camera augmentation before CLAHE (field-of-view caches only).
    pub camera: super::camera::CameraConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Prepared cache folder (from `host-trainer prepare`).
    pub cache: PathBuf,
    /// Run folder: checkpoints, metrics, config.
    pub out: PathBuf,
    pub model: ModelConfig,
    pub optim: OptimConfig,
    pub augment: AugmentConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            width_mult: 1.0,
            pretrained: crate::paths::imagenet_weights(),
            trainable_units: 17,
            activation_noise: 0.0,
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            epochs: 35,
            batch_size: 10,
            lr: 5e-4,
            focal_gamma: 1.5,
            focal_alpha: 0.5,
            early_stopping_patience: 10,
            plateau_factor: 0.5,
            plateau_patience: 3,
            monitor: Monitor::ValAuc,
            oversample: true,
            seed: 42,
            max_batches_per_epoch: 0,
            weight_decay: 0.0,
            schedule: Schedule::Plateau,
            deterministic: false,
        }
    }
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            hflip: true,
            rotation: 0.1,
            zoom: 0.1,
            contrast: 0.1,
            translate: 0.0,
            camera: Default::default(),
        }
    }
}

impl TrainConfig {
    /// Reads a TOML file; keys not given keep the seed's values, unknown keys are an error.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_toml_keeps_seed_defaults_and_unknown_keys_fail() {
        let c: TrainConfig = toml::from_str("cache = 'c'\n[optim]\nepochs = 3\n").unwrap();
        assert_eq!(c.optim.epochs, 3);
        assert_eq!(c.optim.batch_size, 10);
        assert_eq!(c.optim.focal_gamma, 1.5);
        assert_eq!(c.augment.rotation, 0.1);
        assert!(toml::from_str::<TrainConfig>("[optim]\nepoch = 3\n").is_err());
        let round: TrainConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(round, c);
    }

    #[test]
    fn defaults_are_the_seed_recipe_in_configs_seed_toml() {
        let seed =
            TrainConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/seed.toml"))
                .unwrap();
        let d = TrainConfig::default();
        assert_eq!(seed.optim, d.optim);
        assert_eq!(seed.augment, d.augment);
        assert_eq!(seed.model.trainable_units, d.model.trainable_units);
        assert_eq!(seed.model.width_mult, d.model.width_mult);
        assert_eq!(seed.model.activation_noise, d.model.activation_noise);
        // The same weights file, named relative to the checkout in the TOML.
        assert_eq!(
            seed.model.pretrained.file_name(),
            d.model.pretrained.file_name()
        );
    }
}
