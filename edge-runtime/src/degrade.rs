//! Capture degradations at graded strengths, for the robustness sweep (issue 27): what a
//! fundus camera does to a photo when the flash is weak, the focus is off, the operator frames
//! badly or the file is recompressed. The sweep (`examples/degradation_sweep.rs`, docs/quality.md)
//! screens real diseased photos under each one, to check that the device answers "refer",
//! "borderline" or "ungradable", never "no referral", and to set the gate's limits.
//!
//! Every degradation is deterministic: the same photo and strength give the same bytes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use drscreen_core::decode::Photo;
use image::{codecs::jpeg::JpegEncoder, ImageEncoder, RgbImage};

/// One degradation at one strength.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Degradation {
    /// Every channel times `gain` (a weaker or stronger flash), clipped at 255.
    Exposure(f32),
    /// `255 * (v / 255)^gamma`: a camera's tone curve; above 1 darkens the mid-tones.
    Gamma(f32),
    /// Per-channel gains (R, G, B): white balance off, a colour cast.
    Cast([f32; 3]),
    /// Gaussian blur with sigma as a fraction of the photo's shorter side (defocus).
    Blur(f32),
    /// Additive Gaussian noise of this standard deviation (0-255 scale), fixed seed.
    Noise(f32),
    /// Re-encoded as a JPEG of this quality (1-100).
    Jpeg(u8),
    /// Framing off-centre: the picture moved right and down by this fraction of each side,
    /// the uncovered strip black.
    Shift(f32),
    /// Framing too tight: this centred fraction of each side, enlarged back to the full frame.
    Crop(f32),
}

impl Degradation {
    /// The family's name, as the sweep reports it.
    pub fn kind(&self) -> &'static str {
        match self {
            Degradation::Exposure(_) => "exposure",
            Degradation::Gamma(_) => "gamma",
            Degradation::Cast(_) => "colour cast",
            Degradation::Blur(_) => "blur",
            Degradation::Noise(_) => "noise",
            Degradation::Jpeg(_) => "jpeg",
            Degradation::Shift(_) => "off-centre",
            Degradation::Crop(_) => "tight crop",
        }
    }

    /// The strength, as the sweep reports it.
    pub fn strength(&self) -> String {
        match self {
            Degradation::Exposure(g) => format!("gain {g}"),
            Degradation::Gamma(g) => format!("gamma {g}"),
            Degradation::Cast([r, g, b]) => format!("gains {r}/{g}/{b}"),
            Degradation::Blur(s) => format!("sigma {:.1} % of side", s * 100.0),
            Degradation::Noise(s) => format!("sd {s}"),
            Degradation::Jpeg(q) => format!("quality {q}"),
            Degradation::Shift(f) => format!("{:.0} % of side", f * 100.0),
            Degradation::Crop(f) => format!("{:.0} % of side kept", f * 100.0),
        }
    }

    /// Applies the degradation to a copy of `img`.
    pub fn apply(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = img.dimensions();
        let map = |f: &dyn Fn(usize, u8) -> u8| {
            let mut out = img.clone();
            for (i, v) in out.iter_mut().enumerate() {
                *v = f(i % 3, *v);
            }
            out
        };
        let clip = |x: f32| x.round().clamp(0.0, 255.0) as u8;
        match *self {
            Degradation::Exposure(g) => map(&|_, v| clip(v as f32 * g)),
            Degradation::Gamma(g) => {
                let lut: Vec<u8> = (0..256)
                    .map(|v| clip(255.0 * (v as f32 / 255.0).powf(g)))
                    .collect();
                map(&|_, v| lut[v as usize])
            }
            Degradation::Cast(gains) => map(&|c, v| clip(v as f32 * gains[c])),
            Degradation::Blur(frac) => image::imageops::fast_blur(img, frac * w.min(h) as f32),
            Degradation::Noise(sd) => {
                let mut rng = SplitMix64(0x5eed_d15c_0ffe_e000);
                let mut out = img.clone();
                for v in out.iter_mut() {
                    *v = clip(*v as f32 + sd * rng.gaussian());
                }
                out
            }
            Degradation::Jpeg(q) => {
                let mut bytes = Vec::new();
                let encoded = JpegEncoder::new_with_quality(&mut bytes, q.clamp(1, 100))
                    .write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8);
                match encoded
                    .ok()
                    .and_then(|_| image::load_from_memory(&bytes).ok())
                {
                    Some(decoded) => decoded.to_rgb8(),
                    // The encoder takes any RGB8 frame; should it fail, the sweep sees the photo
                    // unchanged rather than a made-up one.
                    None => img.clone(),
                }
            }
            Degradation::Shift(frac) => {
                let (dx, dy) = ((w as f32 * frac) as u32, (h as f32 * frac) as u32);
                RgbImage::from_fn(w, h, |x, y| {
                    if x < dx || y < dy {
                        image::Rgb([0, 0, 0])
                    } else {
                        *img.get_pixel(x - dx, y - dy)
                    }
                })
            }
            Degradation::Crop(frac) => {
                let (cw, ch) = (
                    ((w as f32 * frac) as u32).max(1),
                    ((h as f32 * frac) as u32).max(1),
                );
                let part = image::imageops::crop_imm(img, (w - cw) / 2, (h - ch) / 2, cw, ch);
                image::imageops::resize(
                    &part.to_image(),
                    w,
                    h,
                    image::imageops::FilterType::Triangle,
                )
            }
        }
    }
}

