//! `edge-runtime watch DIR [--model FILE] [--log FILE] [--interval-ms 500] [--settle-ms 1000]
//! [--polls N] [--incomplete-after-s 30]`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args as ClapArgs;
use edge_runtime::source::watch::{Found, Watcher};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Folder the camera writes JPEG/PNG files into (subfolders such as DCIM/100XXXXX/ too).
    pub dir: PathBuf,
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Site calibration (from `edge-runtime calibrate`): its threshold, set on this camera's own
    /// graded photos, replaces the model's; every record names it.
    #[arg(long, env = "DRSCREEN_SITE")]
    pub site: Option<PathBuf>,
    /// Results log; photos already in it are not screened again after a restart.
    #[arg(long, env = "DRSCREEN_LOG", default_value = "drscreen-results.jsonl")]
    pub log: PathBuf,
    /// Poll interval in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub interval_ms: u64,
    /// A file is read once its size and modification time have been still this long (and over
    /// two polls); it is screened once the whole file decodes.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// Report a file that stays incomplete (never ends as a JPEG/PNG ends) this many seconds
    /// without a change as ungradable, once.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub incomplete_after_s: u64,
    /// Stop after this many polls (0 = run until stopped).
    #[arg(long, default_value_t = 0)]
    pub polls: u64,
    #[arg(long)]
    pub json: bool,
    /// Threads the TTA views of a screening are spread over (default: one per CPU core).
    #[arg(long, value_parser = super::parse_threads)]
    pub threads: Option<usize>,
}

pub fn run(a: &Args) -> Result<()> {
    let engine = super::load_engine(a.model.as_deref(), a.threads)?;
    let mut screener = super::screener(engine, a.site.as_deref())?;
    let (mut log, recovered) = super::screen::open_log(&a.log)?;
    let seen = recovered.screened();
    let mut watcher = Watcher::new(&a.dir, seen)?
        .incomplete_after(std::time::Duration::from_secs(a.incomplete_after_s))
        .settle(std::time::Duration::from_millis(a.settle_ms));
    let shown = std::path::absolute(&a.dir).unwrap_or_else(|_| a.dir.clone());
    eprintln!(
        "watching {} and its subfolders every {} ms: a photo is screened when it has been still for {} ms and decodes whole",
        shown.display(),
        a.interval_ms,
        a.settle_ms
    );
    let mut n = 0u64;
    loop {
        for found in watcher.poll()? {
            let record = match found {
                Found::Photo(photo) => screener.screen_file(&photo),
                Found::StayedIncomplete {
                    path,
                    sha256,
                    bytes,
                    stalled,
                } => screener.ungradable(
                    &path.display().to_string(),
                    Some(sha256),
                    Found::reason(bytes, stalled),
                ),
            };
            super::screen::log_then_print(&mut log, &record, a.json)?;
        }
        n += 1;
        if a.polls > 0 && n >= a.polls {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(a.interval_ms));
    }
}
