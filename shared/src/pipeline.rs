//! The seed preprocessing as one call: RGB8 -> L*a*b* -> CLAHE(L) -> RGB8 -> resize -> f32 NCHW.
//!
//! Bit-exact with the OpenCV sequence
//! `cvtColor(RGB2Lab)`, `createCLAHE(clip, grid).apply(L)`, `merge`, `cvtColor(Lab2RGB)`,
//! `resize(.., interpolation)`, `/ 255`.
//!
//! A bilinear resize reads only about four source pixels per output pixel, so the full-resolution
//! work is just the L* plane that the CLAHE histograms need; the colour conversions and the CLAHE
//! mapping run only on the rows and columns the resize reads ([`crate::resize::linear_footprint`]).
//! The bytes are the same as converting everything (tests compare both with OpenCV).

use crate::clahe::{clahe_luts, ClaheParams};
use crate::error::{check_dims, check_len, CoreError};
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
    /// Resize method after CLAHE.
    pub interpolation: Interpolation,
}

impl Default for PreprocessSpec {
    /// The seed: CLAHE 2.0 / 8x8, bilinear resize to 96x96.
    fn default() -> Self {
        Self {
            clahe: ClaheParams::default(),
            out_width: 96,
            out_height: 96,
            interpolation: Interpolation::Linear,
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
