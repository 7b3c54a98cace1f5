//! Camera augmentation: what differs between fundus cameras (exposure, colour cast / white
//! balance, gamma, blur, sensor noise, JPEG quality), applied to the disc square *before* CLAHE,
//! where a camera applies it, then the core's CLAHE gives the model input. Per photo, seeded, on
//! the CPU (a few milliseconds per 224 px photo against ~100 ms of network per photo).

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Strengths of the camera augmentation; each 0 turns its part off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// Exposure: one gain for all channels, `2^u` with `u` uniform in `[-exposure, exposure]`.
    pub exposure: f64,
    /// Colour cast / white balance: a gain per channel in `[1 - cast, 1 + cast]`.
    pub colour_cast: f64,
    /// Gamma in `[1 / (1 + gamma), 1 + gamma]` (log-uniform).
    pub gamma: f64,
    /// Gaussian blur with sigma uniform in `[0, blur]` pixels (at the input size), on half the photos.
    pub blur: f64,
    /// Gaussian sensor noise with sigma uniform in `[0, noise]` grey levels, on half the photos.
    pub noise: f64,
    /// JPEG re-encoding at a quality uniform in `[jpeg_quality, 95]`, on half the photos (0: none).
    pub jpeg_quality: u8,
}

impl Default for CameraConfig {
    /// Off: the seed's recipe has no camera augmentation.
    fn default() -> Self {
        Self {
            exposure: 0.0,
            colour_cast: 0.0,
            gamma: 0.0,
            blur: 0.0,
            noise: 0.0,
            jpeg_quality: 0,
        }
    }
}

impl CameraConfig {
    pub fn is_off(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the ranges; the error names the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, v, max) in [
            ("exposure", self.exposure, 3.0),
            ("colour_cast", self.colour_cast, 0.9),
            ("gamma", self.gamma, 3.0),
            ("blur", self.blur, 10.0),
            ("noise", self.noise, 64.0),
        ] {
            anyhow::ensure!(
                v.is_finite() && (0.0..=max).contains(&v),
                "augment.camera.{name} must be in 0..={max}, got {v}"
            );
        }
        anyhow::ensure!(
            self.jpeg_quality <= 95,
            "augment.camera.jpeg_quality must be 0 (off) or 1..=95, got {}",
            self.jpeg_quality
        );
        Ok(())
    }
}

/// Applies `cfg` to an RGB8 `side x side` photo, seeded by `seed`; black stays black (the
/// surround of the disc is not a camera's to change, except by noise and JPEG).
pub fn augment_camera(rgb: &[u8], side: usize, cfg: &CameraConfig, seed: u64) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let exposure = 2f64.powf(rng.gen_range(-1.0..=1.0) * cfg.exposure);
    let cast: [f64; 3] = std::array::from_fn(|_| 1.0 + rng.gen_range(-1.0..=1.0) * cfg.colour_cast);
    let gamma = (1.0 + cfg.gamma).powf(rng.gen_range(-1.0..=1.0));
    let lut: [[u8; 256]; 3] = std::array::from_fn(|c| {
        std::array::from_fn(|v| {
            let x = (v as f64 / 255.0).powf(gamma) * exposure * cast[c];
            (x * 255.0).round().clamp(0.0, 255.0) as u8
        })
    });
    let mut out: Vec<u8> = rgb
        .iter()
        .enumerate()
        .map(|(i, &v)| lut[i % 3][v as usize])
        .collect();
    if cfg.blur > 0.0 && rng.gen_bool(0.5) {
        let sigma = rng.gen_range(0.0..=cfg.blur) as f32;
        if sigma > 0.05 {
            let img = image::RgbImage::from_raw(side as u32, side as u32, out).expect("side^2 RGB");
            out = image::imageops::blur(&img, sigma).into_raw();
        }
    }
    if cfg.noise > 0.0 && rng.gen_bool(0.5) {
        let sigma = rng.gen_range(0.0..=cfg.noise);
        for v in out.iter_mut() {
            // Box-Muller normal deviate.
            let (u1, u2): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            *v = (*v as f64 + z * sigma).round().clamp(0.0, 255.0) as u8;
        }
    }
    if cfg.jpeg_quality > 0 && rng.gen_bool(0.5) {
        let q = rng.gen_range(cfg.jpeg_quality..=95);
        let mut bytes = Vec::new();
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, q);
        let encoded = image::ImageEncoder::write_image(
            enc,
            &out,
            side as u32,
            side as u32,
            image::ExtendedColorType::Rgb8,
        );
        if encoded.is_ok() {
            if let Ok(img) = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg) {
                out = img.to_rgb8().into_raw();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(side: usize) -> Vec<u8> {
        (0..side * side)
            .flat_map(|i| {
                let v = (i * 7 % 200) as u8 + 20;
                [v, v / 2, v / 4]
            })
            .collect()
    }

    #[test]
    fn off_is_identity_and_each_part_changes_the_photo_seeded() {
        let p = photo(32);
        assert_eq!(augment_camera(&p, 32, &CameraConfig::default(), 1), p);
        let parts = [
            CameraConfig {
                exposure: 0.5,
                ..Default::default()
            },
            CameraConfig {
                colour_cast: 0.2,
                ..Default::default()
            },
            CameraConfig {
                gamma: 0.5,
                ..Default::default()
            },
            CameraConfig {
                blur: 1.5,
                ..Default::default()
            },
            CameraConfig {
                noise: 8.0,
                ..Default::default()
            },
            CameraConfig {
                jpeg_quality: 30,
                ..Default::default()
            },
        ];
        for cfg in &parts {
            let changed = (0..8).any(|s| augment_camera(&p, 32, cfg, s) != p);
            assert!(changed, "{cfg:?} never changed the photo");
            assert_eq!(
                augment_camera(&p, 32, cfg, 3),
                augment_camera(&p, 32, cfg, 3)
            );
            assert_eq!(augment_camera(&p, 32, cfg, 3).len(), p.len());
        }
    }

    #[test]
    fn exposure_and_cast_keep_black_black_and_bad_strengths_are_refused() {
        let black = vec![0u8; 16 * 16 * 3];
        let cfg = CameraConfig {
            exposure: 1.0,
            colour_cast: 0.3,
            gamma: 0.5,
            ..Default::default()
        };
        assert_eq!(augment_camera(&black, 16, &cfg, 9), black);
        assert!(CameraConfig {
            noise: -1.0,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(CameraConfig {
            jpeg_quality: 99,
            ..Default::default()
        }
        .validate()
        .is_err());
        cfg.validate().unwrap();
    }
}
