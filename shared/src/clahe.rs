//! Contrast Limited Adaptive Histogram Equalisation on one 8-bit channel, bit-exact with
//! `cv2.createCLAHE(clipLimit, tileGridSize).apply` (`modules/imgproc/src/clahe.cpp`).
//!
//! OpenCV's details that matter for exactness, all reproduced here:
//! - when either side is not a multiple of the grid, the image is padded on the right and bottom
//!   by `tiles - side % tiles` (a whole extra tile-width when that side *is* a multiple) with
//!   `BORDER_REFLECT_101`, for the histograms only; padding is read through index mapping, never copied;
//! - the clip limit is `max(1, trunc(clipLimit * tileArea / 256))`; the clipped excess is spread as
//!   `excess / 256` on every bin, and the remainder one bin each `max(256 / remainder, 1)` bins
//!   from bin 0;
//! - the LUT is `saturate_cast<uchar>(cumsum * (255.f / tileArea))` (round half to even);
//! - each pixel blends the four nearest tile LUTs with `f32` weights in OpenCV's order of
//!   operations, then rounds half to even.

use crate::error::{check_dims, check_len, CoreError};

/// Histogram bins of an 8-bit channel.
const BINS: usize = 256;

/// CLAHE parameters, as `cv2.createCLAHE(clipLimit, (tiles_x, tiles_y))`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClaheParams {
    /// Contrast limit relative to a uniform histogram; `<= 0` disables clipping (plain AHE).
    pub clip_limit: f64,
    /// Number of tiles across (OpenCV's `tileGridSize.width`), >= 1.
    pub tiles_x: usize,
    /// Number of tiles down (OpenCV's `tileGridSize.height`), >= 1.
    pub tiles_y: usize,
}

impl Default for ClaheParams {
    /// The seed's parameters: clip limit 2.0, 8x8 tiles.
    fn default() -> Self {
        Self {
            clip_limit: 2.0,
            tiles_x: 8,
            tiles_y: 8,
        }
    }
}

/// Largest grid side accepted (OpenCV accepts more, but the LUT grows with the square of it).
pub const MAX_TILES: usize = 256;

impl ClaheParams {
    /// Bytes the caller must provide for the tile LUTs: `tiles_x * tiles_y * 256`.
    pub fn lut_len(&self) -> usize {
        self.tiles_x * self.tiles_y * BINS
    }

    fn validate(&self) -> Result<(), CoreError> {
        if !(1..=MAX_TILES).contains(&self.tiles_x) || !(1..=MAX_TILES).contains(&self.tiles_y) {
            return Err(CoreError::Param {
                name: "tile grid",
                reason: "each side must be 1..=256",
            });
        }
        if !self.clip_limit.is_finite() {
            return Err(CoreError::Param {
                name: "clip limit",
                reason: "must be a finite number",
            });
        }
        Ok(())
    }
}

/// Tile layout and per-tile LUTs of one image, ready to map pixels.
#[derive(Debug, Clone, Copy)]
pub struct TileGeometry {
    tiles_x: usize,
    tiles_y: usize,
    inv_tw: f32,
    inv_th: f32,
}

/// Row blend of one output row: the two tile rows and their weights.
#[derive(Debug, Clone, Copy)]
pub struct RowBlend {
    plane1: usize,
    plane2: usize,
    ya: f32,
    ya1: f32,
}

/// Column blend of one output column: the two tile columns and their weights.
#[derive(Debug, Clone, Copy)]
pub struct ColBlend {
    ind1: usize,
    ind2: usize,
    xa: f32,
    xa1: f32,
}

/// `cvFloor` of a float.
#[inline(always)]
fn floor_i(x: f32) -> i32 {
    let i = x as i32;
    i - ((x < i as f32) as i32)
}

/// `saturate_cast<uchar>(float)`: round half to even, then clamp.
#[inline(always)]
pub(crate) fn round_sat_u8(x: f32) -> u8 {
    // `as` saturates (NaN -> 0), so the clamp is implied.
    round_ties_even_f32(x) as u8
}

/// Round half to even without libm: adding and subtracting 2^23 rounds in the current
/// (nearest-even) mode for |x| < 2^23; larger values are already integers.
#[inline(always)]
pub(crate) fn round_ties_even_f32(x: f32) -> f32 {
    const MAGIC: f32 = 8_388_608.0; // 2^23
    if x.abs() < MAGIC {
        let m = if x < 0.0 { -MAGIC } else { MAGIC };
        (x + m) - m
    } else {
        x
    }
}

