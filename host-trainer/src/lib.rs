//! host-trainer library: data preparation, the network, training and evaluation (tch).
//! The binary (`src/main.rs`) is a thin CLI over these modules.

pub mod data;
pub mod eval;
pub mod export;
pub mod model;
pub mod paths;
pub mod train;
