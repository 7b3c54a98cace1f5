//! prepare -> train -> evaluate through the library, on synthetic photos and on the real data.

use std::path::{Path, PathBuf};

use host_trainer::data::cache::{prepare, Cache, CacheSpec, PrepareOptions};
use host_trainer::data::labels::Positive;
use host_trainer::data::sources::{from_table, read_sources, Source};
use host_trainer::data::split::Split;
use host_trainer::data::synth::{write_dataset, SynthOptions};
use host_trainer::eval::evaluate::{evaluate, EvalOptions};
use host_trainer::paths::data_dir;
use host_trainer::train::config::TrainConfig;
use host_trainer::train::fit::{train, EpochMetrics, METRICS};

fn spec(size: usize) -> CacheSpec {
    CacheSpec {
        size,
        clip_limit: 2.0,
        tiles_x: 8,
        tiles_y: 8,
        interpolation: drscreen_core::Interpolation::Area,
        fov: Some(drscreen_core::FovParams::default()),
    }
}

fn prep(labels: &Path, out: &Path, size: usize, val: f64, test: f64) -> Cache {
    let sources = read_sources(&[from_table(labels, None).unwrap()]).unwrap();
    let opts = PrepareOptions {
        positive: Positive::AnyDr,
        val,
        test,
        seed: 42,
        spec: spec(size),
        progress: false,
    };
    prepare(&sources, out, &opts).unwrap();
    Cache::open(out).unwrap()
}

/// A label table of the first `n` rows of a real source's table, under `dir/name/`.
fn real_subset(dir: &Path, name: &str, n: usize) -> Source {
    let table = data_dir().join(name).join("labels.csv");
    let text = std::fs::read_to_string(&table).unwrap();
    let sub: Vec<&str> = text.lines().take(n + 1).collect();
    let out = dir.join(name).join("labels.csv");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, sub.join("\n") + "\n").unwrap();
    let mut s = from_table(&out, Some(&data_dir().join(name).join("images"))).unwrap();
    s.open_licence = name == "idrid";
    s
}

#[test]
fn several_sources_are_split_each_on_its_own_and_keep_their_name_and_licence() {
    let dir = tempfile::tempdir().unwrap();
    let mut idrid = real_subset(dir.path(), "idrid", 40);
    idrid.licence = "CC BY 4.0".into();
    let aptos = real_subset(dir.path(), "aptos2019", 60);
    let sources = read_sources(&[idrid.clone(), aptos.clone()]).unwrap();
    let opts = PrepareOptions {
        positive: Positive::ReferableDr,
        val: 0.25,
        test: 0.0,
        seed: 42,
        spec: spec(32),
        progress: false,
    };
    let m = prepare(&sources, &dir.path().join("cache"), &opts).unwrap();
    assert_eq!(m.sources.len(), 2);
    for s in &m.sources {
        let val = &s.splits[&Split::Val];
        assert!(val.count >= 8, "{}: val {}", s.source.name, val.count);
        assert!(val.positives > 0, "{}: no positive in val", s.source.name);
    }
    assert!(
        m.sources_summary()
            .starts_with("idrid (CC BY 4.0) + aptos2019 (APTOS 2019"),
        "{}",
        m.sources_summary()
    );
    assert!(m
        .entries
        .iter()
        .all(|e| (e.source == "idrid") == e.id.starts_with("IDRiD")));
    let cache = Cache::open(&dir.path().join("cache")).unwrap();
    let val = cache.split(Split::Val).unwrap();
    assert_eq!(val.sources.len(), val.len());
    // A source none of whose photos can be read is an error that names it; nothing is kept of it.
    let mut gone = aptos.clone();
    gone.name = "gone".into();
    gone.images = Some(dir.path().join("nowhere"));
    let sources = read_sources(&[idrid, gone]).unwrap();
    let err = format!(
        "{:#}",
        prepare(&sources, &dir.path().join("c2"), &opts).unwrap_err()
    );
    assert!(
        err.contains("source `gone`") && err.contains("none of its 60 photos"),
        "{err}"
    );
    // Sizes the network cannot take are refused before any work.
    let sources = read_sources(&[aptos]).unwrap();
    for size in [0, 16, 100_000] {
        let o = PrepareOptions {
            spec: spec(size),
            ..opts.clone()
        };
        let err = format!(
            "{:#}",
            prepare(&sources, &dir.path().join("c3"), &o).unwrap_err()
        );
        assert!(err.contains("outside 32..=1024"), "{err}");
    }
}

