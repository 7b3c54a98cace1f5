//! Static int8: per-channel symmetric int8 weights and per-tensor asymmetric uint8 activations
//! whose ranges are calibrated on training photos, written in one of three ONNX forms:
//!
//! - [`Form::ConvInteger`] (the default): every convolution (the depthwise ones included) is a
//!   `ConvInteger` (uint8 in, int8 weights, int32 out) followed by its requantization as plain
//!   ops (int32 bias add, float32 multiply, `QuantizeLinear` with scale 1), and each residual
//!   sum's quantization too (a multiplication by the reciprocal scale, then scale 1), which
//!   tract and onnxruntime compute to the same bits.
//! - [`Form::ConvIntegerFloatSums`]: the same, but each residual block's projection is not
//!   requantized: the sum is its block's one rounding (below).
//! - [`Form::QLinearConv`]: every convolution is one `QLinearConv` (uint8 in, int8 weights, int32
//!   bias, uint8 out); the two runtimes round its requantization differently near half steps.
//! - [`Form::Qdq`]: `DequantizeLinear -> Conv -> QuantizeLinear` around float convolutions
//!   whose weights are `DequantizeLinear` of the int8 weights.
//!
//! In the integer forms ReLU6 is the output range `[0, min(6, calibrated max)]`, so the uint8
//! saturation is the activation. A residual sum is a float `Add` and its quantization
//! (`QLinearAdd` is an onnxruntime contrib op that tract does not run) of the block's input
//! (`DequantizeLinear`) and its projection's output, dequantized too, or with
//! `ConvIntegerFloatSums` never quantized (the requantization's float product, scaled to real
//! units). The last
//! backbone tensor is dequantized for the pooling, and the head's dense layers keep float
//! activations with int8 weights (`DequantizeLinear -> Gemm`): the head is <0.2 % of the work
//! but half a megabyte of weights.
//!
//! The input: the device feeds `pixel / 255` and the network first maps it to `2x - 1`. No 8-bit
//! grid holds both every `(2k - 255) / 255` and an exact zero (the value TF padding adds), so the
//! photo's pixel `k` itself is the first layer's uint8 input (`QuantizeLinear` with scale 1/255 is
//! exact on `k / 255`), read with scale 2/255 and zero point 128: it stands for
//! `(2k - 255) / 255 - 1/255`, padding stays an exact zero, and the first layer's bias adds the
//! `1/255 * sum(weights)` back. Only the one padded row and column see the 1/255 shift.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, ensure, Context, Result};
use drscreen_core::{write_views, View};
use prost::Message;
use serde::{Deserialize, Serialize};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{ModelProto, ValueInfoProto};
use tract_onnx::prelude::*;

use super::onnx::{
    attr_int, build_graph, model, residual_key, unit_key, Emit, FloatEmit, Graph, Weights, INPUT,
};
use crate::model::arch::{Arch, Block, ConvUnit};

/// How the quantized convolutions are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// One `QLinearConv` per convolution: integer kernels in tract and onnxruntime.
    #[value(name = "qlinearconv")]
    QLinearConv,
    /// `DequantizeLinear -> Conv -> QuantizeLinear`.
    Qdq,
    /// `ConvInteger` (uint8 in, int8 weights, int32 out), then the requantization written out:
    /// int32 bias `Add`, `Cast` to float, `Mul` by the per-channel multiplier
    /// `x_scale * w_scale / y_scale`, `QuantizeLinear` with scale 1. Every step is exact integer
    /// or one IEEE float32 operation, so tract and onnxruntime give the same bits. Inside
    /// `QLinearConv` they do not: onnxruntime rounds the float32 product `acc * multiplier`,
    /// tract 0.23 the exact one, and they part where the two lie on either side of a half step.
    #[value(name = "convinteger")]
    ConvInteger,
    /// As `convinteger`, but a residual block's projection is not requantized: its float
    /// product, in real units, goes into the residual sum, so the sum is the block's one
    /// rounding, as an int8 kernel that fuses the add would round it.
    #[value(name = "convinteger-float-sums")]
    ConvIntegerFloatSums,
}

impl Form {
    /// Whether the convolutions are `ConvInteger`s with their requantization written out (the
    /// forms that can hold 16-bit tensors, and whose residual sums multiply by the reciprocal).
    pub fn is_convinteger(self) -> bool {
        matches!(self, Form::ConvInteger | Form::ConvIntegerFloatSums)
    }

    /// Whether a residual block's projection keeps its output in float for the sum.
    pub fn sums_projections_in_float(self) -> bool {
        self == Form::ConvIntegerFloatSums
    }
}

/// How the int8 model's biases take out the quantization's mean error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BiasCorrection {
    /// Each convolution's own weight rounding, on the float network's input means.
    #[default]
    Analytic,
    /// Measured convolution by convolution on the calibration photos, with everything upstream
    /// quantized (`qat::empirical_bias_correction`).
    Empirical,
}

/// How an activation's range is chosen from the calibration photos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Calibration {
    /// The smallest and largest value seen.
    MinMax,
    /// The 99.99th percentile of |x| (clipped to what was seen).
    Percentile,
    /// The clip of |x| that minimises the KL divergence between the histogram and its 8-bit
    /// quantization (TensorRT's method).
    Entropy,
}

/// Fewest calibration photos accepted: below this, one odd photo sets the ranges.
pub const MIN_CALIBRATION: usize = 16;
const PERCENTILE: f64 = 0.9999;
const BINS: usize = 2048;

/// Key of the network input (after `2x - 1`) in [`Calibrated::means`].
pub const INPUT_KEY: &str = "input";

/// What calibration measured, by [`unit_key`] / [`residual_key`] (and [`INPUT_KEY`]).
#[derive(Debug, Clone, Default)]
pub struct Calibrated {
    /// Range of each quantized tensor.
    pub ranges: HashMap<String, (f32, f32)>,
    /// Per-channel mean of each tensor in the float network: the input statistics the bias
    /// correction needs.
    pub means: HashMap<String, Vec<f32>>,
    /// Per-channel largest value of each tensor in the float network: what the cross-layer
    /// equalization (`equalize.rs`) scales by.
    pub channel_max: HashMap<String, Vec<f32>>,
    /// Per-channel smallest value and mean square, likewise (for the signed tensors of a
    /// residual stream).
    pub channel_min: HashMap<String, Vec<f32>>,
    pub channel_mean_square: HashMap<String, Vec<f32>>,
}

