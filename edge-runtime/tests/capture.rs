//! `edge-runtime capture` without a camera: a clear message, exit code 1, no panic.
#![cfg(feature = "capture")]

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edge-runtime"))
        .arg("capture")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn capture_from_a_missing_camera_exits_1_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frame.jpg");
    let (code, err) = run(&[
        "--device",
        "/dev/video-drscreen-missing",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with("error: cannot open camera /dev/video-drscreen-missing: is it plugged in?"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists());

    let (code, err) = run(&["--device", "/dev/null", "--screen", "--log"]);
    assert_eq!(code, Some(2), "usage error: {err}");

    let log = dir.path().join("log.jsonl");
    let (code, err) = run(&[
        "--device",
        "/dev/null",
        "--screen",
        "--log",
        log.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("/dev/null is not a V4L2 video device"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        "",
        "no photo, no record"
    );
}

#[test]
fn capture_refuses_to_run_with_nothing_to_do_or_a_wrong_out_name() {
    let (code, err) = run(&["--device", "/dev/video-drscreen-missing"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("nothing to do: give --out FILE"), "{err}");
    let (code, err) = run(&["--out", "frame.bmp"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("must end in .jpg, .jpeg or .png"), "{err}");
}
