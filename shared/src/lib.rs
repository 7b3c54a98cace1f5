//! drscreen-core: the one preprocessing, TTA and decision code that the trainer (tch) and the
//! device (tract) both run, so what the network sees on the board is what it saw in training.
//!
//! - [`lab`]: 8-bit RGB <-> L*a*b*, bit-exact with OpenCV `cvtColor`
//! - [`clahe`]: CLAHE on one 8-bit channel, bit-exact with `cv2.createCLAHE(..).apply`
//! - [`resize`]: `cv2.resize` `INTER_LINEAR` / `INTER_AREA`, bit-exact
//! - [`fov`]: find the fundus disc and cut the square around it (contract version 2)
//! - [`pipeline`]: RGB8 -> (field of view) -> Lab -> CLAHE(L) -> RGB8 -> resize -> f32 in one call
//! - [`tta`]: the five test-time views in one batch buffer, and their mean
//! - [`decision`] and [`contract`]: threshold -> referral, and the contract a model file carries
//!
//! `no_std`, no allocation: every function takes caller-owned slices and returns
//! [`CoreError`] for wrong sizes. Feature `serde` adds (de)serialisation of the contract types.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod clahe;
pub mod contract;
pub mod decision;
mod error;
pub mod fov;
pub mod lab;
pub mod pipeline;
pub mod resize;
pub mod tta;

pub use clahe::ClaheParams;
pub use contract::{ModelContract, CONTRACT_KEY, CONTRACT_VERSION};
pub use decision::{decide, Decision};
pub use error::CoreError;
pub use fov::FovParams;
pub use pipeline::{preprocess_rgb8, to_chw_f32, Buffers, PreprocessSpec};
pub use resize::Interpolation;
pub use tta::{aggregate, write_views, TtaResult, View, SEED_VIEWS};

#[cfg(feature = "decode")]
pub mod decode;
#[cfg(feature = "std")]
pub mod npy;
#[cfg(feature = "std")]
mod workspace;
#[cfg(feature = "std")]
pub use workspace::Workspace;
