//! Weight rounding that minds the layer's output (after Frantar et al. 2023, "GPTQ: Accurate
//! Post-Training Quantization for Generative Pre-trained Transformers", itself after Optimal
//! Brain Quantization).
//!
//! Rounding each weight to its nearest int8 step minimises the error of each weight, not of the
//! convolution's output. On the calibration inputs `X` the output error of one output row is
//! `(w - wq)^T H (w - wq)` with `H = X X^T` over the row's receptive-field inputs. GPTQ rounds the
//! row one input at a time and moves the weights not yet rounded to take up the error just made
//! (by the Cholesky factor of `H^-1`), so correlated inputs share the rounding. Here it runs on
//! the int8 model's own quantized inputs, convolution by convolution, inside the empirical bias
//! correction (`qat::empirical_bias_correction`), and keeps the exporter's scales: each row's
//! step stays `max |w| / 127`, and the weight that sets it keeps its `+-127`, so that the
//! exporter, which takes the step from the largest weight, reads back exactly the steps chosen
//! here.

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::model::arch::ConvUnit;

/// How the int8 weights are rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum WeightRounding {
    /// Each weight to its nearest step.
    Nearest,
    /// GPTQ on the calibration photos (this module), against the unit's own float weights.
    Gptq,
    /// GPTQ against the float network: first the least-squares weights that map the int8
    /// model's inputs to the float network's outputs (`W C H^-1`, `C = X_f X_q^T`, damped
    /// towards `W`), so that each unit also
    /// takes up the error of the units before it, then GPTQ on those.
    #[default]
    GptqCompensated,
    /// `gptq-compensated`, with each row's step searched among [`SHRINKS`] of `max |w| / 127`
    /// for the least output error on the calibration photos (clipping its largest weights).
    /// Lower error on the IDRiD validation photos, higher on another camera's (models/README.md).
    GptqCompensatedSearch,
}

impl WeightRounding {
    /// Whether GPTQ fits the float network's outputs rather than the unit's own weights.
    pub fn compensated(self) -> bool {
        matches!(self, Self::GptqCompensated | Self::GptqCompensatedSearch)
    }

    /// The steps GPTQ tries per row, as shares of `max |w| / 127`.
    pub fn shrinks(self) -> &'static [f64] {
        match self {
            Self::GptqCompensatedSearch => &SHRINKS,
            _ => &[1.0],
        }
    }
}

/// Share of the mean diagonal added to `H` (GPTQ's dampening): keeps the inverse stable where
/// inputs are nearly collinear.
const DAMPING: f64 = 0.01;

/// Groups of the unit's rounding problem: every output row of a full convolution shares one
/// `H`; each channel of a depthwise one has its own.
fn groups(u: &ConvUnit) -> i64 {
    if u.groups > 1 {
        u.groups as i64
    } else {
        1
    }
}

/// What GPTQ needs from the calibration inputs: `H = X_q X_q^T` and `C = X_f X_q^T`
/// (`[groups, d, d]`, double), `X_q` the unit's input as the int8 model sees it and `X_f` the
/// float network's.
#[derive(Default)]
pub struct InputStats {
    pub h: Option<Tensor>,
    pub c: Option<Tensor>,
}

fn add(acc: &mut Option<Tensor>, t: Tensor) {
    match acc {
        Some(a) => *a += t,
        None => *acc = Some(t),
    }
}

impl InputStats {
    /// Accumulates over one chunk: `xq` and `xf` (`[N, cin, H, W]`, before the padding); `xf`
    /// only for [`WeightRounding::GptqCompensated`].
    pub fn add(&mut self, u: &ConvUnit, xq: &Tensor, xf: Option<&Tensor>) {
        let q = columns(u, xq);
        if let Some(xf) = xf {
            add(
                &mut self.c,
                columns(u, xf).bmm(&q.transpose(1, 2)).to_kind(Kind::Double),
            );
        }
        add(&mut self.h, q.bmm(&q.transpose(1, 2)).to_kind(Kind::Double));
    }
}

/// The unit's receptive-field inputs of `x` as `[groups, d, N * L]`.
fn columns(u: &ConvUnit, x: &Tensor) -> Tensor {
    let p = u.pad;
    let x = if p.iter().any(|&v| v > 0) {
        x.constant_pad_nd([p[2] as i64, p[3] as i64, p[0] as i64, p[1] as i64])
    } else {
        x.shallow_clone()
    };
    let k = u.kernel as i64;
    // [N, cin * k * k, L], channel-major like the OIHW weights.
    let cols = x.im2col([k, k], [1, 1], [0, 0], [u.stride as i64; 2]);
    let g = groups(u);
    let n = cols.size()[0];
    let l = cols.size()[2];
    let d = u.cin as i64 / g * k * k;
    cols.view([n, g, d, l])
        .permute([1, 2, 0, 3])
        .reshape([g, d, n * l])
}

