//! Reading photos from disk: the core's decoder with the file named in every error.

use std::path::Path;

use anyhow::{Context, Result};
pub use drscreen_core::decode::Photo;

/// Reads and decodes a JPEG or PNG file to RGB8.
pub fn load_rgb8(path: &Path) -> Result<Photo> {
    let bytes = drscreen_core::decode::read_photo(path)
        .with_context(|| format!("reading {}", path.display()))?;
    drscreen_core::decode::decode_rgb8(&bytes)
        .with_context(|| format!("decoding {}", path.display()))
}
