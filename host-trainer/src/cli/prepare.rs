//! `host-trainer prepare --labels CSV --out DIR [--images DIR] [--size 96] [--val 0.2] [--test 0]
//! [--seed 42] [--referable]`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args as ClapArgs;
use host_trainer::data::cache::{prepare, CacheSpec, PrepareOptions};
use host_trainer::data::labels::{read_labels, Positive};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Label table: Kaggle `trainLabels.csv`, APTOS `train.csv`, or drscreen `labels.csv`.
    #[arg(long)]
    pub labels: PathBuf,
    /// Image folder, if not the layout's default beside the table.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Cache folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Model input side in pixels.
    #[arg(long, default_value_t = 96)]
    pub size: usize,
    /// Fraction of photos (by patient) for validation.
    #[arg(long, default_value_t = 0.2)]
    pub val: f64,
    /// Fraction of photos (by patient) held out as a test split (1.0 for an external set).
    #[arg(long, default_value_t = 0.0)]
    pub test: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Positive class = referable DR (grade >= 2) instead of any DR (grade >= 1).
    #[arg(long)]
    pub referable: bool,
    /// CLAHE clip limit.
    #[arg(long, default_value_t = 2.0)]
    pub clip_limit: f64,
    /// CLAHE tiles per side.
    #[arg(long, default_value_t = 8)]
    pub tiles: usize,
    /// Hide the progress bars.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(a: &Args) -> Result<()> {
    let (layout, records) = read_labels(&a.labels, a.images.as_deref())?;
    let opts = PrepareOptions {
        positive: if a.referable {
            Positive::ReferableDr
        } else {
            Positive::AnyDr
        },
        val: a.val,
        test: a.test,
        seed: a.seed,
        spec: CacheSpec {
            size: a.size,
            clip_limit: a.clip_limit,
            tiles_x: a.tiles,
            tiles_y: a.tiles,
            interpolation: drscreen_core::Interpolation::Linear,
        },
        progress: !a.quiet,
    };
    let m = prepare(&a.labels, layout, &records, &a.out, &opts)?;
    for (split, info) in &m.splits {
        println!(
            "{:>5}: {} photos, {} positive -> {}",
            split.name(),
            info.count,
            info.positives,
            a.out.join(&info.file).display()
        );
    }
    if !m.skipped.is_empty() {
        println!("skipped {} photos:", m.skipped.len());
        for s in &m.skipped {
            println!("  {} ({}): {}", s.id, s.source.display(), s.reason);
        }
    }
    Ok(())
}
