//! drscreen-core against OpenCV's own bytes (fixtures from `scripts/make_core_fixtures.py`,
//! opencv-python-headless pinned in `scripts/requirements-ref.txt`). Every comparison is exact.

use std::path::{Path, PathBuf};

use drscreen_core::clahe::{clahe, ClaheParams};
use drscreen_core::lab::{lab_to_rgb, rgb_to_lab};
use drscreen_core::pipeline::{clahe_rgb8, preprocess_rgb8, Buffers, PreprocessSpec};
use drscreen_core::resize::{resize, Interpolation};
use serde::Deserialize;

#[derive(Deserialize)]
struct Manifest {
    opencv: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    width: usize,
    height: usize,
    stages: bool,
    clip_limit: f64,
    tiles_x: usize,
    tiles_y: usize,
    resizes: Vec<ResizeCase>,
}

#[derive(Deserialize)]
struct ResizeCase {
    source: String,
    method: String,
    width: usize,
    height: usize,
    file: String,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/core")
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).expect("fixture manifest");
    serde_json::from_str(&text).expect("manifest parses")
}

/// Reads a fixture PNG as its raw bytes (RGB8 or L8).
fn png(case: &str, file: &str) -> (Vec<u8>, usize, usize) {
    let img = image::open(fixtures().join(case).join(file))
        .unwrap_or_else(|e| panic!("{case}/{file}: {e}"));
    let (w, h) = (img.width() as usize, img.height() as usize);
    let bytes = match img {
        image::DynamicImage::ImageLuma8(g) => g.into_raw(),
        other => other.to_rgb8().into_raw(),
    };
    (bytes, w, h)
}

/// Records a mismatch as "case/what: n bytes differ, max |diff| d" (empty when equal).
fn compare(failures: &mut Vec<String>, label: String, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{label}: length");
    let diffs: Vec<u8> = got
        .iter()
        .zip(want)
        .map(|(a, b)| a.abs_diff(*b))
        .filter(|&d| d > 0)
        .collect();
    if !diffs.is_empty() {
        failures.push(format!(
            "{label}: {} bytes differ, max |diff| {}",
            diffs.len(),
            diffs.iter().max().unwrap()
        ));
    }
}

fn method(m: &str) -> Interpolation {
    match m {
        "linear" => Interpolation::Linear,
        "area" => Interpolation::Area,
        other => panic!("unknown method {other}"),
    }
}

fn spec_of(case: &Case, r: &ResizeCase) -> PreprocessSpec {
    PreprocessSpec {
        clahe: ClaheParams {
            clip_limit: case.clip_limit,
            tiles_x: case.tiles_x,
            tiles_y: case.tiles_y,
        },
        out_width: r.width,
        out_height: r.height,
        interpolation: method(&r.method),
        fov: None,
    }
}

fn run_pipeline(src: &[u8], w: usize, h: usize, spec: &PreprocessSpec) -> Vec<u8> {
    let lens = spec.buffer_lens(w, h);
    let (mut l, mut rgb, mut lut) = (vec![0; lens.l_plane], vec![0; lens.rgb], vec![0; lens.lut]);
    let (mut cols, mut rows) = (vec![false; lens.cols], vec![false; lens.rows]);
    let mut bufs = Buffers {
        l_plane: &mut l,
        rgb: &mut rgb,
        lut: &mut lut,
        cols: &mut cols,
        rows: &mut rows,
    };
    let mut out = vec![0; spec.resized_len()];
    preprocess_rgb8(src, w, h, spec, &mut bufs, &mut out).unwrap();
    out
}