/// The float graph with every tensor that gets quantized exposed as an output.
fn calibration_model(arch: &Arch, w: &Weights) -> Result<(Vec<u8>, Vec<String>)> {
    let mut emit = FloatEmit::default();
    let mut g = Graph::default();
    let out = build_graph(arch, w, &mut g, &mut emit)?;
    let mut proto = model(arch, g, out, vec![], "calibration taps");
    let graph = proto.graph.as_mut().context("calibration graph")?;
    emit.taps
        .push((INPUT_KEY.to_string(), emit.stem_output.clone()));
    for (_, tensor) in &emit.taps {
        graph.output.push(ValueInfoProto {
            name: tensor.clone(),
            ..Default::default()
        });
    }
    Ok((
        proto.encode_to_vec(),
        emit.taps.into_iter().map(|(k, _)| k).collect(),
    ))
}

/// Per-tensor statistics of one pass.
#[derive(Debug, Clone)]
struct Stats {
    /// Histogram of |x| over `[0, max(|lo|, |hi|)]` (second pass only).
    hist: Vec<u64>,
    /// Per-channel sums and sums of squares, and the count of values per channel.
    sums: Vec<f64>,
    squares: Vec<f64>,
    per_channel: u64,
    /// Per-channel largest and smallest values.
    maxs: Vec<f32>,
    mins: Vec<f32>,
}

/// Runs the float network over every TTA view of each photo and measures the range of every
/// tensor that gets quantized. `photos` are preprocessed RGB8 images of `arch.input_size`.
pub fn calibrate(
    arch: &Arch,
    w: &Weights,
    photos: &[&[u8]],
    views: &[View],
    method: Calibration,
) -> Result<Calibrated> {
    ensure!(
        !photos.is_empty(),
        "the calibration set is empty: prepare a cache with training photos"
    );
    let (bytes, keys) = calibration_model(arch, w)?;
    let s = arch.input_size;
    edge_runtime::engine::avoid_tract_amx_kernels();
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])?
        .with_input_fact(0, f32::fact([views.len(), 3, s, s]).into())?
        .into_optimized()?
        .into_runnable()?;
    let mut batch = vec![0f32; views.len() * 3 * s * s];
    let mut each = |f: &mut dyn FnMut(usize, &[f32], usize)| -> Result<()> {
        for photo in photos {
            write_views(photo, s, s, views, &mut batch)?;
            let input =
                tract_ndarray::Array4::from_shape_vec((views.len(), 3, s, s), batch.clone())?
                    .into_tensor();
            let out = plan.run(tvec!(input.into()))?;
            for (i, t) in out[1..].iter().enumerate() {
                let channels = *t
                    .shape()
                    .get(1)
                    .context("calibration tap has no channel axis")?;
                let v = t.to_plain_array_view::<f32>()?;
                let v = v
                    .as_slice()
                    .context("calibration output is not contiguous")?;
                f(i, v, channels);
            }
        }
        Ok(())
    };
    let mut stats = vec![
        Stats {
            hist: vec![0; BINS],
            sums: Vec::new(),
            squares: Vec::new(),
            per_channel: 0,
            maxs: Vec::new(),
            mins: Vec::new(),
        };
        keys.len()
    ];
    each(&mut |i, v, channels| {
        let st = &mut stats[i];
        // NCHW: the plane of channel c of view n starts at (n * C + c) * HW.
        st.sums.resize(channels, 0.0);
        st.squares.resize(channels, 0.0);
        st.maxs.resize(channels, f32::NEG_INFINITY);
        st.mins.resize(channels, f32::INFINITY);
        let plane = v.len() / (channels * views.len());
        for (k, chunk) in v.chunks(plane).enumerate() {
            // One pass over the plane for all four of its channel's statistics.
            let c = k % channels;
            let (mut sum, mut squares) = (0f64, 0f64);
            let (mut lo, mut hi) = (st.mins[c], st.maxs[c]);
            for &x in chunk {
                let x64 = x as f64;
                sum += x64;
                squares += x64 * x64;
                lo = lo.min(x);
                hi = hi.max(x);
            }
            st.sums[c] += sum;
            st.squares[c] += squares;
            (st.mins[c], st.maxs[c]) = (lo, hi);
        }
        st.per_channel += (plane * views.len()) as u64;
    })?;
    // Each tensor's range: the widest of its channels'.
    let ranges: Vec<(f32, f32)> = stats
        .iter()
        .map(|st| {
            (
                st.mins.iter().copied().fold(f32::INFINITY, f32::min),
                st.maxs.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            )
        })
        .collect();
    for (k, &(lo, hi)) in keys.iter().zip(&ranges) {
        ensure!(
            lo.is_finite() && hi.is_finite(),
            "calibration: {k} is not finite ({lo}..{hi})"
        );
    }
    if method != Calibration::MinMax {
        each(&mut |i, v, _| {
            let (lo, hi) = ranges[i];
            let amax = lo.abs().max(hi.abs());
            if amax <= 0.0 {
                return;
            }
            let k = BINS as f32 / amax;
            let hist = &mut stats[i].hist;
            for &x in v {
                let b = ((x.abs() * k) as usize).min(BINS - 1);
                hist[b] += 1;
            }
        })?;
    }
    let mut cal = Calibrated::default();
    for (key, st) in keys.iter().zip(&stats) {
        let n = st.per_channel.max(1) as f64;
        cal.means.insert(
            key.clone(),
            st.sums.iter().map(|s| (s / n) as f32).collect(),
        );
        cal.channel_max.insert(key.clone(), st.maxs.clone());
        cal.channel_min.insert(key.clone(), st.mins.clone());
        cal.channel_mean_square.insert(
            key.clone(),
            st.squares.iter().map(|s| (s / n) as f32).collect(),
        );
    }
    cal.ranges = keys
        .into_iter()
        .zip(stats.iter().zip(ranges))
        .map(|(key, (st, (lo, hi)))| {
            let amax = lo.abs().max(hi.abs());
            let clip = match method {
                Calibration::MinMax => amax,
                Calibration::Percentile => percentile_clip(&st.hist, amax, PERCENTILE),
                Calibration::Entropy => {
                    let levels = if lo >= 0.0 { 255 } else { 128 };
                    entropy_clip(&st.hist, amax, levels)
                }
            };
            (key, (lo.max(-clip), hi.min(clip)))
        })
        .collect();
    Ok(cal)
}

