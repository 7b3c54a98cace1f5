//! 8-bit image resize, bit-exact with `cv2.resize(src, (w, h), interpolation=INTER_LINEAR | INTER_AREA)`
//! (`modules/imgproc/src/resize.cpp`, `cv::hal::resize`).
//!
//! Reproduced from OpenCV:
//! - scales are `1 / (dst / src)` in `f64`; an exact integer factor (within `DBL_EPSILON`) takes the
//!   "area fast" path, and `INTER_LINEAR` at exactly 2x down in both axes *is* `INTER_AREA`;
//! - `INTER_LINEAR` uses 11-bit fixed-point weights `saturate_cast<short>(w * 2048)`, a horizontal
//!   pass in `i32`, then `((b0 * (h0 >> 4)) >> 16) + ((b1 * (h1 >> 4)) >> 16) + 2) >> 2`;
//!   out-of-range taps are clamped to the edge (replicate);
//! - true `INTER_AREA` (down in both axes, non-integer factor) accumulates `f32` weights per source
//!   column, then per source row, in OpenCV's order, and rounds half to even; the 2x2 fast path rounds
//!   `(sum + 2) >> 2`, other integer factors `sum * (1.f / area)`;
//! - `INTER_AREA` up-scaling is OpenCV's bilinear variant with area-derived weights.
//!
//! Each output pixel is computed on its own (no row buffers): the same integer and `f32` operations in
//! the same order, so no allocation and the same bytes.

use crate::clahe::round_sat_u8;
use crate::error::{check_dims, check_len, CoreError};

/// Interpolation methods, as OpenCV's `INTER_LINEAR` and `INTER_AREA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Interpolation {
    /// `cv2.INTER_LINEAR` (bilinear, the seed's `cv2.resize` default).
    Linear,
    /// `cv2.INTER_AREA` (pixel-area averaging when shrinking).
    Area,
}

const COEF_BITS: i32 = 11;
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;

/// Source and destination geometry of one resize.
#[derive(Debug, Clone, Copy)]
struct Plan {
    sw: usize,
    sh: usize,
    dw: usize,
    dh: usize,
    cn: usize,
    scale_x: f64,
    scale_y: f64,
    inv_scale_x: f64,
    inv_scale_y: f64,
    iscale_x: i64,
    iscale_y: i64,
    area_fast: bool,
}

impl Plan {
    fn new(sw: usize, sh: usize, dw: usize, dh: usize, cn: usize) -> Self {
        let inv_scale_x = dw as f64 / sw as f64;
        let inv_scale_y = dh as f64 / sh as f64;
        let scale_x = 1.0 / inv_scale_x;
        let scale_y = 1.0 / inv_scale_y;
        // saturate_cast<int>(double) rounds half to even.
        let iscale_x = round_even_f64(scale_x);
        let iscale_y = round_even_f64(scale_y);
        let area_fast = (scale_x - iscale_x as f64).abs() < f64::EPSILON
            && (scale_y - iscale_y as f64).abs() < f64::EPSILON;
        Plan {
            sw,
            sh,
            dw,
            dh,
            cn,
            scale_x,
            scale_y,
            inv_scale_x,
            inv_scale_y,
            iscale_x,
            iscale_y,
            area_fast,
        }
    }
}

fn round_even_f64(x: f64) -> i64 {
    const MAGIC: f64 = 4_503_599_627_370_496.0; // 2^52
    let r = if x.abs() < MAGIC {
        let m = if x < 0.0 { -MAGIC } else { MAGIC };
        (x + m) - m
    } else {
        x
    };
    r as i64
}

/// `cvFloor` for `f32` / `f64`.
#[inline(always)]
fn floor_f32(x: f32) -> i64 {
    let i = x as i64;
    i - ((x < i as f32) as i64)
}
#[inline(always)]
fn floor_f64(x: f64) -> i64 {
    let i = x as i64;
    i - ((x < i as f64) as i64)
}
#[inline(always)]
fn ceil_f64(x: f64) -> i64 {
    let i = x as i64;
    i + ((x > i as f64) as i64)
}

/// One axis of the bilinear (or area-mode bilinear) mapping: source index and Q11 weights.
#[derive(Debug, Clone, Copy)]
struct LinearTap {
    s0: usize,
    s1: usize,
    w0: i32,
    w1: i32,
}

