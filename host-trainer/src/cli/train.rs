//! `host-trainer train [--config FILE] [--cache DIR] [--out DIR] [--epochs N] [--resume]`.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use clap::Args as ClapArgs;
use host_trainer::train::config::TrainConfig;
use host_trainer::train::fit::train;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// TOML config (keys not given keep the seed's recipe; see configs/seed.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Prepared cache (overrides `cache` in the config).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Run folder (overrides `out`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Epochs (overrides `optim.epochs`).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Continue a stopped run from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Start afresh in a run folder that already holds a run (its checkpoints are replaced).
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(a: &Args) -> Result<()> {
    let mut cfg = match &a.config {
        Some(p) => TrainConfig::load(p)?,
        None => TrainConfig::default(),
    };
    if let Some(c) = &a.cache {
        cfg.cache = c.clone();
    }
    if let Some(o) = &a.out {
        cfg.out = o.clone();
    }
    if let Some(e) = a.epochs {
        cfg.optim.epochs = e;
    }
    ensure!(
        !cfg.cache.as_os_str().is_empty(),
        "no cache: give --cache or `cache` in the config"
    );
    ensure!(
        !cfg.out.as_os_str().is_empty(),
        "no run folder: give --out or `out` in the config"
    );
    let earlier = host_trainer::train::fit::run_file(&cfg.out, host_trainer::train::fit::STATE);
    ensure!(
        a.resume || a.force || !earlier.exists(),
        "{} already holds a run ({} exists): add --resume to continue it, --force to start it \
         afresh (its checkpoints are replaced), or give another --out",
        cfg.out.display(),
        earlier.display()
    );
    let s = train(&cfg, a.resume, !a.quiet)?;
    println!(
        "{} epochs done; best {:?} {:.4} at epoch {} -> {}",
        s.epochs_done,
        cfg.optim.monitor,
        s.best_score,
        s.best_epoch,
        cfg.out.join(host_trainer::train::fit::BEST).display()
    );
    Ok(())
}