impl TileGeometry {
    /// Blend of output row `y` (OpenCV: `tyf = y * (1.f / tileHeight) - 0.5f`).
    #[inline]
    pub fn row(&self, y: usize) -> RowBlend {
        let tyf = y as f32 * self.inv_th - 0.5;
        let ty1 = floor_i(tyf);
        let ya = tyf - ty1 as f32;
        let ty2 = (ty1 + 1).min(self.tiles_y as i32 - 1);
        let ty1 = ty1.max(0);
        RowBlend {
            plane1: ty1 as usize * self.tiles_x * BINS,
            plane2: ty2 as usize * self.tiles_x * BINS,
            ya,
            ya1: 1.0 - ya,
        }
    }

    /// Blend of output column `x`.
    #[inline]
    pub fn col(&self, x: usize) -> ColBlend {
        let txf = x as f32 * self.inv_tw - 0.5;
        let tx1 = floor_i(txf);
        let xa = txf - tx1 as f32;
        let tx2 = (tx1 + 1).min(self.tiles_x as i32 - 1);
        let tx1 = tx1.max(0);
        ColBlend {
            ind1: tx1 as usize * BINS,
            ind2: tx2 as usize * BINS,
            xa,
            xa1: 1.0 - xa,
        }
    }

    /// The equalised value of one pixel of value `v` at (`col`, `row`).
    #[inline(always)]
    pub fn map(&self, lut: &[u8], row: &RowBlend, col: &ColBlend, v: u8) -> u8 {
        let v = v as usize;
        let p1 = &lut[row.plane1..];
        let p2 = &lut[row.plane2..];
        let a = p1[col.ind1 + v] as f32 * col.xa1 + p1[col.ind2 + v] as f32 * col.xa;
        let b = p2[col.ind1 + v] as f32 * col.xa1 + p2[col.ind2 + v] as f32 * col.xa;
        round_sat_u8(a * row.ya1 + b * row.ya)
    }
}

/// `borderInterpolate(p, len, BORDER_REFLECT_101)` for `p >= len` (right / bottom padding).
#[inline]
fn reflect101_high(mut p: usize, len: usize) -> usize {
    if len == 1 {
        return 0;
    }
    // OpenCV's loop, in signed arithmetic so repeated reflections of tiny images work.
    let (mut q, n) = (p as isize, len as isize);
    loop {
        if q < 0 {
            q = -q;
        } else {
            q = n - 1 - (q - n) - 1;
        }
        if (0..n).contains(&q) {
            p = q as usize;
            return p;
        }
    }
}

/// Builds the tile LUTs of an 8-bit plane (OpenCV `CLAHE_CalcLut_Body`).
///
/// `src` is `width * height` bytes; `lut` is [`ClaheParams::lut_len`] bytes and is overwritten.
pub fn clahe_luts(
    src: &[u8],
    width: usize,
    height: usize,
    p: &ClaheParams,
    lut: &mut [u8],
) -> Result<TileGeometry, CoreError> {
    p.validate()?;
    let n = check_dims(width, height)?;
    check_len("CLAHE source", src.len(), n)?;
    check_len("CLAHE LUT", lut.len(), p.lut_len())?;
    let (tiles_x, tiles_y) = (p.tiles_x, p.tiles_y);
    let (ext_w, ext_h) = if width % tiles_x == 0 && height % tiles_y == 0 {
        (width, height)
    } else {
        (
            width + tiles_x - width % tiles_x,
            height + tiles_y - height % tiles_y,
        )
    };
    let (tw, th) = (ext_w / tiles_x, ext_h / tiles_y);
    let tile_area = tw * th;
    let lut_scale = 255.0f32 / tile_area as f32;
    let clip = if p.clip_limit > 0.0 {
        ((p.clip_limit * tile_area as f64 / BINS as f64) as i64).clamp(1, i32::MAX as i64) as u32
    } else {
        0
    };

    for ty in 0..tiles_y {
        for tx in 0..tiles_x {
            // Four interleaved histograms keep runs of equal values (black borders) from
            // serialising on one counter.
            let mut hist4 = [[0u32; BINS]; 4];
            let (x0, x1) = (tx * tw, (tx + 1) * tw);
            let direct_end = x1.min(width);
            for ey in ty * th..(ty + 1) * th {
                let sy = if ey < height {
                    ey
                } else {
                    reflect101_high(ey, height)
                };
                let row = &src[sy * width..(sy + 1) * width];
                if x0 < direct_end {
                    let seg = &row[x0..direct_end];
                    let mut chunks = seg.chunks_exact(4);
                    for c in &mut chunks {
                        hist4[0][c[0] as usize] += 1;
                        hist4[1][c[1] as usize] += 1;
                        hist4[2][c[2] as usize] += 1;
                        hist4[3][c[3] as usize] += 1;
                    }
                    for &v in chunks.remainder() {
                        hist4[0][v as usize] += 1;
                    }
                }
                for ex in x0.max(width)..x1 {
                    hist4[1][row[reflect101_high(ex, width)] as usize] += 1;
                }
            }
            let mut hist = [0u32; BINS];
            for (i, h) in hist.iter_mut().enumerate() {
                *h = hist4[0][i] + hist4[1][i] + hist4[2][i] + hist4[3][i];
            }

            if clip > 0 {
                let mut clipped = 0u32;
                for h in hist.iter_mut() {
                    if *h > clip {
                        clipped += *h - clip;
                        *h = clip;
                    }
                }
                let batch = clipped / BINS as u32;
                let mut residual = clipped - batch * BINS as u32;
                for h in hist.iter_mut() {
                    *h += batch;
                }
                if residual != 0 {
                    let step = (BINS / residual as usize).max(1);
                    let mut i = 0;
                    while i < BINS && residual > 0 {
                        hist[i] += 1;
                        i += step;
                        residual -= 1;
                    }
                }
            }

            let tile_lut = &mut lut[(ty * tiles_x + tx) * BINS..][..BINS];
            let mut sum = 0u32;
            for (l, &h) in tile_lut.iter_mut().zip(hist.iter()) {
                sum += h;
                *l = round_sat_u8(sum as f32 * lut_scale);
            }
        }
    }
    Ok(TileGeometry {
        tiles_x,
        tiles_y,
        inv_tw: 1.0f32 / tw as f32,
        inv_th: 1.0f32 / th as f32,
    })
}

