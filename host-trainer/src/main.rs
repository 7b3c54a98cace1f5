//! `host-trainer`: prepares data, trains and evaluates the drscreen model with tch (libtorch).
//! Trains on the first CUDA GPU when there is one, else on the CPU.
//!
//! Exit codes: 0 success; 1 bad input or failure (the message says what and where); 2 usage error.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "host-trainer",
    version,
    about = "drscreen trainer (tch / libtorch)",
    after_help = "Exit codes: 0 ok, 1 bad input or failure, 2 usage error"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write synthetic fundus photos in the Kaggle layout (tests, demos).
    Synth(cli::synth::Args),
    /// Split by patient and preprocess photos into the uint8 cache.
    Prepare(cli::prepare::Args),
    /// Train MobileNetV2 with the seed's recipe (or a TOML config).
    Train(cli::train::Args),
    /// Evaluate a run with TTA: thresholds, metrics, reports, ROC curve.
    Evaluate(cli::evaluate::Args),
    /// Write the model as ONNX with its contract, checked in tract, and its golden outputs.
    Export(cli::export::Args),
    /// Turn a float model written by `export` back into a run folder (to re-export it, e.g. as int8).
    Import(cli::import::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Synth(a) => cli::synth::run(a),
        Command::Prepare(a) => cli::prepare::run(a),
        Command::Train(a) => cli::train::run(a),
        Command::Evaluate(a) => cli::evaluate::run(a),
        Command::Export(a) => cli::export::run(a),
        Command::Import(a) => cli::import::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
