//! The preprocessing as one call, in the two geometries a contract can name.
//!
//! - Whole frame (contract version 1, [`preprocess_rgb8`]): RGB8 -> L*a*b* -> CLAHE(L) -> RGB8 ->
//!   resize, bit-exact with the OpenCV sequence `cvtColor(RGB2Lab)`, `createCLAHE(clip, grid).apply(L)`,
//!   `merge`, `cvtColor(Lab2RGB)`, `resize(.., interpolation)`.
//! - Field of view (version 2, [`preprocess_fov_rgb8`]): the square around the fundus disc
//!   ([`crate::fov`]), resized to the input size, then Lab -> CLAHE(L) -> RGB8 at that size. CLAHE
//!   after the resize makes its tiles the same part of the disc whatever the camera's resolution,
//!   and lets the trainer augment the photo before the CLAHE, where cameras differ
//!   ([`fov_square_resized`] is that stage). The resize and CLAHE are OpenCV-exact; the crop is an
//!   index copy.
//!
//! A bilinear resize reads only about four source pixels per output pixel, so the full-resolution
//! work is just the L* plane that the CLAHE histograms need; the colour conversions and the CLAHE
//! mapping run only on the rows and columns the resize reads ([`crate::resize::linear_footprint`]).
//! The bytes are the same as converting everything (tests compare both with OpenCV).

use crate::clahe::{clahe_luts, ClaheParams};
use crate::error::{check_dims, check_len, CoreError};
use crate::fov::{crop_square, locate, FovParams};
use crate::lab::{lab_to_rgb_pixel, rgb_to_l, rgb_to_lab_pixel};
use crate::resize::{linear_footprint, resize, Interpolation};

/// What the model expects from a photo: CLAHE parameters and the output size and method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreprocessSpec {
    /// CLAHE on the L* channel.
    pub clahe: ClaheParams,
    /// Model input width in pixels.
    pub out_width: usize,
    /// Model input height in pixels.
    pub out_height: usize,
    /// Resize method (after CLAHE in the whole-frame geometry, before it in the field of view).
    pub interpolation: Interpolation,
    /// `None`: whole frame (contract version 1); `Some`: the field-of-view geometry (version 2).
    pub fov: Option<FovParams>,
}

impl Default for PreprocessSpec {
    /// The seed: CLAHE 2.0 / 8x8, bilinear resize to 96x96.
    fn default() -> Self {
        Self {
            clahe: ClaheParams::default(),
            out_width: 96,
            out_height: 96,
            interpolation: Interpolation::Linear,
            fov: None,
        }
    }
}

/// Caller-owned scratch for [`preprocess_rgb8`]; sizes from [`PreprocessSpec::buffer_lens`].
#[derive(Debug)]
pub struct Buffers<'a> {
    /// L* plane, `width * height` bytes.
    pub l_plane: &'a mut [u8],
    /// Equalised RGB at full size, `width * height * 3` bytes (written where the resize reads).
    pub rgb: &'a mut [u8],
    /// CLAHE LUTs, `tiles_x * tiles_y * 256` bytes.
    pub lut: &'a mut [u8],
    /// Resize footprint: `width` column flags.
    pub cols: &'a mut [bool],
    /// Resize footprint: `height` row flags.
    pub rows: &'a mut [bool],
}

/// Lengths of each [`Buffers`] field for a `width x height` photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLens {
    pub l_plane: usize,
    pub rgb: usize,
    pub lut: usize,
    pub cols: usize,
    pub rows: usize,
}

impl PreprocessSpec {
    /// Scratch sizes for a `width x height` photo.
    pub fn buffer_lens(&self, width: usize, height: usize) -> BufferLens {
        BufferLens {
            l_plane: width * height,
            rgb: width * height * 3,
            lut: self.clahe.lut_len(),
            cols: width,
            rows: height,
        }
    }

    /// Bytes of the resized RGB8 image: `out_width * out_height * 3`.
    pub fn resized_len(&self) -> usize {
        self.out_width * self.out_height * 3
    }
}

fn check_buffers(b: &Buffers<'_>, lens: &BufferLens) -> Result<(), CoreError> {
    check_len("L* plane", b.l_plane.len(), lens.l_plane)?;
    check_len("RGB scratch", b.rgb.len(), lens.rgb)?;
    check_len("CLAHE LUT", b.lut.len(), lens.lut)?;
    check_len("footprint columns", b.cols.len(), lens.cols)?;
    check_len("footprint rows", b.rows.len(), lens.rows)
}

