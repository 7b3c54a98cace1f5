//! The preprocessed cache: one uint8 file per split (N x H x W x 3, the model's RGB8 input after
//! drscreen-core's pipeline), memory-mapped for training, and a manifest that says what is in it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, ensure, Context, Result};
use drscreen_core::{PreprocessSpec, Workspace};
use indicatif::{ProgressBar, ProgressStyle};
use memmap2::{Mmap, MmapMut};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::labels::{Layout, Positive, Record};
use super::split::{assign, Split};

pub const MANIFEST: &str = "manifest.json";
const MANIFEST_VERSION: u32 = 1;

/// One cached photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub source: PathBuf,
    pub sha256: String,
    pub level: u8,
    pub label: bool,
    pub patient: String,
    pub split: Split,
    /// Row in the split's file.
    pub index: usize,
}

/// A photo that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub id: String,
    pub source: PathBuf,
    pub reason: String,
}

/// Counts of one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    pub file: String,
    pub count: usize,
    pub positives: usize,
}

/// The preprocessing a cache was built with (what the model contract will carry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheSpec {
    pub size: usize,
    pub clip_limit: f64,
    pub tiles_x: usize,
    pub tiles_y: usize,
    pub interpolation: drscreen_core::Interpolation,
}

impl CacheSpec {
    pub fn preprocess(&self) -> PreprocessSpec {
        PreprocessSpec {
            clahe: drscreen_core::ClaheParams {
                clip_limit: self.clip_limit,
                tiles_x: self.tiles_x,
                tiles_y: self.tiles_y,
            },
            out_width: self.size,
            out_height: self.size,
            interpolation: self.interpolation,
            fov: None,
        }
    }
}

/// What `prepare` wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub labels: PathBuf,
    pub layout: Layout,
    pub positive: Positive,
    pub seed: u64,
    pub val_fraction: f64,
    pub test_fraction: f64,
    pub spec: CacheSpec,
    pub splits: BTreeMap<Split, SplitInfo>,
    pub entries: Vec<Entry>,
    pub skipped: Vec<Skipped>,
}

/// Options of `prepare`.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub positive: Positive,
    pub val: f64,
    pub test: f64,
    pub seed: u64,
    pub spec: CacheSpec,
    pub progress: bool,
}

fn sha256_file(path: &Path) -> Result<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((format!("{:x}", Sha256::digest(&bytes)), bytes))
}

