//! Dumps our L*a*b* conversions of all 2^24 byte triples (r-major) to two raw files, for
//! comparing with OpenCV when the exhaustive test fails: `cargo run --release --example dump_lab OUT_DIR`.
use drscreen_core::lab::{lab_to_rgb_pixel, rgb_to_lab_pixel};

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: dump_lab OUT_DIR"));
    for (name, f) in [
        ("rgb2lab.bin", rgb_to_lab_pixel as fn(u8, u8, u8) -> [u8; 3]),
        ("lab2rgb.bin", lab_to_rgb_pixel),
    ] {
        let mut out = Vec::with_capacity(3 << 24);
        for i in 0u32..1 << 24 {
            out.extend_from_slice(&f((i >> 16) as u8, (i >> 8) as u8, i as u8));
        }
        std::fs::write(dir.join(name), out).unwrap();
    }
}
