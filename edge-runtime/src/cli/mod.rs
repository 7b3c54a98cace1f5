//! One module per subcommand.
pub mod preprocess;
