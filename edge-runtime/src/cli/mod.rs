//! One module per subcommand.
#[cfg(feature = "capture")]
pub mod capture;
#[cfg(feature = "rpi")]
pub mod device;
pub mod preprocess;
pub mod screen;
pub mod watch;
