//! A folder (and its subfolders, as cameras write `DCIM/100XXXXX/`) a fundus camera writes
//! JPEG/PNG files into. A file is screened once it is complete: its size and modification time
//! are unchanged over two polls and for at least [`Watcher::settle`], it ends as its format says a
//! file ends (JPEG `FF D9`, PNG `IEND` chunk) *and* the whole file decodes (a JPEG paused right
//! after its EXIF thumbnail ends in `FF D9` too). Files already in the results log with the same
//! path *and* content hash are not screened again, so a restart never screens a photo twice,
//! while a new photo saved under a name already screened is screened as soon as it is complete.
//!
//! A file that stops changing but never ends as a photo ends (the camera died mid-write, the card
//! was pulled out) is handed out once, after [`Watcher::incomplete_after`] without a change, to be
//! reported as ungradable; its path and hash go into the log like a screening's, so a restart does
//! not report it again. If it changes later (the camera finishes it after all), it is watched anew.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// How long a file may stay unchanged and incomplete before it is reported (`watch` default).
pub const INCOMPLETE_AFTER: Duration = Duration::from_secs(30);

/// How long a file's size and mtime must stay still before it is read (`watch` default).
pub const SETTLE: Duration = Duration::from_secs(1);

/// How deep below the watched folder photos are looked for.
pub const MAX_DEPTH: usize = 6;

/// Whether a JPEG/PNG file is whole: it ends as its format ends and decodes. Bytes that are
/// neither JPEG nor PNG are as complete as they will get: screening reports them as not a photo.
pub fn is_complete(bytes: &[u8]) -> bool {
    if bytes.is_empty() || !looks_complete(bytes) {
        return false;
    }
    let photo_magic = bytes.starts_with(&[0xFF, 0xD8]) || bytes.starts_with(b"\x89PNG\r\n\x1a\n");
    !photo_magic || drscreen_core::decode::decode_rgb8(bytes).is_ok()
}

/// Whether the bytes end as a whole JPEG or PNG file does.
pub fn looks_complete(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let b = &bytes[..end];
    if b.starts_with(&[0xFF, 0xD8]) {
        return b.ends_with(&[0xFF, 0xD9]);
    }
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        // The IEND chunk: length 0, type, CRC.
        return b.len() >= 12 && &b[b.len() - 8..b.len() - 4] == b"IEND";
    }
    // Anything else is as complete as it will get: screening will report it as not an image.
    true
}

/// Whether the name says JPEG or PNG (`.jpg`, `.jpeg`, `.png`, any case).
pub fn is_photo(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

/// What one poll found.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// Complete, stable and not screened before: screen it.
    Photo(PathBuf),
    /// Unchanged for `stalled` but never ended as a JPEG/PNG ends (or still empty): report it
    /// once as ungradable ([`Found::reason`]).
    StayedIncomplete {
        path: PathBuf,
        /// SHA-256 of the bytes it stayed at (goes into the record, so a restart skips it).
        sha256: String,
        bytes: u64,
        stalled: Duration,
    },
}

impl Found {
    pub fn path(&self) -> &Path {
        match self {
            Found::Photo(p) | Found::StayedIncomplete { path: p, .. } => p,
        }
    }

    /// Why a file that stayed incomplete is not screened, and what to do.
    pub fn reason(bytes: u64, stalled: Duration) -> String {
        format!(
            "file stayed incomplete (truncated, {bytes} bytes) for {} s: the camera did not finish writing it; take the photo again",
            stalled.as_secs()
        )
    }
}

/// A file as one poll saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    size: u64,
    mtime: Option<SystemTime>,
    /// When this size and mtime were first seen.
    since: Instant,
    /// Read in this state and found incomplete (not read again until it changes or times out).
    incomplete: bool,
}

impl Seen {
    fn same_state(&self, size: u64, mtime: Option<SystemTime>) -> bool {
        self.size == size && self.mtime == mtime
    }
}

/// Polls a folder and hands out each complete, not yet screened photo once, and each file that
/// stayed incomplete once.
#[derive(Debug)]
pub struct Watcher {
    dir: PathBuf,
    incomplete_after: Duration,
    settle: Duration,
    /// Files seen on the previous poll, for the stability and stall checks.
    last: HashMap<PathBuf, Seen>,
    /// Complete files already handed out (or found in the log), with the size and mtime they
    /// had then: a change makes the file a new photo.
    done: HashMap<PathBuf, (u64, Option<SystemTime>)>,
    /// Files reported as incomplete, with the size and mtime they were reported at.
    reported: HashMap<PathBuf, (u64, Option<SystemTime>)>,
    logged: HashSet<(PathBuf, String)>,
}

