//! Synthetic colour fundus photographs for tests and demos, in the Kaggle EyePACS layout.
//!
//! Plausible, not photoreal: black background, circular field of view (FOV) with an orange-red
//! retina and radial vignetting, optic disc, darker macula, branching vessels, pixel noise and,
//! by diabetic-retinopathy grade 0-4, lesions bold enough to survive downscaling to 96x96 px.
//! Lengths are in pixels of the square image unless written as a fraction of `size`; colours
//! are RGB in 0..=255 (`f32` while drawing).

use std::f32::consts::TAU;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use anyhow::{Context, Result};
use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};
use rand::distributions::{Distribution, WeightedIndex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Probabilities of grades 0..=4 (the first eye of each patient; the second eye is
/// conditioned on differing by at most one grade).
const GRADE_PROBS: [f64; 5] = [0.5, 0.15, 0.2, 0.1, 0.05];
/// JPEG quality of written photos (1-100).
const JPEG_QUALITY: u8 = 90;

/// Options for [`write_dataset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthOptions {
    /// Number of images; `n / 2` patients rounded up (an odd `n` gives the last one one eye).
    pub n: usize,
    /// Seed of every random choice: same options, byte-identical output.
    pub seed: u64,
    /// Side of the square photos in pixels (default 512).
    pub size: u32,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            n: 100,
            seed: 0,
            size: 512,
        }
    }
}

/// What [`write_dataset`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SynthSummary {
    /// Number of images written.
    pub images: usize,
    /// Number of images of each grade 0..=4.
    pub per_grade: [usize; 5],
}

/// Writes `out/trainLabels.csv` (header `image,level`) and `out/train/<image>.jpeg` (JPEG
/// quality 90, `opts.size` px square). Image names are `<patient>_left` / `<patient>_right`
/// (patients numbered from 1; `n` images = `n / 2` patients, an odd `n` gives the last patient
/// one eye). Grades 0-4 are drawn with probabilities 0.5, 0.15, 0.2, 0.1, 0.05; the right eye
/// is redrawn until it differs from the left by at most 1 (so its marginal is only roughly
/// that). Deterministic for a given seed: labels come from ChaCha8 stream 0 and image `i` from
/// stream `i + 1`, so the rayon-parallel generation does not depend on scheduling.
pub fn write_dataset(out: &Path, opts: &SynthOptions) -> Result<SynthSummary> {
    let train = out.join("train");
    std::fs::create_dir_all(&train).with_context(|| format!("creating {}", train.display()))?;
    let labels = draw_labels(opts.n, opts.seed);
    labels
        .par_iter()
        .enumerate()
        .try_for_each(|(i, (name, grade))| -> Result<()> {
            let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
            rng.set_stream(i as u64 + 1);
            let img = render(*grade, opts.size, &mut rng);
            let path = train.join(format!("{name}.jpeg"));
            let file =
                File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            JpegEncoder::new_with_quality(BufWriter::new(file), JPEG_QUALITY)
                .encode_image(&img)
                .with_context(|| format!("writing {}", path.display()))
        })?;
    let csv_path = out.join("trainLabels.csv");
    let ctx = || format!("writing {}", csv_path.display());
    let mut w = csv::Writer::from_path(&csv_path).with_context(ctx)?;
    w.write_record(["image", "level"]).with_context(ctx)?;
    let mut summary = SynthSummary {
        images: labels.len(),
        per_grade: [0; 5],
    };
    for (name, grade) in &labels {
        w.write_record([name.as_str(), &grade.to_string()])
            .with_context(ctx)?;
        summary.per_grade[*grade as usize] += 1;
    }
    w.flush().with_context(ctx)?;
    Ok(summary)
}

/// `(image name, grade)` for images `0..n` in order: `1_left, 1_right, 2_left, ...`.
fn draw_labels(n: usize, seed: u64) -> Vec<(String, u8)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let grades = WeightedIndex::new(GRADE_PROBS).expect("valid grade probabilities");
    let mut out: Vec<(String, u8)> = Vec::with_capacity(n);
    for i in 0..n {
        let right = i % 2 == 1;
        let grade = loop {
            let g = grades.sample(&mut rng) as u8;
            if !right || g.abs_diff(out[i - 1].1) <= 1 {
                break g;
            }
        };
        let eye = if right { "right" } else { "left" };
        out.push((format!("{}_{eye}", i / 2 + 1), grade));
    }
    out
}

