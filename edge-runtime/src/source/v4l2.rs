//! One frame from a V4L2 camera (`/dev/videoN`, feature `capture`): the only module that names
//! `linuxvideo` (pure Rust: no libclang, no libv4l, cross-builds like the rest). MJPEG/JPEG frames
//! become whole JPEG files ([`mjpeg_to_jpeg`]); YUYV frames are converted as OpenCV does
//! ([`yuyv_to_rgb8`]) and stored as PNG, so the screener, the record's hash and the saved file all
//! see the same bytes.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use linuxvideo::format::{PixFormat, PixelFormat};
use linuxvideo::{BufType, CapabilityFlags, Device};

use super::frame::{mjpeg_to_jpeg, yuyv_to_rgb8};
use super::{Camera, Missed, Shot};

/// A captured frame as the bytes of an image file.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// What the camera sent: `MJPG`, `JPEG` or `YUYV`.
    pub format: String,
    /// A JPEG (MJPG/JPEG) or PNG (YUYV) file.
    pub bytes: Vec<u8>,
    /// `jpg` or `png`.
    pub extension: &'static str,
}

/// Frames dropped before the one kept (auto exposure and white balance settle).
pub const SKIP_FRAMES: u32 = 5;
/// Longest wait for one frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens `path` as a V4L2 capture device, with a message that says what to do when it is not.
fn open(path: &Path) -> Result<Device> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "cannot open camera {}: is it plugged in? `ls /dev/video*` lists the cameras; pass the right one with --device",
            path.display()
        )
    })?;
    if !meta.file_type().is_char_device() {
        bail!(
            "{} is not a camera device (not a character device): pass a /dev/videoN path with --device",
            path.display()
        );
    }
    let device = Device::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            anyhow::anyhow!(
                "cannot open camera {}: {e}: add this user to the `video` group (`sudo usermod -aG video $USER`)",
                path.display()
            )
        } else {
            anyhow::anyhow!(
                "{} is not a V4L2 video device ({e}): pass the camera's /dev/videoN with --device",
                path.display()
            )
        }
    })?;
    let caps = device
        .capabilities()
        .with_context(|| format!("querying camera {}", path.display()))?;
    if !caps
        .device_capabilities()
        .contains(CapabilityFlags::VIDEO_CAPTURE | CapabilityFlags::STREAMING)
    {
        bail!(
            "{} ({}) cannot stream video frames: it may be the camera's metadata node; try the next /dev/videoN",
            path.display(),
            caps.card()
        );
    }
    Ok(device)
}

