//! Owned scratch for std callers (trainer, device): allocate once, preprocess many photos.

use std::vec::Vec;

use crate::clahe::ClaheParams;
use crate::fov::FovSquare;
use crate::pipeline::{
    clahe_rgb8, fov_buffer_lens, fov_square_resized, preprocess_fov_rgb8, preprocess_rgb8, Buffers,
    FovBuffers, PreprocessSpec,
};
use crate::CoreError;

/// Reusable buffers for [`preprocess_rgb8`] and [`clahe_rgb8`]; grows to the largest photo seen.
#[derive(Debug, Default)]
pub struct Workspace {
    l_plane: Vec<u8>,
    rgb: Vec<u8>,
    lut: Vec<u8>,
    cols: Vec<bool>,
    rows: Vec<bool>,
    col_counts: Vec<u32>,
    row_counts: Vec<u32>,
    square: Vec<u8>,
    resized: Vec<u8>,
}

impl Workspace {
    fn buffers(&mut self, spec: &PreprocessSpec, width: usize, height: usize) -> Buffers<'_> {
        let lens = spec.buffer_lens(width, height);
        self.l_plane.resize(lens.l_plane, 0);
        self.rgb.resize(lens.rgb, 0);
        self.lut.resize(lens.lut, 0);
        self.cols.resize(lens.cols, false);
        self.rows.resize(lens.rows, false);
        Buffers {
            l_plane: &mut self.l_plane,
            rgb: &mut self.rgb,
            lut: &mut self.lut,
            cols: &mut self.cols,
            rows: &mut self.rows,
        }
    }

    fn fov_buffers(
        &mut self,
        spec: &PreprocessSpec,
        width: usize,
        height: usize,
    ) -> FovBuffers<'_> {
        let ([cols, rows, square, resized], clahe) = fov_buffer_lens(spec, width, height);
        self.col_counts.resize(cols, 0);
        self.row_counts.resize(rows, 0);
        self.square.resize(square, 0);
        self.resized.resize(resized, 0);
        self.l_plane.resize(clahe.l_plane, 0);
        self.lut.resize(clahe.lut, 0);
        self.cols.resize(clahe.cols, false);
        self.rows.resize(clahe.rows, false);
        FovBuffers {
            col_counts: &mut self.col_counts,
            row_counts: &mut self.row_counts,
            square: &mut self.square,
            resized: &mut self.resized,
            clahe: Buffers {
                l_plane: &mut self.l_plane,
                rgb: &mut [],
                lut: &mut self.lut,
                cols: &mut self.cols,
                rows: &mut self.rows,
            },
        }
    }

    /// The model's RGB8 input (`out_width * out_height * 3` bytes) in the spec's geometry:
    /// [`preprocess_rgb8`] for the whole frame, [`preprocess_fov_rgb8`] for the field of view.
    pub fn preprocess(
        &mut self,
        src: &[u8],
        width: usize,
        height: usize,
        spec: &PreprocessSpec,
    ) -> Result<Vec<u8>, CoreError> {
        let mut out = std::vec![0u8; spec.resized_len()];
        if spec.fov.is_some() {
            let mut bufs = self.fov_buffers(spec, width, height);
            preprocess_fov_rgb8(src, width, height, spec, &mut bufs, &mut out)?;
        } else {
            let mut bufs = self.buffers(spec, width, height);
            preprocess_rgb8(src, width, height, spec, &mut bufs, &mut out)?;
        }
        Ok(out)
    }

    /// The field-of-view stage before CLAHE ([`fov_square_resized`]): the disc square at the
    /// input size, and where the square lay in the photo. `spec.fov` must be set.
    pub fn fov_stage(
        &mut self,
        src: &[u8],
        width: usize,
        height: usize,
        spec: &PreprocessSpec,
    ) -> Result<(Vec<u8>, FovSquare), CoreError> {
        let Some(fov) = spec.fov else {
            return Err(CoreError::Param {
                name: "geometry",
                reason: "the field-of-view stage needs a spec with fov",
            });
        };
        let mut bufs = self.fov_buffers(spec, width, height);
        let sq = fov_square_resized(src, width, height, spec, &fov, &mut bufs)?;
        Ok((bufs.resized.to_vec(), sq))
    }

    /// [`clahe_rgb8`] (full-size equalised RGB8) into a new vector.
    pub fn equalise(
        &mut self,
        src: &[u8],
        width: usize,
        height: usize,
        clahe: &ClaheParams,
    ) -> Result<Vec<u8>, CoreError> {
        let spec = PreprocessSpec {
            clahe: *clahe,
            ..Default::default()
        };
        let mut out = std::vec![0u8; width.saturating_mul(height).saturating_mul(3)];
        let mut bufs = self.buffers(&spec, width, height);
        clahe_rgb8(src, width, height, clahe, &mut bufs, &mut out)?;
        Ok(out)
    }
}
