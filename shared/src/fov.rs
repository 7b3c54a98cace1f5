//! Field of view: find the fundus disc in a photo and cut the square around it, so that every
//! camera's photo reaches the network with the same geometry (contract version 2).
//!
//! Cameras frame the disc differently: full frame with black sides (IDRiD, SRahim), the disc cut
//! off at the top and bottom, or already cropped (and squeezed) to the disc (APTOS). The disc is
//! the set of columns and rows in which enough pixels are brighter than the black surround; its
//! bounding box gives a centre and a side (the larger extent), and the square of that side around
//! the centre is copied out, padded with black where it leaves the photo (a disc cut off by the
//! sensor keeps its size and place in the square).
//!
//! No OpenCV twin: the crop is an index copy. The resize and CLAHE that follow are OpenCV-exact.

use crate::error::{check_dims, check_len, CoreError};

/// How the disc is told from the surround.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FovParams {
    /// A pixel is inside the disc when its brightest channel is above this (0..=255).
    pub threshold: u8,
    /// A column (row) belongs to the disc when more than this fraction of its pixels are inside;
    /// ignores thin bright marks (text, hot pixels) in the surround. In [0, 1).
    pub min_fraction: f32,
}

impl Default for FovParams {
    /// Threshold and fraction measured on the IDRiD, APTOS and SRahim photos (docs/results.md).
    fn default() -> Self {
        Self {
            threshold: 20,
            min_fraction: 0.05,
        }
    }
}

impl FovParams {
    fn validate(&self) -> Result<(), CoreError> {
        if !(self.min_fraction >= 0.0 && self.min_fraction < 1.0) {
            return Err(CoreError::Param {
                name: "fov min_fraction",
                reason: "must be in [0, 1)",
            });
        }
        Ok(())
    }
}

/// The square around the disc, in source pixel coordinates; it may extend past the photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FovSquare {
    /// Left column (negative when the square starts left of the photo).
    pub x0: i64,
    /// Top row (negative when the square starts above the photo).
    pub y0: i64,
    /// Side in pixels, >= 1.
    pub side: usize,
    /// The disc's bounding box width and height before squaring.
    pub disc_width: usize,
    pub disc_height: usize,
}

/// First and last index of the longest run of counts above `min` (a caption or a date stamp
/// apart from the disc is a shorter run of its own).
fn extent(counts: &[u32], min: u32) -> Option<(usize, usize)> {
    let (mut best, mut start) = (None::<(usize, usize)>, None);
    for (i, &c) in counts.iter().chain(core::iter::once(&0)).enumerate() {
        match (c > min, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if best.is_none_or(|(a, b)| i - s > b - a + 1) {
                    best = Some((s, i - 1));
                }
                start = None;
            }
            _ => {}
        }
    }
    best
}

/// Where the square of `side` starts along one axis of `len` pixels, for a disc extent
/// `first..=last`: centred on the extent, or, when the sensor cut the disc on one side only,
/// flush with the uncut edge (the cut side's centre is not the disc's).
fn origin(first: usize, last: usize, len: usize, side: usize) -> i64 {
    let (cut_lo, cut_hi) = (first == 0, last + 1 == len);
    let ext = (last - first + 1) as i64;
    match (cut_lo, cut_hi) {
        (true, false) => last as i64 + 1 - side as i64,
        (false, true) => first as i64,
        _ => first as i64 + (ext - side as i64).div_euclid(2),
    }
}

/// Finds the disc in an RGB8 photo (`src` is `width * height * 3` bytes). `cols` and `rows` are
/// scratch of `width` and `height` counters. Fails with [`CoreError::NoFieldOfView`] when no
/// column and row have enough bright pixels (a black or blank frame).
pub fn locate(
    src: &[u8],
    width: usize,
    height: usize,
    p: &FovParams,
    cols: &mut [u32],
    rows: &mut [u32],
) -> Result<FovSquare, CoreError> {
    let n = check_dims(width, height)?;
    p.validate()?;
    check_len("RGB source", src.len(), n * 3)?;
    check_len("fov column counts", cols.len(), width)?;
    check_len("fov row counts", rows.len(), height)?;
    cols.fill(0);
    rows.fill(0);
    for (y, row) in src.chunks_exact(width * 3).enumerate() {
        let mut in_row = 0u32;
        for (x, px) in row.chunks_exact(3).enumerate() {
            let inside = px[0].max(px[1]).max(px[2]) > p.threshold;
            cols[x] += inside as u32;
            in_row += inside as u32;
        }
        rows[y] = in_row;
    }
    let col_min = (p.min_fraction * height as f32) as u32;
    let row_min = (p.min_fraction * width as f32) as u32;
    let (Some((x_first, x_last)), Some((y_first, y_last))) =
        (extent(cols, col_min), extent(rows, row_min))
    else {
        return Err(CoreError::NoFieldOfView);
    };
    let (bw, bh) = (x_last - x_first + 1, y_last - y_first + 1);
    let side = bw.max(bh);
    Ok(FovSquare {
        x0: origin(x_first, x_last, width, side),
        y0: origin(y_first, y_last, height, side),
        side,
        disc_width: bw,
        disc_height: bh,
    })
}

