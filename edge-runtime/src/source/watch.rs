//! A folder a fundus camera writes JPEG/PNG files into. A file is screened once it is complete:
//! its size and modification time are unchanged over two polls *and* it ends as its format says a
//! file ends (JPEG `FF D9`, PNG `IEND` chunk). Files already in the results log with the same path
//! *and* content hash are not screened again, so a restart never screens a photo twice, while a
//! camera that reuses a file name for a new photo still gets it screened.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

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

fn is_photo(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

/// Polls a folder and hands out each complete, not yet screened photo once.
#[derive(Debug)]
pub struct Watcher {
    dir: PathBuf,
    /// (path, size, mtime) seen on the previous poll, for the stability check.
    last: HashMap<PathBuf, (u64, Option<SystemTime>)>,
    done: HashSet<PathBuf>,
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
            last: HashMap::new(),
            done: HashSet::new(),
            logged: already_screened.into_iter().collect(),
        })
    }

    /// One poll: the photos that became complete since the last poll, in name order.
    pub fn poll(&mut self) -> Result<Vec<PathBuf>> {
        let mut now = HashMap::new();
        let entries = std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            if !is_photo(&p) || self.done.contains(&p) {
                continue;
            }
            if let Ok(m) = e.metadata() {
                if m.is_file() {
                    now.insert(p, (m.len(), m.modified().ok()));
                }
            }
        }
        let mut stable: Vec<&PathBuf> = now
            .iter()
            .filter(|(p, st)| self.last.get(*p) == Some(st) && st.0 > 0)
            .map(|(p, _)| p)
            .collect();
        stable.sort();
        let mut ready = Vec::new();
        for p in stable {
            let Ok(bytes) = std::fs::read(p) else {
                continue;
            };
            if !looks_complete(&bytes) {
                continue;
            }
            self.done.insert(p.clone());
            let sha = format!("{:x}", Sha256::digest(&bytes));
            if !self.logged.contains(&(p.clone(), sha)) {
                ready.push(p.clone());
            }
        }
        self.last = now;
        Ok(ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_handed_out_once_only_when_complete_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let mut jpeg = Vec::new();
        image::RgbImage::from_pixel(64, 64, image::Rgb([200, 80, 30]))
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        let p = dir.path().join("a.jpg");
        std::fs::write(&p, &jpeg[..jpeg.len() / 2]).unwrap();
        let mut w = Watcher::new(dir.path(), []).unwrap();
        assert!(w.poll().unwrap().is_empty(), "first sight: not yet stable");
        assert!(
            w.poll().unwrap().is_empty(),
            "stable but truncated: never screened half a file"
        );
        std::fs::write(&p, &jpeg).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let first = w.poll().unwrap();
        assert!(first.is_empty(), "size changed: wait one more poll");
        assert_eq!(w.poll().unwrap(), vec![p.clone()]);
        assert!(w.poll().unwrap().is_empty(), "handed out once");
        let sha = format!("{:x}", Sha256::digest(&jpeg));
        let mut restarted = Watcher::new(dir.path(), [(p.clone(), sha)]).unwrap();
        restarted.poll().unwrap();
        assert!(
            restarted.poll().unwrap().is_empty(),
            "already in the log: not screened again"
        );
        let mut renamed_reuse =
            Watcher::new(dir.path(), [(p.clone(), "another photo".to_string())]).unwrap();
        renamed_reuse.poll().unwrap();
        assert_eq!(
            renamed_reuse.poll().unwrap(),
            vec![p.clone()],
            "same name, new photo: screened"
        );
        assert!(Watcher::new(&dir.path().join("missing"), []).is_err());
    }
}
