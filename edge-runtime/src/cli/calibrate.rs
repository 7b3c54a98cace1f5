//! `edge-runtime calibrate --labels TABLE.csv --site-name NAME [--images DIR] [--model FILE]
//! [--out drscreen-site.json] [--target-sensitivity 0.90] [--confidence 0.95] [--force]`:
//! sets a site's operating point from its own camera's graded photos (see `edge_runtime::site`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::Args as ClapArgs;
use drscreen_core::contract::PositiveClass;
use edge_runtime::record::Outcome;
use edge_runtime::site::{calibrate, min_positives, Graded};
use sha2::{Digest, Sha256};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Graded photos of this site's camera: a CSV with an `image` column (file names, relative to
    /// --images) and the grade, as `referable` (0/1) for a referable-DR model or `dr` (0/1) for an
    /// any-DR model, else `level` (0-4: referable is 2 or more, any DR 1 or more).
    #[arg(long)]
    pub labels: PathBuf,
    /// Folder the photos are in (default: `images/` beside the table if there is one, else the
    /// table's own folder).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// The site's name, as records will name it (the clinic and camera: "Kisumu-2 Topcon").
    #[arg(long)]
    pub site_name: String,
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where the site calibration is written.
    #[arg(long, default_value = "drscreen-site.json")]
    pub out: PathBuf,
    /// Replace an existing --out file.
    #[arg(long)]
    pub force: bool,
    /// Sensitivity the threshold must hold on this camera's diseased eyes.
    #[arg(long, default_value_t = 0.90)]
    pub target_sensitivity: f64,
    /// Confidence of the one-sided lower bound that must reach the target.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Threads the TTA views of a screening are spread over (default: one per CPU core).
    #[arg(long, value_parser = super::parse_threads)]
    pub threads: Option<usize>,
}

/// One row of the graded table.
struct Row {
    line: usize,
    image: PathBuf,
    diseased: bool,
}

/// Reads the table from `bytes` (the file at `path`, read once: its SHA-256 goes in the site file).
fn read_table(path: &Path, bytes: &[u8], images: &Path, class: PositiveClass) -> Result<Vec<Row>> {
    let mut reader = csv::Reader::from_reader(bytes);
    let headers = reader
        .headers()
        .with_context(|| format!("{}: no header line", path.display()))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let Some(image_col) = col("image") else {
        bail!(
            "{} has no `image` column (its columns: {}): the table needs `image` and the grade",
            path.display(),
            headers.iter().collect::<Vec<_>>().join(", ")
        );
    };
    let (flag, min_level) = match class {
        PositiveClass::ReferableDr => ("referable", 2),
        PositiveClass::AnyDr => ("dr", 1),
    };
    let grade_col = match (col(flag), col("level")) {
        (Some(c), _) => (c, true),
        (None, Some(c)) => (c, false),
        (None, None) => bail!(
            "{} has neither a `{flag}` nor a `level` column: the model decides {class:?}, so each photo needs one of them",
            path.display()
        ),
    };
    let mut rows = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let line = i + 2;
        let rec = rec.with_context(|| format!("{} line {line}", path.display()))?;
        let image = rec.get(image_col).unwrap_or("").trim();
        ensure!(
            !image.is_empty(),
            "{} line {line}: the image is empty",
            path.display()
        );
        let value = rec.get(grade_col.0).unwrap_or("").trim();
        let diseased = match (grade_col.1, value.parse::<u8>()) {
            (true, Ok(v @ 0..=1)) => v == 1,
            (false, Ok(v @ 0..=4)) => v >= min_level,
            _ => bail!(
                "{} line {line}: {} is `{value}`, expected {}",
                path.display(),
                headers.get(grade_col.0).unwrap_or(""),
                if grade_col.1 { "0 or 1" } else { "a grade 0-4" }
            ),
        };
        rows.push(Row {
            line,
            image: images.join(image),
            diseased,
        });
    }
    ensure!(!rows.is_empty(), "{} has no photos", path.display());
    let missing: Vec<String> = rows
        .iter()
        .filter(|r| !r.image.is_file())
        .map(|r| format!("{} (line {})", r.image.display(), r.line))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} of the table's {} photos are not there, e.g. {}: check --images ({})",
            missing.len(),
            rows.len(),
            missing[..missing.len().min(3)].join(", "),
            images.display()
        );
    }
    Ok(rows)
}