impl Watcher {
    /// `already_screened`: (image path, sha256) pairs found in the results log of earlier runs.
    pub fn new(
        dir: &Path,
        already_screened: impl IntoIterator<Item = (PathBuf, String)>,
    ) -> Result<Self> {
        std::fs::read_dir(dir)
            .with_context(|| format!("cannot watch {}: not a readable folder", dir.display()))?;
        Ok(Watcher {
            dir: dir.to_path_buf(),
            incomplete_after: INCOMPLETE_AFTER,
            settle: SETTLE,
            last: HashMap::new(),
            done: HashMap::new(),
            reported: HashMap::new(),
            logged: already_screened.into_iter().collect(),
        })
    }

    /// How long a file must stay unchanged and incomplete before it is reported
    /// (default [`INCOMPLETE_AFTER`]).
    pub fn incomplete_after(mut self, d: Duration) -> Self {
        self.incomplete_after = d;
        self
    }

    /// How long a file's size and mtime must stay still before it is read (default
    /// [`SETTLE`]).
    pub fn settle(mut self, d: Duration) -> Self {
        self.settle = d;
        self
    }

    /// The watched folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One poll now.
    pub fn poll(&mut self) -> Result<Vec<Found>> {
        self.poll_at(Instant::now())
    }

    /// One poll, with `now` as the current time (tests pass their own clock): the photos that
    /// became complete since the last poll and the files that stayed incomplete too long, in
    /// name order.
    pub fn poll_at(&mut self, now: Instant) -> Result<Vec<Found>> {
        let mut seen = HashMap::new();
        for (p, m) in photo_files(&self.dir)? {
            let (size, mtime) = (m.len(), m.modified().ok());
            if self.done.get(&p) == Some(&(size, mtime))
                || self.reported.get(&p) == Some(&(size, mtime))
            {
                continue;
            }
            self.done.remove(&p);
            self.reported.remove(&p);
            let s = match self.last.get(&p) {
                Some(s) if s.same_state(size, mtime) => *s,
                _ => Seen {
                    size,
                    mtime,
                    since: now,
                    incomplete: false,
                },
            };
            seen.insert(p, s);
        }
        let mut stable: Vec<PathBuf> = seen
            .iter()
            .filter(|(p, s)| {
                self.last
                    .get(*p)
                    .is_some_and(|l| l.same_state(s.size, s.mtime))
            })
            .map(|(p, _)| p.clone())
            .collect();
        stable.sort();
        let mut found = Vec::new();
        for p in stable {
            let Some(s) = seen.get_mut(&p) else { continue };
            let stalled = now.saturating_duration_since(s.since);
            let timed_out = stalled >= self.incomplete_after;
            if stalled < self.settle || (s.incomplete && !timed_out) {
                continue;
            }
            let Ok(bytes) = drscreen_core::decode::read_photo(&p) else {
                continue;
            };
            let complete = is_complete(&bytes);
            if !complete && !timed_out {
                s.incomplete = true;
                continue;
            }
            let sha = format!("{:x}", Sha256::digest(&bytes));
            let logged = self.logged.contains(&(p.clone(), sha.clone()));
            if complete {
                self.done.insert(p.clone(), (s.size, s.mtime));
                if !logged {
                    self.logged.insert((p.clone(), sha));
                    found.push(Found::Photo(p));
                }
            } else {
                self.reported.insert(p.clone(), (s.size, s.mtime));
                if !logged {
                    found.push(Found::StayedIncomplete {
                        path: p,
                        sha256: sha,
                        bytes: bytes.len() as u64,
                        stalled,
                    });
                }
            }
        }
        self.last = seen;
        Ok(found)
    }
}