/// Copies `sq` out of `src` into `dst` (`sq.side * sq.side * 3` bytes), black where the square
/// leaves the photo.
pub fn crop_square(
    src: &[u8],
    width: usize,
    height: usize,
    sq: &FovSquare,
    dst: &mut [u8],
) -> Result<(), CoreError> {
    let n = check_dims(width, height)?;
    check_len("RGB source", src.len(), n * 3)?;
    let side = sq.side;
    check_len("fov square", dst.len(), check_dims(side, side)? * 3)?;
    dst.fill(0);
    // Columns of the square that fall inside the photo, and where they start in the source.
    let x_lo = (-sq.x0).clamp(0, side as i64) as usize;
    let x_hi = (width as i64 - sq.x0).clamp(0, side as i64) as usize;
    if x_lo >= x_hi {
        return Ok(());
    }
    let src_x = (sq.x0 + x_lo as i64) as usize;
    for (dy, out) in dst.chunks_exact_mut(side * 3).enumerate() {
        let y = sq.y0 + dy as i64;
        if y < 0 || y >= height as i64 {
            continue;
        }
        let row = &src[y as usize * width * 3..][..width * 3];
        out[x_lo * 3..x_hi * 3].copy_from_slice(&row[src_x * 3..(src_x + x_hi - x_lo) * 3]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// A bright disc of radius `r` centred at (`cx`, `cy`) on black, `w x h`.
    fn disc(w: usize, h: usize, cx: f32, cy: f32, r: f32) -> Vec<u8> {
        let mut img = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                if dx * dx + dy * dy <= r * r {
                    img[(y * w + x) * 3..][..3].copy_from_slice(&[180, 90, 40]);
                }
            }
        }
        img
    }

    fn find(img: &[u8], w: usize, h: usize) -> Result<FovSquare, CoreError> {
        let (mut c, mut r) = (vec![0; w], vec![0; h]);
        locate(img, w, h, &FovParams::default(), &mut c, &mut r)
    }

    #[test]
    fn a_full_frame_disc_is_found_and_squared() {
        let img = disc(200, 120, 100.0, 60.0, 50.0);
        let sq = find(&img, 200, 120).unwrap();
        assert!((98..=100).contains(&sq.side), "{sq:?}");
        assert!((sq.x0 - 50).abs() <= 1 && (sq.y0 - 10).abs() <= 1, "{sq:?}");
    }

    #[test]
    fn a_disc_cut_off_at_top_and_bottom_keeps_its_width_and_is_padded() {
        // IDRiD-like: the disc is wider than the frame is tall.
        let (w, h) = (200, 80);
        let img = disc(w, h, 100.0, 40.0, 60.0);
        let sq = find(&img, w, h).unwrap();
        assert!((116..=120).contains(&sq.side), "{sq:?}");
        assert_eq!(sq.disc_height, 80);
        assert!(sq.y0 < 0);
        let mut out = vec![1u8; sq.side * sq.side * 3];
        crop_square(&img, w, h, &sq, &mut out).unwrap();
        // The padded band above the photo is black, the disc centre is the disc's colour.
        assert_eq!(&out[..sq.side * 3], &vec![0u8; sq.side * 3][..]);
        let c = (sq.side / 2 * sq.side + sq.side / 2) * 3;
        assert_eq!(&out[c..c + 3], &[180, 90, 40]);
    }

    #[test]
    fn a_photo_already_cropped_to_the_disc_is_its_own_square() {
        let img = vec![120u8; 64 * 64 * 3];
        let sq = find(&img, 64, 64).unwrap();
        assert_eq!((sq.x0, sq.y0, sq.side), (0, 0, 64));
        let mut out = vec![0u8; 64 * 64 * 3];
        crop_square(&img, 64, 64, &sq, &mut out).unwrap();
        assert_eq!(out, img);
    }

    #[test]
    fn thin_marks_in_the_surround_do_not_move_the_square() {
        let (w, h) = (200, 120);
        let mut img = disc(w, h, 100.0, 60.0, 50.0);
        let clean = find(&img, w, h).unwrap();
        // A 3-pixel-high white caption in the corner.
        for y in 2..5 {
            for x in 2..40 {
                img[(y * w + x) * 3..][..3].copy_from_slice(&[255, 255, 255]);
            }
        }
        assert_eq!(find(&img, w, h).unwrap(), clean);
    }

    #[test]
    fn a_black_frame_has_no_field_of_view_and_bad_sizes_are_refused() {
        let img = vec![3u8; 50 * 40 * 3];
        assert_eq!(find(&img, 50, 40), Err(CoreError::NoFieldOfView));
        let (mut c, mut r) = (vec![0; 49], vec![0; 40]);
        assert!(matches!(
            locate(&img, 50, 40, &FovParams::default(), &mut c, &mut r),
            Err(CoreError::BufferSize { .. })
        ));
        let bad = FovParams {
            min_fraction: 1.0,
            ..Default::default()
        };
        let mut c = vec![0; 50];
        assert!(locate(&img, 50, 40, &bad, &mut c, &mut r).is_err());
    }

    #[test]
    fn a_square_wholly_outside_the_photo_is_black() {
        let img = vec![200u8; 10 * 10 * 3];
        let sq = FovSquare {
            x0: 20,
            y0: 0,
            side: 5,
            disc_width: 5,
            disc_height: 5,
        };
        let mut out = vec![7u8; 75];
        crop_square(&img, 10, 10, &sq, &mut out).unwrap();
        assert!(out.iter().all(|&v| v == 0));
    }
}
