//! The one error type of the core: wrong sizes and parameters, named so a caller can act.

/// What was wrong with a call into the core.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// A buffer does not have the length its dimensions require.
    #[error("{what} buffer has {actual} elements, expected {expected}")]
    BufferSize {
        what: &'static str,
        actual: usize,
        expected: usize,
    },
    /// An interleaved buffer's length is not a multiple of its channel count.
    #[error(
        "interleaved buffer of {len} bytes is not a whole number of {channels}-channel pixels"
    )]
    NotInterleaved { len: usize, channels: usize },
    /// An image with a zero side, or too large to index.
    #[error("invalid image size {width}x{height}")]
    ImageSize { width: usize, height: usize },
    /// No fundus disc: no column and row of the photo is bright enough (a black or blank frame).
    #[error("no fundus disc found: the photo is black or blank; check the camera and retake")]
    NoFieldOfView,
    /// A parameter outside the range the operation accepts.
    #[error("invalid parameter {name}: {reason}")]
    Param {
        name: &'static str,
        reason: &'static str,
    },
}

pub(crate) fn check_len(
    what: &'static str,
    actual: usize,
    expected: usize,
) -> Result<(), CoreError> {
    if actual == expected {
        Ok(())
    } else {
        Err(CoreError::BufferSize {
            what,
            actual,
            expected,
        })
    }
}

/// Checks that `width * height` is a sensible, non-empty image and returns the pixel count.
pub(crate) fn check_dims(width: usize, height: usize) -> Result<usize, CoreError> {
    // i32 indexing (as OpenCV) stays valid below 2^31 bytes for 3-channel images.
    const MAX_PIXELS: usize = (i32::MAX as usize) / 4;
    match width.checked_mul(height) {
        Some(n) if width > 0 && height > 0 && n <= MAX_PIXELS => Ok(n),
        _ => Err(CoreError::ImageSize { width, height }),
    }
}
