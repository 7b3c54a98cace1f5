//! One module per subcommand.
pub mod evaluate;
pub mod export;
pub mod import;
pub mod prepare;
pub mod synth;
pub mod train;
