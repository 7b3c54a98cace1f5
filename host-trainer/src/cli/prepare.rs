//! `host-trainer prepare (--data SPEC.toml | --labels CSV ...) --out DIR [--images DIR]
//! [--size 224] [--val 0.2] [--test 0] [--seed 42] [--referable] [--open-licence-only]
//! [--whole-frame]`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args as ClapArgs;
use host_trainer::data::cache::{prepare, CacheSpec, PrepareOptions};
use host_trainer::data::labels::Positive;
use host_trainer::data::sources::{filter_licences, from_table, read_sources, read_spec};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Data spec (TOML): the sources, each with its label table, licence and weight
    /// (configs/data-idrid-aptos.toml).
    #[arg(long, conflicts_with_all = ["labels", "images"])]
    pub data: Option<PathBuf>,
    /// Label table(s): Kaggle `trainLabels.csv`, APTOS `train.csv`, or drscreen `labels.csv`; each
    /// is one source named after its folder, its licence from a `licence` column.
    #[arg(long, num_args = 1..)]
    pub labels: Vec<PathBuf>,
    /// Image folder, if not the layout's default beside the table (one `--labels` only).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Cache folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Model input side in pixels (32..=1024).
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Fraction of each source's photos (by patient) for validation.
    #[arg(long, default_value_t = 0.2)]
    pub val: f64,
    /// Fraction of each source's photos (by patient) held out as a test split (1.0 for an external set).
    #[arg(long, default_value_t = 0.0)]
    pub test: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Positive class = referable DR (grade >= 2) instead of any DR (grade >= 1).
    #[arg(long)]
    pub referable: bool,
    /// Keep only the sources whose licence is open (`open_licence = true` in the data spec).
    #[arg(long)]
    pub open_licence_only: bool,
    /// The whole frame, CLAHE at full size (contract version 1, the models before the field of
    /// view), instead of the disc square.
    #[arg(long)]
    pub whole_frame: bool,
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
    let sources = match (&a.data, a.labels.as_slice()) {
        (Some(spec), _) => read_spec(spec)?,
        (None, []) => bail!("name the data: --data SPEC.toml or --labels CSV"),
        (None, tables) => {
            if tables.len() > 1 && a.images.is_some() {
                bail!(
                    "--images applies to one --labels table: list several sources in a --data spec"
                );
            }
            tables
                .iter()
                .map(|t| from_table(t, a.images.as_deref()))
                .collect::<Result<_>>()?
        }
    };
    let sources = filter_licences(sources, a.open_licence_only)?;
    let sources = read_sources(&sources)?;
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
            interpolation: if a.whole_frame {
                drscreen_core::Interpolation::Linear
            } else {
                drscreen_core::Interpolation::Area
            },
            fov: (!a.whole_frame).then(drscreen_core::FovParams::default),
        },
        progress: !a.quiet,
    };
    let m = prepare(&sources, &a.out, &opts)?;
    for s in &m.sources {
        let counts: Vec<String> = s
            .splits
            .iter()
            .map(|(split, i)| format!("{} {} ({} positive)", split.name(), i.count, i.positives))
            .collect();
        println!(
            "{} [{}]: {}{}",
            s.source.name,
            s.source.licence,
            counts.join(", "),
            if s.skipped > 0 {
                format!(", {} skipped", s.skipped)
            } else {
                String::new()
            }
        );
    }
    for (split, info) in &m.splits {
        println!(
            "{:>5}: {} photos, {} positive -> {}",
            split.name(),
            info.count,
            info.positives,
            a.out.join(&info.file).display()
        );
    }
    /// Skipped photos named on the terminal; the manifest lists every one.
    const SHOWN: usize = 10;
    if !m.skipped.is_empty() {
        println!("skipped {} photos:", m.skipped.len());
        for s in m.skipped.iter().take(SHOWN) {
            println!(
                "  {} of {} ({}): {}",
                s.id,
                s.source,
                s.path.display(),
                s.reason
            );
        }
        if m.skipped.len() > SHOWN {
            println!(
                "  ... and {} more: all are listed under \"skipped\" in {}",
                m.skipped.len() - SHOWN,
                a.out.join("manifest.json").display()
            );
        }
    }
    Ok(())
}
