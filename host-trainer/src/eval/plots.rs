//! The evaluation's plots, as SVG (text needs no font files, and any browser shows them):
//! the ROC curve with its AUC, CI and operating points, the probability by DR grade against the
//! threshold, and a calibration (reliability) plot.
//!
//! Every error names the file it concerns.

use anyhow::{ensure, Context, Result};
use plotters::prelude::*;
use std::path::Path;

use super::metrics::Metrics;

/// Width and height of each plot, in SVG pixels.
pub const SIZE: (u32, u32) = (720, 640);

/// Bins of the calibration plot (equal width over [0, 1]).
pub const CALIBRATION_BINS: usize = 10;

const FONT: &str = "sans-serif";

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the directory {}", dir.display())),
        _ => Ok(()),
    }
}

/// The ROC curve (`(fpr, tpr, threshold)` points of [`super::metrics::roc_curve`]) with the AUC
/// and its CI in the title, the chance diagonal, and each operating point marked and named.
pub fn write_roc(path: &Path, title: &str, roc: &[(f64, f64, f32)], m: &Metrics) -> Result<()> {
    let unit = |v: f64| (0.0..=1.0).contains(&v);
    ensure!(!roc.is_empty(), "empty ROC curve for {}", path.display());
    ensure!(
        roc.iter().all(|&(x, y, _)| unit(x) && unit(y)),
        "ROC coordinates outside [0, 1] for {}",
        path.display()
    );
    create_parent(path)?;
    let ctx = || format!("drawing the ROC plot {}", path.display());
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).with_context(ctx)?;
    let caption = format!(
        "{title}: AUC {:.3} (95 % CI {:.3}-{:.3}), n {} ({} positive)",
        m.auc, m.auc_ci.0, m.auc_ci.1, m.n, m.positives
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 17))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .with_context(ctx)?;
    chart
        .configure_mesh()
        .x_desc("1 - specificity (normal eyes referred)")
        .y_desc("sensitivity (diseased eyes referred)")
        .x_labels(11)
        .y_labels(11)
        .label_style((FONT, 13))
        .draw()
        .with_context(ctx)?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            RGBColor(160, 160, 160).stroke_width(1),
        ))
        .with_context(ctx)?
        .label("chance")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RGBColor(160, 160, 160)));
    chart
        .draw_series(LineSeries::new(
            roc.iter().map(|&(x, y, _)| (x, y)),
            BLUE.stroke_width(2),
        ))
        .with_context(ctx)?
        .label("ROC")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE.stroke_width(2)));
    let points = [
        ("target sensitivity", &m.target_sensitivity, RED),
        ("max accuracy", &m.max_accuracy, RGBColor(0, 140, 0)),
    ];
    for (name, op, colour) in points {
        let (x, y) = op.roc_point();
        let label = format!(
            "{name}: t {:.4}, sens {:.3}, spec {:.3}",
            op.threshold, op.sensitivity, op.specificity
        );
        chart
            .draw_series(std::iter::once(Circle::new((x, y), 6, colour.filled())))
            .with_context(ctx)?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 9, y), 5, colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .with_context(ctx)?;
    root.present().with_context(ctx)?;
    Ok(())
}