/// The value below which `q` of the histogram's mass lies (upper bin edge).
fn percentile_clip(hist: &[u64], amax: f32, q: f64) -> f32 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return amax;
    }
    let want = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    for (i, &h) in hist.iter().enumerate() {
        seen += h;
        if seen >= want {
            return amax * (i + 1) as f32 / hist.len() as f32;
        }
    }
    amax
}

/// TensorRT's entropy calibration on a histogram of |x|: the clip (upper edge of bin `i - 1`)
/// whose `levels`-bin quantization of the clipped histogram loses the least information (KL).
fn entropy_clip(hist: &[u64], amax: f32, levels: usize) -> f32 {
    let n = hist.len();
    if hist.iter().all(|&h| h == 0) || n <= levels {
        return amax;
    }
    let mut best = (f64::INFINITY, n);
    for i in levels..=n {
        // Reference: the histogram clipped at bin i, outliers folded into the last bin.
        let mut p: Vec<f64> = hist[..i].iter().map(|&h| h as f64).collect();
        p[i - 1] += hist[i..].iter().sum::<u64>() as f64;
        // Candidate: the unclipped bins merged into `levels` groups, each group's mass spread
        // evenly over its non-empty bins.
        let mut q = vec![0f64; i];
        for j in 0..levels {
            let (a, b) = (
                j * i / levels,
                ((j + 1) * i / levels).max(j * i / levels + 1),
            );
            let b = b.min(i);
            let mass: f64 = hist[a..b].iter().map(|&h| h as f64).sum();
            let nonzero = hist[a..b].iter().filter(|&&h| h > 0).count();
            if nonzero > 0 {
                for k in a..b {
                    if hist[k] > 0 {
                        q[k] = mass / nonzero as f64;
                    }
                }
            }
        }
        let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
        if ps <= 0.0 || qs <= 0.0 {
            continue;
        }
        let kl: f64 = p
            .iter()
            .zip(&q)
            .filter(|(&a, _)| a > 0.0)
            .map(|(&a, &b)| {
                let (a, b) = (a / ps, (b / qs).max(1e-12));
                a * (a / b).ln()
            })
            .sum();
        if kl < best.0 {
            best = (kl, i);
        }
    }
    amax * best.1 as f32 / n as f32
}

/// Scale and zero point of a uint8 tensor, or of a 16-bit one (see [`Exceptions::wide`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QParams {
    pub scale: f32,
    /// The uint8 zero point; of a 16-bit tensor, its high plane's (the tensor's is 256 times
    /// it, so that its low plane's is 0).
    pub zero_point: u8,
    /// 16 bits, `0..=65535`, instead of 8.
    pub wide: bool,
}

impl QParams {
    /// uint8 parameters covering `[lo, hi]` (widened to hold 0, which must be exact: it is the
    /// padding value and the ReLU floor).
    pub fn for_range(lo: f32, hi: f32) -> Self {
        Self::for_tensor(lo, hi, false)
    }

    /// 16-bit parameters covering `[lo, hi]` (widened to hold 0) with a zero point that is a
    /// multiple of 256: 255 of the 65,536 steps go to that, so the range is over 65,280 steps.
    pub fn for_range_wide(lo: f32, hi: f32) -> Self {
        Self::for_tensor(lo, hi, true)
    }

    /// The parameters of a tensor calibrated to `[lo, hi]`, at 16 bits if `wide`.
    pub fn for_tensor(lo: f32, hi: f32, wide: bool) -> Self {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        if hi - lo <= f32::EPSILON {
            return QParams {
                scale: 1.0,
                zero_point: 0,
                wide,
            };
        }
        let (scale, zero_point) = if wide {
            let scale = (hi - lo) / (65535.0 - 255.0);
            // Rounded up: `256 * zero_point` steps hold `lo`, and the rest hold `hi`.
            (scale, (-lo / scale / 256.0).ceil())
        } else {
            let scale = (hi - lo) / 255.0;
            (scale, (-lo / scale).round())
        };
        QParams {
            scale,
            zero_point: zero_point.clamp(0.0, 255.0) as u8,
            wide,
        }
    }

    /// The largest quantized value (the smallest is 0).
    pub fn top(&self) -> i64 {
        if self.wide {
            65535
        } else {
            255
        }
    }

    /// The quantized value that stands for 0.
    pub fn zero(&self) -> i64 {
        if self.wide {
            256 * self.zero_point as i64
        } else {
            self.zero_point as i64
        }
    }

    /// The scale of the int32 bias of a convolution that reads this tensor (`scale * w_scale`
    /// per channel), or `None` where the bias stays float: a 16-bit input's convolution sums
    /// its two planes in float (see the module doc).
    pub fn bias_step(&self) -> Option<f32> {
        (!self.wide).then_some(self.scale)
    }
}

/// The quantization of unit `u`'s output calibrated to `[lo, hi]`: a ReLU6's range is
/// `[0, min(6, hi)]`, so the uint8 saturation is the activation.
pub fn unit_output_params(u: &ConvUnit, (lo, hi): (f32, f32), wide: bool) -> QParams {
    if u.relu6 {
        QParams::for_tensor(0.0, hi.min(6.0), wide)
    } else {
        QParams::for_tensor(lo, hi, wide)
    }
}

/// What an int8 file leaves out of its uint8 activations and int8 weights.
#[derive(Debug, Clone, Default)]
pub struct Exceptions {
    /// Convolutions (by [`unit_key`]) written with float weights between uint8 activations.
    pub float_weights: HashSet<String>,
    /// Tensors (by [`unit_key`] / [`residual_key`]) held at 16 bits (see the module doc).
    pub wide: HashSet<String>,
}

/// The keys of the residual streams' tensors: every projection's output and every residual
/// sum, the network's signed tensors, whose uint8 rounding is two thirds of the int8 model's
/// activation noise (models/README.md). Only 1x1 convolutions and residual sums read them.
pub fn stream_keys(arch: &Arch) -> HashSet<String> {
    // The projections are the backbone's linear (no ReLU6) convolutions.
    arch.units()
        .filter(|u| !u.relu6)
        .map(unit_key)
        .chain(arch.blocks.iter().filter(|b| b.residual).map(residual_key))
        .collect()
}

