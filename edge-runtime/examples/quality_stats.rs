//! Prints the gradability metrics of real photos and of degraded copies, to set the limits:
//! `cargo run --release -p edge-runtime --example quality_stats -- DATA_DIR [N]`.
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
