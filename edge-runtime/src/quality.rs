//! Gradability gate: is this a usable fundus photo? Checked before the network, so a dark,
//! blurred, overexposed, cropped or non-fundus image is answered "ungradable, retake" with the
//! reason, never screened into a silent "no referral".
//!
//! Measured on a copy shrunk by an integer factor to at most [`WORK_SIDE`] px (`INTER_AREA`).
//! Thresholds were set on the real photos in ../shared/data (all 1,013 pass) and on degraded
//! copies of them; the degradation sweep (docs/quality.md) measures what they let through.

use drscreen_core::resize::{resize, Interpolation};
use serde::{Deserialize, Serialize};

/// Longest side of the working copy.
pub const WORK_SIDE: usize = 512;

/// What the gate measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QualityMetrics {
    pub width: usize,
    pub height: usize,
    /// Fraction of the frame inside the field of view (max channel > 25).
    pub fov_fraction: f32,
    /// Corners (of four) that are dark, as the black surround of a fundus photo is.
    pub dark_corners: u8,
    /// Mean luminance (0-255) inside the field of view.
    pub mean_luma: f32,
    /// Fraction of field-of-view pixels with any channel clipped (>= 250).
    pub saturated_fraction: f32,
    /// Mean red minus mean blue inside the field of view (a retina is red-orange).
    pub red_minus_blue: f32,
    /// Variance of the 4-neighbour Laplacian of luminance inside the field of view (sharpness).
    pub laplacian_var: f32,
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Quality {
    Gradable,
    Ungradable { reason: String },
}

/// Limits of a gradable photo.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub min_side: usize,
    pub max_aspect: f32,
    pub min_fov_fraction: f32,
    pub min_dark_corners: u8,
    /// Below this the model's output is no longer trustworthy: in the degradation sweep, darkened
    /// referred photos fell to a silent "no referral" at mean luma 26-29, while no real IDRiD,
    /// SRahim or APTOS photo (4,675) is darker than 30.7 (docs/quality.md).
    pub min_mean_luma: f32,
    pub max_mean_luma: f32,
    pub max_saturated_fraction: f32,
    pub min_red_minus_blue: f32,
    pub min_laplacian_var: f32,
    /// Above this the "sharpness" is sensor noise or grain, not retina: the 1,013 real IDRiD and
    /// SRahim photos reach 165; Gaussian noise of sd 10 gives 230-900 (docs/quality.md).
    pub max_laplacian_var: f32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_side: 256,
            max_aspect: 2.0,
            min_fov_fraction: 0.25,
            min_dark_corners: 2,
            min_mean_luma: 30.0,
            max_mean_luma: 200.0,
            max_saturated_fraction: 0.28,
            min_red_minus_blue: 15.0,
            min_laplacian_var: 2.0,
            max_laplacian_var: 200.0,
        }
    }
}

const FOV_LEVEL: u8 = 25;
const DARK_CORNER: f32 = 20.0;

fn luma(p: &[u8]) -> f32 {
    0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
}

/// Shrinks a photo by the integer factor that brings its longest side to at most [`WORK_SIDE`]
/// (`INTER_AREA` on an exact multiple: OpenCV's fast integer path, a few ms even for 10 MP).
/// The last `side % factor` columns / rows (black surround) are dropped.
fn work_copy(rgb: &[u8], width: usize, height: usize) -> Option<(Vec<u8>, usize, usize)> {
    let k = width.max(height).div_ceil(WORK_SIDE);
    if k <= 1 {
        return None;
    }
    let (cw, ch) = (width / k * k, height / k * k);
    // Rows are contiguous: only a width that is not a multiple of k needs a cropped copy.
    let cropped: std::borrow::Cow<[u8]> = if cw == width {
        std::borrow::Cow::Borrowed(&rgb[..ch * width * 3])
    } else {
        let mut v = Vec::with_capacity(cw * ch * 3);
        for y in 0..ch {
            v.extend_from_slice(&rgb[y * width * 3..(y * width + cw) * 3]);
        }
        std::borrow::Cow::Owned(v)
    };
    let (w, h) = (cw / k, ch / k);
    let mut out = vec![0u8; w * h * 3];
    resize(&cropped, cw, ch, &mut out, w, h, 3, Interpolation::Area).ok()?;
    Some((out, w, h))
}