/// Equalises an RGB8 photo at full size: Lab, CLAHE on L*, back to RGB (`--stage clahe`).
///
/// `src` and `dst` are `width * height * 3` bytes, interleaved RGB.
pub fn clahe_rgb8(
    src: &[u8],
    width: usize,
    height: usize,
    clahe: &ClaheParams,
    bufs: &mut Buffers<'_>,
    dst: &mut [u8],
) -> Result<(), CoreError> {
    let n = check_dims(width, height)?;
    check_len("RGB source", src.len(), n * 3)?;
    check_len("RGB destination", dst.len(), n * 3)?;
    check_len("footprint columns", bufs.cols.len(), width)?;
    check_len("footprint rows", bufs.rows.len(), height)?;
    bufs.cols.fill(true);
    bufs.rows.fill(true);
    equalise(src, width, height, clahe, bufs, dst)
}

/// Runs Lab -> CLAHE(L) -> RGB on the pixels flagged in `bufs.cols` x `bufs.rows`, into `dst`
/// (`bufs.rgb` is not used).
fn equalise(
    src: &[u8],
    width: usize,
    height: usize,
    clahe: &ClaheParams,
    bufs: &mut Buffers<'_>,
    dst: &mut [u8],
) -> Result<(), CoreError> {
    let lens = PreprocessSpec {
        clahe: *clahe,
        ..Default::default()
    }
    .buffer_lens(width, height);
    check_len("L* plane", bufs.l_plane.len(), lens.l_plane)?;
    check_len("CLAHE LUT", bufs.lut.len(), lens.lut)?;
    check_len("footprint columns", bufs.cols.len(), lens.cols)?;
    check_len("footprint rows", bufs.rows.len(), lens.rows)?;
    check_len("RGB destination", dst.len(), lens.rgb)?;
    rgb_to_l(src, bufs.l_plane)?;
    let geo = clahe_luts(bufs.l_plane, width, height, clahe, bufs.lut)?;
    let lut: &[u8] = bufs.lut;
    for y in (0..height).filter(|&y| bufs.rows[y]) {
        let rb = geo.row(y);
        let row_src = &src[y * width * 3..][..width * 3];
        let row_l = &bufs.l_plane[y * width..][..width];
        let row_dst = &mut dst[y * width * 3..][..width * 3];
        for x in (0..width).filter(|&x| bufs.cols[x]) {
            let px = &row_src[x * 3..x * 3 + 3];
            let [_, a, b] = rgb_to_lab_pixel(px[0], px[1], px[2]);
            let l_eq = geo.map(lut, &rb, &geo.col(x), row_l[x]);
            row_dst[x * 3..x * 3 + 3].copy_from_slice(&lab_to_rgb_pixel(l_eq, a, b));
        }
    }
    Ok(())
}

/// The seed pipeline up to the model's RGB8 input: equalise, then resize into `resized`
/// ([`PreprocessSpec::resized_len`] bytes, interleaved RGB). `src` is `width * height * 3` bytes.
pub fn preprocess_rgb8(
    src: &[u8],
    width: usize,
    height: usize,
    spec: &PreprocessSpec,
    bufs: &mut Buffers<'_>,
    resized: &mut [u8],
) -> Result<(), CoreError> {
    let n = check_dims(width, height)?;
    check_dims(spec.out_width, spec.out_height)?;
    check_len("RGB source", src.len(), n * 3)?;
    check_len("resized", resized.len(), spec.resized_len())?;
    check_buffers(bufs, &spec.buffer_lens(width, height))?;
    if spec.fov.is_some() {
        return Err(CoreError::Param {
            name: "geometry",
            reason: "a field-of-view spec runs through preprocess_fov_rgb8",
        });
    }
    match spec.interpolation {
        Interpolation::Linear => linear_footprint(
            width,
            height,
            spec.out_width,
            spec.out_height,
            bufs.cols,
            bufs.rows,
        )?,
        Interpolation::Area => {
            bufs.cols.fill(true);
            bufs.rows.fill(true);
        }
    }
    // `equalise` writes into the scratch RGB plane; move it out to satisfy the borrow checker.
    let rgb = core::mem::take(&mut bufs.rgb);
    let result = equalise(src, width, height, &spec.clahe, bufs, rgb);
    bufs.rgb = rgb;
    result?;
    resize(
        bufs.rgb,
        width,
        height,
        resized,
        spec.out_width,
        spec.out_height,
        3,
        spec.interpolation,
    )
}