/// The JPEG/PNG files under `dir` (subfolders to [`MAX_DEPTH`], hidden entries and symbolic
/// links to folders skipped), with their metadata. Only the watched folder itself must be
/// readable: a subfolder that vanishes or cannot be read mid-walk is skipped.
fn photo_files(dir: &Path) -> Result<Vec<(PathBuf, std::fs::Metadata)>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if depth == 0 => {
                return Err(e).with_context(|| format!("reading {}", d.display()))
            }
            Err(_) => continue,
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(t) = e.file_type() else { continue };
            let p = e.path();
            if t.is_dir() {
                if depth < MAX_DEPTH {
                    stack.push((p, depth + 1));
                }
            } else if is_photo(&p) {
                // A link to a file is followed.
                let m = if t.is_symlink() {
                    std::fs::metadata(&p)
                } else {
                    e.metadata()
                };
                if let Some(m) = m.ok().filter(|m| m.is_file()) {
                    out.push((p, m));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg() -> Vec<u8> {
        let mut jpeg = Vec::new();
        image::RgbImage::from_pixel(64, 64, image::Rgb([200, 80, 30]))
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        jpeg
    }

    fn photos(found: Vec<Found>) -> Vec<PathBuf> {
        found
            .into_iter()
            .map(|f| match f {
                Found::Photo(p) => p,
                other => panic!("expected a complete photo, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_file_is_handed_out_once_only_when_complete_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let jpeg = jpeg();
        let p = dir.path().join("a.jpg");
        std::fs::write(&p, &jpeg[..jpeg.len() / 2]).unwrap();
        let mut w = Watcher::new(dir.path(), []).unwrap().settle(Duration::ZERO);
        assert!(
            photos(w.poll().unwrap()).is_empty(),
            "first sight: not yet stable"
        );
        assert!(
            photos(w.poll().unwrap()).is_empty(),
            "stable but truncated: never screened half a file"
        );
        std::fs::write(&p, &jpeg).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let first = photos(w.poll().unwrap());
        assert!(first.is_empty(), "size changed: wait one more poll");
        assert_eq!(photos(w.poll().unwrap()), vec![p.clone()]);
        assert!(photos(w.poll().unwrap()).is_empty(), "handed out once");
        let sha = format!("{:x}", Sha256::digest(&jpeg));
        let mut restarted = Watcher::new(dir.path(), [(p.clone(), sha)])
            .unwrap()
            .settle(Duration::ZERO);
        photos(restarted.poll().unwrap());
        assert!(
            photos(restarted.poll().unwrap()).is_empty(),
            "already in the log: not screened again"
        );
        let mut renamed_reuse =
            Watcher::new(dir.path(), [(p.clone(), "another photo".to_string())])
                .unwrap()
                .settle(Duration::ZERO);
        photos(renamed_reuse.poll().unwrap());
        assert_eq!(
            photos(renamed_reuse.poll().unwrap()),
            vec![p.clone()],
            "same name, new photo: screened"
        );
        assert!(Watcher::new(&dir.path().join("missing"), []).is_err());
    }

    #[test]
    fn a_file_that_stays_incomplete_is_reported_once_after_the_timeout_and_never_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let jpeg = jpeg();
        let half = &jpeg[..jpeg.len() / 2];
        let p = dir.path().join("cut.jpg");
        std::fs::write(&p, half).unwrap();
        std::fs::write(dir.path().join("empty.png"), b"").unwrap();
        let after = Duration::from_secs(30);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = Watcher::new(dir.path(), [])
            .unwrap()
            .incomplete_after(after);
        assert_eq!(w.poll_at(at(0)).unwrap(), []);
        assert_eq!(
            w.poll_at(at(1)).unwrap(),
            [],
            "stable, incomplete, not yet timed out"
        );
        assert_eq!(w.poll_at(at(29)).unwrap(), []);
        let found = w.poll_at(at(31)).unwrap();
        let sha = format!("{:x}", Sha256::digest(half));
        assert_eq!(
            found,
            [
                Found::StayedIncomplete {
                    path: p.clone(),
                    sha256: sha.clone(),
                    bytes: half.len() as u64,
                    stalled: Duration::from_secs(31),
                },
                Found::StayedIncomplete {
                    path: dir.path().join("empty.png"),
                    sha256: format!("{:x}", Sha256::digest(b"")),
                    bytes: 0,
                    stalled: Duration::from_secs(31),
                },
            ]
        );
        assert!(
            Found::reason(half.len() as u64, Duration::from_secs(31)).starts_with(&format!(
                "file stayed incomplete (truncated, {} bytes) for 31 s",
                half.len()
            ))
        );
        assert_eq!(w.poll_at(at(100)).unwrap(), [], "reported once");
        assert_eq!(w.poll_at(at(1000)).unwrap(), [], "reported once");

        // A restart reads (path, hash) back from the log: the same truncated file stays quiet.
        let mut restarted = Watcher::new(dir.path(), [(p.clone(), sha)])
            .unwrap()
            .incomplete_after(after);
        let empty = restarted
            .poll_at(at(0))
            .and_then(|_| restarted.poll_at(at(40)))
            .unwrap();
        assert_eq!(
            empty.iter().map(Found::path).collect::<Vec<_>>(),
            [dir.path().join("empty.png").as_path()],
            "only the file not in the log is reported"
        );
        assert_eq!(restarted.poll_at(at(80)).unwrap(), []);

        // The camera finishes the file after all: it is a new photo and gets screened.
        std::fs::write(&p, &jpeg).unwrap();
        assert_eq!(restarted.poll_at(at(81)).unwrap(), []);
        assert_eq!(
            restarted.poll_at(at(82)).unwrap(),
            [Found::Photo(p.clone())]
        );
    }

    /// A JPEG with an EXIF thumbnail (a whole JPEG inside APP1) in front of the main image.
    fn jpeg_with_thumbnail() -> (Vec<u8>, usize) {
        let main = jpeg();
        let mut thumb = Vec::new();
        image::RgbImage::from_pixel(8, 8, image::Rgb([90, 40, 20]))
            .write_to(
                &mut std::io::Cursor::new(&mut thumb),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        let mut payload = b"Exif\0\0".to_vec();
        payload.extend_from_slice(&thumb);
        let mut file = vec![0xFF, 0xD8, 0xFF, 0xE1];
        file.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        file.extend_from_slice(&payload);
        let thumbnail_end = file.len();
        file.extend_from_slice(&main[2..]);
        (file, thumbnail_end)
    }

    #[test]
    fn a_jpeg_paused_after_its_thumbnail_is_not_whole_and_is_screened_once_finished() {
        let (file, cut) = jpeg_with_thumbnail();
        assert!(drscreen_core::decode::decode_rgb8(&file).is_ok());
        assert!(
            looks_complete(&file[..cut]),
            "ends in FF D9: the old test was fooled"
        );
        assert!(!is_complete(&file[..cut]));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("exif.jpg");
        std::fs::write(&p, &file[..cut]).unwrap();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = Watcher::new(dir.path(), []).unwrap();
        assert_eq!(w.poll_at(at(0)).unwrap(), []);
        assert_eq!(
            w.poll_at(at(1500)).unwrap(),
            [],
            "paused after the thumbnail"
        );
        std::fs::write(&p, &file).unwrap();
        assert_eq!(w.poll_at(at(2000)).unwrap(), []);
        assert_eq!(w.poll_at(at(2500)).unwrap(), [], "still settling");
        assert_eq!(w.poll_at(at(3100)).unwrap(), [Found::Photo(p.clone())]);
    }

    #[test]
    fn a_new_photo_under_a_screened_name_and_photos_in_subfolders_are_screened() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("DCIM/100CAMERA");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::create_dir_all(dir.path().join(".thumbnails")).unwrap();
        std::fs::write(dir.path().join(".thumbnails/t.jpg"), jpeg()).unwrap();
        let p = sub.join("IMG_0001.jpg");
        std::fs::write(&p, jpeg()).unwrap();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = Watcher::new(dir.path(), []).unwrap();
        assert_eq!(w.poll_at(at(0)).unwrap(), []);
        assert_eq!(
            w.poll_at(at(2)).unwrap(),
            [Found::Photo(p.clone())],
            "hidden folder skipped"
        );
        assert_eq!(w.poll_at(at(4)).unwrap(), []);
        // The camera saves the next photo under the same name.
        let (other, _) = jpeg_with_thumbnail();
        std::fs::write(&p, &other).unwrap();
        assert_eq!(w.poll_at(at(5)).unwrap(), []);
        assert_eq!(w.poll_at(at(7)).unwrap(), [Found::Photo(p.clone())]);
        // Touched but the same bytes: not screened twice.
        std::fs::write(&p, &other).unwrap();
        let f = std::fs::File::options().append(true).open(&p).unwrap();
        f.set_modified(std::time::SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        assert_eq!(w.poll_at(at(8)).unwrap(), []);
        assert_eq!(w.poll_at(at(10)).unwrap(), [], "same content as screened");
    }
}
