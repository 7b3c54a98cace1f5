//! Training: the seed's recipe as a TOML config, focal loss, camera augmentation before CLAHE,
//! device augmentation, the loop.
pub mod augment;
pub mod camera;
pub mod config;
pub mod fit;
pub mod loss;
