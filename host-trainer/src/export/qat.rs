//! Quantization-aware fine-tuning by distillation: the backbone, with every BatchNorm folded into
//! its convolution, is run with fake int8 quantization exactly where the int8 model quantizes
//! (per-channel symmetric weights, every convolution output and residual sum at its calibrated
//! uint8 scale), and its weights are fine-tuned so that its logits match the float network's on
//! the training photos' TTA views.
//!
//! The calibrated ranges stay fixed: the int8 model is then written from the fine-tuned weights
//! with the same ranges, so what was trained is what ships. The float network is the teacher and
//! stays the reference: the int8 model is still measured against it, not against the student.
//! The head (float activations, int8 weights in the int8 model) is simulated but not trained.

use std::collections::HashSet;

use anyhow::{ensure, Context, Result};
use drscreen_core::{write_views, View};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

use super::gptq::{gptq_weights, InputStats, WeightRounding};
use super::onnx::{fold_conv, head_layers, residual_key, store_folded, unit_key, Weights};
use super::quantize::{
    quantize_unit, quantize_weights, unit_output_params, Calibrated, Form, QParams, INPUT_KEY,
};
use crate::data::cache::SplitData;
use crate::model::arch::{Arch, ConvUnit};
use crate::model::net::Net;
use crate::train::augment::augment;
use crate::train::config::AugmentConfig;

/// What the fine-tuning matches between student and teacher, per view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum QatLoss {
    /// Squared probability difference: the figure the int8 bounds are on, but a photo the
    /// network is sure of (probability near 0 or 1) gives almost no gradient.
    #[default]
    Probability,
    /// Squared logit difference: every photo's quantization error counts alike, so the few
    /// hundred training photos all teach (the noise is the network's, not the photo's).
    Logit,
}

/// `--qat-*` options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QatOptions {
    /// Passes over the training photos (one random TTA view of each per pass).
    pub epochs: usize,
    pub lr: f64,
    pub batch: usize,
    pub seed: u64,
    /// Fine-tune only the (folded) biases: 17 k numbers instead of 2.2 M, which a few hundred
    /// photos cannot overfit.
    pub biases_only: bool,
    /// Augment each batch as training did (the run's augmentation), for more varied inputs.
    pub augment: bool,
    pub loss: QatLoss,
}

impl Default for QatOptions {
    fn default() -> Self {
        QatOptions {
            epochs: 4,
            lr: 1e-5,
            batch: 16,
            seed: 7,
            biases_only: false,
            augment: true,
            loss: QatLoss::default(),
        }
    }
}

/// What the fine-tuning did, for the golden file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QatReport {
    pub epochs: usize,
    pub lr: f64,
    pub batch: usize,
    pub photos: usize,
    /// What was matched; the two MSEs below are in its units (probability or logit).
    #[serde(default)]
    pub loss: QatLoss,
    /// Mean squared difference student vs teacher over the first and the last epoch.
    pub first_epoch_mse: f64,
    pub last_epoch_mse: f64,
    pub seconds: f64,
}

/// What the simulation leaves in float or holds at 16 bits, for a sensitivity sweep
/// ([`fake_int8_probability`]): nothing by default (the int8 model as the default form writes
/// it; see [`FloatParts::written`]).
#[derive(Debug, Clone, Default)]
pub struct FloatParts {
    /// Convolutions (by [`unit_key`]) whose weights stay float (and get no bias correction).
    pub weights: HashSet<String>,
    /// Tensors (by [`unit_key`] / [`residual_key`]) that are not quantized.
    pub activations: HashSet<String>,
    /// The head's dense layers keep float weights.
    pub head: bool,
    /// The residual blocks' projections go into their sums in float, unquantized
    /// ([`Form::ConvIntegerFloatSums`]).
    pub float_sums: bool,
    /// Tensors (by [`unit_key`] / [`residual_key`]) quantized to 16 bits, not 8
    /// ([`super::quantize::Exceptions::wide`]).
    pub wide: HashSet<String>,
}

impl FloatParts {
    /// The int8 model as `form` writes it: nothing else left in float.
    pub fn written(form: Form) -> Self {
        FloatParts {
            float_sums: form.sums_projections_in_float(),
            ..Default::default()
        }
    }
}

/// One folded convolution of the student.
struct QUnit {
    spec: ConvUnit,
    w: Tensor,
    b: Tensor,
    /// Output quantization (fixed, from calibration).
    out: QParams,
    /// Whether the weights and the output are quantized (see [`FloatParts`]).
    quant_w: bool,
    quant_out: bool,
}

impl QUnit {
    /// The convolution of `x` (TF padding included) with weights `w` and bias `b`.
    fn conv(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
        let p = self.spec.pad;
        let x = if p.iter().any(|&v| v > 0) {
            x.constant_pad_nd([p[2] as i64, p[3] as i64, p[0] as i64, p[1] as i64])
        } else {
            x.shallow_clone()
        };
        x.conv2d(
            w,
            Some(b),
            [self.spec.stride as i64; 2],
            [0i64, 0],
            [1i64, 1],
            self.spec.groups as i64,
        )
    }

    /// The weights as the int8 model holds them, for bias `b` held in int32 at input scale
    /// `x_scale` (or in float, `None`; see [`QParams::bias_step`]).
    fn weights_at(&self, b: &Tensor, x_scale: Option<f32>) -> Tensor {
        if self.quant_w {
            fake_quant_weights(&self.w, b, x_scale)
        } else {
            self.w.shallow_clone()
        }
    }

    /// The unit's output from its pre-activation `y`. The uint8 range is the ReLU6 (see
    /// quantize.rs): fake quantization clamps too.
    fn output(&self, y: Tensor) -> Tensor {
        match (self.quant_out, self.spec.relu6) {
            (true, _) => fake_quant(&y, self.out),
            (false, true) => y.clamp(0.0, 6.0),
            (false, false) => y,
        }
    }
}

/// A block's residual sum: its quantization, and whether it is quantized (see [`FloatParts`]).
struct QResidual {
    out: QParams,
    quantized: bool,
}

struct Student {
    blocks: Vec<(Vec<QUnit>, Option<QResidual>)>,
    /// The head's dense layers as the int8 model computes them (BatchNorm folded, weights
    /// rounded to int8 per row), frozen: (weights `[out, in]`, bias).
    head: Vec<(Tensor, Tensor)>,
}

fn fake_quant(x: &Tensor, p: QParams) -> Tensor {
    x.fake_quantize_per_tensor_affine(p.scale as f64, p.zero(), 0, p.top())
}