type Rgbf = [f32; 3];
type Pt = (f32, f32);

const VESSEL: Rgbf = [140.0, 35.0, 25.0];
const MICROANEURYSM: Rgbf = [80.0, 10.0, 8.0];
const HAEMORRHAGE: Rgbf = [105.0, 15.0, 10.0];
const EXUDATE: Rgbf = [255.0, 240.0, 80.0];
const COTTON_WOOL: Rgbf = [238.0, 228.0, 205.0];
const NEW_VESSEL: Rgbf = [110.0, 12.0, 12.0];

fn dist(a: Pt, b: Pt) -> f32 {
    (a.0 - b.0).hypot(a.1 - b.1)
}

/// `p` moved by up to `d` px along each axis.
fn near(rng: &mut impl Rng, p: Pt, d: f32) -> Pt {
    (p.0 + rng.gen_range(-d..=d), p.1 + rng.gen_range(-d..=d))
}

fn blend(p: &mut Rgbf, col: Rgbf, a: f32) {
    p.iter_mut().zip(col).for_each(|(v, k)| *v += (k - *v) * a);
}

/// Float RGB image plus a coverage mask (0..=1) for shapes that overlap themselves (vessel
/// trees, loops) and must be blended once with one opacity.
struct Canvas {
    size: u32,
    px: Vec<Rgbf>,
    mask: Vec<f32>,
}

impl Canvas {
    /// Calls `f(pixel, mask, coverage)` for pixels of the box `lo..hi` (px, grown by 1 px and
    /// clipped) whose coverage `cov(pixel centre)`, clamped to 0..=1, is positive.
    fn cover(
        &mut self,
        lo: Pt,
        hi: Pt,
        cov: impl Fn(Pt) -> f32,
        mut f: impl FnMut(&mut Rgbf, &mut f32, f32),
    ) {
        let size = self.size;
        let clip = |v: f32| v.clamp(0.0, size as f32) as u32;
        for y in clip(lo.1 - 1.0)..clip(hi.1 + 2.0) {
            for x in clip(lo.0 - 1.0)..clip(hi.0 + 2.0) {
                let (c, i) = (
                    cov((x as f32 + 0.5, y as f32 + 0.5)),
                    (y * size + x) as usize,
                );
                if c > 0.0 {
                    f(&mut self.px[i], &mut self.mask[i], c.min(1.0));
                }
            }
        }
    }

    /// Blends `col` at opacity `alpha` (0..=1) over a disc of radius `r` px whose edge fades
    /// linearly over `soft` px (at least 1).
    fn disc(&mut self, c: Pt, r: f32, soft: f32, col: Rgbf, alpha: f32) {
        let soft = soft.max(1.0);
        let cov = |p: Pt| (r - dist(p, c)) / soft;
        self.cover((c.0 - r, c.1 - r), (c.0 + r, c.1 + r), cov, |px, _, a| {
            blend(px, col, a * alpha)
        });
    }

    /// Adds segment `a`-`b` of half-width `hw` px (anti-aliased over 1 px) to the mask.
    fn segment(&mut self, a: Pt, b: Pt, hw: f32) {
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = (dx * dx + dy * dy).max(1e-6);
        let cov = |p: Pt| {
            let t = (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0);
            hw + 0.5 - dist(p, (a.0 + t * dx, a.1 + t * dy))
        };
        let (lo, hi) = (
            (a.0.min(b.0) - hw, a.1.min(b.1) - hw),
            (a.0.max(b.0) + hw, a.1.max(b.1) + hw),
        );
        self.cover(lo, hi, cov, |_, m, c| *m = m.max(c));
    }

    /// Blends `col` at opacity `alpha` through the mask, then clears the mask.
    fn flush(&mut self, col: Rgbf, alpha: f32) {
        for (p, m) in self.px.iter_mut().zip(self.mask.iter_mut()) {
            if *m > 0.0 {
                blend(p, col, *m * alpha);
                *m = 0.0;
            }
        }
    }
}

/// The field of view: centre and radius in px.
#[derive(Clone, Copy)]
struct Fov {
    c: Pt,
    r: f32,
}

