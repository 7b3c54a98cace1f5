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

/// GPTQ-rounded weights of unit `u` (`w`: folded float weights, OIHW), dequantized (each value
/// `q * step`, `|q| <= 127`, one step per output row), from the unit's [`InputStats`] (with `C`:
/// rounded from the compensated weights, see [`WeightRounding::GptqCompensated`]).
/// Rows in `keep` (a `[cout]` bool mask) come back as they were, for the exporter to round to
/// nearest: rows whose step is set by the int32 bias's range rather than by `max |w|`.
pub fn gptq_weights(u: &ConvUnit, w: &Tensor, stats: &InputStats, keep: &Tensor) -> Result<Tensor> {
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
    let step = w0.abs().amax([2i64].as_slice(), true) / 127.0;
    let live = step.gt(0.0);
    let step = step.where_self(&live, &Tensor::ones_like(&step));
    // The weight that sets each row's step keeps +-127.
    let anchor = w0.abs().argmax(2, true);
    let anchor_value = w0.gather(2, &anchor, false).sign() * 127.0;

    // Upper Cholesky factor of H^-1.
    let hinv = damped.linalg_cholesky(false).cholesky_inverse(false);
    let u_f = hinv.linalg_cholesky(true);

    let wk = w0.copy();
    let q = Tensor::zeros_like(&w0);
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
    /// convolution's are, and random weights with one large value per row.
    fn problem(u: &ConvUnit, seed: i64) -> (Tensor, Tensor) {
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
            let g = gptq_weights(&u, &w, &stats, &keep).unwrap();
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

    #[test]
    fn rows_kept_come_back_as_they_were() {
        let u = unit(16, 24, 1, 1);
        let (x, w) = problem(&u, 4);
        let mut stats = InputStats::default();
        stats.add(&u, &x, None);
        let keep = Tensor::arange(24, (Kind::Int64, Device::Cpu)).lt(5);
        let g = gptq_weights(&u, &w, &stats, &keep).unwrap();
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
        let err = gptq_weights(&u, &w, &stats, &keep).unwrap_err();
        assert!(format!("{err}").contains("H has shape"), "{err}");
    }
}