/// Symmetric per-output-channel int8 weights: (values, one scale per row of `per` values). A
/// row's scale is at least `floor[row]` (see [`bias_floor`]).
pub fn quantize_weights(w: &[f32], rows: usize, floor: &[f32]) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / rows;
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(rows);
    for (r, row) in w.chunks(per).enumerate() {
        let amax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
        let s = (amax / 127.0).max(floor.get(r).copied().unwrap_or(0.0));
        let s = if s > 0.0 { s } else { 1.0 };
        scales.push(s);
        q.extend(
            row.iter()
                .map(|x| (x / s).round().clamp(-127.0, 127.0) as i8),
        );
    }
    (q, scales)
}

/// Smallest weight scale per channel that keeps the int32 bias (`bias / (x_scale * w_scale)`)
/// within 2^24: a channel whose BatchNorm all but switched it off has near-zero weights and a
/// bias of ordinary size. None where the bias stays float ([`QParams::bias_step`]).
fn bias_floor(bias: &[f32], x_scale: Option<f32>) -> Vec<f32> {
    match x_scale {
        Some(x_scale) => bias
            .iter()
            .map(|b| b.abs() / (x_scale * (1 << 24) as f32))
            .collect(),
        None => Vec::new(),
    }
}

/// A unit's per-channel int8 weights for an int32 bias at input scale `x_scale` (or a float
/// bias, `None`): (values, scales), and the mean error their rounding adds to each output
/// channel, for bias correction: `sum((Wq - W) * E[x])` from the per-channel means of the
/// unit's input (zeros without them).
pub fn quantize_unit(
    u: &ConvUnit,
    w: &[f32],
    bias: &[f32],
    x_scale: Option<f32>,
    mean_in: Option<&[f32]>,
) -> Result<(Vec<i8>, Vec<f32>, Vec<f32>)> {
    let (wq, ws) = quantize_weights(w, u.cout, &bias_floor(bias, x_scale));
    let err = match mean_in {
        None => vec![0.0; u.cout],
        Some(m) => {
            ensure!(
                m.len() == u.cin,
                "{}: input statistics have {} channels, the layer {}",
                u.conv,
                m.len(),
                u.cin
            );
            rounding_error(u, w, &wq, &ws, m)
        }
    };
    Ok((wq, ws, err))
}

fn rounding_error(u: &ConvUnit, w: &[f32], wq: &[i8], ws: &[f32], mean_in: &[f32]) -> Vec<f32> {
    let per = w.len() / u.cout;
    let (cin_g, cout_g) = (u.cin / u.groups, u.cout / u.groups);
    let taps = u.kernel * u.kernel;
    (0..u.cout)
        .map(|c| {
            let row = c * per..(c + 1) * per;
            let first_in = (c / cout_g) * cin_g;
            let err: f64 = w[row.clone()]
                .iter()
                .zip(&wq[row])
                .enumerate()
                .map(|(k, (&wf, &q))| {
                    let m = mean_in[first_in + k / taps] as f64;
                    (q as f64 * ws[c] as f64 - wf as f64) * m
                })
                .sum();
            err as f32
        })
        .collect()
}

fn raw_i8(v: &[i8]) -> Vec<u8> {
    v.iter().map(|&x| x as u8).collect()
}

fn raw_i32(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes the int8 backbone (see the module doc).
pub struct Int8Emit<'a> {
    cal: &'a Calibrated,
    /// Calibration key of the float tensor each uint8 tensor stands for.
    source: HashMap<String, String>,
    form: Form,
    /// Quantization of every uint8 tensor written so far.
    q: HashMap<String, QParams>,
    /// Tensors whose scale / zero point initializers exist.
    written: HashSet<String>,
    /// Bias correction the first convolution owes the input encoding (see the module doc).
    stem_shift: Option<f32>,
    /// Take the mean error of the weight rounding out of each bias (off for weights that were
    /// fine-tuned with their rounding, see [`super::qat`]).
    bias_correction: bool,
    /// Float weights and 16-bit tensors.
    exceptions: &'a Exceptions,
    /// Convolutions (by [`unit_key`]) whose float output goes into a residual sum unquantized
    /// ([`Form::sums_projections_in_float`]).
    float_outputs: HashSet<String>,
    /// The uint8 planes (high, low) of each 16-bit tensor written so far.
    planes: HashMap<String, (String, String)>,
}

impl<'a> Int8Emit<'a> {
    /// Only through [`int8_model`], which checks the exceptions against the form.
    fn new(
        arch: &Arch,
        cal: &'a Calibrated,
        form: Form,
        bias_correction: bool,
        exceptions: &'a Exceptions,
    ) -> Self {
        let float_outputs = if form.sums_projections_in_float() {
            arch.blocks
                .iter()
                .filter_map(|b| b.projection().map(unit_key))
                .collect()
        } else {
            HashSet::new()
        };
        Int8Emit {
            bias_correction,
            exceptions,
            float_outputs,
            planes: HashMap::new(),
            cal,
            source: HashMap::new(),
            form,
            q: HashMap::new(),
            written: HashSet::new(),
            stem_shift: None,
        }
    }

    fn params(&self, tensor: &str) -> Result<QParams> {
        self.q
            .get(tensor)
            .copied()
            .with_context(|| format!("{tensor} has no quantization"))
    }

    fn range(&self, key: &str) -> Result<(f32, f32)> {
        self.cal
            .ranges
            .get(key)
            .copied()
            .with_context(|| format!("calibration has no range for {key}"))
    }

    /// Scale and zero-point initializers of a uint8 tensor.
    fn qparam_inits(&mut self, g: &mut Graph, tensor: &str) -> Result<(String, String)> {
        Ok((
            self.scale_init(g, tensor)?,
            self.zero_point_init(g, tensor)?,
        ))
    }

    fn scale_init(&mut self, g: &mut Graph, tensor: &str) -> Result<String> {
        let p = self.params(tensor)?;
        let s = format!("{tensor}.scale");
        if self.written.insert(s.clone()) {
            g.init_f32(&s, &[], vec![p.scale]);
        }
        Ok(s)
    }