impl Student {
    fn new(
        vs: &nn::Path,
        arch: &Arch,
        w: &Weights,
        cal: &Calibrated,
        train_weights: bool,
        float: &FloatParts,
        analytic: bool,
    ) -> Result<Self> {
        let range = |k: &str| {
            cal.ranges
                .get(k)
                .copied()
                .with_context(|| format!("calibration has no range for {k}"))
        };
        let mut blocks = Vec::new();
        // The calibration key and scale of each unit's input, for the analytic bias correction
        // the student starts from with `analytic` (the post-training model's, see quantize.rs);
        // without it, `w`'s biases already carry their correction.
        let mut input_key = INPUT_KEY.to_string();
        let mut x_scale = Some(2.0 / 255.0);
        for block in &arch.blocks {
            let mut units = Vec::new();
            for u in &block.units {
                let summed_in_float = float.float_sums && block.projection() == Some(u);
                let (wf, mut bf) = fold_conv(w, u)?;
                let mean_in = cal
                    .means
                    .get(&input_key)
                    .with_context(|| format!("calibration has no statistics for {input_key}"))?;
                let quant_w = !float.weights.contains(&unit_key(u));
                if quant_w && analytic {
                    let (_, _, err) = quantize_unit(u, &wf, &bf, x_scale, Some(mean_in))?;
                    for (b, e) in bf.iter_mut().zip(err) {
                        *b -= e;
                    }
                }
                let k = u.kernel as i64;
                let dims = [u.cout as i64, (u.cin / u.groups) as i64, k, k];
                let wt = Tensor::from_slice(&wf).view(dims);
                let wt = if train_weights {
                    vs.var_copy(&format!("{}_w", u.conv.replace('.', "_")), &wt)
                } else {
                    wt
                };
                let bt = vs.var_copy(
                    &format!("{}_b", u.conv.replace('.', "_")),
                    &Tensor::from_slice(&bf),
                );
                let out =
                    unit_output_params(u, range(&unit_key(u))?, float.wide.contains(&unit_key(u)));
                input_key = unit_key(u);
                x_scale = out.bias_step();
                units.push(QUnit {
                    spec: u.clone(),
                    w: wt,
                    b: bt,
                    out,
                    quant_w,
                    quant_out: !float.activations.contains(&unit_key(u)) && !summed_in_float,
                });
            }
            let residual = if block.residual {
                let (lo, hi) = range(&residual_key(block))?;
                input_key = residual_key(block);
                let p = QParams::for_tensor(lo, hi, float.wide.contains(&residual_key(block)));
                x_scale = p.bias_step();
                Some(QResidual {
                    out: p,
                    quantized: !float.activations.contains(&residual_key(block)),
                })
            } else {
                None
            };
            blocks.push((units, residual));
        }
        let mut head = Vec::new();
        for d in head_layers(arch, w)? {
            let (out, width) = (d.dims[0] as usize, d.dims[1] as usize);
            if float.head {
                head.push((
                    Tensor::from_slice(&d.w).view(d.dims),
                    Tensor::from_slice(&d.b),
                ));
                continue;
            }
            let (q, scales) = quantize_weights(&d.w, out, &[]);
            let deq: Vec<f32> = q
                .iter()
                .enumerate()
                .map(|(i, &v)| v as f32 * scales[i / width])
                .collect();
            head.push((
                Tensor::from_slice(&deq).view(d.dims),
                Tensor::from_slice(&d.b),
            ));
        }
        Ok(Student { blocks, head })
    }

    /// Logits `[N, 1]` through the fake-int8 backbone and the int8-weight head.
    fn logits(&self, xs: &Tensor) -> Tensor {
        let mut x = self.features(xs);
        for (i, (w, b)) in self.head.iter().enumerate() {
            x = x.linear(w, Some(b));
            if i + 1 < self.head.len() {
                x = x.relu();
            }
        }
        x
    }

    /// Pooled features of `[N, 3, H, W]` input in [0, 1], through the fake-int8 backbone.
    fn features(&self, xs: &Tensor) -> Tensor {
        let mut x = xs * 2.0 - 1.0;
        // The input's scale (the photo's pixels, read with scale 2/255; see quantize.rs).
        let mut x_scale = Some(2.0 / 255.0);
        for (units, residual) in &self.blocks {
            let input = x.shallow_clone();
            for u in units {
                x = u.output(u.conv(&x, &u.weights_at(&u.b, x_scale), &u.b));
                x_scale = u.out.bias_step();
            }
            if let Some(r) = residual {
                x += input;
                if r.quantized {
                    x = fake_quant(&x, r.out);
                }
                x_scale = r.out.bias_step();
            }
        }
        x.mean_dim(&[2i64, 3][..], false, Kind::Float)
    }

    /// The fine-tuned weights as a checkpoint: each convolution holds its folded weights and its
    /// BatchNorm is the identity with the folded bias as its shift.
    fn weights(&self, teacher: &Weights) -> Result<Weights> {
        let mut out = teacher.clone();
        let to_vec = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.detach()
                .to_device(Device::Cpu)
                .contiguous()
                .view(-1)
                .try_into()?)
        };
        for (units, _) in &self.blocks {
            for u in units {
                store_folded(&mut out, &u.spec, &to_vec(&u.w)?, &to_vec(&u.b)?);
            }
        }
        Ok(out)
    }
}

/// Per output channel of weights `w` with bias `b` at input scale `x_scale`: the step
/// `max|w| / 127`, and the floor that keeps the int32 bias within 2^24 (`bias_floor` in
/// quantize.rs; zero for a float bias, `None`). The exporter's step is the larger.
fn step_and_floor(w: &Tensor, b: &Tensor, x_scale: Option<f32>) -> (Tensor, Tensor) {
    let rows = w.size()[0];
    (
        w.abs().view([rows, -1]).amax([1i64].as_slice(), false) / 127.0,
        match x_scale {
            Some(x_scale) => b.abs() / (x_scale as f64 * (1u64 << 24) as f64),
            None => b.zeros_like(),
        },
    )
}

/// Per-output-channel symmetric int8 fake quantization with the scales the exporter uses
/// (`max|w| / 127`, floored so the int32 bias fits; see `quantize_weights` and `bias_floor`).
fn fake_quant_weights(w: &Tensor, b: &Tensor, x_scale: Option<f32>) -> Tensor {
    let rows = w.size()[0];
    let scale = tch::no_grad(|| {
        let (step, floor) = step_and_floor(w, b, x_scale);
        let s = step.maximum(&floor);
        // An all-zero channel: any scale is exact.
        s.where_self(&s.gt(0.0), &Tensor::ones_like(&s))
    });
    let zero = Tensor::zeros([rows], (Kind::Int, w.device()));
    w.fake_quantize_per_channel_affine(&scale, &zero, 0, -127, 127)
}

/// Probabilities `[N]` of `xs` (`[N, 3, H, W]` in [0, 1]) through the fake-int8 backbone built
/// from `w` and its int8-weight head: what the int8 model written from `w` computes, up to
/// rounding ties, when `float` is empty; with parts left in float, what quantizing everything
/// else costs. `analytic`: `w` is a checkpoint that the int8 model is written from with the
/// analytic bias correction (quantize.rs); otherwise its biases already carry their correction
/// ([`empirical_bias_correction`], [`distill`]) and the model is written without it.
pub fn fake_int8_probability(
    teacher: &Net,
    w: &Weights,
    cal: &Calibrated,
    xs: &Tensor,
    float: &FloatParts,
    analytic: bool,
) -> Result<Tensor> {
    let vs = nn::VarStore::new(Device::Cpu);
    let student = Student::new(&vs.root(), &teacher.arch, w, cal, false, float, analytic)?;
    Ok(tch::no_grad(|| student.logits(xs).sigmoid().squeeze_dim(1)))
}

