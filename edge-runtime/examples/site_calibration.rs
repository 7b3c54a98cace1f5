//! How many of a site's own graded photos does `edge-runtime calibrate` need before its threshold
//! holds sensitivity >= the target on that camera's next patients?
//!
//! Screens every photo of a graded table once through the device path (gate, preprocessing, tract,
//! TTA), then, for each calibration size, draws patients at random (both eyes go together),
//! calibrates on them with `edge_runtime::site::choose_threshold` (the rule `calibrate` uses) and
//! measures sensitivity and specificity on the table's other patients. Beside it, the naive rule
//! (the highest threshold whose *measured* sensitivity on the calibration eyes reaches the
//! target), to show what the confidence bound buys.
//!
//! ```text
//! cargo run --release -p edge-runtime --example site_calibration -- \
//!     --labels ../shared/data/srahim/labels.csv [--model models/drscreen-default.onnx] \
//!     [--sizes 40,60,80,120,160,200] [--draws 500] [--scores out/scores.csv]
//! ```
//! `--scores FILE` keeps the per-photo probabilities (read back when the file exists, so a second
//! run with the same model skips the screening; delete the file when the model changes).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use drscreen_core::contract::PositiveClass;
use edge_runtime::engine::{default_model, Engine};
use edge_runtime::record::Outcome;
use edge_runtime::screen::Screener;
use edge_runtime::site::{choose_threshold, min_positives};
use rand::seq::SliceRandom;
use rand::SeedableRng;

struct Args {
    labels: PathBuf,
    model: PathBuf,
    sizes: Vec<usize>,
    draws: usize,
    scores: Option<PathBuf>,
    target: f64,
    confidence: f64,
}

fn args() -> Result<Args> {
    let mut a = Args {
        labels: PathBuf::new(),
        model: default_model(),
        sizes: vec![40, 60, 80, 120, 160, 200],
        draws: 500,
        scores: None,
        target: 0.90,
        confidence: 0.95,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--labels" => a.labels = v()?.into(),
            "--model" => a.model = v()?.into(),
            "--sizes" => {
                a.sizes = v()?
                    .split(',')
                    .map(|s| s.trim().parse().context("--sizes: counts of patients"))
                    .collect::<Result<_>>()?
            }
            "--draws" => a.draws = v()?.parse().context("--draws: a count")?,
            "--scores" => a.scores = Some(v()?.into()),
            _ => bail!("unknown argument {k}: see the file's header for the usage"),
        }
    }
    ensure!(!a.labels.as_os_str().is_empty(), "--labels TABLE is needed");
    Ok(a)
}

/// One photo: its patient, whether it is diseased (the model's class), and its probability
/// (None: the gate judged it ungradable).
#[derive(Clone)]
struct Eye {
    image: String,
    patient: String,
    diseased: bool,
    p: Option<f32>,
}

fn read_labels(path: &Path, class: PositiveClass) -> Result<Vec<Eye>> {
    let mut r = csv::Reader::from_path(path).with_context(|| path.display().to_string())?;
    let h = r.headers()?.clone();
    let col = |n: &str| {
        h.iter()
            .position(|c| c == n)
            .with_context(|| format!("{} has no {n} column", path.display()))
    };
    let (ic, pc) = (col("image")?, col("patient")?);
    let dc = col(match class {
        PositiveClass::ReferableDr => "referable",
        PositiveClass::AnyDr => "dr",
    })?;
    r.records()
        .map(|rec| {
            let rec = rec?;
            Ok(Eye {
                image: rec[ic].to_string(),
                patient: rec[pc].to_string(),
                diseased: &rec[dc] == "1",
                p: None,
            })
        })
        .collect()
}

fn screen_all(a: &Args, eyes: &mut [Eye], screener: &mut Screener) -> Result<()> {
    let cached: BTreeMap<String, Option<f32>> = match &a.scores {
        Some(p) if p.exists() => std::fs::read_to_string(p)?
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(','))
            .map(|(i, p)| (i.to_string(), p.parse().ok()))
            .collect(),
        _ => BTreeMap::new(),
    };
    let images = a.labels.parent().unwrap_or(Path::new(".")).join("images");
    let n = eyes.len();
    for (i, e) in eyes.iter_mut().enumerate() {
        if let Some(p) = cached.get(&e.image) {
            e.p = *p;
            continue;
        }
        let r = screener.screen_file(&images.join(&e.image));
        e.p = match r.outcome {
            Outcome::Refer | Outcome::NoReferral => r.probability,
            _ => None,
        };
        if (i + 1) % 50 == 0 {
            eprintln!("{} of {n} screened", i + 1);
        }
    }
    if let Some(p) = &a.scores {
        let mut f = std::fs::File::create(p)?;
        writeln!(f, "image,probability")?;
        for e in eyes.iter() {
            writeln!(
                f,
                "{},{}",
                e.image,
                e.p.map_or(String::new(), |p| p.to_string())
            )?;
        }
    }
    Ok(())
}

/// Per draw of one rule: threshold, held-out sensitivity and specificity; and the draws whose
/// held-out sensitivity reached the target.
type Outcomes = (Vec<f64>, Vec<f64>, Vec<f64>, usize);

