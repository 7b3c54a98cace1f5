//! One screening: bytes -> decode -> quality gate -> preprocessing -> the TTA views through tract
//! ([`crate::engine::Engine::run`]) -> mean -> threshold -> a [`Record`]. Never panics on bad
//! input: anything that cannot be screened becomes an "ungradable" record with the reason.

use std::path::Path;
use std::time::Instant;

use drscreen_core::decode::Photo;
use drscreen_core::{aggregate, decide, write_views, Decision, Workspace};
use sha2::{Digest, Sha256};

use crate::engine::Engine;
use crate::quality::{assess, measure, Limits, Quality};
use crate::record::{now_rfc3339, Latency, Outcome, Record};
use crate::site::Site;

/// The model plus reusable buffers.
#[derive(Debug)]
pub struct Screener {
    pub engine: Engine,
    pub limits: Limits,
    site: Option<Site>,
    ws: Workspace,
    batch: Vec<f32>,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

impl Screener {
    pub fn new(engine: Engine) -> Self {
        Screener {
            engine,
            limits: Limits::default(),
            site: None,
            ws: Workspace::default(),
            batch: Vec::new(),
        }
    }

    /// Screens under a site calibration: its threshold and borderline band replace the model's,
    /// and every record names it. The site must have been checked against this engine's model
    /// ([`Site::load`]).
    pub fn with_site(mut self, site: Site) -> Self {
        self.site = Some(site);
        self
    }

    /// The threshold screenings use: the site's, else the model's.
    pub fn threshold(&self) -> f32 {
        self.site
            .as_ref()
            .map_or(self.engine.contract.threshold(), |s| {
                s.calibration.threshold
            })
    }

    /// The borderline band screenings use: the site's, else the model's (if it declares one).
    pub fn borderline(&self) -> Option<[f32; 2]> {
        match &self.site {
            Some(s) => Some(s.calibration.borderline),
            None => self.engine.contract.borderline(),
        }
    }

    fn record(&self, image: &str, sha: Option<String>) -> Record {
        Record {
            timestamp: now_rfc3339(),
            image: image.to_owned(),
            image_sha256: sha,
            model_sha256: self.engine.sha256.clone(),
            contract_version: self.engine.contract.contract_version,
            outcome: Outcome::Ungradable,
            probability: None,
            per_view: Vec::new(),
            threshold: self.threshold(),
            site: self.site.as_ref().map(|s| s.reference.clone()),
            borderline: false,
            quality: None,
            quality_metrics: None,
            error: None,
            latency: Latency::default(),
        }
    }

    /// An ungradable record for a photo that could not be screened at all (a file that stayed
    /// incomplete, a camera that gave no frame); `reason` says why and what to do next.
    pub fn ungradable(&self, image: &str, sha256: Option<String>, reason: String) -> Record {
        let mut r = self.record(image, sha256);
        r.error = Some(reason);
        r
    }

    /// Screens a file; an unreadable file is an ungradable record.
    pub fn screen_file(&mut self, path: &Path) -> Record {
        let t0 = Instant::now();
        match drscreen_core::decode::read_photo(path) {
            Ok(bytes) => self.screen_bytes(&path.display().to_string(), &bytes, t0),
            Err(e) => {
                let mut r = self.record(&path.display().to_string(), None);
                r.outcome = Outcome::Unreadable;
                r.error = Some(match e.kind() {
                    std::io::ErrorKind::NotFound => "no such file: check the path".to_string(),
                    std::io::ErrorKind::IsADirectory => {
                        "a folder, not a photo: name the photo files".to_string()
                    }
                    _ => format!("cannot read the file: {e}"),
                });
                r.latency.total_ms = ms(t0);
                r
            }
        }
    }

    /// Screens image bytes (`t0`: when the screening started, for the total latency).
    pub fn screen_bytes(&mut self, name: &str, bytes: &[u8], t0: Instant) -> Record {
        let mut r = self.record(name, Some(format!("{:x}", Sha256::digest(bytes))));
        let t = Instant::now();
        let photo = match drscreen_core::decode::decode_rgb8(bytes) {
            Ok(p) => p,
            Err(e) => {
                r.error = Some(format!("cannot decode the photo: {e}"));
                r.latency.total_ms = ms(t0);
                return r;
            }
        };
        r.latency.decode_ms = ms(t);
        self.screen_decoded(r, &photo, t0)
    }

    /// Screens a decoded RGB8 frame (`width * height * 3` bytes); `name` names it in the record.
    pub fn screen_rgb(&mut self, name: &str, photo: &Photo) -> Record {
        let r = self.record(name, None);
        self.screen_decoded(r, photo, Instant::now())
    }

    fn screen_decoded(&mut self, mut r: Record, photo: &Photo, t0: Instant) -> Record {
        // The quality gate and the preprocessing only read the frame: with a second thread the
        // gate runs beside the preprocessing, whose work is dropped if the photo is ungradable.
        let c = &self.engine.contract;
        let spec = c.preprocess_spec();
        let (ws, batch) = (&mut self.ws, &mut self.batch);
        let gate = || {
            let t = Instant::now();
            let m = measure(&photo.rgb, photo.width, photo.height);
            (m, ms(t))
        };
        let mut prepare = || {
            let t = Instant::now();
            let result = ws
                .preprocess(&photo.rgb, photo.width, photo.height, &spec)
                .and_then(|rgb| {
                    batch.resize(c.tta.len() * rgb.len(), 0.0);
                    write_views(&rgb, spec.out_width, spec.out_height, &c.tta, batch)
                });
            (result, ms(t))
        };
        let ((m, quality_ms), prepared) = if self.engine.threads() > 1 {
            let (gated, prepared) = std::thread::scope(|scope| {
                let gated = scope.spawn(gate);
                let prepared = prepare();
                (gated.join(), prepared)
            });
            match gated {
                Ok(g) => (g, Some(prepared)),
                Err(_) => {
                    r.error = Some("the quality gate failed (a bug: please report it)".into());
                    r.latency.total_ms = ms(t0);
                    return r;
                }
            }
        } else {
            (gate(), None)
        };
        let q = assess(&m, &self.limits);
        r.latency.quality_ms = quality_ms;
        r.quality_metrics = Some(m);
        r.quality = Some(q.clone());
        if q != Quality::Gradable {
            r.latency.total_ms = ms(t0);
            return r;
        }
        let (result, preprocess_ms) = prepared.unwrap_or_else(prepare);
        r.latency.preprocess_ms = preprocess_ms;
        if let Err(e) = result {
            r.error = Some(format!("preprocessing failed: {e}"));
            r.latency.total_ms = ms(t0);
            return r;
        }

        let t = Instant::now();
        let screened = self
            .engine
            .run(&self.batch)
            .and_then(|p| aggregate(&p).map_err(|e| anyhow::anyhow!("model output: {e}")))
            .and_then(|a| {
                Ok((
                    decide(a.mean, r.threshold).map_err(|e| anyhow::anyhow!("{e}"))?,
                    a,
                ))
            });
        r.latency.inference_ms = ms(t);
        match screened {
            Ok((d, a)) => {
                r.outcome = match d {
                    Decision::Refer => Outcome::Refer,
                    Decision::NoReferral => Outcome::NoReferral,
                };
                r.probability = Some(a.mean);
                r.borderline = self
                    .borderline()
                    .is_some_and(|[lo, hi]| (lo..=hi).contains(&a.mean));
                r.per_view = a.per_view.to_vec();
            }
            Err(e) => r.error = Some(format!("{e:#}")),
        }
        r.latency.total_ms = ms(t0);
        r
    }
}