pub fn run(a: &Args) -> Result<()> {
    if a.out.exists() && !a.force {
        bail!(
            "{} exists: it may be the site calibration a device uses; pass --force to replace it, or another --out",
            a.out.display()
        );
    }
    let images = a.images.clone().unwrap_or_else(|| {
        let dir = a.labels.parent().unwrap_or(Path::new("")).to_path_buf();
        let beside = dir.join("images");
        if beside.is_dir() {
            beside
        } else {
            dir
        }
    });
    let engine = super::load_engine(a.model.as_deref(), a.threads)?;
    let class = engine.contract.positive_class;
    let table = std::fs::read(&a.labels)
        .with_context(|| format!("reading the graded table {}", a.labels.display()))?;
    let rows = read_table(&a.labels, &table, &images, class)?;
    let labels_sha256 = format!("{:x}", Sha256::digest(&table));
    let need = min_positives(a.target_sensitivity, a.confidence);
    let diseased = rows.iter().filter(|r| r.diseased).count();
    eprintln!(
        "screening {} graded photos ({diseased} with {class:?}) from {}; the threshold needs at least {need} gradable diseased eyes",
        rows.len(),
        images.display()
    );
    let model_sha = engine.sha256.clone();
    let model_threshold = engine.contract.threshold();
    let mut screener = edge_runtime::screen::Screener::new(engine);
    let mut graded = Vec::new();
    let mut ungradable: HashMap<String, usize> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let r = screener.screen_file(&row.image);
        match (r.outcome, r.probability) {
            (Outcome::Refer | Outcome::NoReferral, Some(p)) => graded.push(Graded {
                probability: p,
                diseased: row.diseased,
            }),
            _ => {
                let why = r
                    .error
                    .clone()
                    .or_else(|| match &r.quality {
                        Some(edge_runtime::quality::Quality::Ungradable { reason }) => {
                            Some(reason.split(" (").next().unwrap_or(reason).to_string())
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| "not screened".into());
                *ungradable.entry(why).or_default() += 1;
            }
        }
        if (i + 1) % 25 == 0 || i + 1 == rows.len() {
            eprintln!("  {} of {} screened", i + 1, rows.len());
        }
    }
    let n_ungradable: usize = ungradable.values().sum();
    for (why, n) in &ungradable {
        eprintln!("  left out, ungradable ({n}): {why}");
    }
    let c = calibrate(
        &graded,
        a.target_sensitivity,
        a.confidence,
        &a.site_name,
        &model_sha,
        class,
        model_threshold,
        labels_sha256,
        rows.len() as u32,
        n_ungradable as u32,
    )?;
    let mut json = serde_json::to_vec_pretty(&c)?;
    json.push(b'\n');
    write_synced(&a.out, &json)?;
    let pct = |p: &edge_runtime::site::Proportion| {
        format!(
            "{:.3} ({}/{}, 95 % CI {:.3}-{:.3})",
            p.value, p.hits, p.of, p.ci95[0], p.ci95[1]
        )
    };
    println!(
        "site {:?}: threshold {:.4} (the model's own: {:.4}), borderline {:.4}-{:.4}",
        c.site, c.threshold, c.model_threshold, c.borderline[0], c.borderline[1]
    );
    println!(
        "  on its {} gradable photos ({} ungradable left out):",
        graded.len(),
        c.ungradable
    );
    println!(
        "  sensitivity {}; {:.0} % lower bound {:.3} (target {:.2})",
        pct(&c.sensitivity),
        c.confidence * 100.0,
        c.sensitivity_lower_bound,
        c.target_sensitivity
    );
    println!("  specificity {}", pct(&c.specificity));
    println!(
        "wrote {}: screen with --site {} (or DRSCREEN_SITE); it holds for this model file only",
        a.out.display(),
        a.out.display()
    );
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file beside it, fsync'd, then renamed: a device
/// never reads half a site file.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        use std::io::Write;
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