    /// The zero point alone: a `ConvInteger` reads no scale.
    fn zero_point_init(&mut self, g: &mut Graph, tensor: &str) -> Result<String> {
        let p = self.params(tensor)?;
        let z = format!("{tensor}.zero_point");
        if self.written.insert(z.clone()) {
            g.init_raw(&z, &[], DataType::Uint8, vec![p.zero_point]);
        }
        Ok(z)
    }

    fn quantize(&mut self, g: &mut Graph, x: &str, p: QParams, hint: &str) -> Result<String> {
        self.quantize_linear(g, x, p, hint, false)
    }

    /// `QuantizeLinear` with scale 1 of `x`, a value already in units of `p`'s scale: the
    /// uint8 tensor stands for `p` (its scale initializer is written when a reader needs it).
    fn quantize_prescaled(
        &mut self,
        g: &mut Graph,
        x: &str,
        p: QParams,
        hint: &str,
    ) -> Result<String> {
        self.quantize_linear(g, x, p, hint, true)
    }

    fn quantize_linear(
        &mut self,
        g: &mut Graph,
        x: &str,
        p: QParams,
        hint: &str,
        prescaled: bool,
    ) -> Result<String> {
        if p.wide {
            // A 16-bit tensor is held as its float steps from the zero point, `round(x / scale)`
            // within `[-zero, 65535 - zero]` (a multiplication by the reciprocal, as
            // `QuantizeLinear` in tract and torch's fake quantization compute it).
            let x = if prescaled {
                x.to_string()
            } else {
                let recip = g.scalar_f32(&format!("{hint}.recip_{:e}", p.scale), p.scale.recip());
                g.node("Mul", &[x, &recip], vec![], "scaled")
            };
            let r = g.node("Round", &[&x], vec![], "round");
            let zero = p.zero() as f32;
            let lo = g.scalar_f32(&format!("steps_min_{zero}"), -zero);
            let hi = g.scalar_f32(&format!("steps_max_{zero}"), p.top() as f32 - zero);
            let y = g.node("Clip", &[&r, &lo, &hi], vec![], hint);
            self.q.insert(y.clone(), p);
            return Ok(y);
        }
        let y = g.fresh(hint);
        self.q.insert(y.clone(), p);
        let s = if prescaled {
            g.scalar_f32("requant.one", 1.0)
        } else {
            self.scale_init(g, &y)?
        };
        let z = self.zero_point_init(g, &y)?;
        g.nodes.push(tract_onnx::pb::NodeProto {
            op_type: "QuantizeLinear".into(),
            name: y.clone(),
            input: vec![x.into(), s, z],
            output: vec![y.clone()],
            ..Default::default()
        });
        Ok(y)
    }

    fn dequantize(&mut self, g: &mut Graph, x: &str) -> Result<String> {
        if self.params(x)?.wide {
            let s = self.scale_init(g, x)?;
            return Ok(g.node("Mul", &[x, &s], vec![], "dq"));
        }
        let (s, z) = self.qparam_inits(g, x)?;
        Ok(g.node("DequantizeLinear", &[x, &s, &z], vec![], "dq"))
    }

    /// The two uint8 planes of 16-bit tensor `x`: `q = 256 * high + low` with `q` its value
    /// from 0 to 65535, so the high plane's zero point is the tensor's over 256 and the low
    /// plane's 0. Every step is exact in float32.
    fn planes(&mut self, g: &mut Graph, x: &str) -> Result<(String, String)> {
        if let Some(p) = self.planes.get(x) {
            return Ok(p.clone());
        }
        let p = self.params(x)?;
        ensure!(p.wide, "{x} is not a 16-bit tensor");
        let zero = g.scalar_f32(&format!("{x}.zero16"), p.zero() as f32);
        let q = g.node("Add", &[x, &zero], vec![], "q16");
        let inv = g.scalar_f32("plane.inv256", 1.0 / 256.0);
        let c256 = g.scalar_f32("plane.256", 256.0);
        let high = g.node("Mul", &[&q, &inv], vec![], "q16_over_256");
        let high = g.node("Floor", &[&high], vec![], "high");
        let top = g.node("Mul", &[&high, &c256], vec![], "high_256");
        let low = g.node("Sub", &[&q, &top], vec![], "low");
        let to_u8 = vec![attr_int("to", DataType::Uint8 as i64)];
        let planes = (
            g.node("Cast", &[&high], to_u8.clone(), "high_u8"),
            g.node("Cast", &[&low], to_u8, "low_u8"),
        );
        self.planes.insert(x.to_string(), planes.clone());
        Ok(planes)
    }

    /// `x` in real units: dequantized if it is a uint8 tensor, as it is if it was kept in float.
    fn real(&mut self, g: &mut Graph, x: &str) -> Result<String> {
        if self.q.contains_key(x) {
            self.dequantize(g, x)
        } else {
            Ok(x.to_string())
        }
    }

    /// int8 weights as a per-row `DequantizeLinear` (axis 0).
    fn dequantized_weights(
        g: &mut Graph,
        name: &str,
        dims: &[i64],
        q: &[i8],
        scales: Vec<f32>,
    ) -> String {
        let rows = dims[0];
        let wq = g.init_raw(&format!("{name}.wq"), dims, DataType::Int8, raw_i8(q));
        let ws = g.init_f32(&format!("{name}.w_scale"), &[rows], scales);
        let wz = g.init_raw(
            &format!("{name}.w_zero_point"),
            &[rows],
            DataType::Int8,
            vec![0; rows as usize],
        );
        g.node(
            "DequantizeLinear",
            &[&wq, &ws, &wz],
            vec![attr_int("axis", 0)],
            "dq_w",
        )
    }
}

impl Int8Emit<'_> {
    /// The photo's pixels as the first layer's uint8 input (see the module doc).
    fn quantize_input(&mut self, g: &mut Graph) -> String {
        let s = g.scalar_f32("input.scale", 1.0 / 255.0);
        let z = g.init_raw("input.zero_point", &[], DataType::Uint8, vec![0]);
        let y = g.node("QuantizeLinear", &[INPUT, &s, &z], vec![], "input_q");
        self.q.insert(
            y.clone(),
            QParams {
                scale: 2.0 / 255.0,
                zero_point: 128,
                wide: false,
            },
        );
        self.stem_shift = Some(1.0 / 255.0);
        self.source.insert(y.clone(), INPUT_KEY.to_string());
        y
    }
}

