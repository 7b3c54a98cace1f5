//! A camera that writes its photos into a folder (most fundus cameras write JPEGs to a folder or
//! card): after a button press, the newest complete photo that is not older than
//! [`FolderCamera::max_age`] and was not screened before. Completeness, stability and "never
//! twice" come from [`Watcher`]; the age limit keeps a press from screening the previous
//! patient's photo when the camera has not written the new one yet.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use super::watch::{Found, Watcher};
use super::{Camera, Missed, Shot};

/// How long a press waits for the camera to finish writing a photo.
pub const PHOTO_WAIT: Duration = Duration::from_secs(30);
/// Oldest photo a press takes (written this long before the press at most).
pub const MAX_AGE: Duration = Duration::from_secs(120);
/// With the device loop, a photo that stays incomplete this long is reported (within the wait).
pub const INCOMPLETE_AFTER: Duration = Duration::from_secs(10);

/// The folder source of the device loop.
#[derive(Debug)]
pub struct FolderCamera {
    watcher: Watcher,
    /// How long after the press to wait for a complete photo.
    pub wait: Duration,
    /// A photo whose modification time is more than this before the press is not taken.
    pub max_age: Duration,
    /// Poll interval while waiting.
    pub interval: Duration,
}

impl FolderCamera {
    /// A folder camera with the default wait, age limit and a 200 ms poll.
    pub fn new(watcher: Watcher) -> Self {
        FolderCamera {
            watcher,
            wait: PHOTO_WAIT,
            max_age: MAX_AGE,
            interval: Duration::from_millis(200),
        }
    }
}

impl Camera for FolderCamera {
    fn take(&mut self) -> Result<Shot, Missed> {
        let pressed = SystemTime::now();
        let start = Instant::now();
        let dir = self.watcher.dir().display().to_string();
        loop {
            let found = self.watcher.poll().map_err(|e| Missed {
                image: dir.clone(),
                sha256: None,
                reason: format!("{e:#}: check that the camera's folder is mounted"),
            })?;
            let mut newest: Option<(SystemTime, PathBuf)> = None;
            let mut stuck = None;
            for f in found {
                let mtime = std::fs::metadata(f.path())
                    .and_then(|m| m.modified())
                    .unwrap_or(pressed);
                if mtime + self.max_age < pressed {
                    continue; // written before this patient: not this press's photo
                }
                match f {
                    Found::Photo(p) => {
                        if newest.as_ref().is_none_or(|(t, _)| mtime >= *t) {
                            newest = Some((mtime, p));
                        }
                    }
                    Found::StayedIncomplete {
                        path,
                        sha256,
                        bytes,
                        stalled,
                    } => {
                        stuck = Some(Missed {
                            image: path.display().to_string(),
                            sha256: Some(sha256),
                            reason: Found::reason(bytes, stalled),
                        })
                    }
                }
            }
            if let Some((_, p)) = newest {
                let name = p.display().to_string();
                return match drscreen_core::decode::read_photo(&p) {
                    Ok(bytes) => Ok(Shot { name, bytes }),
                    Err(e) => Err(Missed {
                        image: name,
                        sha256: None,
                        reason: format!("cannot read the photo: {e}; take the photo again"),
                    }),
                };
            }
            if let Some(m) = stuck {
                return Err(m);
            }
            if start.elapsed() >= self.wait {
                return Err(Missed {
                    image: dir,
                    sha256: None,
                    reason: format!(
                        "no new photo in {} within {} s of the button press: take the photo with the camera, then press the button",
                        self.watcher.dir().display(),
                        self.wait.as_secs()
                    ),
                });
            }
            std::thread::sleep(self.interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(rgb: [u8; 3]) -> Vec<u8> {
        let mut v = Vec::new();
        image::RgbImage::from_pixel(32, 32, image::Rgb(rgb))
            .write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Jpeg)
            .unwrap();
        v
    }

    fn camera(dir: &std::path::Path, seen: Vec<(PathBuf, String)>) -> FolderCamera {
        let mut c = FolderCamera::new(
            Watcher::new(dir, seen)
                .unwrap()
                .settle(Duration::from_millis(40)),
        );
        c.wait = Duration::from_millis(300);
        c.interval = Duration::from_millis(20);
        c
    }

    #[test]
    fn a_press_takes_the_newest_fresh_photo_never_a_stale_or_already_screened_one() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("previous_patient.jpg");
        std::fs::write(&old, jpeg([1, 2, 3])).unwrap();
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        let mut cam = camera(dir.path(), vec![]);
        let missed = cam.take().unwrap_err();
        assert!(
            missed.reason.starts_with("no new photo in") && missed.reason.contains("then press"),
            "{}",
            missed.reason
        );
        assert_eq!(missed.image, dir.path().display().to_string());

        let (a, b) = (dir.path().join("a.jpg"), dir.path().join("b.jpg"));
        std::fs::write(&a, jpeg([10, 20, 30])).unwrap();
        std::fs::write(&b, jpeg([200, 20, 30])).unwrap();
        let a_time = SystemTime::now() - Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(a_time)
            .unwrap();
        let shot = cam.take().unwrap();
        assert_eq!(
            shot,
            Shot {
                name: b.display().to_string(),
                bytes: jpeg([200, 20, 30])
            }
        );
        assert!(cam.take().is_err(), "the next press does not take it again");

        // After a restart, photos in the log are not taken again.
        let sha = |p: &PathBuf| {
            use sha2::{Digest, Sha256};
            format!("{:x}", Sha256::digest(std::fs::read(p).unwrap()))
        };
        let mut restarted = camera(dir.path(), vec![(b.clone(), sha(&b))]);
        assert_eq!(restarted.take().unwrap().name, a.display().to_string());
    }

    #[test]
    fn a_photo_that_stays_incomplete_after_a_press_is_missed_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let j = jpeg([200, 20, 30]);
        std::fs::write(dir.path().join("cut.jpg"), &j[..j.len() / 2]).unwrap();
        let mut cam = FolderCamera::new(
            Watcher::new(dir.path(), [])
                .unwrap()
                .incomplete_after(Duration::from_millis(50)),
        );
        cam.interval = Duration::from_millis(20);
        let m = cam.take().unwrap_err();
        assert_eq!(m.image, dir.path().join("cut.jpg").display().to_string());
        assert!(m.reason.contains("stayed incomplete"), "{}", m.reason);
        assert!(m.sha256.is_some());
    }
}
