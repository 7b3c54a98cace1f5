//! `host-trainer evaluate --run DIR --cache DIR [--split val|test] [--thresholds-from METRICS.json]`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args as ClapArgs, ValueEnum};
use host_trainer::data::split::Split;
use host_trainer::eval::evaluate::{evaluate, EvalOptions};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SplitArg {
    Train,
    Val,
    Test,
}

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Run folder from `host-trainer train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Prepared cache to evaluate on (same preprocessing as the run's).
    #[arg(long)]
    pub cache: PathBuf,
    #[arg(long, value_enum, default_value = "val")]
    pub split: SplitArg,
    /// Checkpoint (default: the run's best.safetensors).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Use the thresholds chosen in an earlier evaluation (e.g. validation -> external test).
    #[arg(long)]
    pub thresholds_from: Option<PathBuf>,
    /// Sensitivity the screening threshold must reach.
    #[arg(long, default_value_t = 0.90)]
    pub target_sensitivity: f64,
    /// Bootstrap replicates for the AUC confidence interval.
    #[arg(long, default_value_t = 2000)]
    pub bootstrap: usize,
    /// Output folder (default: RUN/eval-SPLIT).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Identity view only (to measure what TTA adds).
    #[arg(long)]
    pub no_tta: bool,
}

pub fn run(a: &Args) -> Result<()> {
    let split = match a.split {
        SplitArg::Train => Split::Train,
        SplitArg::Val => Split::Val,
        SplitArg::Test => Split::Test,
    };
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.run.join(format!("eval-{}", split.name())));
    let m = evaluate(&EvalOptions {
        run: a.run.clone(),
        cache: a.cache.clone(),
        split,
        checkpoint: a.checkpoint.clone(),
        thresholds_from: a.thresholds_from.clone(),
        target_sensitivity: a.target_sensitivity,
        n_boot: a.bootstrap,
        out: out.clone(),
        no_tta: a.no_tta,
    })?;
    println!(
        "{} photos: AUC {:.3} (95% CI {:.3}-{:.3}); max-accuracy t={:.2}: acc {:.3} sens {:.3} spec {:.3}; \
         target-sensitivity t={:.3}: sens {:.3} spec {:.3} -> {}",
        m.n, m.auc, m.auc_ci.0, m.auc_ci.1, m.max_accuracy.threshold, m.max_accuracy.accuracy, m.max_accuracy.sensitivity,
        m.max_accuracy.specificity, m.target_sensitivity.threshold, m.target_sensitivity.sensitivity,
        m.target_sensitivity.specificity, out.display()
    );
    Ok(())
}