impl Emit for Int8Emit<'_> {
    /// The input is encoded by the first convolution that reads it (see [`Int8Emit::unit`]).
    fn stem(&mut self, _g: &mut Graph) -> Result<String> {
        Ok(INPUT.to_string())
    }

    fn unit(
        &mut self,
        g: &mut Graph,
        u: &ConvUnit,
        x: &str,
        w: Vec<f32>,
        bias: Vec<f32>,
    ) -> Result<String> {
        let wide_out = self.exceptions.wide.contains(&unit_key(u));
        let yq = unit_output_params(u, self.range(&unit_key(u))?, wide_out);
        let float_out = self.float_outputs.contains(&unit_key(u));
        ensure!(
            !(float_out && u.relu6),
            "{}: a projection with a ReLU6 cannot keep its output in float",
            u.conv
        );
        if self.exceptions.float_weights.contains(&unit_key(u)) {
            // Float weights between uint8 activations: DequantizeLinear -> Conv -> QuantizeLinear
            // (the output range is still the ReLU6, as in QLinearConv).
            ensure!(
                x != INPUT,
                "{}: the first convolution reads the photo and cannot keep float weights",
                u.conv
            );
            let xf = self.dequantize(g, x)?;
            let k = u.kernel as i64;
            let dims = [u.cout as i64, (u.cin / u.groups) as i64, k, k];
            let wn = g.init_f32(&format!("{}.w", u.conv), &dims, w);
            let bn = g.init_f32(&format!("{}.b", u.conv), &dims[..1], bias);
            let yf = g.node("Conv", &[&xf, &wn, &bn], Graph::conv_attrs(u), "conv");
            if float_out {
                return Ok(yf);
            }
            let y = self.quantize(g, &yf, yq, "q")?;
            self.source.insert(y.clone(), unit_key(u));
            return Ok(y);
        }
        let x = &if x == INPUT {
            self.quantize_input(g)
        } else {
            x.to_string()
        };
        let xq = self.params(x)?;
        let per = w.len() / u.cout;
        let shift = self.stem_shift.take().unwrap_or(0.0);
        let cal = self.cal;
        let mean_in = if self.bias_correction {
            let m = self.source.get(x).and_then(|k| cal.means.get(k));
            Some(
                m.with_context(|| format!("calibration has no input statistics for {}", u.conv))?
                    .as_slice(),
            )
        } else {
            None
        };
        // (`int8_model` refuses 16-bit tensors in the other forms.)
        ensure!(
            !xq.wide || u.pad == [0; 4],
            "{}: a 16-bit input is read as two uint8 planes by unpadded convolutions only",
            u.conv
        );
        let (wq, ws, err) = quantize_unit(u, &w, &bias, xq.bias_step(), mean_in)?;
        // Bias correction: the rounding's mean error taken back out of the bias.
        let bias: Vec<f32> = (0..u.cout)
            .map(|c| {
                let sum: f32 = wq[c * per..(c + 1) * per].iter().map(|&q| q as f32).sum();
                bias[c] + shift * sum * ws[c] - err[c]
            })
            .collect();
        let mut bq = Vec::with_capacity(u.cout);
        if !xq.wide {
            for c in 0..u.cout {
                let v = (bias[c] as f64 / (xq.scale as f64 * ws[c] as f64)).round();
                ensure!(
                    v.abs() < i32::MAX as f64,
                    "{}: bias does not fit int32 at this scale",
                    u.conv
                );
                bq.push(v as i32);
            }
        }
        let k = u.kernel as i64;
        let dims = [u.cout as i64, (u.cin / u.groups) as i64, k, k];
        match self.form {
            Form::QLinearConv => {
                let (xs, xz) = self.qparam_inits(g, x)?;
                let y = g.fresh("qconv");
                self.q.insert(y.clone(), yq);
                let (ys, yz) = self.qparam_inits(g, &y)?;
                let wn = g.init_raw(
                    &format!("{}.wq", u.conv),
                    &dims,
                    DataType::Int8,
                    raw_i8(&wq),
                );
                let wsn = g.init_f32(&format!("{}.w_scale", u.conv), &dims[..1], ws);
                let wzn = g.init_raw(
                    &format!("{}.w_zero_point", u.conv),
                    &dims[..1],
                    DataType::Int8,
                    vec![0; u.cout],
                );
                let bn = g.init_raw(
                    &format!("{}.bq", u.conv),
                    &dims[..1],
                    DataType::Int32,
                    raw_i32(&bq),
                );
                g.nodes.push(tract_onnx::pb::NodeProto {
                    op_type: "QLinearConv".into(),
                    name: y.clone(),
                    input: vec![x.into(), xs, xz, wn, wsn, wzn, ys, yz, bn],
                    output: vec![y.clone()],
                    attribute: Graph::conv_attrs(u),
                    ..Default::default()
                });
                self.source.insert(y.clone(), unit_key(u));
                Ok(y)
            }
            Form::ConvInteger | Form::ConvIntegerFloatSums => {
                let wn = g.init_raw(
                    &format!("{}.wq", u.conv),
                    &dims,
                    DataType::Int8,
                    raw_i8(&wq),
                );
                let wz = g.init_raw(
                    &format!("{}.w_zero_point", u.conv),
                    &[],
                    DataType::Int8,
                    vec![0],
                );
                let per_channel = [u.cout as i64, 1, 1];
                // To the output's steps, or to real units for an output kept in float.
                let out_scale = if float_out { 1.0 } else { yq.scale };
                let mult: Vec<f32> = ws.iter().map(|&w| xq.scale * w / out_scale).collect();
                let mn = g.init_f32(&format!("{}.requant", u.conv), &per_channel, mult);
                let to_f32 = vec![attr_int("to", DataType::Float as i64)];
                let r = if xq.wide {
                    // `sum(w * (q - zero)) = 256 * sum(w * (high - zero / 256)) + sum(w * low)`:
                    // one ConvInteger per plane, joined in float (256 times a sum can pass
                    // 2^31), with the bias in float at the output's scale.
                    let (high, low) = self.planes(g, x)?;
                    let hz = self.zero_point_init(g, x)?;
                    let lz = "plane.low.zero_point".to_string();
                    if self.written.insert(lz.clone()) {
                        g.init_raw(&lz, &[], DataType::Uint8, vec![0]);
                    }
                    let attrs = Graph::conv_attrs(u);
                    let ah = g.node(
                        "ConvInteger",
                        &[&high, &wn, &hz, &wz],
                        attrs.clone(),
                        "convint_high",
                    );
                    let al = g.node("ConvInteger", &[&low, &wn, &lz, &wz], attrs, "convint_low");
                    let ah = g.node("Cast", &[&ah], to_f32.clone(), "accf_high");
                    let al = g.node("Cast", &[&al], to_f32, "accf_low");
                    let c256 = g.scalar_f32("plane.256", 256.0);
                    let ah = g.node("Mul", &[&ah, &c256], vec![], "accf_high_256");
                    let accf = g.node("Add", &[&ah, &al], vec![], "accf");
                    let scaled = g.node("Mul", &[&accf, &mn], vec![], "requant");
                    let b: Vec<f32> = bias.iter().map(|b| b / out_scale).collect();
                    let bn = g.init_f32(&format!("{}.b_steps", u.conv), &per_channel, b);
                    g.node("Add", &[&scaled, &bn], vec![], "requant_bias")
                } else {
                    let xz = self.zero_point_init(g, x)?;
                    let bn = g.init_raw(
                        &format!("{}.bq", u.conv),
                        &per_channel,
                        DataType::Int32,
                        raw_i32(&bq),
                    );
                    let acc = g.node(
                        "ConvInteger",
                        &[x, &wn, &xz, &wz],
                        Graph::conv_attrs(u),
                        "convint",
                    );
                    let acc = g.node("Add", &[&acc, &bn], vec![], "acc");
                    let accf = g.node("Cast", &[&acc], to_f32, "accf");
                    g.node("Mul", &[&accf, &mn], vec![], "requant")
                };
                if float_out {
                    return Ok(r);
                }
                let y = self.quantize_prescaled(g, &r, yq, "qconv")?;
                self.source.insert(y.clone(), unit_key(u));
                Ok(y)
            }
            Form::Qdq => {
                let (xs, xz) = self.qparam_inits(g, x)?;
                let xf = g.node("DequantizeLinear", &[x, &xs, &xz], vec![], "dq");
                let bscale: Vec<f32> = ws.iter().map(|s| s * xq.scale).collect();
                let wf = Self::dequantized_weights(g, &u.conv, &dims, &wq, ws);
                let bn = g.init_raw(
                    &format!("{}.bq", u.conv),
                    &dims[..1],
                    DataType::Int32,
                    raw_i32(&bq),
                );
                let bs = g.init_f32(&format!("{}.b_scale", u.conv), &dims[..1], bscale);
                let bz = g.init_raw(
                    &format!("{}.b_zero_point", u.conv),
                    &dims[..1],
                    DataType::Int32,
                    raw_i32(&vec![0; u.cout]),
                );
                let bf = g.node(
                    "DequantizeLinear",
                    &[&bn, &bs, &bz],
                    vec![attr_int("axis", 0)],
                    "dq_b",
                );
                let yf = g.node("Conv", &[&xf, &wf, &bf], Graph::conv_attrs(u), "conv");
                let y = self.quantize(g, &yf, yq, "q")?;
                self.source.insert(y.clone(), unit_key(u));
                Ok(y)
            }
        }
    }

    fn residual(&mut self, g: &mut Graph, block: &Block, a: &str, b: &str) -> Result<String> {
        let (lo, hi) = self.range(&residual_key(block))?;
        let af = self.real(g, a)?;
        let bf = self.real(g, b)?;
        let sum = g.node("Add", &[&af, &bf], vec![], "residual");
        let p = QParams::for_tensor(lo, hi, self.exceptions.wide.contains(&residual_key(block)));
        let y = if self.form.is_convinteger() {
            // `QuantizeLinear` divides by its scale in onnxruntime and multiplies by the
            // reciprocal in tract, and onnxruntime fuses `DequantizeLinear -> Add ->
            // QuantizeLinear` into its `QLinearAdd`, which rounds differently again: one
            // multiplication by the reciprocal, written out, is the same in both.
            let recip = g.scalar_f32(
                &format!("{}.recip_scale", residual_key(block)),
                p.scale.recip(),
            );
            let scaled = g.node("Mul", &[&sum, &recip], vec![], "residual_scaled");
            self.quantize_prescaled(g, &scaled, p, "residual_q")?
        } else {
            self.quantize(g, &sum, p, "residual_q")?
        };
        self.source.insert(y.clone(), residual_key(block));
        Ok(y)
    }

    fn features(&mut self, g: &mut Graph, x: &str) -> Result<String> {
        self.dequantize(g, x)
    }

    fn dense(
        &mut self,
        g: &mut Graph,
        name: &str,
        x: &str,
        w: Vec<f32>,
        b: Vec<f32>,
        dims: [i64; 2],
    ) -> Result<String> {
        let (q, scales) = quantize_weights(&w, dims[0] as usize, &[]);
        let wf = Self::dequantized_weights(g, name, &dims, &q, scales);
        let bn = g.init_f32(&format!("{name}.b"), &dims[..1], b);
        Ok(g.node("Gemm", &[x, &wf, &bn], vec![attr_int("transB", 1)], "dense"))
    }
}

