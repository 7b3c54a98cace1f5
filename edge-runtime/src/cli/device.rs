//! `edge-runtime device --camera-dir DIR | --video /dev/videoN [--log FILE] [--model FILE]
//! [pins...]` (feature `rpi`; `--video` with feature `capture`):
//! the clinic loop on a Pi. Wait for the capture button, take the photo, screen it, log it
//! (fsync'd), then light green (no referral), red (refer) or amber (ungradable, retake).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args as ClapArgs};
use edge_runtime::device::{rpi, Device, Pins, SleepDelay};
use edge_runtime::source::folder::{self, FolderCamera};
use edge_runtime::source::watch::Watcher;
use edge_runtime::source::Camera;

#[derive(ClapArgs, Debug)]
#[command(group(ArgGroup::new("camera").required(true)))]
pub struct Args {
    /// Folder the fundus camera writes its JPEG/PNG photos into: each press takes the newest
    /// complete photo not screened before.
    #[arg(long, group = "camera")]
    pub camera_dir: Option<PathBuf>,
    /// V4L2 camera to take a frame from at each press (instead of --camera-dir).
    #[cfg(feature = "capture")]
    #[arg(long, group = "camera")]
    pub video: Option<PathBuf>,
    /// With --video: folder each captured photo is saved into (the record names the file).
    #[cfg(feature = "capture")]
    #[arg(long, default_value = "drscreen-photos")]
    pub photo_dir: PathBuf,
    /// Seconds a press waits for the camera to finish writing a photo.
    #[arg(long, default_value_t = folder::PHOTO_WAIT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub photo_wait_s: u64,
    /// A photo written more than this many seconds before the press is not taken (it is the
    /// previous patient's).
    #[arg(long, default_value_t = folder::MAX_AGE.as_secs())]
    pub photo_max_age_s: u64,
    /// Seconds a photo may stay incomplete (truncated) before the press reports it as ungradable.
    #[arg(long, default_value_t = folder::INCOMPLETE_AFTER.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub incomplete_after_s: u64,
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Site calibration (from `edge-runtime calibrate`): its threshold, set on this camera's own
    /// graded photos, replaces the model's; every record names it.
    #[arg(long, env = "DRSCREEN_SITE")]
    pub site: Option<PathBuf>,
    /// Results log (JSON lines, fsync'd before each result is shown); keep it on persistent storage.
    #[arg(long, env = "DRSCREEN_LOG", default_value = "drscreen-results.jsonl")]
    pub log: PathBuf,
    /// Threads the TTA views of a screening are spread over (default: one per CPU core).
    #[arg(long, value_parser = super::parse_threads)]
    pub threads: Option<usize>,
    /// Green LED (no referral), BCM GPIO number.
    #[arg(long, default_value_t = Pins::default().green)]
    pub green_pin: u8,
    /// Red LED (refer), BCM GPIO number.
    #[arg(long, default_value_t = Pins::default().red)]
    pub red_pin: u8,
    /// Amber LED (ungradable: retake), BCM GPIO number.
    #[arg(long, default_value_t = Pins::default().amber)]
    pub amber_pin: u8,
    /// Buzzer (via a transistor), BCM GPIO number.
    #[arg(long, default_value_t = Pins::default().buzzer)]
    pub buzzer_pin: u8,
    /// Capture button to GND (internal pull-up), BCM GPIO number.
    #[arg(long, default_value_t = Pins::default().button)]
    pub button_pin: u8,
    /// Stop after this many presses (0 = run until stopped).
    #[arg(long, default_value_t = 0)]
    pub presses: u64,
    /// One JSON record per press on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The photo source the flags name.
fn camera(a: &Args, seen: impl IntoIterator<Item = (PathBuf, String)>) -> Result<Box<dyn Camera>> {
    #[cfg(feature = "capture")]
    if let Some(video) = &a.video {
        return Ok(Box::new(edge_runtime::source::v4l2::V4l2Camera {
            device: video.clone(),
            photo_dir: a.photo_dir.clone(),
            skip: edge_runtime::source::v4l2::SKIP_FRAMES,
            timeout: edge_runtime::source::v4l2::FRAME_TIMEOUT,
        }));
    }
    let Some(dir) = &a.camera_dir else {
        bail!("give --camera-dir DIR (or --video /dev/videoN with the capture feature)");
    };
    let watcher = Watcher::new(dir, seen)
        .context("--camera-dir must be the folder the camera writes into")?
        .incomplete_after(Duration::from_secs(a.incomplete_after_s));
    let mut camera = FolderCamera::new(watcher);
    camera.wait = Duration::from_secs(a.photo_wait_s);
    camera.max_age = Duration::from_secs(a.photo_max_age_s);
    Ok(Box::new(camera))
}

pub fn run(a: &Args) -> Result<()> {
    let pins = Pins {
        green: a.green_pin,
        red: a.red_pin,
        amber: a.amber_pin,
        buzzer: a.buzzer_pin,
        button: a.button_pin,
    };
    pins.check()?;
    let engine = super::load_engine(a.model.as_deref(), a.threads)?;
    let mut screener = super::screener(engine, a.site.as_deref())?;
    let (mut log, recovered) = super::screen::open_log(&a.log)?;
    let seen = recovered.screened();
    let mut camera = camera(a, seen)?;

    let (indicator, button) = rpi::open(&pins)?;
    let mut device = Device {
        indicator,
        button,
        delay: SleepDelay,
    };
    device.start()?;
    eprintln!(
        "ready: press the button (BCM {}) to screen a photo",
        pins.button
    );
    let mut n = 0u64;
    loop {
        let r = device.press(camera.as_mut(), &mut screener, &mut log)?;
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!("{}", super::screen::describe(&r));
        }
        n += 1;
        if a.presses > 0 && n >= a.presses {
            return Ok(());
        }
    }
}
