//! `host-trainer`: prepares data, trains and evaluates the drscreen model with tch (libtorch).
//!
//! Exit codes: 0 success; 1 bad input or failure (the message says what and where); 2 usage error.

fn main() {}
