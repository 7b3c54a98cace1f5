//! `edge-runtime screen IMAGE... [--model FILE] [--json] [--log FILE] [--threads N]`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use edge_runtime::record::{Log, Outcome, Record, Recovered};

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Fundus photos (JPEG or PNG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Model file (default: $DRSCREEN_MODEL, else drscreen-default.onnx beside the binary, in
    /// models/ beside it, ../share/drscreen/, /usr/share/drscreen/ or the checkout's models/).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// One JSON record per photo on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Site calibration (from `edge-runtime calibrate`): its threshold, set on this camera's own
    /// graded photos, replaces the model's; every record names it.
    #[arg(long, env = "DRSCREEN_SITE")]
    pub site: Option<PathBuf>,
    /// Results log (JSON lines, fsync'd before each result is printed).
    #[arg(long, env = "DRSCREEN_LOG", default_value = "drscreen-results.jsonl")]
    pub log: PathBuf,
    /// Threads the TTA views of a screening are spread over (default: one per CPU core).
    #[arg(long, value_parser = super::parse_threads)]
    pub threads: Option<usize>,
}

pub fn describe(r: &Record) -> String {
    let what = match r.outcome {
        Outcome::Refer if r.borderline => {
            "REFER to an eye specialist (borderline: refer or retake)".to_string()
        }
        Outcome::NoReferral if r.borderline => {
            "BORDERLINE, refer or retake: just below the threshold, within its uncertainty"
                .to_string()
        }
        Outcome::Refer => "REFER to an eye specialist".to_string(),
        Outcome::NoReferral => "NO REFERRAL".to_string(),
        Outcome::Ungradable => {
            let why = r.error.clone().or_else(|| match &r.quality {
                Some(edge_runtime::quality::Quality::Ungradable { reason }) => Some(reason.clone()),
                _ => None,
            });
            format!("UNGRADABLE, retake: {}", why.unwrap_or_default())
        }
        Outcome::Unreadable => format!("NOT SCREENED: {}", r.error.as_deref().unwrap_or_default()),
    };
    let p = r.probability.map_or(String::new(), |p| {
        let views: Vec<String> = r.per_view.iter().map(|v| format!("{v:.4}")).collect();
        format!(
            " | p={p:.4} (views {}) threshold {:.4}",
            views.join(" "),
            r.threshold
        )
    });
    format!("{}: {what}{p} | {:.0} ms", r.image, r.latency.total_ms)
}

/// Opens the results log, saying where it writes and warning about a line a crash tore.
pub fn open_log(path: &std::path::Path) -> Result<(Log, Recovered)> {
    let (log, recovered) = Log::open(path)?;
    let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    eprintln!(
        "logging to {} ({} earlier records)",
        shown.display(),
        recovered.records.len()
    );
    for t in &recovered.torn {
        eprintln!(
            "warning: {} line {} ({} bytes) was torn by a crash mid-write; it was moved to {}: {}",
            path.display(),
            t.line,
            t.bytes,
            t.moved_to
                .as_deref()
                .map_or_else(|| "nowhere".into(), |p| p.display().to_string()),
            t.error
        );
    }
    Ok((log, recovered))
}

/// Logs a record (fsync'd) and only then prints it.
pub fn log_then_print(log: &mut Log, r: &Record, json: bool) -> Result<()> {
    log.append(r)
        .context("the result was not shown because it could not be logged")?;
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        println!("{}", describe(r));
    }
    Ok(())
}

pub fn run(a: &Args) -> Result<()> {
    let engine = super::load_engine(a.model.as_deref(), a.threads)?;
    let mut screener = super::screener(engine, a.site.as_deref())?;
    let (mut log, _) = open_log(&a.log)?;
    let mut not_screened = 0;
    for image in &a.images {
        let r = screener.screen_file(image);
        not_screened += usize::from(matches!(
            r.outcome,
            Outcome::Ungradable | Outcome::Unreadable
        ));
        log_then_print(&mut log, &r, a.json)?;
    }
    if not_screened > 0 {
        anyhow::bail!(
            "{not_screened} of {} photos were not screened (each is logged with the reason)",
            a.images.len()
        );
    }
    Ok(())
}
