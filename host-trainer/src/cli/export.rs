//! `host-trainer export CHECKPOINT --out models/NAME.onnx [--val-metrics F] [--external-metrics F]
//! [--golden PHOTO ...]`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use host_trainer::export::run::{export, golden_path, ExportOptions};
use host_trainer::paths::data_dir;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Checkpoint (`best.safetensors`) inside a run folder from `host-trainer train`.
    pub checkpoint: PathBuf,
    /// Model file to write (`.onnx`); the golden file goes beside it.
    #[arg(long)]
    pub out: PathBuf,
    /// Validation `metrics.json` (thresholds, figures); default RUN/eval-val/metrics.json.
    #[arg(long)]
    pub val_metrics: Option<PathBuf>,
    /// External-set `metrics.json` for the contract's data summary.
    #[arg(long)]
    pub external_metrics: Option<PathBuf>,
    /// Golden photos (default: 6 real photos from the data folder and models/golden/*).
    #[arg(long)]
    pub golden: Vec<PathBuf>,
}

/// The default golden photos: real IDRiD and SRahim photos (by `data:` label) and the synthetic
/// ones committed under `models/golden/`.
fn default_golden(repo: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut v = Vec::new();
    for rel in [
        "idrid/images/IDRiD_005_train.jpg",
        "idrid/images/IDRiD_140_train.jpg",
        "idrid/images/IDRiD_265_train.jpg",
        "srahim/images/Patient001_L.jpg",
        "srahim/images/Patient050_L.jpg",
        "srahim/images/Patient145_R.jpg",
    ] {
        v.push((format!("data:{rel}"), data_dir().join(rel)));
    }
    let dir = repo.join("models/golden");
    let mut synth: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "jpeg" || e == "jpg" || e == "png")
        })
        .collect();
    synth.sort();
    for p in synth {
        v.push((
            format!("models/golden/{}", p.file_name().unwrap().to_string_lossy()),
            p,
        ));
    }
    Ok(v)
}

pub fn run(a: &Args) -> Result<()> {
    let run = a
        .checkpoint
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let golden = if a.golden.is_empty() {
        default_golden(&repo)?
    } else {
        a.golden
            .iter()
            .map(|p| (p.display().to_string(), p.clone()))
            .collect()
    };
    let g = export(&ExportOptions {
        run: run.clone(),
        checkpoint: Some(a.checkpoint.clone()),
        out: a.out.clone(),
        val_metrics: a
            .val_metrics
            .clone()
            .unwrap_or_else(|| run.join("eval-val/metrics.json")),
        external_metrics: a.external_metrics.clone(),
        golden,
    })?;
    println!(
        "wrote {} (sha256 {}), golden {} ({} photos, tract vs tch max |diff| {:.2e})",
        a.out.display(),
        &g.model_sha256[..16],
        golden_path(&a.out).display(),
        g.samples.len(),
        g.tract_max_abs_diff
    );
    Ok(())
}
