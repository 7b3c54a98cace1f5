//! Generates the fixed-point tables of OpenCV's 8-bit L*a*b* conversions.
//!
//! OpenCV (`modules/imgproc/src/color_lab.cpp`, `initLabTabs`) fills these tables once at run time
//! with its software float (`softfloat`, IEEE-754 single / `softdouble`, double). The same operations
//! in the same order on IEEE-754 `f32`/`f64` give the same bits; the core then only indexes them, so
//! the `no_std` crate needs no libm. `tests/lab_exhaustive.rs` checks all 2^24 inputs of both
//! directions against OpenCV, which would catch any table entry that came out differently.

use std::fmt::Write as _;
use std::path::PathBuf;

/// OpenCV `sRGB2XYZ_D65` (rows X, Y, Z; columns R, G, B), as the raw doubles OpenCV stores.
const SRGB2XYZ_D65: [u64; 9] = [
    0x3fda65a14488c60d,
    0x3fd6e297396d0918,
    0x3fc71819d2391d58,
    0x3fcb38cda6e75ff6,
    0x3fe6e297396d0918,
    0x3fb279aae6c8f755,
    0x3f93cc4ac6cdaf4b,
    0x3fbe836eb4e98138,
    0x3fee68427418d691,
];
/// OpenCV `XYZ2sRGB_D65` (rows R, G, B; columns X, Y, Z).
const XYZ2SRGB_D65: [u64; 9] = [
    0x4009ec804102ff8f,
    0xbff8982a9930be0e,
    0xbfdfe7ff583a53b9,
    0xbfef042528ae74f3,
    0x3ffe040f23897204,
    0x3fa546d3f9e7b80b,
    0x3fac7de5082cf52c,
    0xbfca1e14bdfd2631,
    0x3ff0eabef06b3786,
];
/// OpenCV `D65` white point.
const D65: [u64; 3] = [0x3fee6a22b3892ee8, 0x3ff0000000000000, 0x3ff16b8950763a19];

const LAB_SHIFT: i32 = 12;
const GAMMA_SHIFT: i32 = 3;
const LAB_SHIFT2: i32 = LAB_SHIFT + GAMMA_SHIFT;
const LAB_CBRT_TAB_SIZE_B: usize = 256 * 3 / 2 * (1 << GAMMA_SHIFT);
const INV_GAMMA_TAB_SIZE: usize = 1 << 12;
const LUT_BASE: i32 = 1 << 14;
const MIN_AB_VALUE: i32 = -8145;
const AB_TO_XZ_LEN: usize = (LUT_BASE as usize) * 9 / 4;