/// Caller-owned scratch for the field-of-view geometry; sizes from [`fov_buffer_lens`].
#[derive(Debug)]
pub struct FovBuffers<'a> {
    /// Disc counters: `width` columns and `height` rows of the photo.
    pub col_counts: &'a mut [u32],
    pub row_counts: &'a mut [u32],
    /// The disc square, up to `max(width, height)^2 * 3` bytes (its side is at most the longer side).
    pub square: &'a mut [u8],
    /// The square resized to the input size, before CLAHE: `out_width * out_height * 3` bytes.
    pub resized: &'a mut [u8],
    /// CLAHE scratch at the input size (`l_plane`: `out_width * out_height`, `lut`, `cols`:
    /// `out_width`, `rows`: `out_height`; `rgb` is not used and may be empty).
    pub clahe: Buffers<'a>,
}

/// Lengths of [`FovBuffers`]' fields: `(col_counts, row_counts, square, resized)`, and the CLAHE
/// scratch at the input size.
pub fn fov_buffer_lens(
    spec: &PreprocessSpec,
    width: usize,
    height: usize,
) -> ([usize; 4], BufferLens) {
    let long = width.max(height);
    let mut clahe = spec.buffer_lens(spec.out_width, spec.out_height);
    clahe.rgb = 0;
    (
        [
            width,
            height,
            long.saturating_mul(long).saturating_mul(3),
            spec.resized_len(),
        ],
        clahe,
    )
}

/// The field-of-view stage before CLAHE: finds the disc, cuts its square (black where the disc
/// is cut off) and resizes it to `out_width x out_height` into `bufs.resized`. Returns the square.
pub fn fov_square_resized(
    src: &[u8],
    width: usize,
    height: usize,
    spec: &PreprocessSpec,
    fov: &FovParams,
    bufs: &mut FovBuffers<'_>,
) -> Result<crate::fov::FovSquare, CoreError> {
    check_dims(spec.out_width, spec.out_height)?;
    check_len("resized", bufs.resized.len(), spec.resized_len())?;
    let sq = locate(src, width, height, fov, bufs.col_counts, bufs.row_counts)?;
    let len = sq.side * sq.side * 3;
    if bufs.square.len() < len {
        return Err(CoreError::BufferSize {
            what: "fov square",
            actual: bufs.square.len(),
            expected: len,
        });
    }
    let square = &mut bufs.square[..len];
    crop_square(src, width, height, &sq, square)?;
    resize(
        square,
        sq.side,
        sq.side,
        bufs.resized,
        spec.out_width,
        spec.out_height,
        3,
        spec.interpolation,
    )?;
    Ok(sq)
}

/// The field-of-view pipeline (contract version 2): [`fov_square_resized`], then Lab -> CLAHE(L)
/// -> RGB at the input size into `out` ([`PreprocessSpec::resized_len`] bytes). `spec.fov` must
/// be set.
pub fn preprocess_fov_rgb8(
    src: &[u8],
    width: usize,
    height: usize,
    spec: &PreprocessSpec,
    bufs: &mut FovBuffers<'_>,
    out: &mut [u8],
) -> Result<crate::fov::FovSquare, CoreError> {
    let Some(fov) = spec.fov else {
        return Err(CoreError::Param {
            name: "geometry",
            reason: "a whole-frame spec runs through preprocess_rgb8",
        });
    };
    let sq = fov_square_resized(src, width, height, spec, &fov, bufs)?;
    check_len("resized", out.len(), spec.resized_len())?;
    clahe_rgb8(
        bufs.resized,
        spec.out_width,
        spec.out_height,
        &spec.clahe,
        &mut bufs.clahe,
        out,
    )?;
    Ok(sq)
}

