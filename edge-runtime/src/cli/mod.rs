//! One module per subcommand.
pub mod preprocess;
pub mod screen;
pub mod watch;