/// The int8 model (see the module doc) with `metadata` (the contract), with the `exceptions`'
/// float weights and 16-bit tensors.
pub fn int8_model(
    arch: &Arch,
    w: &Weights,
    cal: &Calibrated,
    form: Form,
    bias_correction: bool,
    exceptions: &Exceptions,
    metadata: Vec<(String, String)>,
) -> Result<ModelProto> {
    for k in &exceptions.float_weights {
        ensure!(
            arch.units().any(|u| &unit_key(u) == k),
            "--float-weights {k}: no such convolution in this network"
        );
    }
    let streams = stream_keys(arch);
    for k in &exceptions.wide {
        ensure!(
            streams.contains(k),
            "{k}: only the residual streams' tensors (projection outputs and residual sums) can be 16-bit"
        );
    }
    ensure!(
        exceptions.wide.is_empty() || form.is_convinteger(),
        "16-bit tensors are written in the ConvInteger forms only, not {form:?}"
    );
    let mut g = Graph::default();
    let mut emit = Int8Emit::new(arch, cal, form, bias_correction, exceptions);
    let out = build_graph(arch, w, &mut g, &mut emit)?;
    let doc = match form {
        Form::QLinearConv => "MobileNetV2 + seed head, static int8 (QLinearConv, per-channel weights, uint8 activations)",
        Form::Qdq => "MobileNetV2 + seed head, static int8 (QDQ, per-channel weights, uint8 activations)",
        Form::ConvInteger => "MobileNetV2 + seed head, static int8 (ConvInteger + float32 requantization, per-channel weights, uint8 activations)",
        Form::ConvIntegerFloatSums => "MobileNetV2 + seed head, static int8 (ConvInteger + float32 requantization, per-channel weights, uint8 activations, residual projections summed in float)",
    };
    let doc = if exceptions.wide.is_empty() {
        doc.to_string()
    } else {
        format!(
            "{doc}; {} residual-stream tensors at 16 bits (two uint8 planes, one ConvInteger each)",
            exceptions.wide.len()
        )
    };
    Ok(model(arch, g, out, metadata, &doc))
}