/// The naive rule: the highest threshold at which the measured sensitivity reaches the target.
fn naive_threshold(pos: &[f32], target: f64) -> Option<f32> {
    if pos.is_empty() {
        return None;
    }
    let mut d = pos.to_vec();
    d.sort_by(|a, b| b.total_cmp(a));
    let k = (target * d.len() as f64).ceil() as usize;
    Some(d[k.clamp(1, d.len()) - 1])
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
}

fn main() -> Result<()> {
    let a = args()?;
    let engine = Engine::load(&a.model)?.with_threads(
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    );
    let class = engine.contract.positive_class;
    let model_threshold = engine.contract.threshold();
    let mut screener = Screener::new(engine);
    let mut eyes = read_labels(&a.labels, class)?;
    screen_all(&a, &mut eyes, &mut screener)?;
    let mut by_patient: BTreeMap<String, Vec<Eye>> = BTreeMap::new();
    for e in &eyes {
        by_patient
            .entry(e.patient.clone())
            .or_default()
            .push(e.clone());
    }
    let patients: Vec<&Vec<Eye>> = by_patient.values().collect();
    let ungradable = eyes.iter().filter(|e| e.p.is_none()).count();
    println!(
        "{}: {} photos of {} patients, {} ungradable; model {} ({class:?}), its own threshold {model_threshold:.4}",
        a.labels.display(),
        eyes.len(),
        patients.len(),
        ungradable,
        a.model.display()
    );
    println!(
        "target: sensitivity {:.2} on the other patients; the bound rule needs >= {} gradable diseased eyes; {} draws per size",
        a.target,
        min_positives(a.target, a.confidence),
        a.draws
    );
    println!();
    println!("| patients (photos) | diseased eyes | refused | rule | threshold | held-out sensitivity | held-out specificity | draws with sensitivity >= {:.2} |", a.target);
    println!("|---|---|---|---|---|---|---|---|");
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261207);
    for &size in &a.sizes {
        ensure!(
            size < patients.len(),
            "--sizes {size}: the table has {} patients",
            patients.len()
        );
        // [bound rule, naive rule].
        let mut out: [Outcomes; 2] = Default::default();
        let (mut refused, mut photos, mut diseased) = (0usize, Vec::new(), Vec::new());
        let mut order: Vec<usize> = (0..patients.len()).collect();
        for _ in 0..a.draws {
            order.shuffle(&mut rng);
            let (cal, test) = order.split_at(size);
            let gradable = |ids: &[usize]| -> Vec<(f32, bool)> {
                ids.iter()
                    .flat_map(|&i| patients[i].iter())
                    .filter_map(|e| Some((e.p?, e.diseased)))
                    .collect()
            };
            let (cal, test) = (gradable(cal), gradable(test));
            let pos: Vec<f32> = cal.iter().filter(|e| e.1).map(|e| e.0).collect();
            photos.push(cal.len() as f64);
            diseased.push(pos.len() as f64);
            let Some(bound) = choose_threshold(&pos, a.target, a.confidence) else {
                refused += 1;
                continue;
            };
            let naive = naive_threshold(&pos, a.target).unwrap_or(bound);
            for (slot, t) in [bound, naive].into_iter().enumerate() {
                let tp = test.iter().filter(|e| e.1 && e.0 >= t).count() as f64;
                let np = test.iter().filter(|e| e.1).count() as f64;
                let tn = test.iter().filter(|e| !e.1 && e.0 < t).count() as f64;
                let nn = test.iter().filter(|e| !e.1).count() as f64;
                let o = &mut out[slot];
                o.0.push(t as f64);
                o.1.push(tp / np);
                o.2.push(tn / nn);
                o.3 += usize::from(tp / np >= a.target);
            }
        }
        let kept = a.draws - refused;
        for (slot, rule) in ["bound (calibrate)", "measured >= target"]
            .iter()
            .enumerate()
        {
            let o = &mut out[slot];
            if o.0.is_empty() {
                println!(
                    "| {size} ({:.0}) | {:.0} | {refused} of {} | {rule} | - | - | - | - |",
                    quantile(&mut photos, 0.5),
                    quantile(&mut diseased, 0.5),
                    a.draws
                );
                continue;
            }
            println!(
                "| {size} ({:.0}) | {:.0} | {refused} of {} | {rule} | {:.3} ({:.3}-{:.3}) | {:.3} (5th pct {:.3}) | {:.3} ({:.3}-{:.3}) | {:.0} % |",
                quantile(&mut photos, 0.5),
                quantile(&mut diseased, 0.5),
                a.draws,
                quantile(&mut o.0, 0.5),
                quantile(&mut o.0, 0.05),
                quantile(&mut o.0, 0.95),
                quantile(&mut o.1, 0.5),
                quantile(&mut o.1, 0.05),
                quantile(&mut o.2, 0.5),
                quantile(&mut o.2, 0.05),
                quantile(&mut o.2, 0.95),
                100.0 * o.3 as f64 / kept as f64
            );
        }
    }
    Ok(())
}
