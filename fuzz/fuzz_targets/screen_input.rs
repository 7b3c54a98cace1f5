//! Fuzzes edge-runtime's screening input path up to the network, in the order `Screener` runs
//! it: `decode_rgb8` -> quality gate (`measure`, `assess`) -> the shipped contract's preprocessing
//! -> the TTA batch. (Inference itself is left out: tract on a fixed-size tensor sees no input
//! bytes, and one call per input would cut the fuzzer's speed a hundredfold.)
#![no_main]

use drscreen_core::decode::decode_rgb8;
use drscreen_core::{write_views, ModelContract, Workspace};
use edge_runtime::quality::{assess, measure, Limits, Quality};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(photo) = decode_rgb8(data) else {
        return;
    };
    let m = measure(&photo.rgb, photo.width, photo.height);
    assert_eq!((m.width, m.height), (photo.width, photo.height));
    for f in [m.fov_fraction, m.saturated_fraction] {
        assert!((0.0..=1.0).contains(&f), "{m:?}");
    }
    assert!(m.dark_corners <= 4, "{m:?}");
    // Ungradable photos stop here, as in Screener; the gate must not let a NaN through either.
    let q = assess(&m, &Limits::default());
    if q != Quality::Gradable {
        return;
    }
    assert!(
        m.mean_luma.is_finite() && m.laplacian_var.is_finite(),
        "gradable with {m:?}"
    );
    let contract = ModelContract::default();
    let spec = contract.preprocess_spec();
    let rgb = Workspace::default()
        .preprocess(&photo.rgb, photo.width, photo.height, &spec)
        .expect("every photo the gate passes preprocesses");
    let mut batch = vec![0f32; contract.tta.len() * rgb.len()];
    write_views(
        &rgb,
        spec.out_width,
        spec.out_height,
        &contract.tta,
        &mut batch,
    )
    .expect("the seed views fit the batch they were sized for");
});
