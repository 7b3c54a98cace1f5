//! Owned scratch for std callers (trainer, device): allocate once, preprocess many photos.

use std::vec::Vec;

use crate::clahe::ClaheParams;
use crate::pipeline::{clahe_rgb8, preprocess_rgb8, Buffers, PreprocessSpec};
use crate::CoreError;

/// Reusable buffers for [`preprocess_rgb8`] and [`clahe_rgb8`]; grows to the largest photo seen.
#[derive(Debug, Default)]
pub struct Workspace {
    l_plane: Vec<u8>,
    rgb: Vec<u8>,
    lut: Vec<u8>,
    cols: Vec<bool>,
    rows: Vec<bool>,
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

    /// [`preprocess_rgb8`] into a new `out_width * out_height * 3` RGB8 vector.
    pub fn preprocess(
        &mut self,
        src: &[u8],
        width: usize,
        height: usize,
        spec: &PreprocessSpec,
    ) -> Result<Vec<u8>, CoreError> {
        let mut out = std::vec![0u8; spec.resized_len()];
        let mut bufs = self.buffers(spec, width, height);
        preprocess_rgb8(src, width, height, spec, &mut bufs, &mut out)?;
        Ok(out)
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
