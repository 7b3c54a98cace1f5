//! Screening on the device: bad input of every kind, the quality gate, the model contract,
//! the results log (torn lines, kill -9) and the indicator order.

use std::cell::RefCell;
use std::convert::Infallible;
mod common;
use common::{data, fixture};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use edge_runtime::engine::{default_model, Engine, Views};
use edge_runtime::indicator::{report, Indicator};
use edge_runtime::quality::{assess, measure, Limits, Quality};
use edge_runtime::record::{read_log, Log, Outcome, Record};
use edge_runtime::screen::Screener;
use prost::Message;

fn screener() -> Screener {
    Screener::new(Engine::load(&default_model()).expect("shipped model loads"))
}

fn reason(r: &Record) -> String {
    match (&r.error, &r.quality) {
        (Some(e), _) => e.clone(),
        (None, Some(Quality::Ungradable { reason })) => reason.clone(),
        _ => String::new(),
    }
}

fn png_bytes(img: image::DynamicImage) -> Vec<u8> {
    let mut v = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Png)
        .unwrap();
    v
}

#[test]
fn bad_input_becomes_an_ungradable_record_with_the_reason() {
    let mut s = screener();
    let dir = tempfile::tempdir().unwrap();
    let jpeg = std::fs::read(fixture("fundus_rgb.jpg")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.jpg", vec![], "empty"),
        (
            "truncated.jpg",
            jpeg[..jpeg.len() * 6 / 10].to_vec(),
            "truncated",
        ),
        (
            "text.jpg",
            b"Patient notes, not a photo".to_vec(),
            "not a JPEG or PNG",
        ),
        (
            "huge.png",
            std::fs::read(fixture("huge_60000.png")).unwrap(),
            "larger than",
        ),
    ];
    for (name, bytes, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes).unwrap();
        let r = s.screen_file(&p);
        assert_eq!(r.outcome, Outcome::Ungradable, "{name}");
        assert!(reason(&r).contains(want), "{name}: {}", reason(&r));
        assert!(r.probability.is_none());
    }
    let r = s.screen_file(dir.path());
    assert_eq!(r.outcome, Outcome::Unreadable);
    assert!(
        reason(&r).contains("a folder, not a photo"),
        "{}",
        reason(&r)
    );
    let r = s.screen_file(&dir.path().join("IMG_0001.jpg"));
    assert_eq!(r.outcome, Outcome::Unreadable);
    assert!(reason(&r).contains("no such file"), "{}", reason(&r));
    let long = dir.path().join("long.jpg");
    std::fs::File::create(&long)
        .unwrap()
        .set_len(drscreen_core::decode::MAX_FILE_BYTES + 1)
        .unwrap();
    let r = s.screen_file(&long);
    assert_eq!(r.outcome, Outcome::Unreadable);
    assert!(reason(&r).contains("longer than 64 MiB"), "{}", reason(&r));
}

#[test]
fn sixteen_bit_greyscale_and_cmyk_photos_are_decoded_not_crashed() {
    let mut s = screener();
    let dir = tempfile::tempdir().unwrap();
    let rgb = image::open(fixture("fundus_rgb.jpg")).unwrap();
    let p16 = dir.path().join("fundus16.png");
    std::fs::write(
        &p16,
        png_bytes(image::DynamicImage::ImageRgb16(rgb.to_rgb16())),
    )
    .unwrap();
    let r = s.screen_file(&p16);
    assert!(
        r.error.is_none() && r.probability.is_some(),
        "16-bit: {}",
        reason(&r)
    );
    let grey = dir.path().join("grey.png");
    std::fs::write(
        &grey,
        png_bytes(image::DynamicImage::ImageLuma8(rgb.to_luma8())),
    )
    .unwrap();
    let r = s.screen_file(&grey);
    assert_eq!(r.outcome, Outcome::Ungradable);
    assert!(
        reason(&r).contains("not those of a retina"),
        "{}",
        reason(&r)
    );
    let r = s.screen_file(&fixture("fundus_cmyk.jpg"));
    assert!(r.error.is_none(), "CMYK: {}", reason(&r));
    assert_ne!(r.quality, None);
}