/// OpenCV's per-axis coefficient computation in `cv::hal::resize` (`ksize = 2`).
///
/// `clamp_weights`: the horizontal axis moves an out-of-range tap to the edge with weight
/// (1, 0); the vertical axis keeps the computed weights and only clips the row indices.
#[inline]
fn linear_tap(
    d: usize,
    ssize: usize,
    scale: f64,
    inv_scale: f64,
    area_mode: bool,
    clamp_weights: bool,
) -> LinearTap {
    let (mut sx, mut fx) = if !area_mode {
        let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
        let s = floor_f32(f);
        (s, f - s as f32)
    } else {
        let s = floor_f64(d as f64 * scale);
        let f = ((d as f64 + 1.0) - (s as f64 + 1.0) * inv_scale) as f32;
        let f = if f <= 0.0 {
            0.0
        } else {
            f - floor_f32(f) as f32
        };
        (s, f)
    };
    let last = ssize as i64 - 1;
    if clamp_weights {
        if sx < 0 {
            sx = 0;
            fx = 0.0;
        }
        if sx >= last {
            sx = last;
            fx = 0.0;
        }
    }
    // saturate_cast<short>(float): round half to even.
    let w0 = round_sat_i16((1.0 - fx) * COEF_SCALE);
    let w1 = round_sat_i16(fx * COEF_SCALE);
    LinearTap {
        s0: sx.clamp(0, last) as usize,
        s1: (sx + 1).clamp(0, last) as usize,
        w0,
        w1,
    }
}

#[inline(always)]
fn round_sat_i16(x: f32) -> i32 {
    let r = crate::clahe::round_ties_even_f32(x);
    (r as i32).clamp(i16::MIN as i32, i16::MAX as i32)
}

/// `cv2.resize(src, (dst_w, dst_h), interpolation=..)` for interleaved 8-bit images of 1..=4 channels.
///
/// `src` is `src_w * src_h * channels` bytes, `dst` is `dst_w * dst_h * channels` bytes.
#[allow(clippy::too_many_arguments)]
pub fn resize(
    src: &[u8],
    src_w: usize,
    src_h: usize,
    dst: &mut [u8],
    dst_w: usize,
    dst_h: usize,
    channels: usize,
    interpolation: Interpolation,
) -> Result<(), CoreError> {
    if !(1..=4).contains(&channels) {
        return Err(CoreError::Param {
            name: "channels",
            reason: "must be 1..=4",
        });
    }
    check_len(
        "resize source",
        src.len(),
        check_dims(src_w, src_h)? * channels,
    )?;
    check_len(
        "resize destination",
        dst.len(),
        check_dims(dst_w, dst_h)? * channels,
    )?;
    let plan = Plan::new(src_w, src_h, dst_w, dst_h, channels);
    let mut interp = interpolation;
    if interp == Interpolation::Linear && plan.area_fast && plan.iscale_x == 2 && plan.iscale_y == 2
    {
        interp = Interpolation::Area;
    }
    if interp == Interpolation::Area && plan.scale_x >= 1.0 && plan.scale_y >= 1.0 {
        if plan.area_fast {
            area_fast(src, dst, &plan);
        } else {
            area(src, dst, &plan);
        }
        return Ok(());
    }
    bilinear(src, dst, &plan, interp == Interpolation::Area);
    Ok(())
}

fn bilinear(src: &[u8], dst: &mut [u8], p: &Plan, area_mode: bool) {
    let (cn, sw) = (p.cn, p.sw);
    for dy in 0..p.dh {
        let ty = linear_tap(dy, p.sh, p.scale_y, p.inv_scale_y, area_mode, false);
        let r0 = &src[ty.s0 * sw * cn..][..sw * cn];
        let r1 = &src[ty.s1 * sw * cn..][..sw * cn];
        let out = &mut dst[dy * p.dw * cn..][..p.dw * cn];
        for dx in 0..p.dw {
            let tx = linear_tap(dx, sw, p.scale_x, p.inv_scale_x, area_mode, true);
            let (i0, i1) = (tx.s0 * cn, tx.s1 * cn);
            for c in 0..cn {
                let h0 = r0[i0 + c] as i32 * tx.w0 + r0[i1 + c] as i32 * tx.w1;
                let h1 = r1[i0 + c] as i32 * tx.w0 + r1[i1 + c] as i32 * tx.w1;
                let v = (((ty.w0 * (h0 >> 4)) >> 16) + ((ty.w1 * (h1 >> 4)) >> 16) + 2) >> 2;
                out[dx * cn + c] = v.clamp(0, 255) as u8;
            }
        }
    }
}

fn area_fast(src: &[u8], dst: &mut [u8], p: &Plan) {
    let (cn, sw, sh) = (p.cn, p.sw, p.sh);
    let (kx, ky) = (p.iscale_x as usize, p.iscale_y as usize);
    let scale = 1.0f32 / (kx * ky) as f32;
    let two_by_two = kx == 2 && ky == 2 && cn != 2;
    let full_cols = sw / kx;
    for dy in 0..p.dh {
        let sy0 = dy * ky;
        let out = &mut dst[dy * p.dw * cn..][..p.dw * cn];
        if sy0 >= sh {
            out.fill(0);
            continue;
        }
        let full_row = sy0 + ky <= sh;
        for dx in 0..p.dw {
            let sx0 = dx * kx;
            for c in 0..cn {
                let o = &mut out[dx * cn + c];
                if full_row && dx < full_cols {
                    let mut sum = 0i32;
                    for sy in sy0..sy0 + ky {
                        let row = &src[sy * sw * cn..];
                        for sx in sx0..sx0 + kx {
                            sum += row[sx * cn + c] as i32;
                        }
                    }
                    *o = if two_by_two {
                        ((sum + 2) >> 2) as u8
                    } else {
                        round_sat_u8(sum as f32 * scale)
                    };
                } else {
                    let (mut sum, mut count) = (0i32, 0i32);
                    for sy in sy0..(sy0 + ky).min(sh) {
                        for sx in sx0..(sx0 + kx).min(sw) {
                            sum += src[(sy * sw + sx) * cn + c] as i32;
                            count += 1;
                        }
                    }
                    *o = if count == 0 {
                        0
                    } else {
                        round_sat_u8(sum as f32 / count as f32)
                    };
                }
            }
        }
    }
}

