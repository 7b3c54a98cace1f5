//! edge-runtime library: the device side of drscreen. The binary (`src/main.rs`) is a thin CLI.

pub mod decode;
pub mod degrade;
pub mod device;
pub mod engine;
pub mod indicator;
pub mod quality;
pub mod record;
pub mod screen;
pub mod site;
pub mod source;
