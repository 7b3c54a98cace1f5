//! Every 8-bit input of both L*a*b* directions against OpenCV: the SHA-256 of `cvtColor` over all
//! 2^24 byte triples (recorded by `scripts/make_core_fixtures.py`) must match ours.

use drscreen_core::lab::{lab_to_rgb_pixel, rgb_to_lab_pixel};
use sha2::{Digest, Sha256};

fn expected(key: &str) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/core/manifest.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["exhaustive"][key].as_str().unwrap().to_owned()
}

fn hash_all(f: impl Fn(u8, u8, u8) -> [u8; 3]) -> String {
    let mut hasher = Sha256::new();
    let mut row = vec![0u8; 256 * 256 * 3];
    for a in 0..=255u8 {
        for b in 0..=255u8 {
            for c in 0..=255u8 {
                let i = (b as usize * 256 + c as usize) * 3;
                row[i..i + 3].copy_from_slice(&f(a, b, c));
            }
        }
        hasher.update(&row);
    }
    format!("{:x}", hasher.finalize())
}

#[test]
fn rgb_to_lab_matches_opencv_on_all_2_pow_24_colours() {
    assert_eq!(hash_all(rgb_to_lab_pixel), expected("rgb2lab_sha256"));
}

#[test]
fn lab_to_rgb_matches_opencv_on_all_2_pow_24_inputs() {
    assert_eq!(hash_all(lab_to_rgb_pixel), expected("lab2rgb_sha256"));
}