/// Calls `emit(source index, weight)` for the source cells of destination cell `d`, in OpenCV's
/// order (`computeResizeAreaTab`).
fn area_taps(d: usize, ssize: usize, scale: f64, mut emit: impl FnMut(usize, f32)) {
    let fsx1 = d as f64 * scale;
    let fsx2 = fsx1 + scale;
    let cell = scale.min(ssize as f64 - fsx1);
    let sx2 = floor_f64(fsx2).min(ssize as i64 - 1);
    let sx1 = ceil_f64(fsx1).min(sx2);
    if sx1 as f64 - fsx1 > 1e-3 {
        emit((sx1 - 1) as usize, ((sx1 as f64 - fsx1) / cell) as f32);
    }
    for sx in sx1..sx2 {
        emit(sx as usize, (1.0 / cell) as f32);
    }
    if fsx2 - sx2 as f64 > 1e-3 {
        emit(
            sx2 as usize,
            ((fsx2 - sx2 as f64).min(1.0).min(cell) / cell) as f32,
        );
    }
}

fn area(src: &[u8], dst: &mut [u8], p: &Plan) {
    let (cn, sw) = (p.cn, p.sw);
    for dy in 0..p.dh {
        for dx in 0..p.dw {
            let mut sum = [0f32; 4];
            area_taps(dy, p.sh, p.scale_y, |sy, beta| {
                let row = &src[sy * sw * cn..][..sw * cn];
                let mut buf = [0f32; 4];
                area_taps(dx, sw, p.scale_x, |sx, alpha| {
                    for c in 0..cn {
                        buf[c] += row[sx * cn + c] as f32 * alpha;
                    }
                });
                for c in 0..cn {
                    sum[c] += beta * buf[c];
                }
            });
            for c in 0..cn {
                dst[(dy * p.dw + dx) * cn + c] = round_sat_u8(sum[c]);
            }
        }
    }
}

/// Marks the source rows and columns that `INTER_LINEAR` to `dst_w x dst_h` reads.
///
/// Lets a pipeline compute expensive per-pixel stages only where the resize will look; for
/// a 2x-down or `Area` resize (which read every pixel) all are marked. `cols` has `src_w` entries,
/// `rows` `src_h`; both are overwritten.
pub fn linear_footprint(
    src_w: usize,
    src_h: usize,
    dst_w: usize,
    dst_h: usize,
    cols: &mut [bool],
    rows: &mut [bool],
) -> Result<(), CoreError> {
    check_len("footprint columns", cols.len(), src_w)?;
    check_len("footprint rows", rows.len(), src_h)?;
    check_dims(src_w, src_h)?;
    check_dims(dst_w, dst_h)?;
    let plan = Plan::new(src_w, src_h, dst_w, dst_h, 1);
    if plan.area_fast && plan.iscale_x == 2 && plan.iscale_y == 2 {
        cols.fill(true);
        rows.fill(true);
        return Ok(());
    }
    cols.fill(false);
    rows.fill(false);
    for dx in 0..dst_w {
        let t = linear_tap(dx, src_w, plan.scale_x, plan.inv_scale_x, false, true);
        cols[t.s0] = true;
        cols[t.s1] = true;
    }
    for dy in 0..dst_h {
        let t = linear_tap(dy, src_h, plan.scale_y, plan.inv_scale_y, false, false);
        rows[t.s0] = true;
        rows[t.s1] = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity_for_both_methods() {
        let src: [u8; 5 * 3 * 3] = core::array::from_fn(|i| (i * 37 % 251) as u8);
        for m in [Interpolation::Linear, Interpolation::Area] {
            let mut dst = [0u8; 45];
            resize(&src, 5, 3, &mut dst, 5, 3, 3, m).unwrap();
            assert_eq!(dst, src);
        }
    }

    #[test]
    fn wrong_sizes_and_channels_are_refused() {
        let mut dst = [0u8; 4];
        assert!(resize(&[0; 12], 2, 2, &mut dst, 2, 2, 3, Interpolation::Linear).is_err());
        assert!(resize(&[0; 4], 2, 2, &mut dst, 2, 2, 5, Interpolation::Linear).is_err());
        assert!(resize(&[0; 0], 0, 2, &mut dst, 2, 2, 1, Interpolation::Linear).is_err());
    }
}
