//! `edge-runtime`: drscreen on the device.
//!
//! Exit codes: 0 success; 1 bad input or failure (the message says what and where); 2 usage error.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "edge-runtime",
    version,
    about = "drscreen on the device",
    after_help = after_help()
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write what the model sees for a photo (after CLAHE at full size, or after the resize).
    Preprocess(cli::preprocess::Args),
    /// Screen photos: quality gate, preprocessing, the TTA views (one tract call each, spread over the threads), decision, log.
    Screen(cli::screen::Args),
    /// Set this site's threshold from its own camera's graded photos (writes the file --site reads).
    Calibrate(cli::calibrate::Args),
    /// Screen each new photo a camera writes into a folder (once complete; never twice).
    Watch(cli::watch::Args),
    /// One frame from a V4L2 camera, saved and/or screened (feature `capture`).
    #[cfg(feature = "capture")]
    Capture(cli::capture::Args),
    /// The clinic loop on a Pi: capture button -> photo -> screening -> log -> LEDs (feature `rpi`).
    #[cfg(feature = "rpi")]
    Device(cli::device::Args),
}

/// Exit codes, and the subcommands this build left out with the feature that builds them.
fn after_help() -> String {
    let mut missing = Vec::new();
    if !cfg!(feature = "capture") {
        missing.push(
            "`capture` (V4L2 camera): cargo build --release -p edge-runtime --features capture",
        );
    }
    if !cfg!(feature = "rpi") {
        missing.push("`device` (Pi button, LEDs, camera): cargo build --release -p edge-runtime --features rpi");
    }
    let mut s = String::from("Exit codes: 0 ok, 1 bad input or failure, 2 usage error");
    if !missing.is_empty() {
        s.push_str("\n\nNot in this build:");
        for m in missing {
            s.push_str("\n  ");
            s.push_str(m);
        }
    }
    s
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Preprocess(args) => cli::preprocess::run(&args),
        Command::Screen(args) => cli::screen::run(&args),
        Command::Watch(args) => cli::watch::run(&args),
        Command::Calibrate(args) => cli::calibrate::run(&args),
        #[cfg(feature = "capture")]
        Command::Capture(args) => cli::capture::run(&args),
        #[cfg(feature = "rpi")]
        Command::Device(args) => cli::device::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