impl Fov {
    /// A uniformly random point at least `margin` px inside the FOV, usually (95 %) at least
    /// `avoid.1` px from `avoid.0` (the optic disc).
    fn spot(&self, rng: &mut impl Rng, margin: f32, avoid: (Pt, f32)) -> Pt {
        loop {
            let (a, u) = (rng.gen_range(0.0..TAU), rng.gen::<f32>());
            let rho = (self.r - margin).max(0.0) * u.sqrt();
            let p = (self.c.0 + rho * a.cos(), self.c.1 + rho * a.sin());
            if dist(p, avoid.0) >= avoid.1 || rng.gen_bool(0.05) {
                return p;
            }
        }
    }
}

/// One photo as RGB8 (`size` x `size` px), for tests and demos. `grade` is the DR grade 0-4
/// (values above 4 draw grade 4). All randomness comes from `rng`; anatomy, brightness and
/// noise are drawn before (or independently of) the lesions, so the same RNG state rendered
/// at two grades gives the same eye with and without lesions.
pub fn render(grade: u8, size: u32, rng: &mut impl Rng) -> RgbImage {
    let s = size as f32;
    let (n, half) = ((size * size) as usize, s / 2.0);
    let mut cv = Canvas {
        size,
        px: vec![[0.0; 3]; n],
        mask: vec![0.0; n],
    };
    let noise_seed: u64 = rng.gen();
    let gain = rng.gen_range(0.93..1.07_f32);
    let fov = Fov {
        c: near(rng, (half, half), s * 0.02),
        r: s * 0.45 * rng.gen_range(0.97..1.0),
    };
    let base = [
        200.0 + rng.gen_range(-20.0..20.0),
        90.0 + rng.gen_range(-15.0..15.0),
        40.0 + rng.gen_range(-10.0..10.0),
    ];
    // Retina with radial vignetting (x0.6 at the rim).
    for (i, p) in cv.px.iter_mut().enumerate() {
        let xy = (
            (i as u32 % size) as f32 + 0.5,
            (i as u32 / size) as f32 + 0.5,
        );
        let d = (dist(xy, fov.c) / fov.r).min(1.0);
        let shade = 1.0 - 0.4 * d.powf(2.5);
        *p = base.map(|k| k * shade);
    }
    // Optic disc on one side, macula 2.5 disc diameters away on the other.
    let side = if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
    let disc_r = s * 0.07 * rng.gen_range(0.9..1.1);
    let disc = (
        fov.c.0 + side * s * 0.2,
        fov.c.1 + s * rng.gen_range(-0.03..0.03),
    );
    let mac = near(rng, (disc.0 - side * 5.0 * disc_r, disc.1), s * 0.02);
    cv.disc(mac, s * 0.09, s * 0.09, base.map(|k| k * 0.55), 0.7);
    cv.disc(mac, s * 0.015, s * 0.015, base.map(|k| k * 0.45), 0.6);
    cv.disc(disc, disc_r, s * 0.012, [245.0, 200.0, 140.0], 0.95);
    let cup = (disc.0 + side * disc_r * 0.2, disc.1);
    cv.disc(cup, disc_r * 0.45, disc_r * 0.3, [255.0, 238.0, 195.0], 0.8);
    // Vessels: 6-10 random-walk trees from the disc, thinning and branching.
    let trees = rng.gen_range(6..=10);
    for k in 0..trees {
        let a = TAU * k as f32 / trees as f32 + rng.gen_range(-0.3..0.3);
        let start = (
            disc.0 + a.cos() * disc_r * 0.3,
            disc.1 + a.sin() * disc_r * 0.3,
        );
        let hw = s * rng.gen_range(0.006..0.009);
        walk(&mut cv, rng, fov, start, a, hw, 0.35);
    }
    cv.flush(VESSEL, 0.85);
    lesions(&mut cv, grade.min(4), rng, fov, (disc, disc_r));
    // Brightness, Gaussian-ish noise (sum of three uniforms, +-6), FOV mask with a 1-px soft rim.
    let mut nrng = ChaCha8Rng::seed_from_u64(noise_seed);
    RgbImage::from_fn(size, size, |x, y| {
        let m = (fov.r - dist((x as f32 + 0.5, y as f32 + 0.5), fov.c) + 0.5).clamp(0.0, 1.0);
        if m == 0.0 {
            return Rgb([0, 0, 0]);
        }
        let p = cv.px[(y * size + x) as usize];
        Rgb(p.map(|v| {
            let b = nrng.gen::<u32>().to_le_bytes();
            let noise = (b[0] as f32 + b[1] as f32 + b[2] as f32) / 765.0 * 12.0 - 6.0;
            ((v * gain + noise) * m).round().clamp(0.0, 255.0) as u8
        }))
    })
}

