//! The preprocessed cache: one uint8 file per split (N x H x W x 3, the model's RGB8 input after
//! drscreen-core's pipeline), memory-mapped for training, and a manifest that says what is in it:
//! every photo's source, the sources' licences, and how each was split.
//!
//! In the field-of-view geometry a second file per split (`<split>.raw.u8`) keeps each photo's disc
//! square at the input size before CLAHE, where the trainer's camera augmentation works; the model
//! input is that square through the core's CLAHE, byte for byte what the device computes.

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

use super::labels::{Layout, Positive};
use super::sources::{Source, SourceRecords};
use super::split::{assign, Split};

pub const MANIFEST: &str = "manifest.json";
const MANIFEST_VERSION: u32 = 2;
/// Input sides `prepare` accepts: the network downsamples 32x, and the device's memory bounds it.
pub const SIZES: std::ops::RangeInclusive<usize> = 32..=1024;

/// One cached photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    /// The source (data spec name) the photo came from.
    pub source: String,
    pub path: PathBuf,
    pub sha256: String,
    pub level: u8,
    pub label: bool,
    pub patient: String,
    pub split: Split,
    /// Row in the split's file.
    pub index: usize,
}

/// The raw (pre-CLAHE) file of a split in the field-of-view geometry.
fn raw_file(split_file: &str) -> String {
    split_file.replace(".u8", ".raw.u8")
}

/// A photo that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub id: String,
    pub source: String,
    pub path: PathBuf,
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
    /// The field-of-view geometry (contract version 2); `None`: the whole frame (version 1).
    #[serde(default)]
    pub fov: Option<drscreen_core::FovParams>,
}

impl CacheSpec {
    /// The settings in which `self` (a cache) differs from `want` (a model's), each as
    /// "name: cache X, model Y", and the `prepare` options that make a matching cache.
    pub fn mismatch(&self, want: &CacheSpec) -> Option<String> {
        let mut d = Vec::new();
        let mut diff = |name: &str, have: String, want: String| {
            if have != want {
                d.push(format!("{name}: cache {have}, model {want}"));
            }
        };
        diff("size", self.size.to_string(), want.size.to_string());
        diff(
            "CLAHE clip limit",
            self.clip_limit.to_string(),
            want.clip_limit.to_string(),
        );
        diff(
            "CLAHE tiles",
            format!("{}x{}", self.tiles_x, self.tiles_y),
            format!("{}x{}", want.tiles_x, want.tiles_y),
        );
        diff(
            "interpolation",
            format!("{:?}", self.interpolation),
            format!("{:?}", want.interpolation),
        );
        let geometry = |f: &Option<drscreen_core::FovParams>| match f {
            None => "whole frame".to_string(),
            Some(p) => format!(
                "fundus disc (threshold {}, min {})",
                p.threshold, p.min_fraction
            ),
        };
        diff("geometry", geometry(&self.fov), geometry(&want.fov));
        if d.is_empty() {
            return None;
        }
        let mut run = format!(
            "host-trainer prepare --size {} --clip-limit {} --tiles {}",
            want.size, want.clip_limit, want.tiles_x
        );
        if want.fov.is_none() {
            run.push_str(" --whole-frame");
        }
        Some(format!(
            "{}; prepare a matching cache: {run} ...",
            d.join("; ")
        ))
    }

    pub fn clahe_params(&self) -> drscreen_core::ClaheParams {
        self.preprocess().clahe
    }

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
            fov: self.fov,
        }
    }
}

/// One source as prepared: its spec, table layout and per-split counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    #[serde(flatten)]
    pub source: Source,
    pub layout: Layout,
    pub splits: BTreeMap<Split, SplitInfo>,
    pub skipped: usize,
}

/// What `prepare` wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub sources: Vec<SourceInfo>,
    pub positive: Positive,
    pub seed: u64,
    pub val_fraction: f64,
    pub test_fraction: f64,
    pub spec: CacheSpec,
    pub splits: BTreeMap<Split, SplitInfo>,
    pub entries: Vec<Entry>,
    pub skipped: Vec<Skipped>,
}

