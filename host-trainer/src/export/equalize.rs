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
//! A convolution whose output is also a residual branch or the pooled features is left alone.

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::onnx::{fold_conv, store_folded, unit_key, Weights};
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
    /// Median and largest scale over the scaled channels.
    pub median_scale: f32,
    pub max_scale: f32,
    pub headroom: f32,
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
                let pointwise = which == Equalization::All && b.groups == 1 && b.kernel == 1;
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
/// tensor's own largest over `headroom`, whichever is lower. Calibrate again on the result: the
/// ranges and means change.
pub fn equalize(
    arch: &Arch,
    w: &Weights,
    cal: &Calibrated,
    which: Equalization,
    headroom: f32,
) -> Result<(Weights, EqualizeReport)> {
    ensure!(
        headroom.is_finite() && headroom >= 1.0,
        "--equalize-headroom must be at least 1 (got {headroom})"
    );
    let mut out = w.clone();
    let mut folded = std::collections::HashMap::new();
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
        // Row scales of B (1x1): max |w| over each output row.
        let row_max: Vec<f32> = wb
            .chunks(per_b)
            .map(|r| r.iter().fold(0f32, |m, &x| m.max(x.abs())))
            .collect();
        let k: Vec<f32> = (0..a.cout)
            .map(|c| {
                let m = maxs[c].max(0.0);
                let room = if m > 0.0 { target / m } else { MAX_SCALE };
                let room = room.clamp(1.0, MAX_SCALE);
                if b.groups > 1 {
                    return room;
                }
                // 1x1: balance the activation step (top / 255 / k, times |w[o, c]|) against
                // the weight step (row_max[o] / 127, times k m), summed in square over rows.
                let (mut ww, mut ss) = (0f64, 0f64);
                for o in 0..b.cout {
                    let x = wb[o * per_b + c] as f64;
                    ww += x * x;
                    let s = row_max[o] as f64 / 127.0;
                    ss += s * s;
                }
                if m <= 0.0 || ww <= 0.0 || ss <= 0.0 {
                    return 1.0;
                }
                let step = top as f64 / 255.0;
                let k4 = step * step * ww / (ss * (m as f64).powi(2));
                (k4.sqrt().sqrt() as f32).clamp(1.0, room)
            })
            .collect();
        channels += a.cout;
        scales_used.extend(k.iter().copied().filter(|&s| s > 1.0));
        let (wa, ba) = folded.get_mut(&unit_key(a)).expect("every unit is folded");
        let per_a = wa.len() / a.cout;
        for c in 0..a.cout {
            wa[c * per_a..(c + 1) * per_a]
                .iter_mut()
                .for_each(|x| *x *= k[c]);
            ba[c] *= k[c];
        }
        let (wb, _) = folded.get_mut(&unit_key(b)).expect("every unit is folded");
        if b.groups > 1 {
            for c in 0..b.cout {
                wb[c * per_b..(c + 1) * per_b]
                    .iter_mut()
                    .for_each(|x| *x /= k[c]);
            }
        } else {
            for o in 0..b.cout {
                for c in 0..a.cout {
                    wb[o * per_b + c] /= k[c];
                }
            }
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
            median_scale: scales_used
                .get(scales_used.len() / 2)
                .copied()
                .unwrap_or(1.0),
            max_scale: scales_used.last().copied().unwrap_or(1.0),
            headroom,
        },
    ))
}