fn quick_config(cache: &Path, out: &Path, epochs: usize) -> TrainConfig {
    let mut c = TrainConfig {
        cache: cache.to_path_buf(),
        out: out.to_path_buf(),
        ..Default::default()
    };
    c.optim.epochs = epochs;
    c.optim.batch_size = 16;
    c
}

/// 40 synthetic photos (`seed`) under `dir/synth`, a cache of them at each of `sizes`
/// (`dir/cN`), and a run (`dir/run`) trained on the first for one epoch of two batches.
fn quick_run(dir: &Path, seed: u64, sizes: &[usize]) -> (PathBuf, Vec<PathBuf>, PathBuf) {
    let synth = dir.join("synth");
    write_dataset(
        &synth,
        &SynthOptions {
            n: 40,
            seed,
            size: 128,
        },
    )
    .unwrap();
    let labels = synth.join("trainLabels.csv");
    let caches: Vec<PathBuf> = sizes
        .iter()
        .map(|&size| {
            let c = dir.join(format!("c{size}"));
            prep(&labels, &c, size, 0.3, 0.0);
            c
        })
        .collect();
    let run = dir.join("run");
    let mut cfg = quick_config(&caches[0], &run, 1);
    cfg.optim.max_batches_per_epoch = 2;
    train(&cfg, false, false).unwrap();
    (synth, caches, run)
}

/// Two `host-trainer train` processes of one deterministic config give the same weights. Run
/// as processes: torch's generator and thread pool are global, so runs inside this test binary
/// would share them with the tests beside them.
#[test]
fn deterministic_training_gives_the_same_weights_twice() {
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("synth");
    write_dataset(
        &synth,
        &SynthOptions {
            n: 40,
            seed: 5,
            size: 128,
        },
    )
    .unwrap();
    let cache = dir.path().join("c32");
    prep(&synth.join("trainLabels.csv"), &cache, 32, 0.3, 0.0);
    // Every random part of the recipe on: camera augmentation, flips, rotation, oversampling.
    let config = dir.path().join("det.toml");
    std::fs::write(
        &config,
        "[optim]\nepochs = 2\nbatch_size = 16\nmax_batches_per_epoch = 2\ndeterministic = true\n\
         [augment]\nrotation = 0.5\n[augment.camera]\nexposure = 0.3\nnoise = 2.0\n",
    )
    .unwrap();
    let weights = |name: &str| {
        let run = dir.path().join(name);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_host-trainer"))
            .args(["train", "--config"])
            .arg(&config)
            .arg("--cache")
            .arg(&cache)
            .arg("--out")
            .arg(&run)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut t = tch::Tensor::read_safetensors(run.join("last.safetensors")).unwrap();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        t
    };
    let (a, b) = (weights("a"), weights("b"));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs between two deterministic runs");
    }
}

/// Validation-split evaluation of `run` on `cache`, with few bootstrap replicates, into `out`.
fn quick_eval(run: &Path, cache: &Path, out: &Path) -> EvalOptions {
    EvalOptions {
        run: run.to_path_buf(),
        cache: cache.to_path_buf(),
        split: Split::Val,
        checkpoint: None,
        thresholds_from: None,
        target_sensitivity: 0.9,
        n_boot: 10,
        out: out.to_path_buf(),
        no_tta: false,
    }
}