/// Captures one frame at the largest size the camera offers in MJPG, JPEG or YUYV (in that
/// order of preference), after dropping `skip` frames; waits at most `timeout` per frame.
pub fn capture(path: &Path, skip: u32, timeout: Duration) -> Result<Frame> {
    let device = open(path)?;
    let offered: Vec<PixelFormat> = device
        .formats(BufType::VIDEO_CAPTURE)
        .filter_map(|f| f.ok().map(|f| f.pixel_format()))
        .collect();
    let Some(&wanted) = [PixelFormat::MJPG, PixelFormat::JPEG, PixelFormat::YUYV]
        .iter()
        .find(|f| offered.contains(f))
    else {
        let names: Vec<String> = offered.iter().map(|f| f.to_string()).collect();
        bail!(
            "camera {} offers {} but drscreen reads MJPG, JPEG or YUYV frames: use a UVC camera",
            path.display(),
            if names.is_empty() {
                "no frame format".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    let capture = device
        .video_capture(PixFormat::new(u32::MAX, u32::MAX, wanted))
        .with_context(|| format!("setting {} to {wanted}", path.display()))?;
    let (got, width, height, stride) = {
        let f = capture.format();
        (f.pixel_format(), f.width(), f.height(), f.bytes_per_line())
    };
    if got != wanted {
        bail!(
            "camera {} was asked for {wanted} frames and gave {got}",
            path.display()
        );
    }
    let mut stream = capture
        .into_stream()
        .with_context(|| format!("starting the stream of {}", path.display()))?;
    let mut raw = Vec::new();
    for i in 0..=skip {
        let start = Instant::now();
        while stream
            .will_block()
            .with_context(|| format!("waiting for a frame from {}", path.display()))?
        {
            if start.elapsed() >= timeout {
                bail!(
                    "camera {} sent no frame within {} s: check its cable and light, or try another --device",
                    path.display(),
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let keep = i == skip;
        stream
            .dequeue(|buf| {
                if keep {
                    raw.clear();
                    raw.extend_from_slice(&buf);
                }
                Ok(())
            })
            .with_context(|| format!("reading a frame from {}", path.display()))?;
    }
    let (bytes, extension) = match got {
        PixelFormat::YUYV => {
            let (w, h) = (width as usize, height as usize);
            let mut rgb = vec![0u8; w * h * 3];
            yuyv_to_rgb8(&raw, w, h, stride as usize, &mut rgb)
                .with_context(|| format!("converting the frame from {}", path.display()))?;
            (png(&rgb, width, height)?, "png")
        }
        _ => (mjpeg_to_jpeg(&raw).into_owned(), "jpg"),
    };
    Ok(Frame {
        width,
        height,
        format: got.to_string(),
        bytes,
        extension,
    })
}

/// RGB8 to PNG bytes (fast compression: the frame is screened right away).
fn png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
        .context("encoding the frame as PNG")?;
    Ok(out)
}

/// The V4L2 source of the device loop: one frame per press, saved into `photo_dir` (for the
/// record and later review) before it is screened.
#[derive(Debug, Clone)]
pub struct V4l2Camera {
    pub device: PathBuf,
    pub photo_dir: PathBuf,
    pub skip: u32,
    pub timeout: Duration,
}

impl Camera for V4l2Camera {
    fn take(&mut self) -> Result<Shot, Missed> {
        let missed = |reason: String| Missed {
            image: self.device.display().to_string(),
            sha256: None,
            reason,
        };
        let frame =
            capture(&self.device, self.skip, self.timeout).map_err(|e| missed(format!("{e:#}")))?;
        let stamp = crate::record::now_rfc3339().replace(':', "");
        let path = self
            .photo_dir
            .join(format!("capture-{stamp}.{}", frame.extension));
        std::fs::create_dir_all(&self.photo_dir)
            .and_then(|()| std::fs::write(&path, &frame.bytes))
            .map_err(|e| {
                missed(format!(
                    "the photo was taken but cannot be saved as {}: {e}; free space or fix --photo-dir",
                    path.display()
                ))
            })?;
        Ok(Shot {
            name: path.display().to_string(),
            bytes: frame.bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(path: &Path) -> String {
        format!(
            "{:#}",
            capture(path, 0, Duration::from_millis(100)).unwrap_err()
        )
    }

    #[test]
    fn a_missing_or_wrong_device_is_a_clear_error_that_says_what_to_do() {
        let e = error(Path::new("/dev/video-drscreen-missing"));
        assert!(
            e.starts_with("cannot open camera /dev/video-drscreen-missing: is it plugged in?"),
            "{e}"
        );
        assert!(e.contains("--device"), "{e}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let e = error(file.path());
        assert!(
            e.contains("is not a camera device (not a character device)"),
            "{e}"
        );
        let e = error(Path::new("/dev/null"));
        assert!(e.starts_with("/dev/null is not a V4L2 video device"), "{e}");
    }

    #[test]
    fn a_press_without_a_camera_is_missed_with_the_reason_and_nothing_saved() {
        let dir = tempfile::tempdir().unwrap();
        let mut cam = V4l2Camera {
            device: "/dev/video-drscreen-missing".into(),
            photo_dir: dir.path().join("photos"),
            skip: 0,
            timeout: Duration::from_millis(100),
        };
        let m = cam.take().unwrap_err();
        assert_eq!(m.image, "/dev/video-drscreen-missing");
        assert!(m.reason.contains("is it plugged in?"), "{}", m.reason);
        assert!(!dir.path().join("photos").exists());
    }
}