/// `cvRound` on a float: round half to even.
fn round_f32(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// `cvRound` on a double: round half to even.
fn round_f64(x: f64) -> i32 {
    x.round_ties_even() as i32
}

fn apply_gamma(x: f32) -> f32 {
    let xd = x as f64;
    let threshold = 809.0f64 / 20000.0;
    let low_scale = 323.0f64 / 25.0;
    let power = 12.0f64 / 5.0;
    let shift = 11.0f64 / 200.0;
    let v = if xd <= threshold {
        xd / low_scale
    } else {
        ((xd + shift) / (1.0 + shift)).powf(power)
    };
    v as f32
}

fn apply_inv_gamma(x: f32) -> f32 {
    let xd = x as f64;
    let threshold = 7827.0f64 / 2_500_000.0;
    let low_scale = 323.0f64 / 25.0;
    let power = 12.0f64 / 5.0;
    let shift = 11.0f64 / 200.0;
    let v = if xd <= threshold {
        xd * low_scale
    } else {
        xd.powf(1.0 / power) * (1.0 + shift) - shift
    };
    v as f32
}

/// OpenCV's `softfloat` cube root (`f32_cbrt` in `modules/core/src/softfloat.cpp`): Ken Turkowski's
/// rational approximation in double precision, its mantissa *truncated* to single precision. It is
/// not the correctly rounded cube root, and the tables must use it to match OpenCV.
fn cv_cbrt(x: f32) -> f32 {
    const A: [u64; 9] = [
        0x4046a09e6653ba70,
        0x406808f46c6116e0,
        0x405dca97439cae14,
        0x402add70d2827500,
        0x3fc4f15f83f55d2d,
        0x402d9e20660edb21,
        0x4062ff15c0285815,
        0x406510d06a8112ce,
        0x4040fecbc9e2c375,
    ];
    let a = |i: usize| f64::from_bits(A[i]);
    let bits = x.to_bits();
    if bits & 0x7fff_ffff == 0 {
        return 0.0;
    }
    let sign = bits >> 31;
    let e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut shx = e % 3;
    if shx >= 0 {
        shx -= 3;
    }
    let ex = (e - shx) / 3 - 1;
    let fr = f64::from_bits((((shx + 1023) as u64) << 52) | (((bits & 0x7f_ffff) as u64) << 29));
    let fr = ((((a(0) * fr + a(1)) * fr + a(2)) * fr + a(3)) * fr + a(4))
        / ((((a(5) * fr + a(6)) * fr + a(7)) * fr + a(8)) * fr + 1.0);
    let mant = ((fr.to_bits() & ((1u64 << 52) - 1)) >> 29) as u32;
    f32::from_bits((sign << 31) + (((ex + 127) as u32) << 23) + mant)
}

fn emit_table<T: std::fmt::Display>(out: &mut String, name: &str, ty: &str, values: &[T]) {
    writeln!(
        out,
        "pub(crate) static {name}: [{ty}; {}] = [",
        values.len()
    )
    .unwrap();
    for chunk in values.chunks(16) {
        let line: Vec<String> = chunk.iter().map(|v| v.to_string()).collect();
        writeln!(out, "    {},", line.join(", ")).unwrap();
    }
    writeln!(out, "];").unwrap();
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let f = |bits: u64| f64::from_bits(bits);

    // sRGBGammaTab_b: 8-bit sRGB -> linear, scaled by 255 * 2^gamma_shift.
    let int_scale = (255 * (1 << GAMMA_SHIFT)) as f32;
    let gamma_b: Vec<u16> = (0..256)
        .map(|i| round_f32(int_scale * apply_gamma(i as f32 / 255.0f32)) as u16)
        .collect();

    // LabCbrtTab_b: f(t) of CIE Lab in Q15, indexed by linear XYZ in Q(gamma_shift) * 255.
    let lthresh = 216.0f32 / 24389.0f32;
    let lscale = 841.0f32 / 108.0f32;
    let lbias = 16.0f32 / 116.0f32;
    let cb_scale = 1.0f32 / (255.0f32 * (1 << GAMMA_SHIFT) as f32);
    let lshift2 = (1 << LAB_SHIFT2) as f32;
    let cbrt_b: Vec<u16> = (0..LAB_CBRT_TAB_SIZE_B)
        .map(|i| {
            let x = cb_scale * i as f32;
            let v = if x < lthresh {
                x.mul_add(lscale, lbias)
            } else {
                cv_cbrt(x)
            };
            round_f32(lshift2 * v) as u16
        })
        .collect();

    // L byte straight from the Y index: CV_DESCALE(Lscale*fY + Lshift, lab_shift2), saturated.
    let l_scale = (116 * 255 + 50) / 100;
    let l_shift = -((16 * 255 * (1 << LAB_SHIFT2) + 50) / 100);
    let l_from_y: Vec<u8> = cbrt_b
        .iter()
        .map(|&fy| {
            let l = (l_scale * fy as i32 + l_shift + (1 << (LAB_SHIFT2 - 1))) >> LAB_SHIFT2;
            l.clamp(0, 255) as u8
        })
        .collect();

    // sRGBInvGammaTab_b: linear in Q12 -> 8-bit sRGB.
    let inv_scale = 1.0f32 / INV_GAMMA_TAB_SIZE as f32;
    let inv_gamma_b: Vec<u16> = (0..INV_GAMMA_TAB_SIZE)
        .map(|i| round_f32(255.0f32 * apply_inv_gamma(inv_scale * i as f32)) as u16)
        .collect();

    // LabToYF_b: L byte -> (y, f(y)) in Q14.
    let mut lab_to_yf: Vec<u16> = Vec::with_capacity(512);
    for i in 0..256i32 {
        let (y, ify) = if i <= 20 {
            let y = round_f32((i * LUT_BASE * 20 * 9) as f32 / (17 * 29 * 29 * 29) as f32);
            let ify = round_f32(
                LUT_BASE as f32 * (16.0f32 / 116.0f32 + (i * 5) as f32 / (3 * 17 * 29) as f32),
            );
            (y, ify)
        } else {
            let fy = (i * 100 * LUT_BASE) as f32 / (255 * 116) as f32
                + (16 * LUT_BASE) as f32 / 116.0f32;
            let ify = round_f32(fy);
            let y = round_f32(fy * fy * fy / (LUT_BASE * LUT_BASE) as f32);
            (y, ify)
        };
        lab_to_yf.push(y as u16);
        lab_to_yf.push(ify as u16);
    }

    // abToXZ_b: f(x) / f(z) in Q14 -> x / z in Q14 (integer arithmetic, C truncation).
    let ab_to_xz: Vec<i32> = (MIN_AB_VALUE..MIN_AB_VALUE + AB_TO_XZ_LEN as i32)
        .map(|i| {
            if i <= 3390 {
                i * 108 / 841 - LUT_BASE * 16 / 116 * 108 / 841
            } else {
                i * i / LUT_BASE * i / LUT_BASE
            }
        })
        .collect();

    // Fixed-point matrices, as RGB2Lab_b and Lab2RGBinteger build them for RGB channel order.
    let lshift = (1 << LAB_SHIFT) as f64;
    let mut rgb2xyz = [0i32; 9];
    let mut xyz2rgb = [0i32; 9];
    for row in 0..3 {
        for col in 0..3 {
            rgb2xyz[row * 3 + col] =
                round_f64(lshift * f(SRGB2XYZ_D65[row * 3 + col]) / f(D65[row]));
            xyz2rgb[row * 3 + col] =
                round_f64(lshift * f(XYZ2SRGB_D65[row * 3 + col]) * f(D65[col]));
        }
    }

    let mut out = String::new();
    writeln!(
        out,
        "// Generated by build.rs from OpenCV's initLabTabs recipe. Do not edit."
    )
    .unwrap();
    emit_table(&mut out, "SRGB_GAMMA_B", "u16", &gamma_b);
    emit_table(&mut out, "LAB_CBRT_B", "u16", &cbrt_b);
    emit_table(&mut out, "L_FROM_Y", "u8", &l_from_y);
    emit_table(&mut out, "SRGB_INV_GAMMA_B", "u16", &inv_gamma_b);
    emit_table(&mut out, "LAB_TO_YF_B", "u16", &lab_to_yf);
    emit_table(&mut out, "AB_TO_XZ_B", "i32", &ab_to_xz);
    emit_table(&mut out, "RGB2XYZ_Q12", "i32", &rgb2xyz);
    emit_table(&mut out, "XYZ2RGB_Q12", "i32", &xyz2rgb);

    let path = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("lab_tables.rs");
    std::fs::write(path, out).unwrap();
}
