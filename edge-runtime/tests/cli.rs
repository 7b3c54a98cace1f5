//! The operator's CLI: exit codes, "no such file" for a typo, refused settings and logs, and where
//! it writes.

mod common;
use common::{data, fixture};
use std::path::Path;
use std::process::Command;

/// Runs `edge-runtime ARGS` in `dir`: (exit code, stdout, stderr).
fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edge-runtime"))
        .args(args)
        .current_dir(dir)
        .env_remove("DRSCREEN_LOG")
        .env_remove("DRSCREEN_MODEL")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn model() -> String {
    edge_runtime::engine::default_model().display().to_string()
}

/// `edge-runtime screen --model SHIPPED ARGS` in `dir`.
fn screen(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let model = model();
    let mut all = vec!["screen", "--model", model.as_str()];
    all.extend_from_slice(args);
    run(dir, &all)
}

#[test]
fn screen_exits_1_when_a_photo_was_not_screened_and_says_no_such_file_for_a_typo() {
    let dir = tempfile::tempdir().unwrap();
    let good = fixture("fundus_rgb.jpg");
    let (code, out, err) = screen(dir.path(), &[good.to_str().unwrap(), "no-such-photo.jpg"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    let typo = out
        .lines()
        .find(|l| l.starts_with("no-such-photo.jpg"))
        .unwrap_or_else(|| panic!("no line for the typo: {out}"));
    assert!(
        typo.contains("NOT SCREENED: no such file") && !typo.contains("retake"),
        "{typo}"
    );
    assert!(err.contains("1 of 2 photos were not screened"), "{err}");
    // Both were logged, the good photo first.
    let log = std::fs::read_to_string(dir.path().join("drscreen-results.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2);
    assert!(log
        .lines()
        .nth(1)
        .unwrap()
        .contains("\"outcome\":\"unreadable\""));

    let (code, out, err) = screen(dir.path(), &[good.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}\n{err}");
}

#[test]
fn screen_says_where_it_logs() {
    let dir = tempfile::tempdir().unwrap();
    let good = fixture("fundus_rgb.jpg");
    let (code, _, err) = screen(dir.path(), &[good.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let want = std::fs::canonicalize(dir.path())
        .unwrap()
        .join("drscreen-results.jsonl");
    assert!(
        err.contains(&format!("logging to {}", want.display()))
            || err.contains(&format!(
                "logging to {}",
                dir.path().join("drscreen-results.jsonl").display()
            )),
        "{err}"
    );
}

#[test]
fn zero_threads_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = fixture("fundus_rgb.jpg");
    for sub in ["screen", "watch"] {
        let target = if sub == "screen" {
            good.to_str().unwrap().to_string()
        } else {
            dir.path().display().to_string()
        };
        let (code, _, err) = run(dir.path(), &[sub, "--threads", "0", &target]);
        assert_eq!(code, Some(2), "{sub}: {err}");
        assert!(err.contains("must be at least 1"), "{sub}: {err}");
    }
}

#[test]
fn a_file_that_is_not_a_drscreen_log_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "clinic notes, Monday\nnot a log\n").unwrap();
    let good = fixture("fundus_rgb.jpg");
    let (code, out, err) = screen(
        dir.path(),
        &["--log", notes.to_str().unwrap(), good.to_str().unwrap()],
    );
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(err.contains("is not a drscreen results log"), "{err}");
    assert!(out.is_empty(), "a result was shown unlogged: {out}");
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap(),
        "clinic notes, Monday\nnot a log\n"
    );
}

#[test]
fn a_device_file_is_not_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = screen(dir.path(), &["/dev/zero"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(out.contains("longer than 64 MiB"), "{out}");
}

#[test]
fn preprocess_takes_its_size_and_geometry_from_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let good = fixture("fundus_rgb.jpg");
    let out = dir.path().join("input.png");
    let (code, _, err) = run(
        dir.path(),
        &[
            "preprocess",
            "--model",
            &model(),
            good.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let engine =
        edge_runtime::engine::Engine::load(&edge_runtime::engine::default_model()).unwrap();
    let img = image::open(&out).unwrap();
    assert_eq!(img.width(), engine.contract.input.width);
    assert_eq!(img.height(), engine.contract.input.height);
}

#[test]
fn the_help_names_the_features_this_build_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(dir.path(), &["--help"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.contains("--features rpi"),
        !cfg!(feature = "rpi"),
        "{out}"
    );
    assert_eq!(
        out.contains("--features capture"),
        !cfg!(feature = "capture"),
        "{out}"
    );
}

/// A graded table of IDRiD photos: the first `diseased` with DR and the first `healthy` without,
/// as `image,level`.
fn graded_table(path: &Path, diseased: usize, healthy: usize) {
    let text = std::fs::read_to_string(data("idrid/labels.csv")).unwrap();
    let rows: Vec<(&str, u8)> = text
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0], f[1].parse().unwrap())
        })
        .collect();
    let mut out = String::from("image,level\n");
    for (img, level) in rows
        .iter()
        .filter(|r| r.1 >= 2) // moderate or worse: diseased for an any-DR and a referable model
        .take(diseased)
        .chain(rows.iter().filter(|r| r.1 == 0).take(healthy))
    {
        out.push_str(&format!("{img},{level}\n"));
    }
    std::fs::write(path, out).unwrap();
}

fn calibrate(dir: &Path, table: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let images = data("idrid/images");
    let model = model();
    let mut args = vec![
        "calibrate",
        "--model",
        model.as_str(),
        "--labels",
        table.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--site-name",
        "test clinic",
    ];
    args.extend_from_slice(extra);
    run(dir, &args)
}

#[test]
fn calibrate_sets_a_site_threshold_that_screenings_use_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Too few diseased eyes: refused, saying how many it needs, and nothing written.
    let few = d.join("few.csv");
    graded_table(&few, 6, 2);
    let (code, out, err) = calibrate(d, &few, &[]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("6 gradable diseased eyes") && err.contains("at least 29"),
        "{err}"
    );
    assert!(!d.join("drscreen-site.json").exists());

    // A photo the table names but the folder lacks: the error names it, before any screening.
    let typo = d.join("typo.csv");
    std::fs::write(&typo, "image,level\nIDRiD_001_train.jpg,3\nno-such.jpg,0\n").unwrap();
    let (code, _, err) = calibrate(d, &typo, &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no-such.jpg (line 3)"), "{err}");

    let table = d.join("graded.csv");
    graded_table(&table, 30, 6);
    let (code, out, err) = calibrate(d, &table, &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let site_file = d.join("drscreen-site.json");
    let site: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&site_file).unwrap()).unwrap();
    assert_eq!(site["site"], "test clinic");
    assert_eq!(site["photos"], 36);
    let threshold = site["threshold"].as_f64().unwrap();
    // 30 diseased eyes show 0.90 at 95 % only with all 30 caught.
    assert_eq!(site["sensitivity"]["hits"].as_u64().unwrap(), 30, "{site}");
    assert!(site["sensitivity_lower_bound"].as_f64().unwrap() >= 0.90);
    assert!(out.contains("wrote"), "{out}");

    // Not replaced without --force.
    let (code, _, err) = calibrate(d, &table, &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("pass --force"), "{err}");

    // Screening under the site: the record carries its threshold and names it.
    let photo = data("idrid/images/IDRiD_001_train.jpg");
    let site_arg = site_file.to_str().unwrap();
    let (code, out, err) = screen(d, &["--site", site_arg, "--json", photo.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("site \"test clinic\""), "{err}");
    let rec: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        (rec["threshold"].as_f64().unwrap() - threshold).abs() < 1e-6,
        "{rec}"
    );
    assert_eq!(rec["site"]["site"], "test clinic");
    let sha = format!(
        "{:x}",
        <sha2::Sha256 as sha2::Digest>::digest(std::fs::read(&site_file).unwrap())
    );
    assert_eq!(rec["site"]["sha256"], sha.as_str());

    // A site file made for another model is refused before anything is logged.
    let mut other = site.clone();
    other["model_sha256"] = "00".repeat(32).into();
    let other_file = d.join("other.json");
    std::fs::write(&other_file, other.to_string()).unwrap();
    let log = d.join("other.jsonl");
    let (code, out, err) = screen(
        d,
        &[
            "--site",
            other_file.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
            photo.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(err.contains("calibrates model 000000000000"), "{err}");
    assert!(out.is_empty() && !log.exists(), "{out}");
}
