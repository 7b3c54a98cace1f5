//! Cross-layer equalization (after Nagel et al. 2019, "Data-Free Quantization Through Weight
//! Equalization and Bias Correction", section 4.1), measured on the calibration photos.
//!
//! A per-tensor uint8 activation gives every channel the same step. Where one channel of a ReLU6
//! convolution's output reaches 6 and another never passes 0.01, the small one is a few steps
//! wide or rounds to a constant. BatchNorm leaves many such channels in MobileNetV2, the stem's
//! most of all. Scaling output channel `c` of a ReLU6 convolution `A` by `k_c >= 1` (its weights
//! and bias) and input channel `c` of the convolution `B` that reads it by `1 / k_c` computes the
//! same function while no scaled value reaches the clamp: `min(max(k y, 0), 6) / k = min(max(y,
//! 0), 6)` for `y <= 6 / k`. So `k_c` is at most `6 / max_c`, the channel's largest output on the
//! calibration photos over a headroom factor; it is at least 1, because a channel that saturates
//! must keep its clamp at 6.
//!
//! - `B` depthwise: its per-channel int8 weights take the `1 / k_c` into their own scale, so the
//!   small channel gains `k_c` times the activation steps at no cost.
//! - `B` a 1x1 convolution (the projection after a depthwise one): input column `c` of each
//!   output row shrinks, and its int8 weights get coarser against the row's scale. `k_c` then
//!   balances the two roundings (activation step over `k_c`, weight step times `k_c`) instead of
//!   taking the whole headroom.
//!
//! A convolution whose output is also a residual branch or the pooled features is left out of
//! those pairs. A residual stream (the tensor a stage of same-width blocks passes along: the
//! stage's first projection writes it, each residual block reads it with its first 1x1
//! convolution and adds its own projection's output to it, and the next stage's first 1x1
//! convolution reads the last sum) is equalized as one ([`Equalization::Streams`]): channel `c` of
//! every projection that writes it is scaled by `k_c` and input channel `c` of every 1x1
//! convolution that reads it by `1 / k_c`. The stream is linear and its sums add scaled values
//! to scaled values, so this is exact for any `k_c`; `k_c` balances the stream's activation step
//! against the readers' weight steps as for a projection, within the range of every tensor of
//! the stream (signed: its channels' largest magnitude) over the same headroom as a pair's. These
//! signed tensors are the int8 model's coarsest: their per-tensor range is set by a few wide
//! channels. Without the headroom (`1`, the streams files of 2026-12-02 and -03) every scaled
//! channel ends at the range itself, and a photo from another camera whose channel passes its
//! calibration largest saturates: on SRahim such a file clipped 3x more values than on IDRiD's
//! validation photos and about 100x more than the shipped file, and its logits read low there
//! (models/README.md).

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::onnx::{fold_conv, residual_key, store_folded, unit_key, Weights};
use super::quantize::Calibrated;
use crate::model::arch::{Arch, ConvUnit};

/// Which convolution pairs [`equalize`] scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Equalization {
    /// None: the checkpoint's weights as they are.
    None,
    /// ReLU6 convolutions before a depthwise one (exact, free for the depthwise weights).
    Depthwise,
    /// Those, and the depthwise ones before their 1x1 projection (balanced).
    #[default]
    All,
    /// All those pairs, and the residual streams (balanced).
    Streams,
}

/// Largest scale given to one channel (a channel that never leaves 0 would get any).
const MAX_SCALE: f32 = 1000.0;

/// What [`equalize`] did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EqualizeReport {
    pub equalization: Equalization,
    /// Channels scaled by more than 1, of those in equalized pairs.
    pub scaled_channels: usize,
    pub channels: usize,
    /// Pairs (`A`, `B`) equalized.
    pub pairs: usize,
    /// Residual streams equalized.
    #[serde(default)]
    pub streams: usize,
    /// Median and largest scale over the scaled channels.
    pub median_scale: f32,
    pub max_scale: f32,
    pub headroom: f32,
    /// The residual streams' headroom where it differs from the pairs' (`headroom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams_headroom: Option<f32>,
}