#[test]
fn fixtures_cover_the_required_cases() {
    let m = manifest();
    assert!(m.cases.len() >= 40, "only {} golden cases", m.cases.len());
    assert!(
        m.opencv.starts_with('5') || m.opencv.starts_with("4."),
        "fixtures from OpenCV {}",
        m.opencv
    );
    let names: Vec<&str> = m.cases.iter().map(|c| c.name.as_str()).collect();
    for needle in [
        "tiny_1x1",
        "tiny_3x5",
        "tiny_7x7",
        "wide_",
        "tall_",
        "constant_0",
        "constant_255",
        "constant_128",
        "saturated",
        "fundus_idrid",
        "fundus_srahim",
        "params_clip",
    ] {
        assert!(names.iter().any(|n| n.contains(needle)), "no case {needle}");
    }
    assert!(m
        .cases
        .iter()
        .any(|c| c.width % 8 != 0 && c.height % 8 != 0));
}

#[test]
fn lab_clahe_resize_and_pipeline_match_opencv_byte_for_byte() {
    let m = manifest();
    let mut failures = Vec::new();
    let mut checks = 0;
    for case in &m.cases {
        let (input, w, h) = png(&case.name, "input.png");
        assert_eq!((w, h), (case.width, case.height), "{}", case.name);
        let params = ClaheParams {
            clip_limit: case.clip_limit,
            tiles_x: case.tiles_x,
            tiles_y: case.tiles_y,
        };
        let mut lut = vec![0u8; params.lut_len()];
        if case.stages {
            let mut lab = vec![0u8; input.len()];
            rgb_to_lab(&input, &mut lab).unwrap();
            compare(
                &mut failures,
                format!("{}/lab", case.name),
                &lab,
                &png(&case.name, "lab.png").0,
            );
            let mut back = vec![0u8; input.len()];
            lab_to_rgb(&lab, &mut back).unwrap();
            compare(
                &mut failures,
                format!("{}/lab2rgb", case.name),
                &back,
                &png(&case.name, "lab2rgb.png").0,
            );
            let l: Vec<u8> = lab.chunks_exact(3).map(|p| p[0]).collect();
            let mut eq_l = vec![0u8; l.len()];
            clahe(&l, &mut eq_l, w, h, &params, &mut lut).unwrap();
            compare(
                &mut failures,
                format!("{}/clahe_l", case.name),
                &eq_l,
                &png(&case.name, "clahe_l.png").0,
            );
            checks += 3;
        }
        let spec = PreprocessSpec {
            clahe: params,
            ..Default::default()
        };
        let lens = spec.buffer_lens(w, h);
        let (mut l, mut rgb) = (vec![0; lens.l_plane], vec![0; lens.rgb]);
        let (mut cols, mut rows) = (vec![false; lens.cols], vec![false; lens.rows]);
        let mut bufs = Buffers {
            l_plane: &mut l,
            rgb: &mut rgb,
            lut: &mut lut,
            cols: &mut cols,
            rows: &mut rows,
        };
        let mut equalised = vec![0u8; input.len()];
        clahe_rgb8(&input, w, h, &params, &mut bufs, &mut equalised).unwrap();
        let want_eq = png(&case.name, "equalised.png").0;
        compare(
            &mut failures,
            format!("{}/equalised", case.name),
            &equalised,
            &want_eq,
        );
        checks += 1;
        for r in &case.resizes {
            let want = png(&case.name, &r.file).0;
            let src = if r.source == "equalised" {
                &want_eq
            } else {
                &input
            };
            let mut out = vec![0u8; r.width * r.height * 3];
            resize(src, w, h, &mut out, r.width, r.height, 3, method(&r.method)).unwrap();
            compare(
                &mut failures,
                format!("{}/{}", case.name, r.file),
                &out,
                &want,
            );
            checks += 1;
            if r.source == "equalised" {
                let piped = run_pipeline(&input, w, h, &spec_of(case, r));
                compare(
                    &mut failures,
                    format!("{}/pipeline->{}", case.name, r.file),
                    &piped,
                    &want,
                );
                checks += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checks} comparisons differ from OpenCV:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checks > 300, "only {checks} comparisons ran");
}
