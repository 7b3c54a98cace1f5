//! `edge-runtime capture [--device /dev/video0] [--out FILE] [--screen]` (feature `capture`):
//! one frame from a V4L2 camera, saved and/or screened (logged, then printed).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args as ClapArgs;
use edge_runtime::source::v4l2::{capture, FRAME_TIMEOUT, SKIP_FRAMES};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The camera's V4L2 device.
    #[arg(long, default_value = "/dev/video0")]
    pub device: PathBuf,
    /// Save the frame here (.jpg/.jpeg or .png; re-encoded if the camera's format differs).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Screen the frame: quality gate, model, log, then print.
    #[arg(long)]
    pub screen: bool,
    /// Frames to drop first while exposure settles.
    #[arg(long, default_value_t = SKIP_FRAMES)]
    pub skip: u32,
    /// Seconds to wait for each frame.
    #[arg(long, default_value_t = FRAME_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_s: u64,
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Site calibration (from `edge-runtime calibrate`): its threshold, set on this camera's own
    /// graded photos, replaces the model's; every record names it.
    #[arg(long, env = "DRSCREEN_SITE")]
    pub site: Option<PathBuf>,
    /// Results log (JSON lines, fsync'd before the result is printed).
    #[arg(long, env = "DRSCREEN_LOG", default_value = "drscreen-results.jsonl")]
    pub log: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// Threads the TTA views of a screening are spread over (default: one per CPU core).
    #[arg(long, value_parser = super::parse_threads)]
    pub threads: Option<usize>,
}

pub fn run(a: &Args) -> Result<()> {
    if a.out.is_none() && !a.screen {
        bail!("nothing to do: give --out FILE to save the frame and/or --screen to screen it");
    }
    let out_ext = match &a.out {
        None => None,
        Some(out) => match out
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("jpg" | "jpeg") => Some("jpg"),
            Some("png") => Some("png"),
            _ => bail!("--out {} must end in .jpg, .jpeg or .png", out.display()),
        },
    };
    // Load the model before the camera: a model error should not cost a photo.
    let screening = if a.screen {
        let engine = super::load_engine(a.model.as_deref(), a.threads)?;
        let (log, _) = super::screen::open_log(&a.log)?;
        Some((super::screener(engine, a.site.as_deref())?, log))
    } else {
        None
    };
    let frame = capture(&a.device, a.skip, Duration::from_secs(a.timeout_s))?;
    let mut bytes = frame.bytes;
    let name = match (&a.out, out_ext) {
        (Some(out), Some(ext)) => {
            if ext != frame.extension {
                let img = image::load_from_memory(&bytes).context("re-reading the frame")?;
                let fmt = if ext == "png" {
                    image::ImageFormat::Png
                } else {
                    image::ImageFormat::Jpeg
                };
                bytes.clear();
                img.to_rgb8()
                    .write_to(&mut std::io::Cursor::new(&mut bytes), fmt)
                    .with_context(|| format!("encoding the frame for {}", out.display()))?;
            }
            std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "saved a {}x{} {} frame from {} to {}",
                frame.width,
                frame.height,
                frame.format,
                a.device.display(),
                out.display()
            );
            out.display().to_string()
        }
        _ => format!(
            "{} frame at {}",
            a.device.display(),
            edge_runtime::record::now_rfc3339()
        ),
    };
    if let Some((mut screener, mut log)) = screening {
        let record = screener.screen_bytes(&name, &bytes, std::time::Instant::now());
        super::screen::log_then_print(&mut log, &record, a.json)?;
    }
    Ok(())
}
