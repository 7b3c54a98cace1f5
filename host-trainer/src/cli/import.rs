//! `host-trainer import MODEL.onnx --cache DIR --out DIR [--config FILE]`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args as ClapArgs;
use host_trainer::export::import::import;
use host_trainer::train::config::TrainConfig;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// A float model written by `host-trainer export` (e.g. models/drscreen-default.onnx).
    pub model: PathBuf,
    /// Prepared cache the run reads (its training photos calibrate an int8 export); it must be
    /// preprocessed as the model's contract says.
    #[arg(long)]
    pub cache: PathBuf,
    /// Run folder to write (`run.json`, `best.safetensors`).
    #[arg(long)]
    pub out: PathBuf,
    /// The recipe recorded in the run (its width multiplier builds the architecture; default the
    /// seed's).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(a: &Args) -> Result<()> {
    let mut cfg = match &a.config {
        Some(p) => TrainConfig::load(p)?,
        None => TrainConfig::default(),
    };
    cfg.cache = a.cache.clone();
    cfg.out = a.out.clone();
    let r = import(&a.model, &cfg)?;
    println!(
        "{} -> {}: {} initializers given back bit for bit; evaluate it (`host-trainer evaluate --run {}`) before an export reads its thresholds",
        a.model.display(),
        r.run.display(),
        r.initializers,
        r.run.display()
    );
    Ok(())
}
