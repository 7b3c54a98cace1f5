//! The tch network built from [`Arch`]: MobileNetV2 with TF "SAME" padding, input scaling to
//! [-1, 1] inside, and the seed's head. Variable names follow torchvision (`features.N...`), so
//! the TF-slim ImageNet weights in `../shared/data/weights` load by name.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

use super::arch::{Arch, ConvUnit, BN_EPS};

/// BatchNorm momentum (PyTorch convention; Keras' 0.99 is 0.01 here).
const BN_MOMENTUM: f64 = 0.01;

struct Unit {
    spec: ConvUnit,
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    /// Frozen units keep their weights and BatchNorm statistics (inference mode) while training.
    frozen: bool,
}

struct HeadLayer {
    bn: nn::BatchNorm,
    dropout: f64,
    fc: nn::Linear,
}

/// MobileNetV2 + the seed's head. `forward_t` returns logits `[N, 1]`; [`Net::probability`]
/// applies the sigmoid (what the exported model outputs).
pub struct Net {
    pub arch: Arch,
    blocks: Vec<(Vec<Unit>, bool)>,
    head: Vec<HeadLayer>,
    final_dropout: f64,
    out: nn::Linear,
    /// Training only: uniform noise of this many uint8 steps (peak to peak) added to every
    /// activation an int8 file quantizes (see [`Net::with_activation_noise`]); 0 = none.
    activation_noise: f64,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("width_mult", &self.arch.width_mult)
            .field("input_size", &self.arch.input_size)
            .finish()
    }
}

fn path<'a>(root: &nn::Path<'a>, dotted: &str) -> nn::Path<'a> {
    dotted.split('.').fold(root.clone(), |p, part| p / part)
}

fn bn_config() -> nn::BatchNormConfig {
    nn::BatchNormConfig {
        eps: BN_EPS,
        momentum: BN_MOMENTUM,
        ..Default::default()
    }
}

impl Net {
    /// Builds the network in `vs`. The last `trainable_units` backbone conv units (and the head)
    /// are trainable; the others are frozen, BatchNorm included (the seed's last 50 Keras layers
    /// are the last 17 units here).
    pub fn new(vs: &nn::Path, arch: Arch, trainable_units: usize) -> Self {
        let total = arch.units().count();
        let mut seen = 0;
        let blocks = arch
            .blocks
            .iter()
            .map(|b| {
                let units = b
                    .units
                    .iter()
                    .map(|u| {
                        let symmetric =
                            u.pad[0] == u.pad[1] && u.pad[2] == u.pad[3] && u.pad[0] == u.pad[2];
                        let cfg = nn::ConvConfig {
                            stride: u.stride as i64,
                            padding: if symmetric { u.pad[0] as i64 } else { 0 },
                            groups: u.groups as i64,
                            bias: false,
                            ..Default::default()
                        };
                        let conv = nn::conv2d(
                            path(vs, &u.conv),
                            u.cin as i64,
                            u.cout as i64,
                            u.kernel as i64,
                            cfg,
                        );
                        let bn = nn::batch_norm2d(path(vs, &u.bn), u.cout as i64, bn_config());
                        seen += 1;
                        let frozen = seen <= total.saturating_sub(trainable_units);
                        if frozen {
                            for t in [&conv.ws, bn.ws.as_ref().unwrap(), bn.bs.as_ref().unwrap()] {
                                let _ = t.set_requires_grad(false);
                            }
                        }
                        Unit {
                            spec: u.clone(),
                            conv,
                            bn,
                            frozen,
                        }
                    })
                    .collect();
                (units, b.residual)
            })
            .collect();
        let hp = vs / "head";
        let mut width = arch.head.features;
        let head = arch
            .head
            .hidden
            .iter()
            .enumerate()
            .map(|(i, &(dropout, out))| {
                let bn = nn::batch_norm1d(&hp / format!("bn{i}"), width as i64, bn_config());
                let fc = nn::linear(
                    &hp / format!("fc{i}"),
                    width as i64,
                    out as i64,
                    Default::default(),
                );
                width = out;
                HeadLayer { bn, dropout, fc }
            })
            .collect();
        let out = nn::linear(&hp / "out", width as i64, 1, Default::default());
        let final_dropout = arch.head.final_dropout;
        Net {
            arch,
            blocks,
            head,
            final_dropout,
            out,
            activation_noise: 0.0,
        }
    }

    /// While training, add to each unit's output and each residual sum uniform noise `level`
    /// uint8 steps wide, a step being the tensor's range in the batch (zero included) over 255:
    /// the rounding an int8 file's per-tensor activations add, so that the trainable layers learn
    /// not to amplify it. Evaluation (`train = false`) is never noisy. `level` 1 is one step.
    pub fn with_activation_noise(mut self, level: f64) -> Self {
        self.activation_noise = level;
        self
    }

