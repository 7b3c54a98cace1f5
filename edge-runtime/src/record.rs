//! The results log: one JSON line per screening, appended and fsync'd *before* the result is
//! shown, so a power cut loses nothing that was shown. A line torn by a crash mid-write is moved
//! aside to `<log>.torn` on the next start and reported; every line before it is intact.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::quality::{Quality, QualityMetrics};

/// Stage timings of one screening, milliseconds. With more than one thread the quality gate
/// runs beside the preprocessing, so their times overlap; `total_ms` is the wall time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub decode_ms: f64,
    pub quality_ms: f64,
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    pub total_ms: f64,
}

/// What the operator is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    NoReferral,
    Refer,
    /// Not screened: retake the photo (the reason is in `quality` or `error`).
    Ungradable,
    /// Not screened: the file could not be read (no such file, no permission, longer than a
    /// photo); `error` says which. An operator's slip, not a retake: check the path.
    Unreadable,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub image: String,
    /// SHA-256 of the image file's bytes (None if it could not be read).
    pub image_sha256: Option<String>,
    pub model_sha256: String,
    pub contract_version: u32,
    pub outcome: Outcome,
    pub probability: Option<f32>,
    pub per_view: Vec<f32>,
    pub threshold: f32,
    /// The site calibration `threshold` comes from (`--site`); None: the model's own threshold.
    #[serde(default)]
    pub site: Option<crate::site::SiteRef>,
    /// The probability lies inside the contract's borderline band (the threshold's uncertainty
    /// on validation): whatever `outcome` says, the operator is told "borderline: refer or
    /// retake". False when the contract declares no band.
    #[serde(default)]
    pub borderline: bool,
    pub quality: Option<Quality>,
    pub quality_metrics: Option<QualityMetrics>,
    /// Why the photo could not be screened (unreadable, not an image, ...).
    pub error: Option<String>,
    pub latency: Latency,
}

/// A line of the log that could not be read back.
#[derive(Debug, Clone, PartialEq)]
pub struct TornLine {
    /// 1-based line number.
    pub line: usize,
    pub bytes: usize,
    pub error: String,
    /// Where `Log::open` moved it (`<log>.torn`); None when it is still in the log.
    pub moved_to: Option<PathBuf>,
}

/// The readable records of a log and the lines that were not.
#[derive(Debug, Default)]
pub struct Recovered {
    pub records: Vec<Record>,
    pub torn: Vec<TornLine>,
}

impl Recovered {
    /// (image path, image sha256) of every logged photo whose content was read: what a
    /// restarted source must not screen again.
    pub fn screened(&self) -> impl Iterator<Item = (std::path::PathBuf, String)> + '_ {
        self.records
            .iter()
            .filter_map(|r| Some((std::path::PathBuf::from(&r.image), r.image_sha256.clone()?)))
    }
}

/// Reads a log back; a missing file is an empty log.
pub fn read_log(path: &Path) -> Result<Recovered> {
    let mut text = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut text)
                .with_context(|| format!("reading log {}", path.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Recovered::default()),
        Err(e) => return Err(e).with_context(|| format!("opening log {}", path.display())),
    }
    let mut out = Recovered::default();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(r) => out.records.push(r),
            Err(e) => out.torn.push(TornLine {
                line: i + 1,
                bytes: line.len(),
                error: e.to_string(),
                moved_to: None,
            }),
        }
    }
    Ok(out)
}

/// An open, append-only log.
#[derive(Debug)]
pub struct Log {
    file: File,
    pub path: PathBuf,
}

impl Log {
    /// Opens (creating) the log and reads it back. A file whose whole lines are not all drscreen
    /// records is refused, untouched: it is not a results log (or it was edited). A partial last
    /// line, which a power cut mid-write leaves, is moved aside to `<log>.torn` (appended there)
    /// and the log is cut back to its last whole line, both fsync'd, so the log stays one valid
    /// JSON document per line; the moved line is returned in `torn`.
    pub fn open(path: &Path) -> Result<(Log, Recovered)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .with_context(|| format!("opening log {} for appending", path.display()))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text)
            .with_context(|| format!("reading log {}", path.display()))?;
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut recovered = Recovered::default();
        for (i, line) in text[..whole].split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Record>(line) {
                Ok(r) => recovered.records.push(r),
                Err(e) => anyhow::bail!(
                    "{} is not a drscreen results log: line {} is not a screening record ({e}). \
                     Nothing was written to it; point --log (or DRSCREEN_LOG) at a drscreen log \
                     or at a new file",
                    path.display(),
                    i + 1
                ),
            }
        }
        let tail = &text[whole..];
        if !tail.is_empty() {
            let line = text[..whole].iter().filter(|&&b| b == b'\n').count() + 1;
            match serde_json::from_slice::<Record>(tail) {
                // Cut just before its newline: the record is whole.
                Ok(r) => {
                    recovered.records.push(r);
                    file.write_all(b"\n")?;
                }
                Err(e) => {
                    let aside = torn_path(path);
                    let mut t = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&aside)
                        .with_context(|| format!("opening {}", aside.display()))?;
                    t.write_all(tail)?;
                    t.write_all(b"\n")?;
                    t.sync_all()
                        .with_context(|| format!("syncing {}", aside.display()))?;
                    file.set_len(whole as u64)
                        .with_context(|| format!("cutting the torn line off {}", path.display()))?;
                    recovered.torn.push(TornLine {
                        line,
                        bytes: tail.len(),
                        error: e.to_string(),
                        moved_to: Some(aside),
                    });
                }
            }
            file.sync_all()
                .with_context(|| format!("syncing log {}", path.display()))?;
        }
        file.seek(SeekFrom::End(0))?;
        Ok((
            Log {
                file,
                path: path.to_path_buf(),
            },
            recovered,
        ))
    }

    /// Appends one record as one write and waits until it is on disk.
    pub fn append(&mut self, r: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(r)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .with_context(|| format!("writing log {}", self.path.display()))?;
        self.file
            .sync_data()
            .with_context(|| format!("syncing log {}", self.path.display()))
    }
}

/// Where the torn last line of `log` is kept: `<log>.torn` beside it.
pub fn torn_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".torn");
    log.with_file_name(name)
}

/// Now as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
