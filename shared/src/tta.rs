//! Test-time augmentation: the seed's five views written into one batch, and their aggregation.

use crate::error::{check_dims, check_len, CoreError};

/// One TTA view of the model input.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum View {
    /// The image as it is.
    Identity,
    /// Mirrored left-right.
    FlipH,
    /// Mirrored top-bottom.
    FlipV,
    /// Both mirrors (a 180 degree rotation).
    FlipHV,
    /// Every value multiplied by the factor, clipped to [0, 1] (the seed used 1.1).
    Brightness(f32),
}

/// The seed's five views, in its order.
pub const SEED_VIEWS: [View; 5] = [
    View::Identity,
    View::FlipH,
    View::FlipV,
    View::FlipHV,
    View::Brightness(1.1),
];

/// Most views a contract may name (bounds the per-view arrays).
pub const MAX_VIEWS: usize = 8;

/// Writes each view of a `width x height` RGB8 image into `batch` as N x 3 x H x W `f32` in [0, 1],
/// N = `views.len()`. Values are `byte / 255` (then `* factor`, clipped, for brightness).
pub fn write_views(
    rgb: &[u8],
    width: usize,
    height: usize,
    views: &[View],
    batch: &mut [f32],
) -> Result<(), CoreError> {
    let n = check_dims(width, height)?;
    check_len("RGB source", rgb.len(), n * 3)?;
    if views.is_empty() || views.len() > MAX_VIEWS {
        return Err(CoreError::Param {
            name: "views",
            reason: "need 1..=8 TTA views",
        });
    }
    check_len("TTA batch", batch.len(), views.len() * n * 3)?;
    for (view, out) in views.iter().zip(batch.chunks_exact_mut(n * 3)) {
        let (flip_h, flip_v, gain) = match *view {
            View::Identity => (false, false, None),
            View::FlipH => (true, false, None),
            View::FlipV => (false, true, None),
            View::FlipHV => (true, true, None),
            View::Brightness(f) if f.is_finite() && f > 0.0 => (false, false, Some(f)),
            View::Brightness(_) => {
                return Err(CoreError::Param {
                    name: "brightness",
                    reason: "factor must be finite and > 0",
                })
            }
        };
        for y in 0..height {
            let sy = if flip_v { height - 1 - y } else { y };
            for x in 0..width {
                let sx = if flip_h { width - 1 - x } else { x };
                let px = &rgb[(sy * width + sx) * 3..][..3];
                for c in 0..3 {
                    let v = px[c] as f32 / 255.0;
                    out[c * n + y * width + x] = match gain {
                        Some(f) => (v * f).clamp(0.0, 1.0),
                        None => v,
                    };
                }
            }
        }
    }
    Ok(())
}

/// Per-view probabilities and their mean.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TtaResult {
    /// Probability of the positive class for each view, in view order.
    pub per_view: heapless::Vec<f32, MAX_VIEWS>,
    /// Their arithmetic mean: the screening probability.
    pub mean: f32,
}

/// Aggregates per-view probabilities (mean, summed in view order). Refuses an empty list and any
/// value that is not a probability, so a broken model can never read as "normal".
pub fn aggregate(per_view: &[f32]) -> Result<TtaResult, CoreError> {
    if per_view.is_empty() || per_view.len() > MAX_VIEWS {
        return Err(CoreError::Param {
            name: "views",
            reason: "need 1..=8 view probabilities",
        });
    }
    if per_view.iter().any(|p| !(0.0..=1.0).contains(p)) {
        return Err(CoreError::Param {
            name: "probability",
            reason: "model output outside [0, 1] or NaN",
        });
    }
    let sum: f32 = per_view.iter().sum();
    let mut v = heapless::Vec::new();
    v.extend_from_slice(per_view)
        .map_err(|_| CoreError::Param {
            name: "views",
            reason: "too many views",
        })?;
    Ok(TtaResult {
        per_view: v,
        mean: sum / per_view.len() as f32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn flips_are_involutions_and_brightness_stays_in_unit_range(
            w in 1usize..7, h in 1usize..7, seed in any::<u64>()
        ) {
            let n = w * h;
            let rgb: std::vec::Vec<u8> = (0..n * 3).map(|i| (seed.wrapping_mul(i as u64 + 1) >> 7) as u8).collect();
            let mut batch = std::vec![0f32; 5 * n * 3];
            write_views(&rgb, w, h, &SEED_VIEWS, &mut batch).unwrap();
            let view = |k: usize, c: usize, y: usize, x: usize| batch[k * n * 3 + c * n + y * w + x];
            for c in 0..3 { for y in 0..h { for x in 0..w {
                prop_assert_eq!(view(1, c, y, x), view(0, c, y, w - 1 - x));
                prop_assert_eq!(view(2, c, y, x), view(0, c, h - 1 - y, x));
                prop_assert_eq!(view(3, c, y, x), view(0, c, h - 1 - y, w - 1 - x));
                let b = view(4, c, y, x);
                prop_assert!((0.0..=1.0).contains(&b));
                prop_assert_eq!(b, (view(0, c, y, x) * 1.1).min(1.0));
            }}}
        }
    }

    #[test]
    fn aggregate_is_the_mean_and_refuses_non_probabilities() {
        let r = aggregate(&[0.25, 0.75, 0.5, 0.5, 1.0]).unwrap();
        assert_eq!(r.mean, 0.6);
        assert_eq!(r.per_view.len(), 5);
        assert!(aggregate(&[]).is_err());
        assert!(aggregate(&[0.5, f32::NAN]).is_err());
        assert!(aggregate(&[1.5]).is_err());
    }
}
