//! Fuzzes what every photo goes through before the network: bytes -> `decode_rgb8` (JPEG/PNG
//! with the decoder limits) -> Lab / CLAHE(L*) / resize for both resize methods a contract can
//! name -> the five TTA views. A decode `Err` is the answer for bad input (the device turns it
//! into an "ungradable" record); any panic, overflow, out-of-bounds access, or an error from
//! preprocessing a photo the decoder accepted, is a bug.
#![no_main]

use drscreen_core::decode::decode_rgb8;
use drscreen_core::{write_views, Interpolation, ModelContract, PreprocessSpec, Workspace};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(photo) = decode_rgb8(data) else {
        return;
    };
    assert_eq!(photo.rgb.len(), photo.width * photo.height * 3);
    let contract = ModelContract::default();
    let mut ws = Workspace::default();
    // The field-of-view geometry (contract version 2) may find no disc, and must say so.
    let fov = PreprocessSpec {
        out_width: 40,
        out_height: 40,
        interpolation: Interpolation::Area,
        fov: Some(drscreen_core::FovParams::default()),
        ..contract.preprocess_spec()
    };
    match ws.preprocess(&photo.rgb, photo.width, photo.height, &fov) {
        Ok(rgb) => assert_eq!(rgb.len(), fov.resized_len()),
        Err(e) => assert_eq!(e, drscreen_core::CoreError::NoFieldOfView),
    }
    for spec in [
        contract.preprocess_spec(),
        PreprocessSpec {
            out_width: 37,
            out_height: 29,
            interpolation: Interpolation::Area,
            ..contract.preprocess_spec()
        },
    ] {
        let rgb = ws
            .preprocess(&photo.rgb, photo.width, photo.height, &spec)
            .expect("every photo the decoder accepts preprocesses");
        assert_eq!(rgb.len(), spec.resized_len());
        let mut batch = vec![0f32; contract.tta.len() * rgb.len()];
        write_views(
            &rgb,
            spec.out_width,
            spec.out_height,
            &contract.tta,
            &mut batch,
        )
        .expect("the seed views fit the batch they were sized for");
        assert!(batch.iter().all(|v| (0.0..=1.0).contains(v)));
    }
});
