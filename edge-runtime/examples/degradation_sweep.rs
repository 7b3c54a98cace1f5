//! The degradation sweep (issue 27): screens real diseased photos from every set in the data
//! folder at their nominal capture and under every degradation of `edge_runtime::degrade::sweep`,
//! and counts, per degradation, how many of the photos referred at nominal capture come out
//! refer, ungradable or **no referral** (a silent miss). It also runs the gate over every nominal
//! photo of every set, for the retake rate the limits cost.
//!
//! ```text
//! cargo run --release -p edge-runtime --example degradation_sweep -- \
//!     [--data ../shared/data] [--model models/drscreen-default.onnx] [--per-set 40] [--csv out/sweep.csv]
//! ```
//! APTOS photos come at 224x224, below the gate's smallest side: the sweep enlarges them 2x
//! (bilinear) so that its cameras are in it; the retake table reports them as they come.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use drscreen_core::contract::PositiveClass;
use edge_runtime::degrade::{diseased_sample, labels, load, photo, sweep, SETS};
use edge_runtime::engine::{default_model, Engine};
use edge_runtime::quality::{assess, measure, Limits, Quality};
use edge_runtime::record::{Outcome, Record};
use edge_runtime::screen::Screener;

struct Args {
    data: PathBuf,
    model: PathBuf,
    per_set: usize,
    csv: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        data: PathBuf::from(std::env::var("DRSCREEN_DATA").unwrap_or("../shared/data".into())),
        model: default_model(),
        per_set: 40,
        csv: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--data" => a.data = v()?.into(),
            "--model" => a.model = v()?.into(),
            "--per-set" => a.per_set = v()?.parse().context("--per-set: a count")?,
            "--csv" => a.csv = Some(v()?.into()),
            _ => bail!("unknown argument {k}: see the file's header for the usage"),
        }
    }
    Ok(a)
}

#[derive(Default)]
struct Tally {
    refer: usize,
    ungradable: usize,
    /// No referral inside the borderline band: shown "borderline: refer or retake".
    borderline: usize,
    /// No referral outside the band: a silent miss.
    no_referral: usize,
    /// The gate metrics of the silent misses: mean luma, sharpness.
    misses: Vec<String>,
}

