//! The network: its one description ([`arch`]) and the tch builder ([`net`]).
pub mod arch;
pub mod net;

pub use arch::Arch;
pub use net::{load_backbone, Net};
