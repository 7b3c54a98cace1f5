//! Where the real data lives: `$DRSCREEN_DATA`, else `../shared/data` beside the checkout.

use std::path::PathBuf;

/// The handout data folder (IDRiD, SRahim, ImageNet weights).
pub fn data_dir() -> PathBuf {
    std::env::var_os("DRSCREEN_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

/// The TF-slim MobileNetV2 1.0 ImageNet backbone (torchvision names).
pub fn imagenet_weights() -> PathBuf {
    data_dir().join("weights/mobilenet_v2_1.0_224_tfslim.safetensors")
}