fn main() -> Result<()> {
    let a = args()?;
    let engine = Engine::load(&a.model)?;
    let positive_referable = engine.contract.positive_class == PositiveClass::ReferableDr;
    let mut s = Screener::new(engine);
    let limits = Limits::default();
    let mut csv = match &a.csv {
        Some(p) => Some(std::fs::File::create(p).with_context(|| p.display().to_string())?),
        None => None,
    };
    if let Some(f) = csv.as_mut() {
        writeln!(f, "set,image,grade,degradation,strength,outcome,probability,mean_luma,laplacian_var,saturated,red_minus_blue,fov_fraction,reason")?;
    }
    let row = |f: &mut Option<std::fs::File>,
               set: &str,
               img: &Path,
               grade: u8,
               d: &str,
               st: &str,
               r: &Record|
     -> Result<()> {
        if let Some(f) = f.as_mut() {
            let m = r.quality_metrics;
            let reason = match (&r.error, &r.quality) {
                (Some(e), _) => e.clone(),
                (None, Some(Quality::Ungradable { reason })) => reason.clone(),
                _ => String::new(),
            };
            writeln!(
                f,
                "{set},{},{grade},{d},{st},{:?},{},{},{},{},{},{},\"{}\"",
                img.file_name().unwrap_or_default().to_string_lossy(),
                r.outcome,
                r.probability.map(|p| p.to_string()).unwrap_or_default(),
                m.map(|m| m.mean_luma.to_string()).unwrap_or_default(),
                m.map(|m| m.laplacian_var.to_string()).unwrap_or_default(),
                m.map(|m| m.saturated_fraction.to_string())
                    .unwrap_or_default(),
                m.map(|m| m.red_minus_blue.to_string()).unwrap_or_default(),
                m.map(|m| m.fov_fraction.to_string()).unwrap_or_default(),
                reason.replace('"', "'"),
            )?;
        }
        Ok(())
    };

    // Retake rate: the gate alone over every nominal photo.
    println!("## Gate on nominal photos (retake rate)\n");
    println!("| set | photos | gradable | ungradable | reasons |\n|---|---|---|---|---|");
    for set in SETS {
        let all = labels(&a.data, set)?;
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut ok = 0;
        for (p, _, _) in &all {
            let img = image::open(p)
                .with_context(|| format!("cannot decode {}", p.display()))?
                .to_rgb8();
            let (w, h) = (img.width() as usize, img.height() as usize);
            match assess(&measure(img.as_raw(), w, h), &limits) {
                Quality::Gradable => ok += 1,
                Quality::Ungradable { reason } => {
                    let key: String = reason.split(['(', ':']).next().unwrap_or("").trim().into();
                    *reasons.entry(key).or_default() += 1;
                }
            }
        }
        let why: Vec<String> = reasons.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        println!(
            "| {set} | {} | {ok} | {} ({:.1} %) | {} |",
            all.len(),
            all.len() - ok,
            100.0 * (all.len() - ok) as f64 / all.len().max(1) as f64,
            why.join("; ")
        );
    }

    // The sweep over diseased photos referred at nominal capture.
    let degradations = sweep();
    let mut tally: Vec<Tally> = degradations.iter().map(|_| Tally::default()).collect();
    let mut nominal = (0usize, 0usize, 0usize); // referred, not referred, ungradable
    for set in SETS {
        for (p, grade) in &diseased_sample(&a.data, set, positive_referable, a.per_set)? {
            let img = load(p, set)?;
            let name = p.display().to_string();
            let r = s.screen_rgb(&name, &photo(&img));
            row(&mut csv, set, p, *grade, "nominal", "", &r)?;
            match r.outcome {
                Outcome::Refer => nominal.0 += 1,
                Outcome::NoReferral => {
                    nominal.1 += 1;
                    continue;
                }
                _ => {
                    nominal.2 += 1;
                    continue;
                }
            }
            for (d, t) in degradations.iter().zip(tally.iter_mut()) {
                let r = s.screen_rgb(&name, &photo(&d.apply(&img)));
                row(&mut csv, set, p, *grade, d.kind(), &d.strength(), &r)?;
                match r.outcome {
                    Outcome::Refer => t.refer += 1,
                    Outcome::NoReferral if r.borderline => t.borderline += 1,
                    Outcome::NoReferral => {
                        t.no_referral += 1;
                        let m = r.quality_metrics;
                        t.misses.push(format!(
                            "{} p {:.3} luma {:.0} sharp {:.1}",
                            p.file_name().unwrap_or_default().to_string_lossy(),
                            r.probability.unwrap_or(f32::NAN),
                            m.map(|m| m.mean_luma).unwrap_or(f32::NAN),
                            m.map(|m| m.laplacian_var).unwrap_or(f32::NAN),
                        ));
                    }
                    _ => t.ungradable += 1,
                }
            }
            eprint!(".");
        }
    }
    eprintln!();
    println!(
        "\n## Diseased photos under each degradation\n\nNominal capture: {} referred, {} not referred (misses of the model itself), {} ungradable. The rows count the {} referred ones.\n",
        nominal.0, nominal.1, nominal.2, nominal.0
    );
    println!("| degradation | strength | refer | ungradable | no referral, borderline | **no referral, silent** | silent misses (photo, p, luma, sharpness) |\n|---|---|---|---|---|---|---|");
    for (d, t) in degradations.iter().zip(&tally) {
        let shown: Vec<&str> = t.misses.iter().take(3).map(|s| s.as_str()).collect();
        let more = t.misses.len().saturating_sub(3);
        println!(
            "| {} | {} | {} | {} | {} | {} | {}{} |",
            d.kind(),
            d.strength(),
            t.refer,
            t.ungradable,
            t.borderline,
            t.no_referral,
            shown.join("; "),
            if more > 0 {
                format!("; {more} more")
            } else {
                String::new()
            }
        );
    }
    let total: usize = tally.iter().map(|t| t.no_referral).sum();
    let borderline: usize = tally.iter().map(|t| t.borderline).sum();
    println!(
        "\nSilent misses in the sweep: **{total}** of {} degraded screenings ({borderline} more no referrals inside the borderline band).",
        nominal.0 * degradations.len()
    );
    Ok(())
}