/// The pairs `(A, B)` of consecutive convolutions where `A` is a ReLU6 convolution whose output
/// only `B` reads, and `B` is depthwise or (with [`Equalization::All`]) 1x1.
fn pairs(arch: &Arch, which: Equalization) -> Vec<(&ConvUnit, &ConvUnit)> {
    let mut out = Vec::new();
    for (i, block) in arch.blocks.iter().enumerate() {
        for (j, a) in block.units.iter().enumerate() {
            let next = match block.units.get(j + 1) {
                Some(b) => Some(b),
                // The block's output: read by the next block's first convolution alone when
                // neither block adds a residual.
                None => arch
                    .blocks
                    .get(i + 1)
                    .filter(|n| !block.residual && !n.residual)
                    .and_then(|n| n.units.first()),
            };
            if let Some(b) = next {
                let depthwise = b.groups == b.cin && b.cin == b.cout;
                let pointwise = which != Equalization::Depthwise && b.groups == 1 && b.kernel == 1;
                if which != Equalization::None
                    && a.relu6
                    && b.cin == a.cout
                    && (depthwise || pointwise)
                {
                    out.push((a, b));
                }
            }
        }
    }
    out
}

/// `w` with every pair of [`pairs`] equalized, as a checkpoint of folded convolutions (identity
/// BatchNorm); `cal` is the float network's calibration of `w` (its `channel_max`). `headroom`
/// (>= 1): a scaled channel's largest calibration value ends at most at `6 / headroom`, or at the
/// tensor's own largest over `headroom`, whichever is lower; in a residual stream, at the
/// stream's widest range over `streams_headroom`. Calibrate again on the result: the ranges and
/// means change.
pub fn equalize(
    arch: &Arch,
    w: &Weights,
    cal: &Calibrated,
    which: Equalization,
    headroom: f32,
    streams_headroom: f32,
) -> Result<(Weights, EqualizeReport)> {
    ensure!(
        headroom.is_finite() && headroom >= 1.0,
        "--equalize-headroom must be at least 1 (got {headroom})"
    );
    ensure!(
        streams_headroom.is_finite() && streams_headroom >= 1.0,
        "--streams-headroom must be at least 1 (got {streams_headroom})"
    );
    let mut out = w.clone();
    let mut folded = Folded::new();
    for block in &arch.blocks {
        for u in &block.units {
            folded.insert(unit_key(u), fold_conv(w, u)?);
        }
    }
    let mut scales_used = Vec::new();
    let mut channels = 0;
    let list = pairs(arch, which);
    for &(a, b) in &list {
        let maxs = cal
            .channel_max
            .get(&unit_key(a))
            .with_context(|| format!("calibration has no channel maxima for {}", a.conv))?;
        ensure!(
            maxs.len() == a.cout,
            "calibration of {}: {} channel maxima for {} channels",
            a.conv,
            maxs.len(),
            a.cout
        );
        let top = maxs.iter().fold(0f32, |m, &x| m.max(x)).min(6.0);
        let target = top / headroom;
        let (wb, _) = &folded[&unit_key(b)];
        let per_b = wb.len() / b.cout;
        let row_max = row_max(wb, per_b);
        let k: Vec<f32> = (0..a.cout)
            .map(|c| {
                let m = maxs[c].max(0.0);
                let room = if m > 0.0 { target / m } else { MAX_SCALE };
                let room = room.clamp(1.0, MAX_SCALE);
                if b.groups > 1 {
                    return room;
                }
                let (ww, ss) = column_weight(wb, per_b, &row_max, c);
                balance(top as f64 / 255.0, m, ww, ss, room)
            })
            .collect();
        channels += a.cout;
        scales_used.extend(k.iter().copied().filter(|&s| s > 1.0));
        scale_outputs(&mut folded, a, &k);
        scale_inputs_down(&mut folded, b, &k);
    }
    let streams = if which == Equalization::Streams {
        streams(arch)
    } else {
        Vec::new()
    };
    for st in &streams {
        let k = stream_scales(st, cal, &folded, streams_headroom)?;
        channels += k.len();
        scales_used.extend(k.iter().copied().filter(|&s| s > 1.0));
        for u in &st.writers {
            scale_outputs(&mut folded, u, &k);
        }
        for u in &st.readers {
            scale_inputs_down(&mut folded, u, &k);
        }
    }
    for block in &arch.blocks {
        for u in &block.units {
            let (wf, bf) = &folded[&unit_key(u)];
            store_folded(&mut out, u, wf, bf);
        }
    }
    scales_used.sort_by(f32::total_cmp);
    Ok((
        out,
        EqualizeReport {
            equalization: which,
            scaled_channels: scales_used.len(),
            channels,
            pairs: list.len(),
            streams: streams.len(),
            median_scale: scales_used
                .get(scales_used.len() / 2)
                .copied()
                .unwrap_or(1.0),
            max_scale: scales_used.last().copied().unwrap_or(1.0),
            headroom,
            streams_headroom: (!streams.is_empty() && streams_headroom != headroom)
                .then_some(streams_headroom),
        },
    ))
}

