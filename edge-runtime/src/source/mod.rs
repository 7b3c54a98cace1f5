//! Where photos come from: files given on the command line, or a folder a camera writes into.
pub mod watch;