fn bar(n: usize, what: &str, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(n as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap(),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Hashes, splits and preprocesses `records` into `out`. Unreadable or undecodable photos are
/// skipped with their reason (and counted in the manifest); the run goes on.
pub fn prepare(
    labels: &Path,
    layout: Layout,
    records: &[Record],
    out: &Path,
    opts: &PrepareOptions,
) -> Result<Manifest> {
    ensure!(!records.is_empty(), "no records to prepare");
    ensure!(
        (0.0..=1.0).contains(&(opts.val + opts.test)),
        "val + test fractions must be within 0..=1"
    );
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let spec = opts.spec.preprocess();

    // Pass 1: content hashes (duplicates must stay together), reading errors recorded.
    let pb = bar(records.len(), "hashing", opts.progress);
    let hashes: Vec<Result<String, String>> = records
        .par_iter()
        .map(|r| {
            let h = sha256_file(&r.path)
                .map(|(h, _)| h)
                .map_err(|e| format!("{e:#}"));
            pb.inc(1);
            h
        })
        .collect();
    pb.finish_and_clear();
    let hash_keys: Vec<String> = hashes
        .iter()
        .enumerate()
        .map(|(i, h)| h.clone().unwrap_or_else(|_| format!("unreadable-{i}")))
        .collect();
    // A byte-identical copy (same photo filed twice, possibly under two grades) is used once:
    // the first in table order is kept, later copies are skipped and listed with the reason.
    let mut first_of: std::collections::HashMap<&str, usize> = Default::default();
    let pre_skip: Vec<Option<String>> = hashes
        .iter()
        .enumerate()
        .map(|(i, h)| match h {
            Err(e) => Some(e.clone()),
            Ok(h) => match first_of.get(h.as_str()) {
                Some(&j) => Some(format!(
                    "byte-identical to {} (grade {}), used once",
                    records[j].id, records[j].level
                )),
                None => {
                    first_of.insert(h, i);
                    None
                }
            },
        })
        .collect();
    let patients: Vec<&str> = records.iter().map(|r| r.patient.as_str()).collect();
    let positive: Vec<bool> = records.iter().map(|r| opts.positive.of(r.level)).collect();
    let keys: Vec<&str> = hash_keys.iter().map(String::as_str).collect();
    let splits = assign(&patients, &keys, &positive, opts.val, opts.test, opts.seed);

    // Pass 2: per split, preprocess in parallel straight into the memory-mapped file.
    let item = opts.spec.size * opts.spec.size * 3;
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let mut split_infos = BTreeMap::new();
    for split in Split::ALL {
        let idx: Vec<usize> = (0..records.len()).filter(|&i| splits[i] == split).collect();
        if idx.is_empty() {
            continue;
        }
        let file_name = format!("{}.u8", split.name());
        let path = out.join(&file_name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.set_len((idx.len() * item) as u64)
            .with_context(|| format!("sizing {}", path.display()))?;
        // SAFETY: the file was just created by us and is not resized or shared while mapped.
        let mut map = unsafe { MmapMut::map_mut(&file) }
            .with_context(|| format!("mapping {}", path.display()))?;
        let pb = bar(idx.len(), split.name(), opts.progress);
        let done = AtomicUsize::new(0);
        let results: Vec<Result<(), String>> = map
            .par_chunks_mut(item)
            .zip(idx.par_iter())
            .map_init(Workspace::default, |ws, (slot, &i)| {
                let r = &records[i];
                let res = (|| -> Result<(), String> {
                    if let Some(reason) = &pre_skip[i] {
                        return Err(reason.clone());
                    }
                    let bytes = std::fs::read(&r.path).map_err(|e| format!("reading: {e}"))?;
                    let photo =
                        drscreen_core::decode::decode_rgb8(&bytes).map_err(|e| e.to_string())?;
                    let out = ws
                        .preprocess(&photo.rgb, photo.width, photo.height, &spec)
                        .map_err(|e| e.to_string())?;
                    slot.copy_from_slice(&out);
                    Ok(())
                })();
                done.fetch_add(1, Ordering::Relaxed);
                pb.inc(1);
                res
            })
            .collect();
        pb.finish_and_clear();
        // Compact the good rows to the front, in table order, and record them.
        let mut row = 0;
        let mut positives = 0;
        for (k, (&i, res)) in idx.iter().zip(&results).enumerate() {
            let r = &records[i];
            match res {
                Ok(()) => {
                    if row != k {
                        map.copy_within(k * item..(k + 1) * item, row * item);
                    }
                    positives += positive[i] as usize;
                    entries.push(Entry {
                        id: r.id.clone(),
                        source: r.path.clone(),
                        sha256: hash_keys[i].clone(),
                        level: r.level,
                        label: positive[i],
                        patient: r.patient.clone(),
                        split,
                        index: row,
                    });
                    row += 1;
                }
                Err(reason) => skipped.push(Skipped {
                    id: r.id.clone(),
                    source: r.path.clone(),
                    reason: reason.clone(),
                }),
            }
        }
        map.flush()
            .with_context(|| format!("writing {}", path.display()))?;
        drop(map);
        file.set_len((row * item) as u64)
            .with_context(|| format!("truncating {}", path.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", path.display()))?;
        split_infos.insert(
            split,
            SplitInfo {
                file: file_name,
                count: row,
                positives,
            },
        );
    }
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        labels: labels.to_path_buf(),
        layout,
        positive: opts.positive,
        seed: opts.seed,
        val_fraction: opts.val,
        test_fraction: opts.test,
        spec: opts.spec.clone(),
        splits: split_infos,
        entries,
        skipped,
    };
    let path = out.join(MANIFEST);
    std::fs::write(&path, serde_json::to_string_pretty(&manifest)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(manifest)
}

/// One split of an opened cache.
#[derive(Debug)]
pub struct SplitData {
    map: Mmap,
    pub size: usize,
    pub labels: Vec<bool>,
    pub levels: Vec<u8>,
    pub ids: Vec<String>,
}

impl SplitData {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// RGB8 bytes of photo `i` (`size * size * 3`).
    pub fn image(&self, i: usize) -> &[u8] {
        let item = self.size * self.size * 3;
        &self.map[i * item..(i + 1) * item]
    }
}

/// A cache opened for reading.
#[derive(Debug)]
pub struct Cache {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Cache {
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (run `host-trainer prepare` first)",
                path.display()
            )
        })?;
        let manifest: Manifest =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        ensure!(
            manifest.version == MANIFEST_VERSION,
            "{}: cache version {} (this build reads {MANIFEST_VERSION})",
            path.display(),
            manifest.version
        );
        Ok(Cache {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// Maps one split; errors if the split is absent or its file does not match the manifest.
    pub fn split(&self, split: Split) -> Result<SplitData> {
        let Some(info) = self.manifest.splits.get(&split) else {
            bail!("cache {} has no {} split", self.dir.display(), split.name());
        };
        let size = self.manifest.spec.size;
        let path = self.dir.join(&info.file);
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let expected = (info.count * size * size * 3) as u64;
        let actual = file.metadata()?.len();
        ensure!(
            actual == expected,
            "{}: {actual} bytes, manifest says {expected}: the cache is damaged, re-run prepare",
            path.display()
        );
        // SAFETY: read-only map of a file this process does not modify.
        let map =
            unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        let mut entries: Vec<&Entry> = self
            .manifest
            .entries
            .iter()
            .filter(|e| e.split == split)
            .collect();
        entries.sort_by_key(|e| e.index);
        Ok(SplitData {
            map,
            size,
            labels: entries.iter().map(|e| e.label).collect(),
            levels: entries.iter().map(|e| e.level).collect(),
            ids: entries.iter().map(|e| e.id.clone()).collect(),
        })
    }
}
