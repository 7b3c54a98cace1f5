//! Prints the gradability metrics of real photos and of degraded copies, to set the limits:
//! `cargo run --release -p edge-runtime --example quality_stats -- DATA_DIR [N]`.
//! Ends with the retake rate of each candidate luminance limit on the real photos of every set.
#[path = "../src/quality.rs"]
mod quality;

use image::RgbImage;

fn photos(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    v
}

fn main() {
    let data = std::path::PathBuf::from(std::env::args().nth(1).expect("DATA_DIR"));
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    let mut all = photos(&data.join("idrid/images"));
    all.extend(photos(&data.join("srahim/images")));
    let step = (all.len() / n.min(all.len())).max(1);
    let kinds = [
        "original",
        "dark",
        "overexposed",
        "blurred",
        "cropped",
        "grey",
    ];
    let mut rows: Vec<(usize, quality::QualityMetrics, quality::Quality)> = Vec::new();
    for p in all.iter().step_by(step) {
        let img = image::open(p).unwrap().to_rgb8();
        let (w, h) = img.dimensions();
        let variants: Vec<RgbImage> = vec![
            img.clone(),
            RgbImage::from_fn(w, h, |x, y| {
                image::Rgb(img.get_pixel(x, y).0.map(|v| (v as f32 * 0.12) as u8))
            }),
            RgbImage::from_fn(w, h, |x, y| {
                image::Rgb(
                    img.get_pixel(x, y)
                        .0
                        .map(|v| (v as f32 * 3.5).min(255.0) as u8),
                )
            }),
            image::imageops::blur(&img, 6.0),
            image::imageops::resize(
                &image::imageops::crop_imm(&img, w * 3 / 8, h * 3 / 8, w / 4, h / 4).to_image(),
                w,
                h,
                image::imageops::FilterType::Triangle,
            ),
            RgbImage::from_fn(w, h, |x, y| {
                let g = (img.get_pixel(x, y).0.iter().map(|&v| v as u32).sum::<u32>() / 3) as u8;
                image::Rgb([g, g, g])
            }),
        ];
        for (k, v) in variants.iter().enumerate() {
            let m = quality::measure(v.as_raw(), w as usize, h as usize);
            rows.push((k, m, quality::assess(&m, &quality::Limits::default())));
        }
    }
    luminance_limits(&data);
    for (k, name) in kinds.iter().enumerate() {
        let ms: Vec<_> = rows.iter().filter(|r| r.0 == k).collect();
        let pass = ms
            .iter()
            .filter(|r| r.2 == quality::Quality::Gradable)
            .count();
        let q = |f: &dyn Fn(&quality::QualityMetrics) -> f32| {
            let mut v: Vec<f32> = ms.iter().map(|r| f(&r.1)).collect();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            format!("{:.2}/{:.2}/{:.2}", v[0], v[v.len() / 2], v[v.len() - 1])
        };
        println!(
            "{name:>11}: gradable {pass}/{} | fov {} corners {} luma {} sat {} r-b {} lapvar {}",
            ms.len(),
            q(&|m| m.fov_fraction),
            q(&|m| m.dark_corners as f32),
            q(&|m| m.mean_luma),
            q(&|m| m.saturated_fraction),
            q(&|m| m.red_minus_blue),
            q(&|m| m.laplacian_var)
        );
        for r in ms
            .iter()
            .filter(|r| (k == 0) != (r.2 == quality::Quality::Gradable))
            .take(3)
        {
            println!("      e.g. {:?}", r.2);
        }
    }
}

/// How many real photos of each set a luminance or a blur limit would refuse (the retake rate it
/// costs). APTOS's 224x224 photos are enlarged 2x as the degradation sweep enlarges them.
fn luminance_limits(data: &std::path::Path) {
    const LUMA: [f32; 8] = [26.0, 28.0, 30.0, 32.0, 34.0, 36.0, 38.0, 40.0];
    const SHARP: [f32; 6] = [2.0, 3.0, 4.0, 5.0, 6.0, 8.0];
    println!("| set | photos | darkest 3 (mean luma) | refused at luma below {LUMA:?} | least sharp 3 | refused at sharpness below {SHARP:?} |");
    println!("|---|---|---|---|---|---|");
    for set in ["idrid", "srahim", "aptos2019"] {
        let metrics: Vec<quality::QualityMetrics> = photos(&data.join(set).join("images"))
            .iter()
            .filter_map(|p| edge_runtime::degrade::load(p, set).ok())
            .map(|img| {
                let (w, h) = img.dimensions();
                quality::measure(img.as_raw(), w as usize, h as usize)
            })
            .collect();
        let sorted = |f: fn(&quality::QualityMetrics) -> f32| {
            let mut v: Vec<f32> = metrics.iter().map(f).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v
        };
        let below = |v: &[f32], limits: &[f32]| -> Vec<usize> {
            limits
                .iter()
                .map(|l| v.iter().filter(|x| *x < l).count())
                .collect()
        };
        let (luma, sharp) = (sorted(|m| m.mean_luma), sorted(|m| m.laplacian_var));
        println!(
            "| {set} | {} | {:.1?} | {:?} | {:.1?} | {:?} |",
            metrics.len(),
            &luma[..luma.len().min(3)],
            below(&luma, &LUMA),
            &sharp[..sharp.len().min(3)],
            below(&sharp, &SHARP),
        );
    }
}
