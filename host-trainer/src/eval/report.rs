//! Evaluation reports: [`Metrics`] as JSON and Markdown, and the ROC curve as a PNG.
//!
//! Parent directories are created as needed; every error names the file it concerns.

use super::metrics::{Confusion, Metrics, OperatingPointMetrics};
use anyhow::{ensure, Context, Result};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// Side of the square ROC image, in pixels.
pub const ROC_PNG_SIZE: u32 = 800;

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

/// Draws the ROC curve as an 800x800 PNG, without any text (plotters is built without fonts;
/// the Markdown report carries the numbers):
/// - the unit square (FPR right, TPR up) with a grid every 0.1 and the chance diagonal (grey);
/// - the ROC polyline (blue) over the area under it (light blue), i.e. the AUC;
/// - `auc` (in [0, 1]) again as a bar along the top edge, filled to `auc` of the width, with
///   ticks every 0.1 (longer at 0.5);
/// - a red dot at each `points` entry, `(fpr, tpr)` in [0, 1], e.g.
///   [`OperatingPointMetrics::roc_point`].
///
/// `roc` is [`super::metrics::roc_curve`]'s output (rates in [0, 1]; thresholds are not drawn).
pub fn write_roc_png(
    path: &Path,
    roc: &[(f64, f64, f32)],
    auc: f64,
    points: &[(f64, f64)],
) -> Result<()> {
    let unit = |v: f64| (0.0..=1.0).contains(&v);
    ensure!(!roc.is_empty(), "empty ROC curve for {}", path.display());
    ensure!(
        roc.iter().all(|&(x, y, _)| unit(x) && unit(y))
            && points.iter().all(|&(x, y)| unit(x) && unit(y)),
        "ROC coordinates outside [0, 1] for {}",
        path.display()
    );
    ensure!(unit(auc), "AUC {auc} outside [0, 1] for {}", path.display());
    create_parent(path)?;
    let ctx = || format!("drawing the ROC plot {}", path.display());

    const MARGIN: i32 = 40;
    let side = ROC_PNG_SIZE as i32;
    let root = BitMapBackend::new(path, (ROC_PNG_SIZE, ROC_PNG_SIZE)).into_drawing_area();
    root.fill(&WHITE).with_context(ctx)?;

    // AUC bar in the top margin, in pixels.
    let (x0, x1, width) = (MARGIN, side - MARGIN, side - 2 * MARGIN);
    let fill_to = x0 + (auc * width as f64).round() as i32;
    root.draw(&Rectangle::new([(x0, 12), (fill_to, 28)], BLUE.filled()))
        .with_context(ctx)?;
    root.draw(&Rectangle::new([(x0, 12), (x1, 28)], BLACK.stroke_width(1)))
        .with_context(ctx)?;
    for i in 0..=10 {
        let x = x0 + width * i / 10;
        let top = if i == 5 { 4 } else { 8 };
        root.draw(&PathElement::new(vec![(x, top), (x, 12)], BLACK))
            .with_context(ctx)?;
    }

    let mut chart = ChartBuilder::on(&root)
        .margin(MARGIN)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .with_context(ctx)?;
    let mut area: Vec<(f64, f64)> = roc.iter().map(|&(x, y, _)| (x, y)).collect();
    area.extend([(1.0, 0.0), (0.0, 0.0)]);
    chart
        .draw_series(std::iter::once(Polygon::new(area, RGBColor(214, 228, 247))))
        .with_context(ctx)?;
    let grid = RGBColor(220, 220, 220);
    chart
        .draw_series((1..10).flat_map(|i| {
            let v = i as f64 / 10.0;
            [
                PathElement::new(vec![(v, 0.0), (v, 1.0)], grid),
                PathElement::new(vec![(0.0, v), (1.0, v)], grid),
            ]
        }))
        .with_context(ctx)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            RGBColor(150, 150, 150).stroke_width(2),
        )))
        .with_context(ctx)?;
    chart
        .draw_series(LineSeries::new(
            roc.iter().map(|&(x, y, _)| (x, y)),
            BLUE.stroke_width(3),
        ))
        .with_context(ctx)?;
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (1.0, 1.0)],
            BLACK.stroke_width(2),
        )))
        .with_context(ctx)?;
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 8, RED.filled())))
        .with_context(ctx)?;
    root.present().with_context(ctx)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::metrics::roc_curve;

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

    #[test]
    fn roc_png_is_written_and_decodes() {
        let (s, l) = example();
        let m = Metrics::compute(&s, &l, 0.8, 100, 3).unwrap();
        let roc = roc_curve(&s, &l).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("plots/roc.png");
        let points = [m.max_accuracy.roc_point(), m.target_sensitivity.roc_point()];
        write_roc_png(&png, &roc, m.auc, &points).unwrap();
        let img = image::open(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (ROC_PNG_SIZE, ROC_PNG_SIZE));
        // Corner is background; something blue and something red was drawn.
        assert_eq!(img.get_pixel(2, ROC_PNG_SIZE - 3).0, [255, 255, 255]);
        assert!(img.pixels().any(|p| p.0 == [0, 0, 255]));
        assert!(img.pixels().any(|p| p.0 == [255, 0, 0]));

        let err = write_roc_png(&png, &[], 0.5, &[]).unwrap_err();
        assert!(err.to_string().contains("roc.png"));
        let bad = dir.path().join("missing-dir-is-a-file");
        std::fs::write(&bad, b"x").unwrap();
        let err = write_roc_png(&bad.join("roc.png"), &roc, m.auc, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("missing-dir-is-a-file"));
    }
}
