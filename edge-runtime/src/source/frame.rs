//! Camera frames to what the screener reads: YUYV (4:2:2) to RGB8 exactly as OpenCV converts it,
//! and MJPEG frames made whole JPEG files (UVC cameras leave out the Huffman tables).
//! Plain byte code with no camera library, so it is tested on every build.

use std::borrow::Cow;

use anyhow::{ensure, Result};

// OpenCV's BT.601 limited-range YUV -> RGB, 20-bit fixed point (color_yuv.simd.hpp).
const CY: i32 = 1_220_542;
const CUB: i32 = 2_116_026;
const CUG: i32 = -409_993;
const CVG: i32 = -852_492;
const CVR: i32 = 1_673_527;
const SHIFT: i32 = 20;

fn clip(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// YUYV (bytes Y0 U Y1 V per two pixels) to interleaved RGB8, bit-exact with OpenCV's
/// `cvtColor(src, COLOR_YUV2RGB_YUYV)`: BT.601 limited range (Y 16..235), rounding by adding half
/// before the 20-bit shift, saturating.
///
/// `src` has `height` rows of `stride` bytes (`stride >= width * 2`, the driver's
/// `bytesperline`); `width` is even. `dst` is `width * height * 3` bytes.
pub fn yuyv_to_rgb8(
    src: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    dst: &mut [u8],
) -> Result<()> {
    ensure!(
        width > 0 && height > 0 && width % 2 == 0,
        "YUYV frame of {width}x{height}: the width must be even and neither side zero"
    );
    ensure!(
        stride >= width * 2,
        "YUYV stride {stride} is shorter than a {width}-pixel row ({} bytes)",
        width * 2
    );
    let need = stride * (height - 1) + width * 2;
    ensure!(
        src.len() >= need,
        "YUYV frame has {} bytes, a {width}x{height} frame with stride {stride} needs {need}: the camera sent a short frame",
        src.len()
    );
    ensure!(
        dst.len() == width * height * 3,
        "RGB buffer has {} bytes, expected {}",
        dst.len(),
        width * height * 3
    );
    let half = 1 << (SHIFT - 1);
    for (row, out) in src.chunks(stride).zip(dst.chunks_exact_mut(width * 3)) {
        for (m, px) in row[..width * 2]
            .chunks_exact(4)
            .zip(out.chunks_exact_mut(6))
        {
            let (u, v) = (i32::from(m[1]) - 128, i32::from(m[3]) - 128);
            let ruv = half + CVR * v;
            let guv = half + CVG * v + CUG * u;
            let buv = half + CUB * u;
            for (k, y) in [m[0], m[2]].into_iter().enumerate() {
                let y = (i32::from(y) - 16).max(0) * CY;
                px[k * 3] = clip((y + ruv) >> SHIFT);
                px[k * 3 + 1] = clip((y + guv) >> SHIFT);
                px[k * 3 + 2] = clip((y + buv) >> SHIFT);
            }
        }
    }
    Ok(())
}

/// The Huffman tables of ITU-T T.81 Annex K.3 (luminance and chrominance, DC and AC) as one DHT
/// segment: the tables a UVC MJPEG frame without its own DHT is coded with.
const DEFAULT_DHT: [u8; 420] = {
    const DC_BITS_L: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
    const DC_BITS_C: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
    const DC_VALS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    const AC_BITS_L: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
    const AC_VALS_L: [u8; 162] = [
        0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61,
        0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52,
        0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25,
        0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45,
        0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64,
        0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83,
        0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
        0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6,
        0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3,
        0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8,
        0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ];
    const AC_BITS_C: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
    const AC_VALS_C: [u8; 162] = [
        0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61,
        0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33,
        0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18,
        0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44,
        0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63,
        0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a,
        0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97,
        0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4,
        0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca,
        0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7,
        0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa,
    ];
    let mut s = [0u8; 420];
    // FF C4, length 418 = 2 + 4 tables x (1 class/id + 16 counts) + 12 + 12 + 162 + 162 values.
    s[0] = 0xFF;
    s[1] = 0xC4;
    s[2] = (418 >> 8) as u8;
    s[3] = (418 & 0xFF) as u8;
    let mut i = 4;
    macro_rules! table {
        ($class_id:expr, $bits:expr, $vals:expr) => {
            s[i] = $class_id;
            i += 1;
            let mut k = 0;
            while k < 16 {
                s[i] = $bits[k];
                i += 1;
                k += 1;
            }
            let mut k = 0;
            while k < $vals.len() {
                s[i] = $vals[k];
                i += 1;
                k += 1;
            }
        };
    }
    table!(0x00, DC_BITS_L, DC_VALS);
    table!(0x10, AC_BITS_L, AC_VALS_L);
    table!(0x01, DC_BITS_C, DC_VALS);
    table!(0x11, AC_BITS_C, AC_VALS_C);
    assert!(i == 420);
    s
};

/// An MJPEG frame as a whole JPEG file: when it has no DHT segment before its scan (UVC cameras
/// leave the standard tables out), the Annex K tables are inserted before the SOS marker.
/// Anything that does not parse as JPEG markers is returned unchanged for the decoder to refuse.
pub fn mjpeg_to_jpeg(frame: &[u8]) -> Cow<'_, [u8]> {
    if !frame.starts_with(&[0xFF, 0xD8]) {
        return Cow::Borrowed(frame);
    }
    let mut i = 2;
    while i + 4 <= frame.len() {
        if frame[i] != 0xFF {
            return Cow::Borrowed(frame);
        }
        match frame[i + 1] {
            0xFF => i += 1, // fill byte
            0xC4 => return Cow::Borrowed(frame),
            0xDA => {
                let mut whole = Vec::with_capacity(frame.len() + DEFAULT_DHT.len());
                whole.extend_from_slice(&frame[..i]);
                whole.extend_from_slice(&DEFAULT_DHT);
                whole.extend_from_slice(&frame[i..]);
                return Cow::Owned(whole);
            }
            _ => i += 2 + usize::from(u16::from_be_bytes([frame[i + 2], frame[i + 3]])),
        }
    }
    Cow::Borrowed(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn yuyv_matches_opencv_on_every_yuv_triple() {
        // The frame of scripts/make_yuyv_fixture.py: (2y, u, 2y + 1, v) for u, v, y in order.
        let mut src = Vec::with_capacity(4096 * 4096 * 2);
        for u in 0..=255u8 {
            for v in 0..=255u8 {
                for y in 0..128u8 {
                    src.extend_from_slice(&[2 * y, u, 2 * y + 1, v]);
                }
            }
        }
        let mut rgb = vec![0u8; 4096 * 4096 * 3];
        yuyv_to_rgb8(&src, 4096, 4096, 4096 * 2, &mut rgb).unwrap();
        let fixture = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/yuyv_all_opencv.sha256"),
        )
        .unwrap();
        let want = fixture.split_whitespace().next().unwrap();
        assert_eq!(format!("{:x}", Sha256::digest(&rgb)), want);
        // Anchors: video black and white, and (y=0, u=0, v=0) as OpenCV gives it.
        let mut px = [0u8; 6];
        yuyv_to_rgb8(&[16, 128, 235, 128], 2, 1, 4, &mut px).unwrap();
        assert_eq!(px, [0, 0, 0, 255, 255, 255]);
        assert_eq!(rgb[..3], [0, 154, 0]);
    }

    #[test]
    fn yuyv_rows_follow_the_stride_and_bad_sizes_are_errors_not_panics() {
        // Two rows of one macropixel, each padded to 8 bytes.
        let src = [16, 128, 16, 128, 9, 9, 9, 9, 235, 128, 235, 128, 9, 9, 9, 9];
        let mut rgb = [7u8; 12];
        yuyv_to_rgb8(&src, 2, 2, 8, &mut rgb).unwrap();
        assert_eq!(rgb, [0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255]);
        let e = |r: Result<()>| r.unwrap_err().to_string();
        assert!(e(yuyv_to_rgb8(&src, 3, 2, 8, &mut [0; 18])).contains("even"));
        assert!(e(yuyv_to_rgb8(&src, 2, 2, 2, &mut rgb)).contains("stride"));
        assert!(e(yuyv_to_rgb8(&src[..10], 2, 2, 8, &mut rgb)).contains("short frame"));
        assert!(e(yuyv_to_rgb8(&src, 2, 2, 8, &mut [0; 11])).contains("expected 12"));
    }

    /// A JPEG's segments up to its scan without the DHT ones: what a UVC camera sends.
    fn without_dht(jpeg: &[u8]) -> Vec<u8> {
        let mut out = vec![0xFF, 0xD8];
        let mut i = 2;
        loop {
            let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
            match jpeg[i + 1] {
                0xDA => {
                    out.extend_from_slice(&jpeg[i..]);
                    return out;
                }
                0xC4 => {}
                _ => out.extend_from_slice(&jpeg[i..i + 2 + len]),
            }
            i += 2 + len;
        }
    }

    #[test]
    fn mjpeg_frames_without_huffman_tables_decode_as_the_whole_jpeg() {
        // libjpeg (Pillow, not optimised) codes with the Annex K tables, as UVC cameras do.
        let jpeg = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/fundus_96x64_baseline.jpg"),
        )
        .unwrap();
        let frame = without_dht(&jpeg);
        assert!(drscreen_core::decode::decode_rgb8(&frame).is_err());
        let fixed = mjpeg_to_jpeg(&frame);
        assert!(matches!(fixed, Cow::Owned(_)));
        let want = drscreen_core::decode::decode_rgb8(&jpeg).unwrap();
        let got = drscreen_core::decode::decode_rgb8(&fixed).unwrap();
        assert_eq!((got.width, got.height), (want.width, want.height));
        assert_eq!(got.rgb, want.rgb);
        assert!(
            matches!(mjpeg_to_jpeg(&jpeg), Cow::Borrowed(_)),
            "has its tables"
        );
        for junk in [&b""[..], b"\xFF\xD8", b"\xFF\xD8\x00\x01", b"not a frame"] {
            assert_eq!(&*mjpeg_to_jpeg(junk), junk);
        }
    }
}