/// `img.astype(float32) / 255` into planar CHW: `dst` is `3 * width * height` floats in [0, 1].
pub fn to_chw_f32(
    rgb: &[u8],
    width: usize,
    height: usize,
    dst: &mut [f32],
) -> Result<(), CoreError> {
    let n = check_dims(width, height)?;
    check_len("RGB source", rgb.len(), n * 3)?;
    check_len("CHW destination", dst.len(), n * 3)?;
    let (r, rest) = dst.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        r[i] = px[0] as f32 / 255.0;
        g[i] = px[1] as f32 / 255.0;
        b[i] = px[2] as f32 / 255.0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Workspace;
    use std::vec;
    use std::vec::Vec;

    /// A textured disc of radius `r` at (`cx`, `cy`) on black, `w x h` (texture from the disc's
    /// own coordinates, so the same disc framed twice has the same pixels).
    fn disc(w: usize, h: usize, cx: i64, cy: i64, r: i64) -> Vec<u8> {
        let mut img = vec![0u8; w * h * 3];
        for y in 0..h as i64 {
            for x in 0..w as i64 {
                let (dx, dy) = (x - cx, y - cy);
                if dx * dx + dy * dy < r * r {
                    let t = ((dx * 7 + dy * 13).rem_euclid(40)) as u8;
                    img[(y as usize * w + x as usize) * 3..][..3].copy_from_slice(&[
                        150 + t,
                        60 + t / 2,
                        30,
                    ]);
                }
            }
        }
        img
    }

    fn fov_spec() -> PreprocessSpec {
        PreprocessSpec {
            out_width: 32,
            out_height: 32,
            interpolation: Interpolation::Area,
            fov: Some(FovParams::default()),
            ..Default::default()
        }
    }

    #[test]
    fn the_fov_pipeline_is_crop_then_opencv_resize_then_opencv_clahe() {
        let (w, h) = (120, 80);
        let img = disc(w, h, 60, 40, 50);
        let spec = fov_spec();
        let mut ws = Workspace::default();
        let got = ws.preprocess(&img, w, h, &spec).unwrap();
        let (pre, sq) = ws.fov_stage(&img, w, h, &spec).unwrap();
        let mut square = vec![0u8; sq.side * sq.side * 3];
        crop_square(&img, w, h, &sq, &mut square).unwrap();
        let mut resized = vec![0u8; 32 * 32 * 3];
        resize(
            &square,
            sq.side,
            sq.side,
            &mut resized,
            32,
            32,
            3,
            Interpolation::Area,
        )
        .unwrap();
        assert_eq!(pre, resized);
        assert_eq!(got, ws.equalise(&resized, 32, 32, &spec.clahe).unwrap());
    }

    #[test]
    fn the_same_disc_framed_by_two_cameras_reaches_the_network_the_same() {
        // Full frame with wide black sides, and a camera that crops to the disc.
        let wide = disc(300, 120, 150, 60, 50);
        let tight = disc(100, 100, 50, 50, 50);
        let spec = fov_spec();
        let mut ws = Workspace::default();
        let a = ws.preprocess(&wide, 300, 120, &spec).unwrap();
        let b = ws.preprocess(&tight, 100, 100, &spec).unwrap();
        let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert_eq!(differ, 0, "{differ} of {} bytes differ", a.len());
    }

    #[test]
    fn a_disc_the_sensor_cut_on_one_side_keeps_its_place_in_the_square() {
        let spec = fov_spec();
        let mut ws = Workspace::default();
        let (_, whole) = ws
            .fov_stage(&disc(300, 120, 150, 60, 50), 300, 120, &spec)
            .unwrap();
        // The same disc with its bottom 20 rows cut off by the frame.
        let (_, cut) = ws
            .fov_stage(&disc(300, 90, 150, 60, 50), 300, 90, &spec)
            .unwrap();
        assert_eq!((cut.x0, cut.y0, cut.side), (whole.x0, whole.y0, whole.side));
    }

    #[test]
    fn each_geometry_refuses_the_other_entry_point_and_a_black_frame() {
        let img = disc(40, 40, 20, 20, 15);
        let mut ws = Workspace::default();
        assert!(ws
            .fov_stage(&img, 40, 40, &PreprocessSpec::default())
            .is_err());
        let black = vec![0u8; 40 * 40 * 3];
        assert_eq!(
            ws.preprocess(&black, 40, 40, &fov_spec()),
            Err(CoreError::NoFieldOfView)
        );
    }
}
