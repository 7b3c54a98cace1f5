//! `host-trainer synth --out DIR --n N --seed S [--size PX]`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args as ClapArgs;
use host_trainer::data::synth::{write_dataset, SynthOptions};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Output folder (Kaggle layout: trainLabels.csv + train/<image>.jpeg).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of photos.
    #[arg(long, default_value_t = 200)]
    pub n: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Side of the square photos in pixels.
    #[arg(long, default_value_t = 512)]
    pub size: u32,
}

pub fn run(a: &Args) -> Result<()> {
    let s = write_dataset(
        &a.out,
        &SynthOptions {
            n: a.n,
            seed: a.seed,
            size: a.size,
        },
    )?;
    println!(
        "wrote {} synthetic photos to {} (grades 0-4: {:?})",
        s.images,
        a.out.display(),
        s.per_grade
    );
    Ok(())
}
