//! Photo decoding with limits: JPEG / PNG -> RGB8, with errors that name the file and the problem.

use std::path::Path;

use anyhow::{bail, Context, Result};
use image::{ImageReader, Limits};

/// Largest side accepted (fundus cameras give up to ~6000 px).
pub const MAX_SIDE: u32 = 12_000;
/// Decoder memory cap.
const MAX_ALLOC: u64 = 1 << 30;

/// A decoded photo, interleaved RGB8.
#[derive(Debug)]
pub struct Photo {
    pub rgb: Vec<u8>,
    pub width: usize,
    pub height: usize,
}

/// Decodes a JPEG or PNG file to RGB8. Greyscale, 16-bit, alpha and CMYK are converted to RGB8
/// (16-bit by scaling to 8 bits); absurd sizes are refused before any pixel is allocated.
pub fn load_rgb8(path: &Path) -> Result<Photo> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    decode_rgb8(&bytes).with_context(|| format!("decoding {}", path.display()))
}

/// [`load_rgb8`] on bytes already in memory.
pub fn decode_rgb8(bytes: &[u8]) -> Result<Photo> {
    if bytes.is_empty() {
        bail!("file is empty");
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .context("cannot tell the image format")?;
    if reader.format().is_none() {
        bail!("not a JPEG or PNG image");
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let img = reader
        .decode()
        .context("image data is corrupt, truncated or too large")?;
    let rgb = img.to_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    Ok(Photo {
        rgb: rgb.into_raw(),
        width,
        height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_garbage_bytes_give_clear_errors() {
        assert!(decode_rgb8(&[]).unwrap_err().to_string().contains("empty"));
        let e = format!("{:#}", decode_rgb8(b"definitely not an image").unwrap_err());
        assert!(e.contains("not a JPEG or PNG"), "{e}");
    }
}