#[test]
fn a_real_photo_is_screened_with_all_views() {
    let mut s = screener();
    let r = s.screen_file(&data("idrid/images/IDRiD_005_train.jpg"));
    assert_eq!(r.quality, Some(Quality::Gradable));
    assert_eq!(r.per_view.len(), 5);
    let p = r.probability.unwrap();
    assert!((p - r.per_view.iter().sum::<f32>() / 5.0).abs() < 1e-6);
    assert_eq!(
        r.outcome,
        if p >= r.threshold {
            Outcome::Refer
        } else {
            Outcome::NoReferral
        }
    );
    assert_eq!(r.image_sha256.as_ref().unwrap().len(), 64);
}

/// The device runs each view as its own call, spread over threads: that must give what one
/// batched call gives, view for view and in view order, whatever the thread count.
#[test]
fn per_view_calls_on_any_thread_count_equal_one_batched_call() {
    let photo = data("idrid/images/IDRiD_005_train.jpg");
    let model = default_model();
    let batched = Engine::load_with(&model, Views::OneBatch).unwrap();
    assert_eq!(batched.views(), Views::OneBatch);
    let want = Screener::new(batched).screen_file(&photo);
    assert_eq!(want.per_view.len(), 5);
    // Distinct views, or the order would go unchecked.
    assert!(
        want.per_view.windows(2).all(|w| w[0] != w[1]),
        "{:?}",
        want.per_view
    );
    for threads in [1, 2, 3, 5, 8] {
        let engine = Engine::load(&model).unwrap().with_threads(threads);
        assert_eq!(engine.views(), Views::PerView);
        let got = Screener::new(engine).screen_file(&photo);
        for (v, (a, b)) in got.per_view.iter().zip(&want.per_view).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5,
                "{threads} threads, view {v}: {a} vs {b}"
            );
        }
        assert_eq!((got.outcome, got.per_view.len()), (want.outcome, 5));
    }
}

/// With two threads the quality gate runs beside the preprocessing: an ungradable photo must still
/// be reported as the gate found it, with no probability, as on one thread.
#[test]
fn the_gate_beside_the_preprocessing_still_decides_first() {
    let img = image::open(data("idrid/images/IDRiD_001_train.jpg"))
        .unwrap()
        .to_rgb8();
    let dark = image::RgbImage::from_fn(img.width(), img.height(), |x, y| {
        image::Rgb(img.get_pixel(x, y).0.map(|v| v / 8))
    });
    let bytes = png_bytes(image::DynamicImage::ImageRgb8(dark));
    let mut records = Vec::new();
    for threads in [1, 2] {
        let engine = Engine::load(&default_model())
            .unwrap()
            .with_threads(threads);
        let r = Screener::new(engine).screen_bytes("dark.png", &bytes, std::time::Instant::now());
        assert_eq!(r.outcome, Outcome::Ungradable, "{threads} threads");
        assert!(
            matches!(r.quality, Some(Quality::Ungradable { .. })),
            "{r:?}"
        );
        assert!(r.probability.is_none() && r.per_view.is_empty() && r.error.is_none());
        records.push((reason(&r), r.quality_metrics));
    }
    assert_eq!(records[0], records[1]);
}