/// The sweep: every family at graded strengths, mildest first.
pub fn sweep() -> Vec<Degradation> {
    use Degradation::*;
    let mut v = Vec::new();
    v.extend([0.8, 0.65, 0.5, 0.4, 0.3, 0.2, 0.12].map(Exposure));
    v.extend([1.4, 2.0, 3.0].map(Exposure));
    v.extend([0.5, 0.7, 1.5, 2.0, 3.0].map(Gamma));
    for k in [1.0f32, 2.0, 3.0] {
        let s = 0.12 * k;
        v.push(Cast([1.0 - s, 1.0, 1.0 + s])); // blue
        v.push(Cast([1.0 + s, 1.0, 1.0 - s])); // red
        v.push(Cast([1.0 - s, 1.0 + s, 1.0 - s])); // green
    }
    v.extend([0.001, 0.002, 0.004, 0.008, 0.016].map(Blur));
    v.extend([5.0, 10.0, 20.0, 40.0].map(Noise));
    v.extend([50u8, 30, 15, 8, 3].map(Jpeg));
    v.extend([0.05, 0.1, 0.2, 0.3].map(Shift));
    v.extend([0.9, 0.75, 0.6, 0.5].map(Crop));
    v
}

/// The graded sets of the handout's data folder the sweep draws from.
pub const SETS: [&str; 3] = ["idrid", "srahim", "aptos2019"];

/// (file, grade, referable) of every photo in a set's label table.
pub fn labels(data: &Path, set: &str) -> Result<Vec<(PathBuf, u8, bool)>> {
    let table = data.join(set).join("labels.csv");
    let text = std::fs::read_to_string(&table).with_context(|| {
        format!(
            "cannot read {}: is --data the handout's data folder?",
            table.display()
        )
    })?;
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| {
        head.iter()
            .position(|h| *h == name)
            .with_context(|| format!("{}: no column {name}", table.display()))
    };
    let (ci, cl, cr) = (col("image")?, col("level")?, col("referable")?);
    let mut out = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(img), Some(level), Some(refer)) = (f.get(ci), f.get(cl), f.get(cr)) else {
            continue;
        };
        let Ok(level) = level.parse::<u8>() else {
            continue;
        };
        out.push((
            data.join(set).join("images").join(img),
            level,
            *refer == "1",
        ));
    }
    Ok(out)
}

