//! Data: label tables, splits, the preprocessed cache, synthetic photos.
pub mod cache;
pub mod labels;
pub mod sources;
pub mod split;
pub mod synth;