/// Random-walk vessel tree into the mask: from `p` heading `a` (radians) with half-width `hw`
/// px, turning up to `turn` radians per step, branching at random, until thinner than 0.4 px
/// or outside the FOV.
fn walk(cv: &mut Canvas, rng: &mut impl Rng, fov: Fov, p: Pt, a: f32, hw: f32, turn: f32) {
    let step = (cv.size as f32 * 0.025).max(1.0);
    let mut stack = vec![(p, a, hw)];
    let mut budget = 600;
    while let Some((mut p, mut a, mut w)) = stack.pop() {
        while w >= 0.4 && budget > 0 {
            budget -= 1;
            a += rng.gen_range(-turn..turn);
            let q = (p.0 + a.cos() * step, p.1 + a.sin() * step);
            if dist(q, fov.c) > fov.r {
                break;
            }
            cv.segment(p, q, w);
            if rng.gen_bool(0.12) {
                let sign = if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
                stack.push((q, a + sign * rng.gen_range(0.4..0.9), w * 0.7));
            }
            (p, w) = (q, w * 0.96);
        }
    }
}

/// Counts `(microaneurysms, haemorrhages, exudate clusters, cotton-wool spots, new-vessel
/// loops)` per grade, as inclusive ranges.
const COUNTS: [[(u32, u32); 5]; 5] = [
    [(0, 0), (0, 0), (0, 0), (0, 0), (0, 0)],
    [(5, 15), (0, 0), (0, 0), (0, 0), (0, 0)],
    [(15, 30), (3, 8), (1, 3), (0, 0), (0, 0)],
    [(25, 40), (10, 20), (2, 5), (2, 5), (0, 0)],
    [(30, 50), (12, 25), (3, 6), (3, 7), (2, 4)],
];