/// The sweep's photos of `set`: every (n/`per_set`)-th photo of the positive class (referable DR
/// when `referable`, else any DR) in label order, at most `per_set`, as (file, grade).
pub fn diseased_sample(
    data: &Path,
    set: &str,
    referable: bool,
    per_set: usize,
) -> Result<Vec<(PathBuf, u8)>> {
    let diseased: Vec<(PathBuf, u8)> = labels(data, set)?
        .into_iter()
        .filter(|(_, g, r)| if referable { *r } else { *g > 0 })
        .map(|(p, g, _)| (p, g))
        .collect();
    let step = (diseased.len() / per_set.max(1)).max(1);
    Ok(diseased.into_iter().step_by(step).take(per_set).collect())
}

/// A photo of `set` as the sweep uses it: APTOS's 224x224 photos enlarged 2x (bilinear), so that
/// they pass the gate's smallest side and its cameras are in the sweep.
pub fn load(path: &Path, set: &str) -> Result<RgbImage> {
    let img = image::open(path)
        .with_context(|| format!("cannot decode {}", path.display()))?
        .to_rgb8();
    Ok(if set == "aptos2019" {
        let (w, h) = img.dimensions();
        image::imageops::resize(&img, w * 2, h * 2, image::imageops::FilterType::Triangle)
    } else {
        img
    })
}

/// The device's view of a frame.
pub fn photo(img: &RgbImage) -> Photo {
    Photo {
        rgb: img.as_raw().clone(),
        width: img.width() as usize,
        height: img.height() as usize,
    }
}

/// A small fixed-seed generator (SplitMix64) for the noise: the sweep must give the same bytes
/// on every machine, and the standard normal needs no more than this.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 + 1.0) / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    fn gaussian(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey(v: u8) -> RgbImage {
        RgbImage::from_pixel(40, 30, image::Rgb([v, v, v]))
    }

    #[test]
    fn degradations_do_what_they_say() {
        assert_eq!(
            Degradation::Exposure(0.5)
                .apply(&grey(200))
                .get_pixel(3, 3)
                .0,
            [100; 3]
        );
        assert_eq!(
            Degradation::Exposure(2.0)
                .apply(&grey(200))
                .get_pixel(3, 3)
                .0,
            [255; 3]
        );
        assert_eq!(
            Degradation::Cast([0.5, 1.0, 1.2])
                .apply(&grey(100))
                .get_pixel(0, 0)
                .0,
            [50, 100, 120]
        );
        assert!(Degradation::Gamma(2.0).apply(&grey(128)).get_pixel(0, 0).0[0] < 70);
        let shifted = Degradation::Shift(0.1).apply(&grey(90));
        assert_eq!(shifted.get_pixel(3, 2).0, [0; 3]);
        assert_eq!(shifted.get_pixel(39, 29).0, [90; 3]);
        let noisy = Degradation::Noise(10.0).apply(&grey(128));
        let mean = noisy.iter().map(|&v| v as f32).sum::<f32>() / noisy.len() as f32;
        let sd = (noisy
            .iter()
            .map(|&v| (v as f32 - mean).powi(2))
            .sum::<f32>()
            / noisy.len() as f32)
            .sqrt();
        assert!(
            (mean - 128.0).abs() < 1.5 && (sd - 10.0).abs() < 1.5,
            "{mean} {sd}"
        );
        assert_eq!(
            noisy,
            Degradation::Noise(10.0).apply(&grey(128)),
            "fixed seed"
        );
        assert_eq!(
            Degradation::Jpeg(30).apply(&grey(77)).dimensions(),
            (40, 30)
        );
        assert_eq!(
            Degradation::Crop(0.5).apply(&grey(77)).dimensions(),
            (40, 30)
        );
    }

    #[test]
    fn the_sweep_covers_every_family() {
        let kinds: std::collections::BTreeSet<_> = sweep().iter().map(|d| d.kind()).collect();
        assert_eq!(kinds.len(), 8);
    }
}