    /// `x` plus the rounding noise of a uint8 tensor over its batch range (no gradient through
    /// the range; the noise passes the gradient unchanged, as a straight-through rounding would).
    /// The step is the one `export::quantize::QParams::for_range` gives a calibrated range, kept
    /// here as a tensor so that training on a GPU does not wait on a scalar per activation.
    fn quantization_noise(&self, x: Tensor, train: bool) -> Tensor {
        if !train || self.activation_noise <= 0.0 {
            return x;
        }
        let range = tch::no_grad(|| x.max().clamp_min(0.0) - x.min().clamp_max(0.0));
        let step = range * (self.activation_noise / 255.0);
        let noise = (x.rand_like() - 0.5) * step;
        x + noise
    }

    /// Pooled backbone features `[N, 1280]` of `[N, 3, H, W]` input in [0, 1].
    pub fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = xs * 2.0 - 1.0;
        for (units, residual) in &self.blocks {
            let input = if *residual {
                Some(x.shallow_clone())
            } else {
                None
            };
            for u in units {
                let p = u.spec.pad;
                if !(p[0] == p[1] && p[2] == p[3] && p[0] == p[2]) {
                    x = x.constant_pad_nd([p[2] as i64, p[3] as i64, p[0] as i64, p[1] as i64]);
                }
                x = u.conv.forward(&x);
                x = u.bn.forward_t(&x, train && !u.frozen);
                if u.spec.relu6 {
                    x = x.clamp(0.0, 6.0);
                }
                x = self.quantization_noise(x, train);
            }
            if let Some(i) = input {
                x = self.quantization_noise(x + i, train);
            }
        }
        x.mean_dim(&[2i64, 3][..], false, x.kind())
    }

    /// Logits `[N, 1]` of the positive class.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = self.features(xs, train);
        for l in &self.head {
            x = l.bn.forward_t(&x, train).dropout(l.dropout, train);
            x = l.fc.forward(&x).relu();
        }
        self.out.forward(&x.dropout(self.final_dropout, train))
    }

    /// Probabilities `[N]` in eval mode (no dropout, running BatchNorm statistics).
    pub fn probability(&self, xs: &Tensor) -> Tensor {
        self.forward_t(xs, false).sigmoid().squeeze_dim(1)
    }
}

/// Loads ImageNet backbone weights (torchvision names, `.safetensors`) into `vs`; every backbone
/// variable must be present, the head stays as initialised.
pub fn load_backbone(vs: &mut nn::VarStore, weights: &Path) -> Result<()> {
    if !weights.exists() {
        bail!("backbone weights {} not found", weights.display());
    }
    let missing = vs
        .load_partial(weights)
        .with_context(|| format!("loading backbone weights from {}", weights.display()))?;
    let missing_backbone: Vec<_> = missing
        .iter()
        .filter(|n| n.starts_with("features."))
        .collect();
    if !missing_backbone.is_empty() {
        bail!(
            "{} lacks {} backbone tensors (first: {}): not a MobileNetV2 of this width",
            weights.display(),
            missing_backbone.len(),
            missing_backbone[0]
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn frozen_net(noise: f64) -> (nn::VarStore, Net) {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        // Every unit frozen: BatchNorm uses its running statistics even when training, so
        // only the noise can make two training passes differ.
        let net = Net::new(&vs.root(), Arch::mobilenet_v2(1.0, 32), 0).with_activation_noise(noise);
        (vs, net)
    }

    #[test]
    fn quantization_noise_stays_within_half_a_step_and_fills_it() {
        let (_vs, net) = frozen_net(1.0);
        tch::manual_seed(5);
        let x = Tensor::rand([4, 8, 16, 16], (Kind::Float, Device::Cpu)) * 5.0 - 1.0;
        let step = (x.max().double_value(&[]) - x.min().double_value(&[])) / 255.0;
        let d = (net.quantization_noise(x.shallow_clone(), true) - &x).abs();
        let max = d.max().double_value(&[]);
        assert!(
            max <= step / 2.0 + 1e-6,
            "noise {max} beyond half a step {step}"
        );
        assert!(
            max > 0.45 * step,
            "noise {max} far below half a step {step}"
        );
        let mean = d.mean(Kind::Float).double_value(&[]);
        assert!(
            (mean - step / 4.0).abs() < 0.02 * step,
            "mean |noise| {mean}, step {step}"
        );
        let same = net.quantization_noise(x.shallow_clone(), false);
        assert_eq!(same.eq_tensor(&x).all().int64_value(&[]), 1);
    }

    #[test]
    fn activation_noise_perturbs_training_passes_only() {
        let x = Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let (a, clean) = frozen_net(0.0);
        let (mut b, noisy) = frozen_net(1.0);
        // The same weights (tests share libtorch's generator, so seeding alone does not say so).
        b.copy(&a).unwrap();
        let reference = clean.features(&x, true);
        // Without noise a training pass through frozen units is deterministic.
        assert!(clean
            .features(&x, true)
            .allclose(&reference, 0.0, 0.0, false));
        // Evaluation is never noisy.
        assert!(noisy
            .features(&x, false)
            .allclose(&reference, 1e-6, 1e-6, false));
        let perturbed = noisy.features(&x, true);
        let d = (&perturbed - &reference).abs().max().double_value(&[]);
        let scale = reference.abs().max().double_value(&[]);
        assert!(d > 0.0, "a noisy training pass equals the clean one");
        assert!(d < 0.2 * scale, "noise {d} swamps features of size {scale}");
    }
}