/// Draws the lesions of `grade` (0-4) inside the FOV, away from the optic disc `(centre, radius)`.
fn lesions(cv: &mut Canvas, grade: u8, rng: &mut impl Rng, fov: Fov, disc: (Pt, f32)) {
    let s = cv.size as f32;
    let [ma, haem, exu, cws, nv] = COUNTS[grade as usize].map(|(lo, hi)| rng.gen_range(lo..=hi));
    let avoid = (disc.0, disc.1 * 1.3);
    for _ in 0..ma {
        let r = s * rng.gen_range(0.008..0.013);
        let p = fov.spot(rng, r + 2.0, avoid);
        cv.disc(p, r, 1.0, MICROANEURYSM, 1.0);
    }
    for _ in 0..haem {
        let r = s * rng.gen_range(0.01..0.025);
        let p = fov.spot(rng, 2.0 * r, avoid);
        for _ in 0..rng.gen_range(2..=4) {
            let (q, rq) = (near(rng, p, r * 0.5), r * rng.gen_range(0.6..1.0));
            cv.disc(q, rq, 1.0, HAEMORRHAGE, 0.95);
        }
    }
    for _ in 0..exu {
        let p = fov.spot(rng, s * 0.05, avoid);
        for _ in 0..rng.gen_range(4..=10) {
            let q = near(rng, p, s * 0.035);
            cv.disc(q, s * rng.gen_range(0.005..0.011), 1.0, EXUDATE, 1.0);
        }
    }
    for _ in 0..cws {
        let r = s * rng.gen_range(0.02..0.035);
        let p = fov.spot(rng, 1.6 * r, avoid);
        cv.disc(p, r, r * 0.6, COTTON_WOOL, 0.85);
        let q = near(rng, p, r * 0.5);
        cv.disc(q, r * 0.7, r * 0.5, COTTON_WOOL, 0.6);
    }
    // New vessels: tortuous closed loops within ~2 disc radii of the disc edge.
    let hw = (s * 0.004).max(0.6);
    for _ in 0..nv {
        let a = rng.gen_range(0.0..TAU);
        let d = disc.1 * rng.gen_range(1.2..2.2);
        let c = (disc.0 .0 + d * a.cos(), disc.0 .1 + d * a.sin());
        let (rl, phase) = (disc.1 * rng.gen_range(0.4..0.8), rng.gen_range(0.0..TAU));
        let pts: Vec<Pt> = (0..24)
            .map(|k| {
                let t = TAU * k as f32 / 24.0;
                let rr = rl * (1.0 + 0.35 * (3.0 * t + phase).sin() + rng.gen_range(-0.15..0.15));
                (c.0 + rr * t.cos(), c.1 + rr * t.sin())
            })
            .collect();
        for k in 0..24 {
            cv.segment(pts[k], pts[(k + 1) % 24], hw);
        }
    }
    cv.flush(NEW_VESSEL, 0.9);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    #[test]
    fn dataset_has_paired_names_and_decodable_jpegs() {
        let dir = tempfile::tempdir().unwrap();
        let summary = write_dataset(
            dir.path(),
            &SynthOptions {
                n: 9,
                seed: 7,
                size: 64,
            },
        )
        .unwrap();
        assert_eq!(
            (summary.images, summary.per_grade.iter().sum::<usize>()),
            (9, 9)
        );
        let mut csv = csv::Reader::from_path(dir.path().join("trainLabels.csv")).unwrap();
        assert_eq!(csv.headers().unwrap(), vec!["image", "level"]);
        let rows: Vec<(String, u8)> = csv
            .records()
            .map(|r| r.unwrap())
            .map(|r| (r[0].into(), r[1].parse().unwrap()))
            .collect();
        assert_eq!(rows.len(), 9);
        for (i, (name, grade)) in rows.iter().enumerate() {
            let eye = if i % 2 == 0 { "left" } else { "right" };
            assert_eq!(name, &format!("{}_{eye}", i / 2 + 1));
            assert!(
                *grade <= 4 && (i % 2 == 0 || grade.abs_diff(rows[i - 1].1) <= 1),
                "{rows:?}"
            );
            let img = image::open(dir.path().join(format!("train/{name}.jpeg"))).unwrap();
            assert_eq!((img.width(), img.height()), (64, 64));
        }
    }

    #[test]
    fn same_seed_same_bytes() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let opts = SynthOptions {
            n: 4,
            seed: 42,
            size: 96,
        };
        write_dataset(a.path(), &opts).unwrap();
        write_dataset(b.path(), &opts).unwrap();
        for file in ["trainLabels.csv", "train/1_left.jpeg"] {
            let read = |d: &Path| std::fs::read(d.join(file)).unwrap();
            assert_eq!(read(a.path()), read(b.path()), "{file}");
        }
    }

    #[test]
    fn black_outside_fov_bright_inside() {
        let size = 128;
        for seed in 0..5 {
            let img = render(seed as u8, size, &mut seeded(seed));
            let mid = size as f32 / 2.0;
            for (x, y, p) in img.enumerate_pixels() {
                // FOV radius <= 0.45 size, its centre within 0.02 size of the image centre.
                if dist((x as f32 + 0.5, y as f32 + 0.5), (mid, mid)) > 0.48 * size as f32 {
                    assert!(p.0.iter().all(|&v| v < 20), "({x},{y}) = {p:?}");
                }
            }
            let img = &img;
            let red: u32 = (56..72)
                .flat_map(|y| (56..72).map(move |x| img.get_pixel(x, y)[0] as u32))
                .sum();
            assert!(red / 256 > 60, "centre mean red {}", red / 256);
        }
    }

    /// Pixels well inside the FOV that are very bright yellow (exudates) or very dark red
    /// (microaneurysms, haemorrhages, new vessels).
    fn lesion_pixels(img: &RgbImage) -> usize {
        let mid = img.width() as f32 / 2.0;
        let inner = |x: u32, y: u32| {
            dist((x as f32 + 0.5, y as f32 + 0.5), (mid, mid)) < 0.41 * img.width() as f32
        };
        img.enumerate_pixels()
            .filter(|&(x, y, p)| {
                let [r, g, b] = p.0;
                inner(x, y) && ((r > 220 && g > 190 && b < 120) || (r < 125 && g < 30 && b < 30))
            })
            .count()
    }

    #[test]
    fn lesion_pixels_grow_with_grade() {
        for seed in 0..4 {
            let count = |grade| lesion_pixels(&render(grade, 256, &mut seeded(seed)));
            let (g0, g1, g4) = (count(0), count(1), count(4));
            assert!(
                g4 > 10 * g0 + 500 && g1 > g0,
                "seed {seed}: grade 0 {g0}, 1 {g1}, 4 {g4}"
            );
        }
    }
}