/// Every unit's folded (weights OIHW, bias), by [`unit_key`].
type Folded = std::collections::HashMap<String, (Vec<f32>, Vec<f32>)>;

/// Output channel `c` of `u` (its weights' row and its bias) times `k[c]`.
fn scale_outputs(folded: &mut Folded, u: &ConvUnit, k: &[f32]) {
    let (w, b) = folded.get_mut(&unit_key(u)).expect("every unit is folded");
    let per = w.len() / u.cout;
    for (c, &kc) in k.iter().enumerate() {
        w[c * per..(c + 1) * per].iter_mut().for_each(|x| *x *= kc);
        b[c] *= kc;
    }
}

/// Input channel `c` of `u` over `k[c]`: a depthwise unit's row `c`, a 1x1 unit's column `c`.
fn scale_inputs_down(folded: &mut Folded, u: &ConvUnit, k: &[f32]) {
    let (w, _) = folded.get_mut(&unit_key(u)).expect("every unit is folded");
    let per = w.len() / u.cout;
    if u.groups > 1 {
        for (row, &kc) in w.chunks_mut(per).zip(k) {
            row.iter_mut().for_each(|x| *x /= kc);
        }
    } else {
        for row in w.chunks_mut(per) {
            row.iter_mut().zip(k).for_each(|(x, &kc)| *x /= kc);
        }
    }
}

/// Largest |w| of each output row (`per` weights a row): the row's int8 step times 127.
fn row_max(w: &[f32], per: usize) -> Vec<f32> {
    w.chunks(per)
        .map(|r| r.iter().fold(0f32, |m, &x| m.max(x.abs())))
        .collect()
}

/// Over the rows `o` of a 1x1 convolution's weights `w` (`per` inputs a row), for input column
/// `c`: the sum of `w[o, c]^2` and of the rows' int8 steps squared (`row_max[o] / 127`).
fn column_weight(w: &[f32], per: usize, row_max: &[f32], c: usize) -> (f64, f64) {
    let (mut ww, mut ss) = (0f64, 0f64);
    for (o, &r) in row_max.iter().enumerate() {
        let x = w[o * per + c] as f64;
        ww += x * x;
        let s = r as f64 / 127.0;
        ss += s * s;
    }
    (ww, ss)
}

/// The scale `k` of an input channel of magnitude `m`, read by 1x1 weights with column sums
/// `ww`, `ss` ([`column_weight`]): it balances the activation step (`step / k`, times the
/// weights) against the weight steps (times `k m`), `k^4 = step^2 ww / (ss m^2)`, within
/// `[1, room]`.
fn balance(step: f64, m: f32, ww: f64, ss: f64, room: f32) -> f32 {
    if m <= 0.0 || ww <= 0.0 || ss <= 0.0 {
        return 1.0;
    }
    let k4 = step * step * ww / (ss * (m as f64).powi(2));
    (k4.sqrt().sqrt() as f32).clamp(1.0, room)
}