#[test]
fn models_without_a_contract_this_build_understands_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let not_onnx = dir.path().join("model.onnx");
    std::fs::write(&not_onnx, b"this is not a protobuf model").unwrap();
    let e = format!("{:#}", Engine::load(&not_onnx).unwrap_err());
    assert!(e.contains("not an ONNX model"), "{e}");
    assert!(format!(
        "{:#}",
        Engine::load(&dir.path().join("missing.onnx")).unwrap_err()
    )
    .contains("reading model"));

    let bytes = std::fs::read(default_model()).unwrap();
    let mut proto = tract_onnx::pb::ModelProto::decode(&bytes[..]).unwrap();
    let contract = proto.metadata_props.clone();
    proto.metadata_props.clear();
    let bare = dir.path().join("bare.onnx");
    std::fs::write(&bare, proto.encode_to_vec()).unwrap();
    let e = format!("{:#}", Engine::load(&bare).unwrap_err());
    assert!(e.contains("no drscreen contract"), "{e}");

    // A version this build does not know is refused; version 1 (no field-of-view step) still loads.
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut props = contract.clone();
        let mut c: serde_json::Value = serde_json::from_str(&props[0].value).unwrap();
        edit(&mut c);
        props[0].value = c.to_string();
        props
    };
    proto.metadata_props = with(&|c| c["contract_version"] = 1.into());
    let v1 = dir.path().join("v1.onnx");
    std::fs::write(&v1, proto.encode_to_vec()).unwrap();
    assert!(
        matches!(Engine::load(&v1), Err(e) if format!("{e:#}").contains("fov")),
        "a version 1 contract with a field-of-view step must be refused"
    );
    proto.metadata_props = with(&|c| {
        c["contract_version"] = 1.into();
        c.as_object_mut().unwrap().remove("fov");
    });
    std::fs::write(&v1, proto.encode_to_vec()).unwrap();
    let e = Engine::load(&v1).expect("a version 1 contract loads");
    assert_eq!(e.contract.contract_version, 1);
    assert!(e.contract.fov.is_none());

    proto.metadata_props = with(&|c| c["contract_version"] = 99.into());
    let v2 = dir.path().join("v2.onnx");
    std::fs::write(&v2, proto.encode_to_vec()).unwrap();
    let e = format!("{:#}", Engine::load(&v2).unwrap_err());
    assert!(
        e.contains("contract refused") && e.contains("version"),
        "{e}"
    );

    let mut raw = contract;
    raw[0].value = raw[0]
        .value
        .replace("\"range\":[0.0,1.0]", "\"range\":[0.0,255.0]");
    proto.metadata_props = raw;
    let r255 = dir.path().join("r255.onnx");
    std::fs::write(&r255, proto.encode_to_vec()).unwrap();
    assert!(
        Engine::load(&r255).is_err(),
        "a 0-255 model must not be fed 0-1 input"
    );
}

fn gate(img: &image::RgbImage) -> Quality {
    assess(
        &measure(img.as_raw(), img.width() as usize, img.height() as usize),
        &Limits::default(),
    )
}

fn ungradable_because(q: Quality, want: &str) {
    match q {
        Quality::Ungradable { reason } => {
            assert!(reason.contains(want), "{reason} (wanted {want})")
        }
        Quality::Gradable => panic!("gradable, wanted ungradable: {want}"),
    }
}

#[test]
fn quality_gate_passes_real_photos_and_catches_degraded_and_non_fundus_ones() {
    for rel in [
        "idrid/images/IDRiD_001_train.jpg",
        "idrid/images/IDRiD_300_train.jpg",
        "srahim/images/Patient120_R.jpg",
    ] {
        let img = image::open(data(rel)).unwrap().to_rgb8();
        assert_eq!(gate(&img), Quality::Gradable, "{rel}");
        let (w, h) = img.dimensions();
        let dark = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb(img.get_pixel(x, y).0.map(|v| v / 8))
        });
        ungradable_because(gate(&dark), "");
        ungradable_because(gate(&image::imageops::blur(&img, 6.0)), "blurred");
        let crop = image::imageops::crop_imm(&img, w * 3 / 8, h * 3 / 8, w / 4, h / 4).to_image();
        let crop = image::imageops::resize(&crop, w, h, image::imageops::FilterType::Triangle);
        ungradable_because(gate(&crop), "field of view");
        let bright = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb(img.get_pixel(x, y).0.map(|v| (v as u32 * 4).min(255) as u8))
        });
        ungradable_because(gate(&bright), "overexposed");
        let noisy = edge_runtime::degrade::Degradation::Noise(20.0).apply(&img);
        ungradable_because(gate(&noisy), "too noisy");
    }
    let noise = image::RgbImage::from_fn(800, 600, |x, y| {
        image::Rgb([(x * 7 + y * 13) as u8, (x * y) as u8, (x ^ y) as u8])
    });
    ungradable_because(gate(&noise), "not a fundus photo");
    let small = image::RgbImage::from_pixel(120, 90, image::Rgb([180, 80, 30]));
    ungradable_because(gate(&small), "too small");
}