/// Each photo's probability against its DR grade (0-4, jittered within the grade's column; the
/// grade's median as a bar) with the threshold as a line: which grades the threshold separates.
pub fn write_grades(
    path: &Path,
    title: &str,
    probabilities: &[f32],
    grades: &[u8],
    threshold: f32,
) -> Result<()> {
    ensure!(
        probabilities.len() == grades.len() && !grades.is_empty(),
        "{}: {} probabilities for {} grades",
        path.display(),
        probabilities.len(),
        grades.len()
    );
    create_parent(path)?;
    let ctx = || format!("drawing the per-grade plot {}", path.display());
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).with_context(ctx)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}: probability by DR grade, threshold {threshold:.4}"),
            (FONT, 17),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5f64..4.5f64, 0f64..1f64)
        .with_context(ctx)?;
    let counts: Vec<usize> = (0..5u8)
        .map(|g| grades.iter().filter(|&&x| x == g).count())
        .collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(5)
        .x_label_formatter(&|x| {
            let g = x.round() as usize;
            format!("grade {g} (n {})", counts.get(g).copied().unwrap_or(0))
        })
        .y_labels(11)
        .x_desc("DR grade (international scale)")
        .y_desc("model probability (mean of the views)")
        .label_style((FONT, 13))
        .draw()
        .with_context(ctx)?;
    // A fixed, even spread inside each column: the same file on every run.
    let jitter = |i: usize| ((i * 7919) % 997) as f64 / 997.0 * 0.6 - 0.3;
    chart
        .draw_series(
            probabilities
                .iter()
                .zip(grades)
                .enumerate()
                .map(|(i, (&p, &g))| {
                    Circle::new(
                        (g as f64 + jitter(i), p as f64),
                        2,
                        RGBColor(40, 80, 200).mix(0.55).filled(),
                    )
                }),
        )
        .with_context(ctx)?;
    for g in 0..5u8 {
        let mut v: Vec<f32> = probabilities
            .iter()
            .zip(grades)
            .filter(|(_, &x)| x == g)
            .map(|(&p, _)| p)
            .collect();
        if v.is_empty() {
            continue;
        }
        v.sort_by(f32::total_cmp);
        let median = v[v.len() / 2] as f64;
        chart
            .draw_series(std::iter::once(PathElement::new(
                [(g as f64 - 0.35, median), (g as f64 + 0.35, median)],
                BLACK.stroke_width(3),
            )))
            .with_context(ctx)?;
    }
    chart
        .draw_series(LineSeries::new(
            [(-0.5, threshold as f64), (4.5, threshold as f64)],
            RED.stroke_width(2),
        ))
        .with_context(ctx)?
        .label(format!("threshold {threshold:.4}: refer at or above"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .with_context(ctx)?;
    root.present().with_context(ctx)?;
    Ok(())
}

/// One bin of the calibration plot: mean predicted probability, observed positive fraction,
/// photos.
pub fn calibration_bins(probabilities: &[f32], labels: &[bool]) -> Vec<(f64, f64, usize)> {
    let mut sum = [0f64; CALIBRATION_BINS];
    let mut pos = [0usize; CALIBRATION_BINS];
    let mut n = [0usize; CALIBRATION_BINS];
    for (&p, &l) in probabilities.iter().zip(labels) {
        let b = ((p.clamp(0.0, 1.0) as f64 * CALIBRATION_BINS as f64) as usize)
            .min(CALIBRATION_BINS - 1);
        sum[b] += p as f64;
        pos[b] += l as usize;
        n[b] += 1;
    }
    (0..CALIBRATION_BINS)
        .filter(|&b| n[b] > 0)
        .map(|b| (sum[b] / n[b] as f64, pos[b] as f64 / n[b] as f64, n[b]))
        .collect()
}

/// Reliability plot: per probability bin, the observed fraction of positives against the mean
/// predicted probability, each bin labelled with its photo count; the diagonal is perfect
/// calibration. A screening threshold needs ranking, not calibration: this says how far the
/// probability can be read as a risk.
pub fn write_calibration(
    path: &Path,
    title: &str,
    probabilities: &[f32],
    labels: &[bool],
) -> Result<()> {
    ensure!(
        probabilities.len() == labels.len() && !labels.is_empty(),
        "{}: {} probabilities for {} labels",
        path.display(),
        probabilities.len(),
        labels.len()
    );
    create_parent(path)?;
    let ctx = || format!("drawing the calibration plot {}", path.display());
    let bins = calibration_bins(probabilities, labels);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).with_context(ctx)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}: calibration ({CALIBRATION_BINS} bins)"),
            (FONT, 17),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .with_context(ctx)?;
    chart
        .configure_mesh()
        .x_labels(11)
        .y_labels(11)
        .x_desc("mean predicted probability in the bin")
        .y_desc("observed fraction positive in the bin")
        .label_style((FONT, 13))
        .draw()
        .with_context(ctx)?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            RGBColor(160, 160, 160),
        ))
        .with_context(ctx)?
        .label("perfect calibration")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RGBColor(160, 160, 160)));
    chart
        .draw_series(LineSeries::new(
            bins.iter().map(|&(x, y, _)| (x, y)),
            BLUE.stroke_width(2),
        ))
        .with_context(ctx)?
        .label("model")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(bins.iter().map(|&(x, y, n)| {
            EmptyElement::at((x, y))
                + Circle::new((0, 0), 4, BLUE.filled())
                + Text::new(format!("{n}"), (6, -14), (FONT, 12))
        }))
        .with_context(ctx)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .with_context(ctx)?;
    root.present().with_context(ctx)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::metrics::roc_curve;

    fn example() -> (Vec<f32>, Vec<bool>, Vec<u8>) {
        let s = [
            0.9, 0.7, 0.8, 0.45, 0.6, 0.4, 0.3, 0.15, 0.2, 0.1, 0.55, 0.35,
        ];
        let l = [
            true, false, true, false, true, false, true, false, true, false, true, false,
        ];
        let g = l
            .iter()
            .enumerate()
            .map(|(i, &x)| if x { 1 + (i % 4) as u8 } else { 0 });
        (s.to_vec(), l.to_vec(), g.collect())
    }

    #[test]
    fn the_plots_carry_their_axes_figures_and_operating_points() {
        let (s, l, g) = example();
        let m = Metrics::compute(&s, &l, 0.8, 100, 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let roc = dir.path().join("plots/roc.svg");
        write_roc(&roc, "val", &roc_curve(&s, &l).unwrap(), &m).unwrap();
        let text = std::fs::read_to_string(&roc).unwrap();
        for want in [
            format!("AUC {:.3}", m.auc),
            "sensitivity (diseased eyes referred)".into(),
            "1 - specificity".into(),
            format!(
                "target sensitivity: t {:.4}",
                m.target_sensitivity.threshold
            ),
            "\n0.5\n</text>".into(),
        ] {
            assert!(text.contains(&want), "roc.svg lacks {want:?}");
        }

        let grades = dir.path().join("grades.svg");
        write_grades(&grades, "val", &s, &g, m.target_sensitivity.threshold).unwrap();
        let text = std::fs::read_to_string(&grades).unwrap();
        assert!(text.contains("grade 0 (n 6)") && text.contains("refer at or above"));

        let cal = dir.path().join("calibration.svg");
        write_calibration(&cal, "val", &s, &l).unwrap();
        let text = std::fs::read_to_string(&cal).unwrap();
        assert!(
            text.contains("observed fraction positive") && text.contains("perfect calibration")
        );

        // Refused inputs and unwritable places are errors that name the file.
        let e = write_roc(&roc, "val", &[], &m).unwrap_err();
        assert!(e.to_string().contains("roc.svg"));
        let bad = dir.path().join("a-file");
        std::fs::write(&bad, b"x").unwrap();
        let e = write_calibration(&bad.join("c.svg"), "val", &s, &l).unwrap_err();
        assert!(format!("{e:#}").contains("a-file"));
    }

    #[test]
    fn calibration_bins_count_and_average_each_bin() {
        let p = [0.05, 0.08, 0.55, 0.95, 1.0];
        let l = [false, true, true, true, false];
        let b = calibration_bins(&p, &l);
        assert_eq!(b.len(), 3);
        assert!((b[0].0 - 0.065).abs() < 1e-6 && b[0].1 == 0.5 && b[0].2 == 2);
        assert!((b[2].0 - 0.975).abs() < 1e-6 && b[2].1 == 0.5 && b[2].2 == 2);
    }
}