#[test]
fn real_split_keeps_patients_together_and_uses_duplicates_once() {
    let labels = data_dir().join("srahim/labels.csv");
    assert!(
        labels.exists(),
        "{} missing: set DRSCREEN_DATA",
        labels.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = prep(&labels, dir.path(), 32, 0.25, 0.25);
    let m = &cache.manifest;
    let mut side = std::collections::HashMap::new();
    for e in &m.entries {
        if let Some(prev) = side.insert(e.patient.clone(), e.split) {
            assert_eq!(prev, e.split, "patient {} straddles splits", e.patient);
        }
    }
    let hashes: std::collections::HashSet<_> = m.entries.iter().map(|e| &e.sha256).collect();
    assert_eq!(
        hashes.len(),
        m.entries.len(),
        "a byte-identical photo was used twice"
    );
    assert!(m
        .skipped
        .iter()
        .any(|s| s.id.starts_with("Patient300") && s.reason.contains("byte-identical")));
    assert_eq!(m.entries.len() + m.skipped.len(), 600);
    for s in [Split::Train, Split::Val, Split::Test] {
        let info = &m.splits[&s];
        let rate = info.positives as f64 / info.count as f64;
        assert!((0.45..0.62).contains(&rate), "{s:?} positive rate {rate}");
    }
}

#[test]
fn corrupt_truncated_and_missing_photos_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("synth");
    write_dataset(
        &synth,
        &SynthOptions {
            n: 12,
            seed: 5,
            size: 128,
        },
    )
    .unwrap();
    let jpeg = |name: &str| synth.join("train").join(format!("{name}.jpeg"));
    let bytes = std::fs::read(jpeg("1_left")).unwrap();
    std::fs::write(jpeg("1_left"), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(jpeg("2_left"), b"not a jpeg at all").unwrap();
    std::fs::remove_file(jpeg("3_left")).unwrap();
    std::fs::write(jpeg("4_left"), b"").unwrap();
    let cache = prep(
        &synth.join("trainLabels.csv"),
        &dir.path().join("cache"),
        32,
        0.25,
        0.0,
    );
    let m = &cache.manifest;
    assert_eq!(m.entries.len(), 8);
    assert_eq!(m.skipped.len(), 4, "{:#?}", m.skipped);
    let reason = |id: &str| {
        m.skipped
            .iter()
            .find(|s| s.id == id)
            .unwrap()
            .reason
            .clone()
    };
    assert!(
        reason("1_left").contains("corrupt or truncated"),
        "{}",
        reason("1_left")
    );
    assert!(reason("2_left").contains("not a JPEG or PNG"));
    assert!(reason("3_left").contains("reading"));
    assert!(reason("4_left").contains("empty"));
    let total: usize = m.splits.values().map(|s| s.count).sum();
    assert_eq!(total, 8);
    let train = cache.split(Split::Train).unwrap();
    assert_eq!(train.image(0).len(), 32 * 32 * 3);
}

#[test]
fn short_training_on_synthetic_data_learns_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("synth");
    write_dataset(
        &synth,
        &SynthOptions {
            n: 360,
            seed: 11,
            size: 256,
        },
    )
    .unwrap();
    let cache_dir = dir.path().join("cache");
    prep(&synth.join("trainLabels.csv"), &cache_dir, 96, 0.25, 0.0);
    let run = dir.path().join("run");

    // Two epochs, then resume to four: the log continues where it stopped.
    let state = train(&quick_config(&cache_dir, &run, 2), false, false).unwrap();
    assert_eq!(state.epochs_done, 2);
    let state = train(&quick_config(&cache_dir, &run, 4), true, false).unwrap();
    assert_eq!(state.epochs_done, 4);
    let log = std::fs::read_to_string(run.join(METRICS)).unwrap();
    let epochs: Vec<usize> = log
        .lines()
        .map(|l| serde_json::from_str::<EpochMetrics>(l).unwrap().epoch)
        .collect();
    assert_eq!(epochs, [1, 2, 3, 4]);

    let m = evaluate(&EvalOptions {
        run: run.clone(),
        cache: cache_dir.clone(),
        split: Split::Val,
        checkpoint: None,
        thresholds_from: None,
        target_sensitivity: 0.9,
        n_boot: 200,
        out: run.join("eval"),
        no_tta: false,
    })
    .unwrap();
    assert!(
        m.auc >= 0.95,
        "synthetic validation AUC {:.3} after 4 epochs",
        m.auc
    );
    assert!(m.target_sensitivity.sensitivity >= 0.9);
    for f in [
        "metrics.json",
        "report.md",
        "roc.svg",
        "grades.svg",
        "calibration.svg",
        "predictions.csv",
    ] {
        assert!(run.join("eval").join(f).exists(), "{f}");
    }
}