/// Every TTA view of each photo (preprocessed RGB8 of `size`) as one `[photos x views, 3, size,
/// size]` batch in [0, 1], views of a photo together.
pub fn views_tensor(photos: &[&[u8]], size: usize, views: &[View]) -> Result<Tensor> {
    let per = views.len() * 3 * size * size;
    let mut buf = vec![0f32; photos.len() * per];
    for (p, out) in photos.iter().zip(buf.chunks_mut(per)) {
        write_views(p, size, size, views, out)?;
    }
    Ok(Tensor::from_slice(&buf).view([
        (photos.len() * views.len()) as i64,
        3,
        size as i64,
        size as i64,
    ]))
}

/// What [`empirical_bias_correction`] took out of the biases.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CorrectionReport {
    /// Images it measured on (calibration photos x TTA views).
    pub images: usize,
    /// The largest per-channel shift taken out of any bias, and the convolution it was in.
    pub largest_shift: f32,
    pub largest_in: String,
    pub seconds: f64,
}

/// Empirical bias correction (after Nagel et al. 2019, "Data-Free Quantization Through Weight
/// Equalization and Bias Correction", section 4.2, but measured on data): convolution by
/// convolution in network order, the bias is shifted per channel so that the fake-int8 output's
/// mean over `xs` equals the float network's. The fake-int8 side reads its input quantized as the
/// int8 model does, every earlier convolution already corrected, so the correction covers the
/// mean error of everything upstream; the analytic correction (quantize.rs) covers only the
/// convolution's own weight rounding on float inputs. For a ReLU6 convolution the mean matched
/// is the one after the clamp (what the next layer reads); for a linear one, the output's.
///
/// `xs`: `[N, 3, H, W]` in [0, 1], the calibration photos' views. Returns the checkpoint to write
/// the int8 model from without bias correction (folded convolutions, identity BatchNorm; see
/// [`fake_int8_probability`] with `analytic = false`). Parts in `float.weights` keep float weights
/// and are corrected all the same (their input is still quantized).
pub fn empirical_bias_correction(
    arch: &Arch,
    w: &Weights,
    cal: &Calibrated,
    xs: &Tensor,
    float: &FloatParts,
    rounding: WeightRounding,
) -> Result<(Weights, CorrectionReport)> {
    let n = xs.size().first().copied().unwrap_or(0);
    ensure!(n > 0, "empirical bias correction needs calibration images");
    let t0 = std::time::Instant::now();
    let vs = nn::VarStore::new(Device::Cpu);
    let mut student = Student::new(&vs.root(), arch, w, cal, false, float, false)?;
    let mut largest = (0f32, String::new());
    tch::no_grad(|| -> Result<()> {
        // Both sides over the whole set, a chunk at a time: (float, fake-int8) per chunk.
        let mut xs: Vec<(Tensor, Tensor)> = xs
            .split(CORRECTION_CHUNK, 0)
            .into_iter()
            .map(|x| {
                let x = x * 2.0 - 1.0;
                (x.shallow_clone(), x)
            })
            .collect();
        let mut x_scale = Some(2.0 / 255.0);
        for (units, residual) in &mut student.blocks {
            let inputs: Vec<(Tensor, Tensor)> = xs
                .iter()
                .map(|(f, q)| (f.shallow_clone(), q.shallow_clone()))
                .collect();
            for u in units.iter_mut() {
                let (wf, bf) = (u.w.shallow_clone(), u.b.detach().copy());
                if rounding != WeightRounding::Nearest && u.quant_w {
                    // Rounded against this unit's quantized inputs, upstream error included.
                    let compensated = rounding.compensated();
                    let mut stats = InputStats::default();
                    for (f, q) in &xs {
                        stats.add(&u.spec, q, compensated.then_some(f));
                    }
                    // Rows whose step the int32 bias's range sets are left to the exporter.
                    let (step, floor) = step_and_floor(&wf, &bf, x_scale);
                    let keep = (floor * 4.0).ge_tensor(&step);
                    u.w = gptq_weights(&u.spec, &wf, &stats, &keep, rounding.shrinks())?;
                }
                // The mean shift of the pre-activation, over every image.
                let wq = u.weights_at(&bf, x_scale);
                let per_channel = |t: Tensor| {
                    t.to_kind(Kind::Double).sum_dim_intlist(
                        [0i64, 2, 3].as_slice(),
                        false,
                        Kind::Double,
                    )
                };
                let mut shift = Tensor::zeros([u.spec.cout as i64], (Kind::Double, Device::Cpu));
                let mut count = 0i64;
                let mut floats = Vec::with_capacity(xs.len());
                let mut pres = Vec::with_capacity(xs.len());
                for (f, q) in &xs {
                    let yf = u.conv(f, &wf, &bf);
                    let yq = u.conv(q, &wq, &bf);
                    let size = yf.size();
                    count += size[0] * size[2] * size[3];
                    shift += per_channel(&yq - &yf);
                    floats.push(yf);
                    pres.push(yq);
                }
                let mut shift = shift / count as f64;
                if u.spec.relu6 {
                    // What the next layer reads is the output after the ReLU6, whose mean the
                    // quantization noise moves even where the pre-activation mean is right
                    // (noise below 0 is cut off, above it is not): match that mean instead,
                    // by Newton steps on the shift (the slope: the share of values between
                    // the clamps).
                    let top = if u.quant_out {
                        (u.out.top() - u.out.zero()) as f64 * u.out.scale as f64
                    } else {
                        6.0
                    };
                    let mut target =
                        Tensor::zeros([u.spec.cout as i64], (Kind::Double, Device::Cpu));
                    for yf in &floats {
                        target += per_channel(yf.clamp(0.0, 6.0));
                    }
                    for _ in 0..3 {
                        let d = (-&shift).to_kind(Kind::Float).view([1, -1, 1, 1]);
                        let mut got = Tensor::zeros_like(&target);
                        let mut slope = Tensor::zeros_like(&target);
                        for yq in &pres {
                            let y = yq + &d;
                            got += per_channel(y.clamp(0.0, top));
                            slope += per_channel(y.gt(0.0).logical_and(&y.lt(top)));
                        }
                        shift -= (&target - got) / slope.clamp_min(1.0);
                    }
                }
                drop(pres);
                let shift = shift.to_kind(Kind::Float);
                let worst = shift.abs().max().double_value(&[]) as f32;
                if worst > largest.0 {
                    largest = (worst, u.spec.conv.clone());
                }
                let b = &bf - &shift;
                let wq = u.weights_at(&b, x_scale);
                let float = |y: Tensor| if u.spec.relu6 { y.clamp(0.0, 6.0) } else { y };
                xs = xs
                    .iter()
                    .zip(floats)
                    .map(|((_, q), yf)| (float(yf), u.output(u.conv(q, &wq, &b))))
                    .collect();
                u.b = b;
                x_scale = u.out.bias_step();
            }
            if let Some(r) = residual {
                xs = xs
                    .iter()
                    .zip(&inputs)
                    .map(|((f, q), (fi, qi))| {
                        let q = q + qi;
                        let q = if r.quantized {
                            fake_quant(&q, r.out)
                        } else {
                            q
                        };
                        (f + fi, q)
                    })
                    .collect();
                x_scale = r.out.bias_step();
            }
        }
        Ok(())
    })?;
    let corrected = student.weights(w)?;
    Ok((
        corrected,
        CorrectionReport {
            images: n as usize,
            largest_shift: largest.0,
            largest_in: largest.1,
            seconds: t0.elapsed().as_secs_f64(),
        },
    ))
}