impl Manifest {
    /// Sources and licences in one line: `idrid (CC BY 4.0) + aptos2019 (...)`.
    pub fn sources_summary(&self) -> String {
        self.sources
            .iter()
            .map(|s| format!("{} ({})", s.source.name, s.source.licence))
            .collect::<Vec<_>>()
            .join(" + ")
    }
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

/// Creates `path` sized for `rows` items of `item` bytes and maps it for writing.
fn create_mapped(path: &Path, rows: usize, item: usize) -> Result<(File, MmapMut)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.set_len((rows * item) as u64)
        .with_context(|| format!("sizing {}", path.display()))?;
    // SAFETY: the file was just created by us and is not resized or shared while mapped.
    let map = unsafe { MmapMut::map_mut(&file) }
        .with_context(|| format!("mapping {}", path.display()))?;
    Ok((file, map))
}

/// Flushes a mapped split file, cuts it to `rows` items and syncs it.
fn finish_mapped(path: &Path, file: File, map: MmapMut, rows: usize, item: usize) -> Result<()> {
    map.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    drop(map);
    file.set_len((rows * item) as u64)
        .with_context(|| format!("truncating {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))
}

/// Hashes, splits (each source on its own, so every source has its val part) and preprocesses
/// every source's photos into `out`. Unreadable or undecodable photos are skipped with their
/// reason (and counted in the manifest); a source of which no photo could be read is an error.
pub fn prepare(sources: &[SourceRecords], out: &Path, opts: &PrepareOptions) -> Result<Manifest> {
    ensure!(!sources.is_empty(), "no sources to prepare");
    ensure!(
        SIZES.contains(&opts.spec.size),
        "input size {} is outside {}..={} pixels (the network downsamples 32x; 224 is the shipped size)",
        opts.spec.size,
        SIZES.start(),
        SIZES.end()
    );
    ensure!(
        (0.0..=1.0).contains(&(opts.val + opts.test)),
        "val + test fractions must be within 0..=1"
    );
    // (source index, record) in source order.
    let records: Vec<(usize, &super::labels::Record)> = sources
        .iter()
        .enumerate()
        .flat_map(|(k, s)| s.records.iter().map(move |r| (k, r)))
        .collect();
    ensure!(!records.is_empty(), "no records to prepare");
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let spec = opts.spec.preprocess();

    // Pass 1: content hashes (duplicates must stay together), reading errors recorded.
    let pb = bar(records.len(), "hashing", opts.progress);
    let hashes: Vec<Result<String, String>> = records
        .par_iter()
        .map(|(_, r)| {
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
    // A byte-identical copy (same photo filed twice, possibly under two grades, or in two
    // sources) is used once: the first in table order is kept, later copies are skipped.
    let mut first_of: std::collections::HashMap<&str, usize> = Default::default();
    let pre_skip: Vec<Option<String>> = hashes
        .iter()
        .enumerate()
        .map(|(i, h)| match h {
            Err(e) => Some(e.clone()),
            Ok(h) => match first_of.get(h.as_str()) {
                Some(&j) => Some(format!(
                    "byte-identical to {} of {} (grade {}), used once",
                    records[j].1.id, sources[records[j].0].source.name, records[j].1.level
                )),
                None => {
                    first_of.insert(h, i);
                    None
                }
            },
        })
        .collect();
    let positive: Vec<bool> = records
        .iter()
        .map(|(_, r)| opts.positive.of_record(r))
        .collect();
    let mut splits = Vec::with_capacity(records.len());
    let mut offset = 0;
    for s in sources {
        let n = s.records.len();
        let patients: Vec<&str> = s.records.iter().map(|r| r.patient.as_str()).collect();
        let keys: Vec<&str> = hash_keys[offset..offset + n]
            .iter()
            .map(String::as_str)
            .collect();
        splits.extend(assign(
            &patients,
            &keys,
            &s.near_duplicates,
            &positive[offset..offset + n],
            opts.val,
            opts.test,
            opts.seed,
        ));
        offset += n;
    }

    // Pass 2: per split, preprocess in parallel straight into the memory-mapped file(s).
    let item = opts.spec.size * opts.spec.size * 3;
    let raw = spec.fov.is_some();
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    let mut split_infos = BTreeMap::new();
    let mut per_source: Vec<BTreeMap<Split, SplitInfo>> = vec![BTreeMap::new(); sources.len()];
    for split in Split::ALL {
        let idx: Vec<usize> = (0..records.len()).filter(|&i| splits[i] == split).collect();
        if idx.is_empty() {
            continue;
        }
        let file_name = format!("{}.u8", split.name());
        let path = out.join(&file_name);
        let raw_path = out.join(raw_file(&file_name));
        let (file, mut map) = create_mapped(&path, idx.len(), item)?;
        let (raw_file_handle, mut raw_map) = if raw {
            let (f, m) = create_mapped(&raw_path, idx.len(), item)?;
            (Some(f), Some(m))
        } else {
            let _ = std::fs::remove_file(&raw_path);
            (None, None)
        };
        let mut raw_chunks: Vec<Option<&mut [u8]>> = match raw_map.as_mut() {
            Some(m) => m.chunks_mut(item).map(Some).collect(),
            None => (0..idx.len()).map(|_| None).collect(),
        };
        let pb = bar(idx.len(), split.name(), opts.progress);
        let done = AtomicUsize::new(0);
        let results: Vec<Result<(), String>> = map
            .par_chunks_mut(item)
            .zip(raw_chunks.par_iter_mut())
            .zip(idx.par_iter())
            .map_init(Workspace::default, |ws, ((slot, raw_slot), &i)| {
                let r = records[i].1;
                let res = (|| -> Result<(), String> {
                    if let Some(reason) = &pre_skip[i] {
                        return Err(reason.clone());
                    }
                    let bytes = std::fs::read(&r.path).map_err(|e| format!("reading: {e}"))?;
                    let photo =
                        drscreen_core::decode::decode_rgb8(&bytes).map_err(|e| e.to_string())?;
                    match raw_slot {
                        Some(raw_slot) => {
                            let (square, _) = ws
                                .fov_stage(&photo.rgb, photo.width, photo.height, &spec)
                                .map_err(|e| e.to_string())?;
                            let eq = ws
                                .equalise(&square, spec.out_width, spec.out_height, &spec.clahe)
                                .map_err(|e| e.to_string())?;
                            raw_slot.copy_from_slice(&square);
                            slot.copy_from_slice(&eq);
                        }
                        None => {
                            let out = ws
                                .preprocess(&photo.rgb, photo.width, photo.height, &spec)
                                .map_err(|e| e.to_string())?;
                            slot.copy_from_slice(&out);
                        }
                    }
                    Ok(())
                })();
                done.fetch_add(1, Ordering::Relaxed);
                pb.inc(1);
                res
            })
            .collect();
        drop(raw_chunks);
        pb.finish_and_clear();
        // Compact the good rows to the front, in table order, and record them.
        let mut row = 0;
        let mut positives = 0;
        for (k, (&i, res)) in idx.iter().zip(&results).enumerate() {
            let (src, r) = records[i];
            let name = &sources[src].source.name;
            match res {
                Ok(()) => {
                    if row != k {
                        map.copy_within(k * item..(k + 1) * item, row * item);
                        if let Some(m) = raw_map.as_mut() {
                            m.copy_within(k * item..(k + 1) * item, row * item);
                        }
                    }
                    positives += positive[i] as usize;
                    let info = per_source[src].entry(split).or_insert(SplitInfo {
                        file: file_name.clone(),
                        count: 0,
                        positives: 0,
                    });
                    info.count += 1;
                    info.positives += positive[i] as usize;
                    entries.push(Entry {
                        id: r.id.clone(),
                        source: name.clone(),
                        path: r.path.clone(),
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
                    source: name.clone(),
                    path: r.path.clone(),
                    reason: reason.clone(),
                }),
            }
        }
        finish_mapped(&path, file, map, row, item)?;
        if let (Some(f), Some(m)) = (raw_file_handle, raw_map) {
            finish_mapped(&raw_path, f, m, row, item)?;
        }
        split_infos.insert(
            split,
            SplitInfo {
                file: file_name,
                count: row,
                positives,
            },
        );
    }
    for (k, s) in sources.iter().enumerate() {
        if per_source[k].is_empty() {
            let first = skipped.iter().find(|x| x.source == s.source.name);
            bail!(
                "source `{}`: none of its {} photos could be read{} (nothing was written for it; check its image folder with --images or the data spec)",
                s.source.name,
                s.records.len(),
                first.map_or(String::new(), |x| format!(", e.g. {}: {}", x.path.display(), x.reason))
            );
        }
    }
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        sources: sources
            .iter()
            .zip(per_source)
            .map(|(s, splits)| SourceInfo {
                source: s.source.clone(),
                layout: s.layout,
                splits,
                skipped: skipped.iter().filter(|x| x.source == s.source.name).count(),
            })
            .collect(),
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
    raw: Option<Mmap>,
    pub size: usize,
    pub labels: Vec<bool>,
    pub levels: Vec<u8>,
    pub ids: Vec<String>,
    /// Source name of each photo.
    pub sources: Vec<String>,
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
    /// Whether the cache is in the field-of-view geometry (a disc square on black).
    pub fn is_fov(&self) -> bool {
        self.raw.is_some()
    }
    /// The photo's disc square before CLAHE (field-of-view caches only).
    pub fn raw_image(&self, i: usize) -> Option<&[u8]> {
        let item = self.size * self.size * 3;
        self.raw.as_ref().map(|m| &m[i * item..(i + 1) * item])
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
            "{}: cache version {} (this build reads {MANIFEST_VERSION}): re-run `host-trainer prepare`",
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
        let raw = if self.manifest.spec.fov.is_some() {
            let path = self.dir.join(raw_file(&info.file));
            let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            ensure!(
                file.metadata()?.len() == expected,
                "{}: not the size the manifest says: the cache is damaged, re-run prepare",
                path.display()
            );
            // SAFETY: as above.
            Some(
                unsafe { Mmap::map(&file) }
                    .with_context(|| format!("mapping {}", path.display()))?,
            )
        } else {
            None
        };
        let mut entries: Vec<&Entry> = self
            .manifest
            .entries
            .iter()
            .filter(|e| e.split == split)
            .collect();
        entries.sort_by_key(|e| e.index);
        Ok(SplitData {
            map,
            raw,
            size,
            labels: entries.iter().map(|e| e.label).collect(),
            levels: entries.iter().map(|e| e.level).collect(),
            ids: entries.iter().map(|e| e.id.clone()).collect(),
            sources: entries.iter().map(|e| e.source.clone()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::CacheSpec;

    fn spec() -> CacheSpec {
        CacheSpec {
            size: 224,
            clip_limit: 2.0,
            tiles_x: 8,
            tiles_y: 8,
            interpolation: drscreen_core::Interpolation::Area,
            fov: Some(drscreen_core::FovParams::default()),
        }
    }

    #[test]
    fn a_mismatch_names_each_setting_that_differs_and_what_to_run() {
        assert_eq!(spec().mismatch(&spec()), None);
        let mut cache = spec();
        cache.size = 96;
        cache.fov = None;
        let why = cache.mismatch(&spec()).unwrap();
        assert!(why.contains("size: cache 96, model 224"), "{why}");
        assert!(
            why.contains("geometry: cache whole frame, model fundus disc"),
            "{why}"
        );
        assert!(!why.contains("CLAHE"), "{why}");
        assert!(
            why.contains("host-trainer prepare --size 224 --clip-limit 2 --tiles 8"),
            "{why}"
        );
        assert!(!why.contains("--whole-frame"), "{why}");
    }
}