fn sample_record(i: usize) -> Record {
    Record {
        timestamp: format!("2026-11-25T09:00:{:02}Z", i % 60),
        image: format!("photo-{i}.jpg"),
        image_sha256: Some("ab".repeat(32)),
        model_sha256: "cd".repeat(32),
        contract_version: 1,
        outcome: if i % 2 == 0 {
            Outcome::Refer
        } else {
            Outcome::NoReferral
        },
        probability: Some(0.5),
        per_view: vec![0.5; 5],
        threshold: 0.45,
        site: None,
        borderline: false,
        quality: Some(Quality::Gradable),
        quality_metrics: None,
        error: None,
        latency: Default::default(),
    }
}

#[test]
fn a_torn_last_line_is_moved_aside_and_the_log_stays_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let (mut log, rec) = Log::open(&path).unwrap();
    assert!(rec.records.is_empty() && rec.torn.is_empty());
    for i in 0..3 {
        log.append(&sample_record(i)).unwrap();
    }
    drop(log);
    let torn = b"{\"timestamp\":\"2026-11-25T09:00:03Z\",\"ima";
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, torn).unwrap();
    drop(f);
    let (mut log, rec) = Log::open(&path).unwrap();
    assert_eq!(rec.records.len(), 3);
    assert_eq!(rec.records[2], sample_record(2));
    assert_eq!(rec.torn.len(), 1);
    assert_eq!(rec.torn[0].line, 4);
    let aside = dir.path().join("results.jsonl.torn");
    assert_eq!(rec.torn[0].moved_to.as_deref(), Some(aside.as_path()));
    let mut want_aside = torn.to_vec();
    want_aside.push(b'\n');
    assert_eq!(std::fs::read(&aside).unwrap(), want_aside);
    log.append(&sample_record(4)).unwrap();
    // Every line parses with a plain JSON-lines reader: the torn bytes are gone from the log.
    let text = std::fs::read_to_string(&path).unwrap();
    let parsed: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a whole JSON line"))
        .collect();
    assert_eq!(parsed.len(), 4);
    let back = read_log(&path).unwrap();
    assert_eq!(back.records[3], sample_record(4));
    assert!(back.torn.is_empty());
}

#[test]
fn a_record_cut_just_before_its_newline_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let line = serde_json::to_vec(&sample_record(0)).unwrap();
    std::fs::write(&path, &line).unwrap();
    let (mut log, rec) = Log::open(&path).unwrap();
    assert_eq!(rec.records.len(), 1);
    assert!(rec.torn.is_empty());
    log.append(&sample_record(1)).unwrap();
    assert_eq!(read_log(&path).unwrap().records.len(), 2);
}

/// Child side of the kill -9 test: appends records until killed.
#[test]
fn log_writer_child() {
    let Some(path) = std::env::var_os("DRSCREEN_LOG_CHILD") else {
        return;
    };
    let (mut log, _) = Log::open(Path::new(&path)).unwrap();
    let mut r = sample_record(0);
    r.per_view = vec![0.123_456_79; 4000];
    for i in 0.. {
        r.image = format!("photo-{i}.jpg");
        log.append(&r).unwrap();
    }
}

#[test]
fn kill_9_in_the_middle_of_writing_leaves_a_readable_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "log_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("DRSCREEN_LOG_CHILD", &path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300 + 70 * round));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let (_, rec) = Log::open(&path).unwrap();
        assert!(!rec.records.is_empty(), "round {round}: nothing written");
        assert!(rec.torn.len() <= 1, "round {round}: {:?}", rec.torn);
        // After the open the log parses whole with a plain JSON-lines reader.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'));
        for (i, l) in text.lines().enumerate() {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("round {round}: line {} is not JSON: {e}", i + 1));
        }
        assert_eq!(rec.records.len(), text.lines().count());
        for (i, r) in rec.records.iter().enumerate() {
            assert_eq!(r.per_view.len(), 4000, "record {i} damaged");
        }
    }
}

type Events = Rc<RefCell<Vec<(String, bool, usize)>>>;