/// `h` made safely invertible: inputs never seen (always zero) get an identity row and column
/// (they carry no error), and every diagonal gets [`DAMPING`] of the mean.
fn damp(h: &Tensor) -> Tensor {
    let d = h.size()[1];
    let dead = h.diagonal(0, 1, 2).eq(0.0);
    let h = h + Tensor::diag_embed(&dead.to_kind(Kind::Double), 0, 1, 2);
    let mean = h
        .diagonal(0, 1, 2)
        .mean_dim([1i64].as_slice(), true, Kind::Double);
    let eye = Tensor::eye(d, (Kind::Double, h.device()));
    &h + eye.unsqueeze(0) * (mean * DAMPING).unsqueeze(2)
}

/// The steps each row's rounding tries, as shares of `max |w| / 127`: a step below it clips the
/// row's largest weights to +-127 and rounds every other weight on a finer grid. The one whose
/// GPTQ-rounded row has the least output error on the calibration inputs is kept (a search over
/// the clipping, as GPTQ's reference code does on the weights alone; here on `H`).
const SHRINKS: [f64; 11] = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5];

/// GPTQ-rounded weights of unit `u` (`w`: folded float weights, OIHW), dequantized (each value
/// `q * step`, `|q| <= 127`, one step per output row), from the unit's [`InputStats`] (with `C`:
/// rounded from the compensated weights, see [`WeightRounding::GptqCompensated`]). Each row is
/// rounded at every step of `shrinks` (shares of `max |w| / 127`; `[1.0]`: that step alone) and
/// keeps the one with the least output error; one weight of the row sits at +-127, so that the
/// exporter, which takes the step from the largest weight, reads it back.
/// Rows in `keep` (a `[cout]` bool mask) come back as they were, for the exporter to round to
/// nearest: rows whose step is set by the int32 bias's range rather than by `max |w|`.
pub fn gptq_weights(
    u: &ConvUnit,
    w: &Tensor,
    stats: &InputStats,
    keep: &Tensor,
    shrinks: &[f64],
) -> Result<Tensor> {
    ensure!(
        !shrinks.is_empty() && shrinks.iter().all(|&s| s > 0.0 && s <= 1.0),
        "GPTQ step shares must lie in (0, 1]: {shrinks:?}"
    );
    let h = stats.h.as_ref().context("GPTQ needs calibration inputs")?;
    let g = groups(u);
    let rows = u.cout as i64 / g;
    let shape = w.size();
    let d = shape[1] * shape[2] * shape[3];
    ensure!(
        h.size() == [g, d, d],
        "{}: H has shape {:?}, the layer needs [{g}, {d}, {d}]",
        u.conv,
        h.size()
    );
    let w_in = w.to_kind(Kind::Double).reshape([g, rows, d]);
    let damped = damp(h);
    let w0 = match &stats.c {
        // argmin ||W X_f - W' X_q||^2 + ||(W' - W) D^1/2||^2, D the damping added to H:
        // W (C + D) (H + D)^-1, which is W itself where X_f = X_q.
        Some(c) => w_in
            .bmm(&(c + (&damped - h)))
            .bmm(&damped.linalg_cholesky(false).cholesky_inverse(false)),
        None => w_in.shallow_clone(),
    };
    let top = w0.abs().amax([2i64].as_slice(), true);
    let live = top.gt(0.0);
    // Every row once per candidate step, candidate-major within the row: [g, rows * A, d].
    let a = shrinks.len() as i64;
    let shares = Tensor::from_slice(shrinks).view([1, 1, a, 1]);
    let step = (top.unsqueeze(2) * shares / 127.0).reshape([g, rows * a, 1]);
    let step = step.where_self(&step.gt(0.0), &Tensor::ones_like(&step));
    let target = w0
        .unsqueeze(2)
        .expand([g, rows, a, d], false)
        .reshape([g, rows * a, d]);
    // The weight that sets each row's step keeps +-127 (it is clipped there for steps below 1).
    let anchor = target.abs().argmax(2, true);
    let anchor_value = target.gather(2, &anchor, false).sign() * 127.0;

    // Upper Cholesky factor of H^-1.
    let hinv = damped.linalg_cholesky(false).cholesky_inverse(false);
    let u_f = hinv.linalg_cholesky(true);

    let wk = target.copy();
    let q = Tensor::zeros_like(&target);
    for i in 0..d {
        let col = wk.select(2, i);
        let rounded = (&col / step.squeeze_dim(2)).round().clamp(-127.0, 127.0);
        let forced = anchor.squeeze_dim(2).eq(i);
        let qi = rounded.where_self(&forced.logical_not(), &anchor_value.squeeze_dim(2))
            * step.squeeze_dim(2);
        q.select(2, i).copy_(&qi);
        if i + 1 < d {
            // [g, 1]
            let dii = u_f.select(1, i).select(1, i).unsqueeze(1);
            let err = (&col - &qi) / dii;
            // [g, 1, d - i - 1]
            let row = u_f.select(1, i).narrow(1, i + 1, d - i - 1).unsqueeze(1);
            let mut rest = wk.narrow(2, i + 1, d - i - 1);
            rest -= err.unsqueeze(2) * row;
        }
    }
    // Each row's output error on the calibration inputs, (q - w0) H (q - w0)^T, per candidate.
    let diff = &q - &target;
    let err = (diff.bmm(h) * &diff).sum_dim_intlist([2i64].as_slice(), false, Kind::Double);
    let best = err.view([g, rows, a]).argmin(2, true);
    let q = q
        .view([g, rows, a, d])
        .gather(2, &best.unsqueeze(3).expand([g, rows, 1, d], false), false)
        .squeeze_dim(2);
    let keep = (keep.view([g, rows, 1]).logical_or(&live.logical_not())).to_device(w.device());
    let out = w_in.where_self(&keep, &q);
    Ok(out.to_kind(w.kind()).view(shape.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::quantize::quantize_weights;
    use tch::Device;

    fn unit(cin: usize, cout: usize, kernel: usize, groups: usize) -> ConvUnit {
        let p = kernel / 2;
        ConvUnit {
            conv: "test.conv".into(),
            bn: "test.bn".into(),
            cin,
            cout,
            kernel,
            stride: 1,
            groups,
            pad: [p; 4],
            relu6: true,
            in_hw: (8, 8),
            out_hw: (8, 8),
        }
    }

    /// Inputs whose channels are strongly correlated (mixtures of a few sources), as a
    /// convolution's are, and normally distributed weights.
    fn problem(u: &ConvUnit, seed: i64) -> (Tensor, Tensor) {
        let _turn = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(seed);
        let opts = (Kind::Float, Device::Cpu);
        let sources = Tensor::rand([64, 3, 8, 8], opts);
        let mix = Tensor::rand([u.cin as i64, 3], opts);
        let x = sources
            .permute([0, 2, 3, 1])
            .matmul(&mix.tr())
            .permute([0, 3, 1, 2])
            + Tensor::rand([64, u.cin as i64, 8, 8], opts) * 0.05;
        let k = u.kernel as i64;
        let w = Tensor::randn([u.cout as i64, (u.cin / u.groups) as i64, k, k], opts);
        (x, w)
    }

    fn conv(u: &ConvUnit, x: &Tensor, w: &Tensor) -> Tensor {
        let p = u.pad[0] as i64;
        x.conv2d(w, None::<Tensor>, [1, 1], [p, p], [1, 1], u.groups as i64)
    }

    fn nearest(w: &Tensor, rows: usize) -> Tensor {
        let v: Vec<f32> = w.view(-1).try_into().unwrap();
        let (q, s) = quantize_weights(&v, rows, &[]);
        let per = v.len() / rows;
        let deq: Vec<f32> = q
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * s[i / per])
            .collect();
        Tensor::from_slice(&deq).view(w.size().as_slice())
    }

    fn output_error(u: &ConvUnit, x: &Tensor, w: &Tensor, wq: &Tensor) -> f64 {
        (conv(u, x, w) - conv(u, x, wq))
            .square()
            .sum(Kind::Double)
            .double_value(&[])
    }

    #[test]
    fn gptq_lowers_the_output_error_and_the_exporter_reads_back_its_steps() {
        for (u, seed) in [
            (unit(16, 24, 1, 1), 1),
            (unit(12, 12, 3, 12), 2),
            (unit(3, 8, 3, 1), 3),
        ] {
            let (x, w) = problem(&u, seed);
            let mut stats = InputStats::default();
            // Two chunks, as the correction feeds it.
            for part in x.split(32, 0) {
                stats.add(&u, &part, None);
            }
            let keep = Tensor::zeros([u.cout as i64], (Kind::Bool, Device::Cpu));
            let g = gptq_weights(&u, &w, &stats, &keep, &[1.0]).unwrap();
            let (e_gptq, e_near) = (
                output_error(&u, &x, &w, &g),
                output_error(&u, &x, &w, &nearest(&w, u.cout)),
            );
            assert!(
                e_gptq < 0.8 * e_near,
                "{}x{} k{} g{}: GPTQ output error {e_gptq:.3e}, nearest {e_near:.3e}",
                u.cin,
                u.cout,
                u.kernel,
                u.groups
            );
            // On the exporter's grid: rounding again to nearest changes nothing.
            let again = nearest(&g, u.cout);
            let off = (&again - &g).abs().max().double_value(&[]);
            let step = w.abs().max().double_value(&[]) / 127.0;
            assert!(
                off < step * 1e-4,
                "re-rounded by {off:.3e} (step {step:.3e})"
            );
        }
    }

    /// On rows with one weight far larger than the rest, the step search never does worse than
    /// GPTQ at `max |w| / 127` alone on the calibration inputs, and on a 1x1 convolution's rows
    /// it does better; every step it picks is one of the candidates, with a weight of its row
    /// at +-127 for the exporter to read it back from. (A 3x3 depthwise row has 8 other
    /// weights to take up the clipped one's error: here, as on the shipped network, it keeps
    /// the full step.)
    #[test]
    fn the_step_search_lowers_the_output_error_within_the_candidate_steps() {
        for (u, seed, better) in [
            (unit(16, 24, 1, 1), 6, true),
            (unit(12, 12, 3, 12), 7, false),
        ] {
            let (x, w) = problem(&u, seed);
            // A view: the first weight of every row, in place.
            let _ = w.view([u.cout as i64, -1]).select(1, 0).g_mul_scalar_(6.0);
            let mut stats = InputStats::default();
            stats.add(&u, &x, None);
            let keep = Tensor::zeros([u.cout as i64], (Kind::Bool, Device::Cpu));
            let fixed = gptq_weights(&u, &w, &stats, &keep, &[1.0]).unwrap();
            let searched = gptq_weights(&u, &w, &stats, &keep, &SHRINKS).unwrap();
            let (e_fixed, e_searched) = (
                output_error(&u, &x, &w, &fixed),
                output_error(&u, &x, &w, &searched),
            );
            let bound = if better {
                0.95 * e_fixed
            } else {
                e_fixed * (1.0 + 1e-9)
            };
            assert!(
                e_searched <= bound,
                "g{}: searched {e_searched:.3e}, fixed step {e_fixed:.3e}",
                u.groups
            );
            let rows = u.cout as i64;
            let top_in = w.abs().view([rows, -1]).amax([1i64].as_slice(), false);
            let top_out = searched
                .abs()
                .view([rows, -1])
                .amax([1i64].as_slice(), false);
            let share: Vec<f64> = Vec::try_from(&(top_out / top_in).to_kind(Kind::Double)).unwrap();
            assert!(
                share.iter().all(|s| (0.5 - 1e-6..=1.0 + 1e-6).contains(s)),
                "{share:?}"
            );
            if better {
                assert!(
                    share.iter().any(|&s| s < 0.999),
                    "no row took a smaller step"
                );
            }
        }
    }

    #[test]
    fn rows_kept_come_back_as_they_were() {
        let u = unit(16, 24, 1, 1);
        let (x, w) = problem(&u, 4);
        let mut stats = InputStats::default();
        stats.add(&u, &x, None);
        let keep = Tensor::arange(24, (Kind::Int64, Device::Cpu)).lt(5);
        let g = gptq_weights(&u, &w, &stats, &keep, &[1.0]).unwrap();
        let (w5, g5) = (w.narrow(0, 0, 5), g.narrow(0, 0, 5));
        assert_eq!(
            w5.not_equal_tensor(&g5).sum(Kind::Int64).int64_value(&[]),
            0
        );
        assert!(
            w.narrow(0, 5, 19)
                .not_equal_tensor(&g.narrow(0, 5, 19))
                .any()
                .int64_value(&[])
                != 0
        );
    }

    #[test]
    fn a_hessian_of_the_wrong_layer_is_refused() {
        let u = unit(16, 24, 1, 1);
        let (_, w) = problem(&u, 5);
        let stats = InputStats {
            h: Some(Tensor::eye(8, (Kind::Double, Device::Cpu)).unsqueeze(0)),
            c: None,
        };
        let keep = Tensor::zeros([24], (Kind::Bool, Device::Cpu));
        let err = gptq_weights(&u, &w, &stats, &keep, &[1.0]).unwrap_err();
        assert!(format!("{err}").contains("H has shape"), "{err}");
    }
}