#[test]
fn a_cache_from_another_preprocessing_is_refused_by_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let (_, caches, run) = quick_run(dir.path(), 2, &[64, 32]);
    let err = evaluate(&quick_eval(&run, &caches[1], &dir.path().join("eval"))).unwrap_err();
    assert!(format!("{err:#}").contains("preprocessed as"), "{err:#}");
}

#[test]
fn an_exported_float_model_imports_into_a_run_that_exports_the_same_weights() {
    use host_trainer::export::import::import;
    use host_trainer::export::run::{export, ExportOptions};
    use prost::Message;
    use tract_onnx::pb::ModelProto;

    let dir = tempfile::tempdir().unwrap();
    let (synth, caches, run) = quick_run(dir.path(), 9, &[32, 48]);
    let (c32, c48) = (caches[0].clone(), caches[1].clone());
    let eval_opts = |run: &Path| quick_eval(run, &c32, &run.join("eval"));
    let m0 = evaluate(&eval_opts(&run)).unwrap();
    let photo = synth.join("train").join("1_left.jpeg");
    let float_export = |run: &Path, out: &Path| {
        export(&ExportOptions {
            run: run.to_path_buf(),
            checkpoint: None,
            out: out.to_path_buf(),
            val_metrics: run.join("eval").join("metrics.json"),
            external_metrics: None,
            golden: vec![("synthetic".into(), photo.clone())],
            quantize: None,
            npy_samples: 0,
        })
        .unwrap()
    };
    let model = dir.path().join("m.onnx");
    float_export(&run, &model);

    let back = dir.path().join("back");
    let mut icfg = quick_config(&c32, &back, 1);
    let r = import(&model, &icfg).unwrap();
    assert!(r.initializers > 100, "{}", r.initializers);
    // The imported run evaluates as the trained one did and exports the same weights.
    let m1 = evaluate(&eval_opts(&back)).unwrap();
    assert!((m0.auc - m1.auc).abs() < 1e-9, "{} vs {}", m0.auc, m1.auc);
    let again = dir.path().join("again.onnx");
    float_export(&back, &again);
    let graph = |p: &Path| {
        ModelProto::decode(&std::fs::read(p).unwrap()[..])
            .unwrap()
            .graph
            .unwrap()
    };
    assert_eq!(graph(&model).initializer, graph(&again).initializer);

    // Into a folder that already holds a run: refused, the run left as it was.
    let before = std::fs::read(back.join("best.safetensors")).unwrap();
    let e = format!("{:#}", import(&model, &icfg).unwrap_err());
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(
        std::fs::read(back.join("best.safetensors")).unwrap(),
        before
    );
    // A cache of another input size, a missing file, bytes that are not ONNX: refused by name,
    // nothing written.
    icfg.out = dir.path().join("other");
    icfg.cache = c48;
    let e = format!("{:#}", import(&model, &icfg).unwrap_err());
    assert!(e.contains("preprocessed as"), "{e}");
    icfg.cache = c32.clone();
    let e = format!(
        "{:#}",
        import(&dir.path().join("nope.onnx"), &icfg).unwrap_err()
    );
    assert!(e.contains("nope.onnx"), "{e}");
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"this is not a protobuf \xff\xff\xff").unwrap();
    let e = format!("{:#}", import(&junk, &icfg).unwrap_err());
    assert!(
        e.contains("not an ONNX file") || e.contains("no drscreen contract"),
        "{e}"
    );
    assert!(!icfg.out.exists());
}
