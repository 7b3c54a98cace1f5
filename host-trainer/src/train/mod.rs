//! Training: the seed's recipe as a TOML config, focal loss, device augmentation, the loop.
pub mod augment;
pub mod config;
pub mod fit;
pub mod loss;
