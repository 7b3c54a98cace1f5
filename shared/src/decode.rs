//! Photo decoding shared by trainer and device (feature `decode`): JPEG / PNG bytes -> RGB8, with
//! decoder limits, so both sides see the same pixels from the same file.

use std::string::{String, ToString};
use std::vec::Vec;

use image::{ImageReader, Limits};

/// Largest side accepted (fundus cameras give up to ~6000 px).
pub const MAX_SIDE: u32 = 12_000;
/// Decoder memory cap in bytes.
pub const MAX_ALLOC: u64 = 1 << 30;

/// Largest photo file read (a fundus camera's JPEG is under 20 MB); reading stops there, so a
/// device file or a runaway write is never read whole.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads a photo file, at most [`MAX_FILE_BYTES`]: a longer file (or a device such as
/// `/dev/zero`) is an `InvalidData` error that says so, after reading no more than the cap.
pub fn read_photo(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            std::format!(
                "longer than {} MiB: not a fundus photo (a camera's JPEG is under 20 MB)",
                MAX_FILE_BYTES >> 20
            ),
        ));
    }
    Ok(bytes)
}

/// Why a photo could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("file is empty")]
    Empty,
    #[error("not a JPEG or PNG image")]
    UnknownFormat,
    #[error("image is larger than {MAX_SIDE}x{MAX_SIDE} or needs more than 1 GiB to decode: {0}")]
    TooLarge(String),
    #[error("image data is corrupt or truncated: {0}")]
    Corrupt(String),
}

/// A decoded photo, interleaved RGB8.
#[derive(Debug, Clone)]
pub struct Photo {
    pub rgb: Vec<u8>,
    pub width: usize,
    pub height: usize,
}

/// Decodes JPEG or PNG bytes to RGB8. Greyscale, 16-bit, alpha and CMYK are converted to RGB8
/// (16-bit by scaling to 8 bits); absurd sizes are refused before pixels are allocated.
pub fn decode_rgb8(bytes: &[u8]) -> Result<Photo, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| DecodeError::UnknownFormat)?;
    match reader.format() {
        Some(image::ImageFormat::Jpeg) => check_jpeg_complete(bytes)?,
        Some(image::ImageFormat::Png) => {}
        _ => return Err(DecodeError::UnknownFormat),
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => DecodeError::TooLarge(l.to_string()),
        other => DecodeError::Corrupt(other.to_string()),
    })?;
    // Moves the pixels out when the decoder already gave RGB8 (a 10 MP frame is 30 MB to copy).
    let rgb = img.into_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    Ok(Photo {
        rgb: rgb.into_raw(),
        width,
        height,
    })
}

/// A JPEG ends with the end-of-image marker `FF D9` (some writers pad with zeros after it).
/// The decoder would otherwise fill a truncated photo with grey and return it as if whole.
fn check_jpeg_complete(bytes: &[u8]) -> Result<(), DecodeError> {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if end >= 2 && bytes[end - 2..end] == [0xFF, 0xD9] {
        Ok(())
    } else {
        Err(DecodeError::Corrupt(
            "truncated JPEG: no end-of-image marker".to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_garbage_and_truncated_bytes_give_distinct_errors() {
        assert!(matches!(decode_rgb8(&[]), Err(DecodeError::Empty)));
        assert!(matches!(
            decode_rgb8(b"definitely not an image"),
            Err(DecodeError::UnknownFormat)
        ));
        let mut png = Vec::new();
        image::RgbImage::from_pixel(40, 30, image::Rgb([10, 20, 30]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let ok = decode_rgb8(&png).unwrap();
        assert_eq!(
            (ok.width, ok.height, &ok.rgb[..3]),
            (40, 30, &[10u8, 20, 30][..])
        );
        assert!(matches!(
            decode_rgb8(&png[..png.len() / 2]),
            Err(DecodeError::Corrupt(_))
        ));
    }
}
