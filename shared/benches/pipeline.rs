//! Bench binary: the preprocessing pipeline on real photos, single thread, decode excluded.
//!
//! `cargo bench -p drscreen-core --bench pipeline -- PHOTO.png [PHOTO.png ...]`
//! Prints one JSON line per photo and stage with the median and min over the runs (ms).
//! `scripts/bench_preprocess.py` runs it beside OpenCV on the same pixels and writes the ratio.

use std::time::Instant;

use drscreen_core::clahe::{clahe_luts, ClaheParams};
use drscreen_core::lab::rgb_to_l;
use drscreen_core::pipeline::{clahe_rgb8, preprocess_rgb8, Buffers, PreprocessSpec};
use drscreen_core::{to_chw_f32, write_views, SEED_VIEWS};

fn time_ms(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    f(); // warm-up
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (t[t.len() / 2], t[0])
}

fn main() {
    let paths: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if paths.is_empty() {
        eprintln!("usage: cargo bench -p drscreen-core --bench pipeline -- PHOTO.png ...");
        return;
    }
    for path in paths {
        let img = image::open(&path).expect("photo").to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let src = img.into_raw();
        let runs = if w * h > 4_000_000 { 15 } else { 50 };
        let spec = PreprocessSpec::default();
        let lens = spec.buffer_lens(w, h);
        let (mut l, mut rgb, mut lut) =
            (vec![0; lens.l_plane], vec![0; lens.rgb], vec![0; lens.lut]);
        let (mut cols, mut rows) = (vec![false; w], vec![false; h]);
        let mut resized = vec![0u8; spec.resized_len()];
        let mut chw = vec![0f32; resized.len()];
        let mut batch = vec![0f32; resized.len() * SEED_VIEWS.len()];
        let mut full = vec![0u8; src.len()];
        let report = |stage: &str, (median, min): (f64, f64)| {
            println!(
                "{{\"photo\":\"{path}\",\"width\":{w},\"height\":{h},\"stage\":\"{stage}\",\"median_ms\":{median:.3},\"min_ms\":{min:.3},\"runs\":{runs}}}"
            );
        };
        report(
            "pipeline",
            time_ms(runs, || {
                let mut b = Buffers {
                    l_plane: &mut l,
                    rgb: &mut rgb,
                    lut: &mut lut,
                    cols: &mut cols,
                    rows: &mut rows,
                };
                preprocess_rgb8(&src, w, h, &spec, &mut b, &mut resized).unwrap();
                to_chw_f32(&resized, 96, 96, &mut chw).unwrap();
            }),
        );
        report("l_plane", time_ms(runs, || rgb_to_l(&src, &mut l).unwrap()));
        report(
            "clahe_luts",
            time_ms(runs, || {
                clahe_luts(&l, w, h, &ClaheParams::default(), &mut lut).unwrap();
            }),
        );
        report(
            "equalise_full_frame",
            time_ms(runs.min(15), || {
                let mut b = Buffers {
                    l_plane: &mut l,
                    rgb: &mut rgb,
                    lut: &mut lut,
                    cols: &mut cols,
                    rows: &mut rows,
                };
                clahe_rgb8(&src, w, h, &ClaheParams::default(), &mut b, &mut full).unwrap();
            }),
        );
        report(
            "tta_5_views",
            time_ms(runs, || {
                write_views(&resized, 96, 96, &SEED_VIEWS, &mut batch).unwrap()
            }),
        );
    }
}