/// A residual stream (see the module doc).
struct Stream<'a> {
    /// The projections that write it: the stage's first, then each residual block's.
    writers: Vec<&'a ConvUnit>,
    /// The 1x1 convolutions that read it: each residual block's first, then the next stage's.
    readers: Vec<&'a ConvUnit>,
    /// Calibration keys of its tensors (each projection's output, each sum).
    tensors: Vec<String>,
}

/// The residual streams of `arch` that a later stage reads (one the pooling reads is left
/// alone), whose readers are all 1x1 convolutions.
fn streams(arch: &Arch) -> Vec<Stream<'_>> {
    let blocks = &arch.blocks;
    let mut out = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        let start = &blocks[i];
        i += 1;
        let Some(first) = start.units.last().filter(|u| !start.residual && !u.relu6) else {
            continue;
        };
        let mut st = Stream {
            writers: vec![first],
            readers: Vec::new(),
            tensors: vec![unit_key(first)],
        };
        while let Some(b) = blocks.get(i).filter(|b| b.residual) {
            if let (Some(r), Some(p)) = (b.units.first(), b.projection()) {
                st.readers.push(r);
                st.writers.push(p);
                st.tensors.push(unit_key(p));
                st.tensors.push(residual_key(b));
            }
            i += 1;
        }
        if let Some(r) = blocks.get(i).and_then(|b| b.units.first()) {
            st.readers.push(r);
            let pointwise = |u: &&ConvUnit| u.kernel == 1 && u.groups == 1 && u.cin == first.cout;
            if st.readers.iter().all(pointwise) {
                out.push(st);
            }
        }
    }
    out
}

/// Per channel of stream `st`, its scale: [`balance`] of the stream's widest step against all
/// of its readers' weights, within the range of every tensor of the stream over `headroom`: a
/// scaled channel's largest calibration value ends at most at `1 / headroom` of each tensor's
/// range, so that a photo whose channel goes past the calibration photos' largest is not clipped
/// (a channel already within that of the range keeps its scale of 1). The weight rounding's
/// error scales with the channel's typical value, so its magnitude here is its root mean square
/// on the calibration photos (its largest, as for a ReLU6 pair, would overstate the cost some
/// tenfold: these tensors' largest values are 6-12 standard deviations out).
fn stream_scales(
    st: &Stream,
    cal: &Calibrated,
    folded: &Folded,
    headroom: f32,
) -> Result<Vec<f32>> {
    let width = st.writers[0].cout;
    // room[c]: how far channel c may grow in every tensor; step: the widest tensor's.
    let mut room = vec![MAX_SCALE; width];
    let mut rms = vec![0f32; width];
    let mut step = 0f64;
    for key in &st.tensors {
        let (hi, lo, sq) = (
            cal.channel_max.get(key),
            cal.channel_min.get(key),
            cal.channel_mean_square.get(key),
        );
        let (Some(hi), Some(lo), Some(sq)) = (hi, lo, sq) else {
            bail!("calibration has no channel ranges for {key}");
        };
        ensure!(
            hi.len() == width && lo.len() == width && sq.len() == width,
            "calibration of {key}: {} channels, the stream has {width}",
            hi.len()
        );
        let m: Vec<f32> = hi
            .iter()
            .zip(lo)
            .map(|(h, l)| h.abs().max(l.abs()))
            .collect();
        let top = m.iter().fold(0f32, |a, &x| a.max(x));
        step = step.max(2.0 * top as f64 / 255.0);
        for c in 0..width {
            if m[c] > 0.0 {
                room[c] = room[c].min(top / (m[c] * headroom));
            }
            rms[c] = rms[c].max(sq[c].max(0.0).sqrt());
        }
    }
    let mut ww = vec![0f64; width];
    let mut ss = vec![0f64; width];
    for r in &st.readers {
        let (w, _) = &folded[&unit_key(r)];
        let row_max = row_max(w, r.cin);
        for c in 0..width {
            let (a, b) = column_weight(w, r.cin, &row_max, c);
            ww[c] += a;
            ss[c] += b;
        }
    }
    Ok((0..width)
        .map(|c| balance(step, rms[c], ww[c], ss[c], room[c].max(1.0)))
        .collect())
}
