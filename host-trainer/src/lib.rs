//! host-trainer library: data preparation, the network, training and evaluation (tch).
//! The binary (`src/main.rs`) is a thin CLI over these modules.

pub mod data;
pub mod eval;
pub mod export;
pub mod model;
pub mod paths;
pub mod train;

/// Tests that seed tch's global generator hold this while they draw, so that tests running
/// beside them cannot take numbers from the middle of their sequence.
#[cfg(test)]
pub(crate) static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
