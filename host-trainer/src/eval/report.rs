//! Evaluation reports: [`Metrics`] as JSON and Markdown (the plots: [`super::plots`]).
//!
//! Parent directories are created as needed; every error names the file it concerns.

use super::metrics::{Confusion, Metrics, OperatingPointMetrics};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the directory {}", dir.display())),
        _ => Ok(()),
    }
}

/// Writes `{"context": context, "metrics": metrics}` as pretty JSON. `context` carries whatever
/// identifies the run (model file, split, dataset, command line, ...).
pub fn write_json(path: &Path, metrics: &Metrics, context: &serde_json::Value) -> Result<()> {
    create_parent(path)?;
    let doc = serde_json::json!({ "context": context, "metrics": metrics });
    let text = serde_json::to_string_pretty(&doc).context("serialising the metrics")?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Reads a file written by [`write_json`]: the metrics and their context.
pub fn read_json(path: &Path) -> Result<(Metrics, serde_json::Value)> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (run `host-trainer evaluate` first)",
            path.display()
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let m = serde_json::from_value(v["metrics"].clone())
        .with_context(|| format!("{} is not a metrics.json from `evaluate`", path.display()))?;
    Ok((m, v["context"].clone()))
}

/// Confusion matrix as a 2x2 Markdown table: rows are the true class, columns the prediction.
fn confusion_table(out: &mut String, c: &Confusion) {
    let _ = writeln!(out, "| true \\ predicted | normal | DR |");
    let _ = writeln!(out, "|---|---:|---:|");
    let _ = writeln!(out, "| **normal** | {} (TN) | {} (FP) |", c.tn, c.fp);
    let _ = writeln!(out, "| **DR** | {} (FN) | {} (TP) |", c.fn_, c.tp);
}

/// A row of the operating-point table: its name and how to read it off a point.
type MetricRow = (&'static str, fn(&OperatingPointMetrics) -> f64);

/// The Markdown report: AUC with its interval, both operating points side by side, and the
/// confusion matrix of each. Rates are fractions in [0, 1] with four decimals; thresholds are
/// printed exactly (shortest f32 representation), as the device must use them.
pub fn markdown(title: &str, m: &Metrics) -> String {
    let points: [(&str, &OperatingPointMetrics); 2] = [
        ("max accuracy", &m.max_accuracy),
        ("target sensitivity", &m.target_sensitivity),
    ];
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(
        s,
        "{} images: {} DR (positive), {} normal.\n",
        m.n,
        m.positives,
        m.n - m.positives
    );
    let _ = writeln!(
        s,
        "**AUC {:.4}** (95% CI {:.4} to {:.4}; percentile bootstrap, {} stratified replicates, \
         seed {}).\n",
        m.auc, m.auc_ci.0, m.auc_ci.1, m.n_boot, m.seed
    );
    let _ = writeln!(s, "## Operating points\n");
    let _ = writeln!(
        s,
        "Max accuracy: the first threshold of best accuracy over 0.30-0.70 by 0.01. Target \
         sensitivity: the highest operating point with sensitivity >= {:.4}, its threshold halfway \
         between the lowest score it refers and the next lower score. A score >= threshold is \
         referred as DR.\n",
        m.sensitivity_target
    );
    let _ = writeln!(s, "| | {} | {} |", points[0].0, points[1].0);
    let _ = writeln!(s, "|---|---:|---:|");
    let _ = writeln!(
        s,
        "| threshold | {} | {} |",
        points[0].1.threshold, points[1].1.threshold
    );
    let rows: [MetricRow; 10] = [
        ("sensitivity", |p| p.sensitivity),
        ("specificity", |p| p.specificity),
        ("accuracy", |p| p.accuracy),
        ("Cohen's kappa", |p| p.kappa),
        ("precision, DR (PPV)", |p| p.dr.precision),
        ("recall, DR", |p| p.dr.recall),
        ("F1, DR", |p| p.dr.f1),
        ("precision, normal (NPV)", |p| p.normal.precision),
        ("recall, normal", |p| p.normal.recall),
        ("F1, normal", |p| p.normal.f1),
    ];
    for (name, f) in rows {
        let _ = writeln!(
            s,
            "| {name} | {:.4} | {:.4} |",
            f(points[0].1),
            f(points[1].1)
        );
    }
    for (name, p) in points {
        let _ = writeln!(
            s,
            "\n## Confusion matrix: {name} (threshold {})\n",
            p.threshold
        );
        confusion_table(&mut s, &p.confusion);
    }
    s
}

/// Writes [`markdown`] to `path`.
pub fn write_markdown(path: &Path, title: &str, metrics: &Metrics) -> Result<()> {
    create_parent(path)?;
    std::fs::write(path, markdown(title, metrics))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> (Vec<f32>, Vec<bool>) {
        let s = [
            0.9, 0.7, 0.8, 0.45, 0.6, 0.4, 0.3, 0.15, 0.2, 0.1, 0.55, 0.35,
        ];
        let l = [
            true, false, true, false, true, false, true, false, true, false, true, false,
        ];
        (s.to_vec(), l.to_vec())
    }

    #[test]
    fn json_and_markdown_are_written() {
        let (s, l) = example();
        let m = Metrics::compute(&s, &l, 0.8, 100, 3).unwrap();
        let dir = tempfile::tempdir().unwrap();

        let json = dir.path().join("sub/metrics.json");
        write_json(&json, &m, &serde_json::json!({ "split": "val" })).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["context"]["split"], "val");
        assert_eq!(v["metrics"]["n"], 12);
        assert_eq!(v["metrics"]["auc_ci"].as_array().unwrap().len(), 2);

        let md = dir.path().join("report.md");
        write_markdown(&md, "Validation", &m).unwrap();
        let text = std::fs::read_to_string(&md).unwrap();
        assert!(text.starts_with("# Validation\n"));
        assert!(text.contains(&format!("**AUC {:.4}**", m.auc)));
        assert!(text.contains("| true \\ predicted | normal | DR |"));
        let c = m.max_accuracy.confusion;
        assert!(text.contains(&format!("| **DR** | {} (FN) | {} (TP) |", c.fn_, c.tp)));
        assert_eq!(text.matches("## Confusion matrix").count(), 2);
    }
}