/// Evenly spaced indices of `n` photos out of `len` (deterministic, covers the whole split),
/// each moved on by `offset` (modulo `len`): offsets 0, 1, 2, ... give other photos from the
/// same spread, to see how much an int8 file depends on which photos calibrated it.
pub fn calibration_indices(len: usize, n: usize, offset: usize) -> Result<Vec<usize>> {
    if n == 0 || len == 0 {
        bail!("the calibration set is empty (--calib {n}, {len} training photos in the cache)");
    }
    ensure!(
        n >= MIN_CALIBRATION,
        "--calib {n} is too small: use at least {MIN_CALIBRATION} photos"
    );
    ensure!(
        len >= n,
        "the calibration set is too small: --calib {n}, but the cache holds {len} training photos"
    );
    // A rotation modulo `len` of distinct indices: still distinct.
    Ok((0..n).map(|i| (i * len / n + offset) % len).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qparams_keep_zero_exact_and_cover_the_range() {
        let p = QParams::for_range(-1.3, 4.2);
        let real = |q: f32| p.scale * (q - p.zero_point as f32);
        // 0.0 is a grid point (the zero point), and the grid spans the range to within a step.
        assert_eq!(
            (0.0 / p.scale).round() + p.zero_point as f32,
            p.zero_point as f32
        );
        assert!((real(0.0) + 1.3).abs() <= p.scale);
        assert!((real(255.0) - 4.2).abs() <= p.scale);
        let relu = QParams::for_range(0.0, 6.0);
        assert_eq!(relu.zero_point, 0);
        assert!((relu.scale - 6.0 / 255.0).abs() < 1e-9);
    }

    /// A 16-bit tensor's zero point is 256 times its high plane's, the range fits in
    /// `0..=65535` around it, and the step is the range over 65,280 steps, not 255.
    #[test]
    fn wide_qparams_cover_the_range_with_a_zero_point_on_a_plane_boundary() {
        for (lo, hi) in [(-1.3f32, 4.2f32), (-7.0, 0.5), (0.0, 3.0), (-2.0, 0.0)] {
            let p = QParams::for_range_wide(lo, hi);
            assert!(p.wide && p.bias_step().is_none());
            assert_eq!(p.zero(), 256 * p.zero_point as i64);
            assert_eq!(p.top(), 65535);
            let real = |q: i64| p.scale as f64 * (q - p.zero()) as f64;
            assert!(real(0) <= lo as f64 + 1e-6, "{lo}..{hi}: {p:?}");
            assert!(real(65535) >= hi as f64 - 1e-6, "{lo}..{hi}: {p:?}");
            assert!(
                (p.scale - (hi - lo) / 65280.0).abs() <= 1e-6 * p.scale,
                "{p:?}"
            );
            let narrow = QParams::for_range(lo, hi);
            assert!(narrow.bias_step() == Some(narrow.scale) && !narrow.wide);
            assert!(p.scale * 255.0 < narrow.scale, "{p:?} vs {narrow:?}");
        }
    }

    #[test]
    fn weights_quantize_per_row_within_half_a_step() {
        let w = [0.5, -1.0, 0.25, 0.001, -0.002, 0.0005];
        let (q, s) = quantize_weights(&w, 2, &[]);
        assert_eq!(q[1], -127);
        assert_eq!(q[4], -127);
        for (i, (&x, &qv)) in w.iter().zip(&q).enumerate() {
            let sc = s[i / 3];
            assert!((x - qv as f32 * sc).abs() <= sc / 2.0 + 1e-9);
        }
    }

    #[test]
    fn percentile_and_entropy_clip_a_long_tail() {
        // A steep decay (as activations have) with a few outliers at the top.
        let mut hist: Vec<u64> = (0..BINS)
            .map(|i| (1e6 * (-(i as f64) / 40.0).exp()) as u64)
            .collect();
        hist[BINS - 1] = 3;
        let p = percentile_clip(&hist, 10.0, PERCENTILE);
        assert!(p > 1.0 && p < 2.5, "percentile clip {p}");
        let e = entropy_clip(&hist, 10.0, 255);
        assert!(e > 0.5 && e < 5.0, "entropy clip {e}");
        // A histogram without a tail keeps (nearly) its range.
        let flat = vec![10u64; BINS];
        assert!(entropy_clip(&flat, 10.0, 255) > 9.0);
    }

    #[test]
    fn calibration_set_size_is_checked() {
        assert!(calibration_indices(100, 0, 0)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(calibration_indices(100, 4, 0)
            .unwrap_err()
            .to_string()
            .contains("too small"));
        assert!(calibration_indices(20, 64, 0)
            .unwrap_err()
            .to_string()
            .contains("holds 20"));
        let idx = calibration_indices(100, 20, 0).unwrap();
        assert_eq!(idx.len(), 20);
        assert_eq!(idx[19], 95);
        // An offset moves every photo on, wrapping round, and keeps them distinct.
        let moved = calibration_indices(100, 20, 7).unwrap();
        assert_eq!((moved[0], moved[19]), (7, 2));
        let mut sorted = calibration_indices(325, 100, 2).unwrap();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 100);
        assert!(sorted.iter().all(|&i| i < 325));
        assert_ne!(sorted, calibration_indices(325, 100, 0).unwrap());
    }
}