/// A pin that records (name, level, log lines on disk at that moment).
struct Pin {
    name: &'static str,
    events: Events,
    log: PathBuf,
}

impl embedded_hal::digital::ErrorType for Pin {
    type Error = Infallible;
}

impl embedded_hal::digital::OutputPin for Pin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.events.borrow_mut().push((self.name.into(), false, 0));
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        let lines = read_log(&self.log).map(|r| r.records.len()).unwrap_or(0);
        self.events
            .borrow_mut()
            .push((self.name.into(), true, lines));
        Ok(())
    }
}

struct NoDelay;
impl embedded_hal::delay::DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

#[test]
fn the_indicator_shows_a_result_only_after_it_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.jsonl");
    let (mut log, _) = Log::open(&path).unwrap();
    let events: Events = Rc::default();
    let pin = |name| Pin {
        name,
        events: events.clone(),
        log: path.clone(),
    };
    let mut ind = Indicator {
        green: pin("green"),
        red: pin("red"),
        amber: pin("amber"),
        buzzer: pin("buzzer"),
    };
    let high = |ev: &Events| {
        ev.borrow()
            .iter()
            .filter(|e| e.1)
            .map(|e| (e.0.clone(), e.2))
            .collect::<Vec<_>>()
    };

    let mut r = sample_record(0);
    r.outcome = Outcome::Refer;
    report(&mut log, &mut ind, &r, &mut NoDelay).unwrap();
    assert_eq!(
        high(&events),
        [("red".to_string(), 1), ("buzzer".to_string(), 1)]
    );

    events.borrow_mut().clear();
    r.outcome = Outcome::Ungradable;
    report(&mut log, &mut ind, &r, &mut NoDelay).unwrap();
    assert_eq!(
        high(&events),
        [
            ("amber".to_string(), 2),
            ("buzzer".to_string(), 2),
            ("buzzer".to_string(), 2)
        ]
    );

    events.borrow_mut().clear();
    r.outcome = Outcome::NoReferral;
    report(&mut log, &mut ind, &r, &mut NoDelay).unwrap();
    assert_eq!(high(&events), [("green".to_string(), 3)]);
    assert!(
        events.borrow().iter().take(4).all(|e| !e.1),
        "all outputs cleared before showing"
    );

    // Borderline: amber, never green alone; amber beside red for a borderline referral.
    events.borrow_mut().clear();
    r.borderline = true;
    report(&mut log, &mut ind, &r, &mut NoDelay).unwrap();
    assert_eq!(
        high(&events),
        [
            ("amber".to_string(), 4),
            ("buzzer".to_string(), 4),
            ("buzzer".to_string(), 4)
        ]
    );
    events.borrow_mut().clear();
    r.outcome = Outcome::Refer;
    report(&mut log, &mut ind, &r, &mut NoDelay).unwrap();
    assert_eq!(
        high(&events)[..2],
        [("red".to_string(), 5), ("amber".to_string(), 5)]
    );
    assert!(
        read_log(&path).unwrap().records[3].borderline,
        "logged as borderline"
    );
}

#[test]
fn a_probability_inside_the_contracts_band_is_borderline() {
    let photo = fixture("fundus_rgb.jpg");
    let mut s = screener();
    let first = s.screen_file(&photo);
    let p = first.probability.expect("the fixture is screened");
    assert!(!first.borderline || s.engine.contract.borderline().is_some());
    // Threshold just above p with a band around it: a no-referral that must say borderline.
    let t = (p + 0.01).min(1.0);
    s.engine.contract.thresholds.target_sensitivity = t;
    s.engine.contract.thresholds.borderline = Some([(p - 0.01).max(0.0), (t + 0.01).min(1.0)]);
    s.engine.contract.validate().unwrap();
    let r = s.screen_file(&photo);
    assert_eq!((r.outcome, r.borderline), (Outcome::NoReferral, true));
    // The same threshold with a band that stops short of p: a plain no referral.
    s.engine.contract.thresholds.borderline = Some([p + 0.005, (t + 0.01).min(1.0)]);
    let r = s.screen_file(&photo);
    assert_eq!((r.outcome, r.borderline), (Outcome::NoReferral, false));
}