/// Images per convolution call in [`empirical_bias_correction`] (bounds the temporaries).
const CORRECTION_CHUNK: i64 = 50;

/// `w` with the analytic bias correction (quantize.rs) folded into its biases, as a checkpoint
/// to write the int8 model from without bias correction (folded convolutions, identity
/// BatchNorm): where [`distill`] starts from after a post-training analytic correction.
pub fn analytic_bias_correction(arch: &Arch, w: &Weights, cal: &Calibrated) -> Result<Weights> {
    let vs = nn::VarStore::new(Device::Cpu);
    Student::new(
        &vs.root(),
        arch,
        w,
        cal,
        false,
        &FloatParts::default(),
        true,
    )?
    .weights(w)
}

/// Fine-tunes the fake-int8 backbone to match `teacher` on every photo of `train` (one random
/// view of `views` per photo and epoch), starting from `w`, whose biases already carry their
/// correction ([`analytic_bias_correction`] or [`empirical_bias_correction`]); returns the
/// weights to write the int8 model in `form` from without bias correction.
// The teacher, its weights and calibration, the photos and views, the augmentation and the
// options are each used on their own; bundling them would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn distill(
    teacher: &Net,
    w: &Weights,
    cal: &Calibrated,
    train: &SplitData,
    views: &[View],
    augmentation: Option<&AugmentConfig>,
    o: &QatOptions,
    form: Form,
) -> Result<(Weights, QatReport)> {
    ensure!(o.epochs > 0, "--qat-epochs must be at least 1");
    ensure!(o.batch > 0, "--qat-batch must be at least 1");
    ensure!(o.lr > 0.0 && o.lr.is_finite(), "--qat-lr must be positive");
    ensure!(
        !train.is_empty(),
        "quantization-aware fine-tuning needs training photos; the cache has none"
    );
    ensure!(!views.is_empty(), "the contract has no TTA views");
    let t0 = std::time::Instant::now();
    let device = Device::Cpu;
    let vs = nn::VarStore::new(device);
    let student = Student::new(
        &vs.root(),
        &teacher.arch,
        w,
        cal,
        !o.biases_only,
        &FloatParts::written(form),
        false,
    )?;
    let mut opt = nn::Adam::default().build(&vs, o.lr)?;
    let s = train.size;
    let per = 3 * s * s;
    // Seeds the augmentation (torch's generator) and the order and views (ours).
    tch::manual_seed(o.seed as i64);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(o.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut epoch_mse = Vec::with_capacity(o.epochs);
    for _ in 0..o.epochs {
        order.shuffle(&mut rng);
        let (mut sum, mut n) = (0f64, 0usize);
        for chunk in order.chunks(o.batch) {
            let mut buf = vec![0f32; chunk.len() * per];
            for (&i, out) in chunk.iter().zip(buf.chunks_mut(per)) {
                let v = rng.gen_range(0..views.len());
                write_views(train.image(i), s, s, &views[v..=v], out)?;
            }
            let x = Tensor::from_slice(&buf).view([chunk.len() as i64, 3, s as i64, s as i64]);
            let x = match augmentation {
                Some(a) => augment(&x, a, train.is_fov()),
                None => x,
            };
            let target = tch::no_grad(|| teacher.forward_t(&x, false));
            let logits = student.logits(&x);
            let loss = match o.loss {
                QatLoss::Probability => (logits.sigmoid() - target.sigmoid()).square(),
                QatLoss::Logit => (logits - target).square(),
            }
            .mean(Kind::Float);
            opt.backward_step(&loss);
            let l = loss.double_value(&[]);
            ensure!(
                l.is_finite(),
                "quantization-aware fine-tuning diverged (loss {l}): try a smaller --qat-lr"
            );
            sum += l * chunk.len() as f64;
            n += chunk.len();
        }
        epoch_mse.push(sum / n as f64);
    }
    let weights = student.weights(w)?;
    Ok((
        weights,
        QatReport {
            epochs: o.epochs,
            lr: o.lr,
            batch: o.batch,
            photos: train.len(),
            loss: o.loss,
            first_epoch_mse: epoch_mse[0],
            last_epoch_mse: *epoch_mse.last().unwrap_or(&f64::NAN),
            seconds: t0.elapsed().as_secs_f64(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::equalize::{equalize, Equalization};
    use crate::export::quantize::{calibrate, int8_model, stream_keys, Calibration, Exceptions};
    use crate::export::run::var_weights;
    use drscreen_core::SEED_VIEWS;
    use prost::Message;
    use tch::Tensor;
    use tract_onnx::pb::ModelProto;
    use tract_onnx::prelude::*;

    /// A 32 px test network, its random photos and their TTA views; with `amplify`, its output
    /// unit is scaled: a freshly initialised head barely depends on its input, so the output is
    /// scaled until the logits spread around 0 and the probabilities show the backbone's error.
    fn test_net(seed: i64, amplify: bool) -> (nn::VarStore, Net, Vec<Vec<u8>>, Tensor) {
        let size = 32;
        let _turn = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Net::new(&vs.root(), Arch::mobilenet_v2(1.0, size), 0);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed as u64 + 2);
        let photos: Vec<Vec<u8>> = (0..4)
            .map(|_| (0..size * size * 3).map(|_| rng.gen()).collect())
            .collect();
        let refs: Vec<&[u8]> = photos.iter().map(|p| p.as_slice()).collect();
        let xs = views_tensor(&refs, size, &SEED_VIEWS).unwrap();
        let vars = vs.variables();
        tch::no_grad(|| {
            if !amplify {
                return;
            }
            let _ = vars["head.out.weight"]
                .shallow_clone()
                .g_mul_scalar_(2000.0);
            let logits = net.forward_t(&xs, false);
            let spread = logits.std(true).double_value(&[]);
            let mean = logits.mean(Kind::Float).double_value(&[]);
            let _ = vars["head.out.weight"]
                .shallow_clone()
                .g_mul_scalar_(2.0 / spread);
            let _ = vars["head.out.bias"]
                .shallow_clone()
                .g_sub_scalar_(mean * 2.0 / spread);
        });
        (vs, net, photos, xs)
    }

    /// The test net's weights and their min/max calibration on its photos.
    fn calibrated(vs: &nn::VarStore, net: &Net, photos: &[Vec<u8>]) -> (Weights, Calibrated) {
        let w = var_weights(vs).unwrap();
        let refs: Vec<&[u8]> = photos.iter().map(|p| p.as_slice()).collect();
        let cal = calibrate(&net.arch, &w, &refs, &SEED_VIEWS, Calibration::MinMax).unwrap();
        (w, cal)
    }

    /// The calibration's statistics hold together, and the last backbone tensor's channel means
    /// are tch's: its pooled features averaged over the photos' views (every plane is the same
    /// size, so the mean of the pooled means is the mean over every value).
    #[test]
    fn calibration_statistics_agree_with_each_other_and_with_tch() {
        let (vs, net, photos, xs) = test_net(5, false);
        let (_, cal) = calibrated(&vs, &net, &photos);
        for (key, &(lo, hi)) in &cal.ranges {
            let (mins, maxs) = (&cal.channel_min[key], &cal.channel_max[key]);
            let (means, squares) = (&cal.means[key], &cal.channel_mean_square[key]);
            assert!(
                mins.len() == maxs.len()
                    && means.len() == maxs.len()
                    && squares.len() == maxs.len()
            );
            // Min/max calibration: the tensor's range is the widest channel's.
            assert_eq!(
                lo,
                mins.iter().copied().fold(f32::INFINITY, f32::min),
                "{key}"
            );
            assert_eq!(
                hi,
                maxs.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                "{key}"
            );
            for c in 0..maxs.len() {
                let (m, q) = (means[c], squares[c]);
                let tol = 1e-5 * (1.0 + q);
                assert!(
                    mins[c] <= m + tol && m <= maxs[c] + tol,
                    "{key}[{c}] mean {m}"
                );
                let top = mins[c].abs().max(maxs[c].abs());
                assert!(
                    m * m <= q + tol && q <= top * top + tol,
                    "{key}[{c}] square {q}"
                );
            }
        }
        let last = net.arch.units().last().unwrap();
        let want = tch::no_grad(|| net.features(&xs, false).mean_dim(0, false, Kind::Float));
        let want: Vec<f32> = Vec::try_from(&want).unwrap();
        let got = &cal.means[&unit_key(last)];
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "calibration means vs tch: {worst}");
    }

    /// tract's plan for batches of the seed's TTA views of a written model.
    fn tract_views_plan(proto: &ModelProto, size: usize) -> std::sync::Arc<TypedRunnableModel> {
        edge_runtime::engine::avoid_tract_amx_kernels();
        tract_onnx::onnx()
            .model_for_read(&mut &proto.encode_to_vec()[..])
            .unwrap()
            .with_input_fact(0, f32::fact([SEED_VIEWS.len(), 3, size, size]).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap()
    }

    /// What is trained is what ships: the student's fake-int8 forward (with the corrected
    /// biases it starts from) and the int8 model written from its weights agree in tract, and
    /// the weights it hands back hold the folded convolutions exactly.
    #[test]
    fn student_matches_the_int8_model_it_writes() {
        let (vs, net, photos, xs) = test_net(3, true);
        let (w, cal) = calibrated(&vs, &net, &photos);

        // The student's weights (corrected biases, identity BatchNorm) written as int8 without
        // bias correction.
        let svs = nn::VarStore::new(Device::Cpu);
        let student = Student::new(
            &svs.root(),
            &net.arch,
            &w,
            &cal,
            true,
            &FloatParts::default(),
            true,
        )
        .unwrap();
        let tuned = student.weights(&w).unwrap();
        for u in net.arch.units() {
            let (a, b) = (fold_conv(&tuned, u).unwrap(), &student_unit(&student, u));
            assert_eq!(a.0, b.0, "{}: folded weights", u.conv);
            assert_eq!(a.1, b.1, "{}: folded bias", u.conv);
        }
        let fake: Vec<f32> =
            fake_int8_probability(&net, &w, &cal, &xs, &FloatParts::default(), true)
                .unwrap()
                .try_into()
                .unwrap();
        let (worst, float_gap) = int8_file_gaps(
            &net,
            &tuned,
            &cal,
            &xs,
            &fake,
            Form::ConvInteger,
            &Exceptions::default(),
        );
        eprintln!("fake-int8 vs int8 in tract {worst:.2e}; float vs int8 {float_gap:.2e}");
        // The simulation is much closer to the int8 model than the float network is.
        assert!(
            worst < 0.2 * float_gap,
            "fake-int8 {worst} vs float {float_gap}"
        );
    }

    /// `--float-weights` writes what the sweep simulated: the int8 file with float weights (every
    /// convolution but the stem's, so that every kind of unit takes that path) runs in tract as
    /// the simulation with those weights left in float. (Not amplified: the amplified test net's
    /// int8 outputs saturate. Unamplified, its head hides the weights' rounding, 6e-8 here, so
    /// the graph's structure is checked too.)
    #[test]
    fn float_weight_units_are_written_as_the_simulation_leaves_them() {
        let size = 32;
        let (vs, net, photos, _) = test_net(3, false);
        let (w, cal) = calibrated(&vs, &net, &photos);
        let parts = FloatParts {
            weights: net.arch.units().skip(1).map(unit_key).collect(),
            ..Default::default()
        };
        let proto = int8_model(
            &net.arch,
            &w,
            &cal,
            Form::ConvInteger,
            true,
            &Exceptions {
                float_weights: parts.weights.clone(),
                ..Default::default()
            },
            vec![],
        )
        .unwrap();
        let plan = tract_views_plan(&proto, size);
        let mut batch = vec![0f32; SEED_VIEWS.len() * 3 * size * size];
        let (mut worst, mut moved) = (0f32, 0f32);
        for p in &photos {
            write_views(p, size, size, &SEED_VIEWS, &mut batch).unwrap();
            let x = Tensor::from_slice(&batch).view([SEED_VIEWS.len() as i64, 3, 32, 32]);
            let sim: Vec<f32> = fake_int8_probability(&net, &w, &cal, &x, &parts, true)
                .unwrap()
                .try_into()
                .unwrap();
            let all_int8: Vec<f32> =
                fake_int8_probability(&net, &w, &cal, &x, &FloatParts::default(), true)
                    .unwrap()
                    .try_into()
                    .unwrap();
            let input =
                tract_onnx::prelude::Tensor::from_shape(&[SEED_VIEWS.len(), 3, size, size], &batch)
                    .unwrap();
            let out = plan.run(tvec!(input.into())).unwrap();
            let file = out[0].to_plain_array_view::<f32>().unwrap();
            for ((a, b), c) in sim.iter().zip(file.iter()).zip(&all_int8) {
                worst = worst.max((a - b).abs());
                moved = moved.max((c - b).abs());
            }
        }
        eprintln!(
            "float weights: simulation vs file {worst:.2e}; the file vs all-int8 {moved:.2e}"
        );
        assert!(worst < 1e-6, "simulation vs file {worst}");
        // Every convolution but the stem is a float Conv between DequantizeLinear/QuantizeLinear.
        let graph = proto.graph.as_ref().unwrap();
        let ops = |op: &str| graph.node.iter().filter(|n| n.op_type == op).count();
        assert_eq!((ops("ConvInteger"), ops("Conv")), (1, parts.weights.len()));
        // The stem reads the photo: it cannot keep float weights.
        let stem = FloatParts {
            weights: [unit_key(net.arch.units().next().unwrap())].into(),
            ..Default::default()
        };
        let err = int8_model(
            &net.arch,
            &w,
            &cal,
            Form::ConvInteger,
            true,
            &Exceptions {
                float_weights: stem.weights,
                ..Default::default()
            },
            vec![],
        );
        assert!(format!("{:#}", err.unwrap_err()).contains("first convolution"));
    }

    /// The sensitivity sweep's switches reach every quantization step: with every part left in
    /// float the simulation is the float network, and each kind of part alone moves it.
    #[test]
    fn a_simulation_with_every_part_left_in_float_is_the_float_network() {
        let (vs, net, photos, xs) = test_net(3, false);
        let (w, cal) = calibrated(&vs, &net, &photos);
        let mut weights = FloatParts::default();
        let mut activations = FloatParts::default();
        for b in &net.arch.blocks {
            for u in &b.units {
                weights.weights.insert(unit_key(u));
                activations.activations.insert(unit_key(u));
            }
            if b.residual {
                activations.activations.insert(residual_key(b));
            }
        }
        let everything = FloatParts {
            weights: weights.weights.clone(),
            activations: activations.activations.clone(),
            head: true,
            ..FloatParts::default()
        };
        // Features and logits: a 32 px network barely moves its freshly initialised head, so
        // probabilities would hide the backbone's error.
        let (float_features, float_logits) =
            tch::no_grad(|| (net.features(&xs, false), net.forward_t(&xs, false)));
        let sim = |parts: &FloatParts| {
            let svs = nn::VarStore::new(Device::Cpu);
            let st = Student::new(&svs.root(), &net.arch, &w, &cal, false, parts, true).unwrap();
            tch::no_grad(|| (st.features(&xs), st.logits(&xs)))
        };
        let d = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        let (int8, all) = (sim(&FloatParts::default()), sim(&everything));
        let int8_gap = (d(&int8.0, &float_features), d(&int8.1, &float_logits));
        let all_gap = (d(&all.0, &float_features), d(&all.1, &float_logits));
        eprintln!("int8 (features, logits) {int8_gap:?}; everything left in float {all_gap:?}");
        assert!(
            all_gap.0 < 1e-3 * int8_gap.0 && all_gap.1 < 1e-3 * int8_gap.1,
            "{all_gap:?} vs int8 {int8_gap:?}"
        );
        // Each kind of part alone: the switch changes the simulation, and what stays quantized
        // still moves it off the float network.
        let mut head_only = everything.clone();
        head_only.head = false;
        // With the whole backbone in float, the switch shows in the features (the fresh head
        // reads them so weakly that its logits can move by less than 1e-6) and what stays
        // quantized, the head, shows in the logits.
        for (name, parts, head_left) in [
            ("weights", &weights, false),
            ("activations", &activations, false),
            ("all but the head", &head_only, true),
        ] {
            let (f, l) = sim(parts);
            let moved = d(&f, &int8.0);
            let (left, floor) = if head_left {
                (d(&l, &float_logits), all_gap.1)
            } else {
                (d(&f, &float_features), all_gap.0)
            };
            eprintln!("{name} left in float: {moved:.3e} from int8, {left:.3e} from float");
            assert!(
                moved > 10.0 * all_gap.0 && left > 10.0 * floor,
                "{name}: {moved} {left}"
            );
        }
    }

    /// The empirical bias correction is written as it is simulated, and it takes out mean error
    /// that the analytic one leaves: on the calibration images, the pooled features of the
    /// corrected simulation are closer to the float network's on average, channel by channel.
    #[test]
    fn empirical_bias_correction_is_written_as_simulated_and_takes_out_the_mean_shift() {
        let (vs, net, photos, xs) = test_net(3, true);
        let (w, cal) = calibrated(&vs, &net, &photos);
        let none = FloatParts::default();
        let (corrected, report) =
            empirical_bias_correction(&net.arch, &w, &cal, &xs, &none, WeightRounding::Nearest)
                .unwrap();
        assert_eq!(report.images, photos.len() * SEED_VIEWS.len(), "{report:?}");
        assert!(report.largest_shift > 0.0, "{report:?}");

        // Mean over channels of |per-channel mean of (simulated - float) pooled features|.
        let float_features = tch::no_grad(|| net.features(&xs, false));
        let mean_shift = |w: &Weights, analytic: bool| {
            let svs = nn::VarStore::new(Device::Cpu);
            let st = Student::new(&svs.root(), &net.arch, w, &cal, false, &none, analytic).unwrap();
            let f = tch::no_grad(|| st.features(&xs));
            (f - &float_features)
                .mean_dim([0i64].as_slice(), false, Kind::Float)
                .abs()
                .mean(Kind::Float)
                .double_value(&[])
        };
        let (analytic, empirical) = (mean_shift(&w, true), mean_shift(&corrected, false));
        eprintln!(
            "mean feature shift: analytic {analytic:.3e}, empirical {empirical:.3e}; {report:?}"
        );
        assert!(empirical < 0.5 * analytic, "{empirical} vs {analytic}");

        // The file written from the corrected checkpoint (without the analytic correction)
        // runs in tract as the simulation of it does.
        let (worst, float_gap) = written_vs_simulated(&net, &corrected, &cal, &xs);
        eprintln!("corrected: simulation vs file {worst:.2e}; float vs file {float_gap:.2e}");
        assert!(
            worst < 0.2 * float_gap,
            "simulation {worst} vs float {float_gap}"
        );
    }

    /// [`int8_file_gaps`] of the `ConvInteger` file written, without the analytic correction,
    /// from a checkpoint whose biases carry their correction, against its simulation.
    fn written_vs_simulated(net: &Net, w: &Weights, cal: &Calibrated, xs: &Tensor) -> (f32, f32) {
        let none = FloatParts::default();
        let sim: Vec<f32> = fake_int8_probability(net, w, cal, xs, &none, false)
            .unwrap()
            .try_into()
            .unwrap();
        int8_file_gaps(
            net,
            w,
            cal,
            xs,
            &sim,
            Form::ConvInteger,
            &Exceptions::default(),
        )
    }

    /// GPTQ rounding (both kinds) inside the empirical correction: the file written from its
    /// checkpoint runs in tract as the simulation of it does, on the exporter's own steps.
    #[test]
    fn gptq_rounding_is_written_as_simulated() {
        let (vs, net, photos, xs) = test_net(3, true);
        let (w, cal) = calibrated(&vs, &net, &photos);
        let none = FloatParts::default();
        for rounding in [
            WeightRounding::Gptq,
            WeightRounding::GptqCompensated,
            WeightRounding::GptqCompensatedSearch,
        ] {
            let (corrected, _) =
                empirical_bias_correction(&net.arch, &w, &cal, &xs, &none, rounding).unwrap();
            // The weights moved (not the nearest rounding's), and the file is the simulation.
            let moved = net.arch.blocks[2].units[0].conv.clone() + ".weight";
            assert_ne!(corrected[&moved].0, w[&moved].0, "{rounding:?}");
            let (worst, float_gap) = written_vs_simulated(&net, &corrected, &cal, &xs);
            eprintln!(
                "{rounding:?}: simulation vs file {worst:.2e}; float vs file {float_gap:.2e}"
            );
            assert!(worst < 1e-5, "{rounding:?}: simulation vs file {worst}");
        }
    }

    /// Cross-layer equalization computes the float network it was given, and scales channels.
    #[test]
    fn equalized_weights_compute_the_same_float_network() {
        let (vs, net, photos, xs) = test_net(3, true);
        let (w, cal) = calibrated(&vs, &net, &photos);
        let mut all = FloatParts {
            head: true,
            ..Default::default()
        };
        for b in &net.arch.blocks {
            all.weights.extend(b.units.iter().map(unit_key));
            all.activations.extend(b.units.iter().map(unit_key));
            all.activations.insert(residual_key(b));
        }
        // The pooled features of the float network built from a checkpoint.
        let features = |w: &Weights| {
            let svs = nn::VarStore::new(Device::Cpu);
            let st = Student::new(&svs.root(), &net.arch, w, &cal, false, &all, false).unwrap();
            tch::no_grad(|| st.features(&xs))
        };
        let original = features(&w);
        let size = original.abs().max().double_value(&[]);
        for which in [
            Equalization::Depthwise,
            Equalization::All,
            Equalization::Streams,
        ] {
            let (eq, report) = equalize(&net.arch, &w, &cal, which, 2.0, 2.0).unwrap();
            assert!(
                report.scaled_channels > 0 && report.max_scale > 1.0,
                "{report:?}"
            );
            assert_eq!(
                report.streams > 0,
                which == Equalization::Streams,
                "{report:?}"
            );
            let gap = (features(&eq) - &original).abs().max().double_value(&[]);
            eprintln!("{which:?}: features off by {gap:.2e} of {size:.2e}; {report:?}");
            assert!(
                gap < 1e-5 * size,
                "{which:?}: equalized float network off by {gap}"
            );
        }
        let err = equalize(&net.arch, &w, &cal, Equalization::All, 0.5, 2.0).unwrap_err();
        assert!(format!("{err}").contains("--equalize-headroom"), "{err}");
        let err = equalize(&net.arch, &w, &cal, Equalization::Streams, 2.0, 0.9).unwrap_err();
        assert!(format!("{err}").contains("--streams-headroom"), "{err}");
    }

    /// A residual stream's channel that `--equalization streams` scales up ends, on the
    /// calibration photos, at most at each stream sum's range over the streams' headroom (not
    /// the pairs'): a photo whose channel goes past the calibration photos' largest has that
    /// much room before it clips.
    #[test]
    fn scaled_stream_channels_stay_the_headroom_below_the_stream_range() {
        let (vs, net, photos, _) = test_net(3, true);
        let (w, cal) = calibrated(&vs, &net, &photos);
        let refs: Vec<&[u8]> = photos.iter().map(|p| p.as_slice()).collect();
        let sums: Vec<String> = net
            .arch
            .blocks
            .iter()
            .filter(|b| b.residual)
            .map(residual_key)
            .collect();
        let size = |c: &Calibrated, key: &str, i: usize| {
            c.channel_max[key][i].abs().max(c.channel_min[key][i].abs())
        };
        // (pairs' headroom, streams' headroom): the pairs' must not set the streams'.
        for (pairs, headroom) in [(2.0f32, 1.0f32), (2.0, 2.0), (1.0, 4.0)] {
            let (eq, report) =
                equalize(&net.arch, &w, &cal, Equalization::Streams, pairs, headroom).unwrap();
            assert!(report.streams > 0, "{report:?}");
            assert_eq!(
                report.streams_headroom,
                (pairs != headroom).then_some(headroom),
                "{report:?}"
            );
            let after = calibrate(&net.arch, &eq, &refs, &SEED_VIEWS, Calibration::MinMax).unwrap();
            let mut scaled = 0;
            for key in &sums {
                let n = cal.channel_max[key].len();
                let top = (0..n).map(|i| size(&cal, key, i)).fold(0f32, f32::max);
                for i in 0..n {
                    let (before, now) = (size(&cal, key, i), size(&after, key, i));
                    if now > before * 1.001 {
                        scaled += 1;
                        assert!(
                            now <= top / headroom * 1.001,
                            "headroom {headroom}: {key} channel {i} scaled from {before} to {now}, past {top} / {headroom}"
                        );
                    }
                }
            }
            eprintln!("headroom {headroom}: {scaled} stream channels scaled up; {report:?}");
            assert!(scaled > 0, "headroom {headroom}: no stream channel scaled");
        }
    }

    /// The three integer forms write the network that the simulation runs; the `ConvInteger`
    /// forms have no `QLinearConv` left in them (their requantization is the plain ops), and
    /// the float-sums one quantizes no residual projection.
    #[test]
    fn convinteger_and_qlinearconv_files_run_as_the_simulation() {
        let (vs, net, photos, xs) = test_net(3, true);
        let (w, cal) = calibrated(&vs, &net, &photos);
        for form in [
            Form::QLinearConv,
            Form::ConvInteger,
            Form::ConvIntegerFloatSums,
        ] {
            let parts = FloatParts::written(form);
            let sim: Vec<f32> = fake_int8_probability(&net, &w, &cal, &xs, &parts, false)
                .unwrap()
                .try_into()
                .unwrap();
            let (worst, float_gap) =
                int8_file_gaps(&net, &w, &cal, &xs, &sim, form, &Exceptions::default());
            eprintln!("{form:?}: simulation vs file {worst:.2e}; float vs file {float_gap:.2e}");
            // The amplified net shows the quantization (0.12 from the float network); the
            // file is the simulation up to float32 rounding.
            assert!(
                float_gap > 0.05,
                "{form:?}: the test net hides the int8 error"
            );
            assert!(worst < 1e-5, "{form:?}: simulation vs file {worst}");
        }
        // Summing the projections in float is a different network: the simulations part (in
        // the pooled features: the amplified net's probabilities saturate on most views).
        let features = |form| {
            let svs = nn::VarStore::new(Device::Cpu);
            let parts = FloatParts::written(form);
            let st = Student::new(&svs.root(), &net.arch, &w, &cal, false, &parts, false).unwrap();
            tch::no_grad(|| st.features(&xs))
        };
        let apart = (features(Form::ConvInteger) - features(Form::ConvIntegerFloatSums))
            .abs()
            .max()
            .double_value(&[]);
        let float = tch::no_grad(|| net.features(&xs, false));
        let gap = (features(Form::ConvIntegerFloatSums) - float)
            .abs()
            .max()
            .double_value(&[]);
        eprintln!("pooled features: projections quantized vs summed in float {apart:.2e}, int8 vs float {gap:.2e}");
        assert!(
            apart > 0.1 * gap,
            "the projections' quantization moved nothing: {apart} (int8 vs float {gap})"
        );
        let units = net.arch.units().count();
        let residuals = net.arch.blocks.iter().filter(|b| b.residual).count();
        let dense = net.arch.head.hidden.len() + 1;
        for (form, projections_quantized) in [
            (Form::ConvInteger, residuals),
            (Form::ConvIntegerFloatSums, 0),
        ] {
            let proto = int8_model(
                &net.arch,
                &w,
                &cal,
                form,
                false,
                &Exceptions::default(),
                vec![],
            )
            .unwrap();
            let graph = proto.graph.as_ref().unwrap();
            let ops = |op: &str| graph.node.iter().filter(|n| n.op_type == op).count();
            assert_eq!((ops("ConvInteger"), ops("QLinearConv")), (units, 0));
            // One QuantizeLinear per convolution whose output is quantized, one for the input,
            // one per residual sum; one DequantizeLinear per residual sum's input (the block's,
            // and its projection's when quantized), for the pooling and per dense layer.
            let quantized = units - residuals + projections_quantized;
            assert_eq!(ops("QuantizeLinear"), quantized + 1 + residuals, "{form:?}");
            assert_eq!(
                ops("DequantizeLinear"),
                residuals + projections_quantized + 1 + dense,
                "{form:?}"
            );
        }
    }

    /// `--wide-streams` writes what the simulation holds at 16 bits: the file runs in tract as
    /// the simulation does, each 1x1 convolution that reads a stream tensor is two
    /// `ConvInteger`s (one per uint8 plane), no stream tensor is a `QuantizeLinear`, and the
    /// 16-bit streams take most of the int8 error out of the pooled features. Other forms and
    /// tensors are refused.
    #[test]
    fn wide_streams_are_written_as_the_simulation_holds_them() {
        let (vs, net, photos, xs) = test_net(3, true);
        let (w, cal) = calibrated(&vs, &net, &photos);
        let wide = Exceptions {
            wide: stream_keys(&net.arch),
            ..Default::default()
        };
        let parts = FloatParts {
            wide: wide.wide.clone(),
            ..FloatParts::written(Form::ConvInteger)
        };
        let sim: Vec<f32> = fake_int8_probability(&net, &w, &cal, &xs, &parts, false)
            .unwrap()
            .try_into()
            .unwrap();
        let (worst, float_gap) =
            int8_file_gaps(&net, &w, &cal, &xs, &sim, Form::ConvInteger, &wide);
        eprintln!("wide streams: simulation vs file {worst:.2e}; float vs file {float_gap:.2e}");
        assert!(worst < 1e-5, "simulation vs file {worst}");

        // The pooled features (the amplified net's probabilities saturate on most views).
        let float = tch::no_grad(|| net.features(&xs, false));
        let gap = |parts: &FloatParts| {
            let svs = nn::VarStore::new(Device::Cpu);
            let st = Student::new(&svs.root(), &net.arch, &w, &cal, false, parts, false).unwrap();
            let f = tch::no_grad(|| st.features(&xs));
            (f - &float)
                .square()
                .mean(Kind::Float)
                .sqrt()
                .double_value(&[])
        };
        let (narrow, wide_gap) = (gap(&FloatParts::default()), gap(&parts));
        eprintln!("pooled features' rms error: uint8 streams {narrow:.3e}, 16-bit {wide_gap:.3e}");
        assert!(
            wide_gap < 0.8 * narrow,
            "16-bit streams {wide_gap} vs uint8 {narrow}"
        );

        let proto =
            int8_model(&net.arch, &w, &cal, Form::ConvInteger, false, &wide, vec![]).unwrap();
        let graph = proto.graph.as_ref().unwrap();
        let ops = |op: &str| graph.node.iter().filter(|n| n.op_type == op).count();
        let units = net.arch.units().count();
        // Each projection's output is read by the next block's first (1x1) convolution.
        let projections = net.arch.units().filter(|u| !u.relu6).count();
        assert_eq!(ops("ConvInteger"), units + projections);
        assert_eq!(
            ops("Floor"),
            projections,
            "one pair of planes per stream tensor read"
        );
        // The input and the ReLU6 outputs are uint8; the streams are rounded by Round/Clip.
        assert_eq!(ops("QuantizeLinear"), 1 + units - projections);
        assert_eq!(ops("Round"), wide.wide.len());
        // Only the pooling and the head dequantize.
        assert_eq!(ops("DequantizeLinear"), 1 + net.arch.head.hidden.len() + 1);
        // Each initializer once (onnxruntime warns of, and onnx.checker refuses, duplicates).
        let mut names: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "duplicate initializers");

        let err = int8_model(&net.arch, &w, &cal, Form::QLinearConv, false, &wide, vec![]);
        assert!(format!("{:#}", err.unwrap_err()).contains("ConvInteger forms only"));
        let stem_out = Exceptions {
            wide: [unit_key(net.arch.units().next().unwrap())].into(),
            ..Default::default()
        };
        let err = int8_model(
            &net.arch,
            &w,
            &cal,
            Form::ConvInteger,
            false,
            &stem_out,
            vec![],
        );
        assert!(format!("{:#}", err.unwrap_err()).contains("only the residual streams"));
    }

    /// The int8 file (in `form`, with `exceptions`) written from `checkpoint` without bias
    /// correction, run in tract on the test net's views `xs` (photo by photo): (max |file -
    /// `sim`|, max |file - float network|).
    fn int8_file_gaps(
        net: &Net,
        checkpoint: &Weights,
        cal: &Calibrated,
        xs: &Tensor,
        sim: &[f32],
        form: Form,
        exceptions: &Exceptions,
    ) -> (f32, f32) {
        let size = net.arch.input_size;
        let proto =
            int8_model(&net.arch, checkpoint, cal, form, false, exceptions, vec![]).unwrap();
        let plan = tract_views_plan(&proto, size);
        let float: Vec<f32> = tch::no_grad(|| net.probability(xs)).try_into().unwrap();
        let per = SEED_VIEWS.len();
        let (mut worst, mut float_gap) = (0f32, 0f32);
        for (k, x) in xs.split(per as i64, 0).iter().enumerate() {
            let batch: Vec<f32> = x.contiguous().view(-1).try_into().unwrap();
            let input =
                tract_onnx::prelude::Tensor::from_shape(&[per, 3, size, size], &batch).unwrap();
            let out = plan.run(tvec!(input.into())).unwrap();
            let file = out[0].to_plain_array_view::<f32>().unwrap();
            for (i, b) in file.iter().enumerate() {
                worst = worst.max((sim[k * per + i] - b).abs());
                float_gap = float_gap.max((float[k * per + i] - b).abs());
            }
        }
        (worst, float_gap)
    }

    fn student_unit(s: &Student, u: &ConvUnit) -> (Vec<f32>, Vec<f32>) {
        let q = s
            .blocks
            .iter()
            .flat_map(|(units, _)| units)
            .find(|q| q.spec.conv == u.conv)
            .unwrap();
        let v = |t: &Tensor| Vec::<f32>::try_from(t.detach().view(-1)).unwrap();
        (v(&q.w), v(&q.b))
    }
}