/// Measures an RGB8 photo (`width * height * 3` bytes).
pub fn measure(rgb: &[u8], width: usize, height: usize) -> QualityMetrics {
    let small = work_copy(rgb, width, height);
    let (img, w, h): (&[u8], usize, usize) = match &small {
        Some((v, w, h)) => (v, *w, *h),
        None => (rgb, width, height),
    };
    let px = |x: usize, y: usize| &img[(y * w + x) * 3..(y * w + x) * 3 + 3];
    let inside = |x: usize, y: usize| px(x, y).iter().copied().max().unwrap_or(0) > FOV_LEVEL;

    let (mut n_fov, mut sum_l, mut n_sat, mut sum_r, mut sum_b) =
        (0usize, 0f64, 0usize, 0f64, 0f64);
    for y in 0..h {
        for x in 0..w {
            if inside(x, y) {
                let p = px(x, y);
                let l = luma(p);
                n_fov += 1;
                sum_l += l as f64;
                n_sat += (p.iter().copied().max().unwrap_or(0) >= 250) as usize;
                sum_r += p[0] as f64;
                sum_b += p[2] as f64;
            }
        }
    }
    let cw = (w / 20).max(1);
    let ch = (h / 20).max(1);
    let corner_mean = |x0: usize, y0: usize| {
        let mut s = 0f32;
        for y in y0..y0 + ch {
            for x in x0..x0 + cw {
                s += px(x, y).iter().copied().max().unwrap_or(0) as f32;
            }
        }
        s / (cw * ch) as f32
    };
    let dark_corners = [(0, 0), (w - cw, 0), (0, h - ch), (w - cw, h - ch)]
        .iter()
        .filter(|&&(x, y)| corner_mean(x, y) < DARK_CORNER)
        .count() as u8;

    // Laplacian variance over pixels whose whole 5x5 neighbourhood is inside the field of view.
    let (mut n_lap, mut s1, mut s2) = (0usize, 0f64, 0f64);
    for y in 2..h.saturating_sub(2) {
        for x in 2..w.saturating_sub(2) {
            if !(inside(x - 2, y) && inside(x + 2, y) && inside(x, y - 2) && inside(x, y + 2)) {
                continue;
            }
            let lap =
                luma(px(x - 1, y)) + luma(px(x + 1, y)) + luma(px(x, y - 1)) + luma(px(x, y + 1))
                    - 4.0 * luma(px(x, y));
            n_lap += 1;
            s1 += lap as f64;
            s2 += (lap as f64) * (lap as f64);
        }
    }
    let nf = n_fov.max(1) as f64;
    let laplacian_var = if n_lap > 0 {
        (s2 / n_lap as f64 - (s1 / n_lap as f64).powi(2)) as f32
    } else {
        0.0
    };
    QualityMetrics {
        width,
        height,
        fov_fraction: n_fov as f32 / (w * h) as f32,
        dark_corners,
        mean_luma: (sum_l / nf) as f32,
        saturated_fraction: (n_sat as f64 / nf) as f32,
        red_minus_blue: ((sum_r - sum_b) / nf) as f32,
        laplacian_var,
    }
}

/// Applies the limits; the first failed check is the reason, worded for the operator.
pub fn assess(m: &QualityMetrics, l: &Limits) -> Quality {
    let bad = |reason: String| Quality::Ungradable { reason };
    let (short, long) = (m.width.min(m.height), m.width.max(m.height));
    if short < l.min_side {
        return bad(format!(
            "photo too small ({}x{}): need at least {} px per side",
            m.width, m.height, l.min_side
        ));
    }
    if long as f32 / short as f32 > l.max_aspect {
        return bad(format!(
            "implausible shape {}x{}: not a fundus photo",
            m.width, m.height
        ));
    }
    if m.fov_fraction < l.min_fov_fraction {
        return bad(format!(
            "no field of view found ({:.0} % of the frame lit): lens covered or far too dark",
            m.fov_fraction * 100.0
        ));
    }
    if m.dark_corners < l.min_dark_corners {
        return bad(
            "no circular field of view with a dark surround: not a fundus photo, or badly framed"
                .into(),
        );
    }
    if m.mean_luma < l.min_mean_luma {
        return bad(format!(
            "too dark (mean brightness {:.0}/255): check illumination and pupil size",
            m.mean_luma
        ));
    }
    if m.mean_luma > l.max_mean_luma || m.saturated_fraction > l.max_saturated_fraction {
        return bad(format!(
            "overexposed ({:.0} % saturated): lower the flash",
            m.saturated_fraction * 100.0
        ));
    }
    if m.red_minus_blue < l.min_red_minus_blue {
        return bad("colours are not those of a retina: not a fundus photo".into());
    }
    if m.laplacian_var < l.min_laplacian_var {
        return bad(format!(
            "blurred (sharpness {:.1}): refocus and retake",
            m.laplacian_var
        ));
    }
    if m.laplacian_var > l.max_laplacian_var {
        return bad(format!(
            "too noisy or grainy (sharpness {:.0}, a photo reaches {:.0}): lower the camera's gain or ISO, check the light, and retake",
            m.laplacian_var, l.max_laplacian_var
        ));
    }
    Quality::Gradable
}