/// `cv2.createCLAHE(p.clip_limit, (p.tiles_x, p.tiles_y)).apply(src)` on an 8-bit plane.
///
/// `src` and `dst` are `width * height` bytes; `lut` is scratch of [`ClaheParams::lut_len`] bytes.
pub fn clahe(
    src: &[u8],
    dst: &mut [u8],
    width: usize,
    height: usize,
    p: &ClaheParams,
    lut: &mut [u8],
) -> Result<(), CoreError> {
    let geo = clahe_luts(src, width, height, p, lut)?;
    check_len("CLAHE destination", dst.len(), src.len())?;
    for y in 0..height {
        let rb = geo.row(y);
        let (s, d) = (
            &src[y * width..(y + 1) * width],
            &mut dst[y * width..(y + 1) * width],
        );
        for (x, (&v, o)) in s.iter().zip(d.iter_mut()).enumerate() {
            *o = geo.map(lut, &rb, &geo.col(x), v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect101_matches_opencv_border_interpolate() {
        // borderInterpolate(p, 5, BORDER_REFLECT_101) for p = 5.. : 3 2 1 0 1 2 3 ...
        let got: [usize; 9] = core::array::from_fn(|i| reflect101_high(5 + i, 5));
        assert_eq!(got, [3, 2, 1, 0, 1, 2, 3, 4, 3]);
        assert_eq!(reflect101_high(7, 1), 0);
        assert_eq!(reflect101_high(2, 2), 0);
        assert_eq!(reflect101_high(3, 2), 1);
    }

    #[test]
    fn round_half_to_even_like_cv_round() {
        assert_eq!(round_sat_u8(0.5), 0);
        assert_eq!(round_sat_u8(1.5), 2);
        assert_eq!(round_sat_u8(2.5), 2);
        assert_eq!(round_sat_u8(254.5), 254);
        assert_eq!(round_sat_u8(300.0), 255);
        assert_eq!(round_sat_u8(-3.0), 0);
    }

    #[test]
    fn constant_plane_stays_constant_shape_and_refuses_bad_grid() {
        let src = [77u8; 20 * 13];
        let mut dst = [0u8; 20 * 13];
        let p = ClaheParams::default();
        let mut lut = [0u8; 8 * 8 * 256];
        clahe(&src, &mut dst, 20, 13, &p, &mut lut).unwrap();
        assert!(dst.iter().all(|&v| v == dst[0]));
        let bad = ClaheParams { tiles_x: 0, ..p };
        assert!(clahe(&src, &mut dst, 20, 13, &bad, &mut lut).is_err());
        assert!(clahe(&src, &mut dst, 20, 14, &p, &mut lut).is_err());
    }
}
