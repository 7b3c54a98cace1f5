//! Host (tch) vs edge (tract) on the same photos: the shipped model against its golden file,
//! the core's bytes from both sides, and a fresh model trained, exported and compared in this run.

use std::path::{Path, PathBuf};

use drscreen_core::contract::Precision;
use drscreen_core::{write_views, Workspace};
use edge_runtime::engine::{default_model, Engine};
use edge_runtime::record::Outcome;
use edge_runtime::screen::Screener;
use host_trainer::data::cache::{prepare, Cache, CacheSpec, PrepareOptions};
use host_trainer::data::labels::Positive;
use host_trainer::data::sources::{from_table, read_sources, SourceRecords};
use host_trainer::data::split::Split;
use host_trainer::data::synth::{write_dataset, SynthOptions};
use host_trainer::eval::evaluate::{evaluate, EvalOptions};
use host_trainer::export::equalize::Equalization;
use host_trainer::export::gptq::WeightRounding;
use host_trainer::export::qat::{QatLoss, QatOptions};
use host_trainer::export::quantize::{BiasCorrection, Calibration, Form};
use host_trainer::export::run::{
    export, ExportOptions, Golden, QuantOptions, INT8_AGREEMENT_BOUND, INT8_P99_BOUND,
    INT8_SIZE_BOUND,
};
use host_trainer::paths::data_dir;
use host_trainer::train::config::TrainConfig;
use host_trainer::train::fit::train;
use sha2::{Digest, Sha256};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn resolve(source: &str) -> PathBuf {
    match source.strip_prefix("data:") {
        Some(rel) => data_dir().join(rel),
        None => repo().join(source),
    }
}

/// Edge per-view probabilities, the SHA-256 of the preprocessed input, for one photo.
fn edge_views(engine: &Engine, ws: &mut Workspace, photo: &Path) -> (Vec<f32>, String) {
    let p = edge_runtime::decode::load_rgb8(photo).unwrap();
    let c = &engine.contract;
    let spec = c.preprocess_spec();
    let rgb = ws.preprocess(&p.rgb, p.width, p.height, &spec).unwrap();
    let mut batch = vec![0f32; c.tta.len() * rgb.len()];
    write_views(&rgb, spec.out_width, spec.out_height, &c.tta, &mut batch).unwrap();
    (
        engine.run(&batch).unwrap(),
        format!("{:x}", Sha256::digest(&rgb)),
    )
}

/// The screening probability and decision of per-view outputs, aggregated as the device does.
fn screen(views: &[f32], threshold: f32) -> (f32, drscreen_core::Decision) {
    let mean = drscreen_core::aggregate(views).unwrap().mean;
    (mean, drscreen_core::decide(mean, threshold).unwrap())
}

/// Checks a model against its golden file; returns the largest per-view difference.
fn check_golden(model: &Path, golden: &Golden, tol: f32) -> f32 {
    let engine = Engine::load(model).unwrap();
    let mut ws = Workspace::default();
    let mut worst = 0f32;
    assert!(
        golden.samples.len() >= 6,
        "golden file has {} samples",
        golden.samples.len()
    );
    for s in &golden.samples {
        let photo = resolve(&s.source);
        let bytes = std::fs::read(&photo).unwrap_or_else(|e| panic!("{}: {e}", photo.display()));
        assert_eq!(
            format!("{:x}", Sha256::digest(&bytes)),
            s.file_sha256,
            "{} changed",
            s.source
        );
        let (views, input_sha) = edge_views(&engine, &mut ws, &photo);
        assert_eq!(
            input_sha, s.input_sha256,
            "{}: edge preprocessing differs from the host's",
            s.source
        );
        for (e, h) in views.iter().zip(&s.per_view) {
            worst = worst.max((e - h).abs());
        }
        let (mean, decision) = screen(&views, golden.threshold);
        // Within `tol` of the threshold the two sides may decide either way (the export's
        // target-sensitivity threshold keeps every validation photo off it).
        if (s.probability - golden.threshold).abs() > tol {
            assert_eq!(
                decision, s.decision,
                "{}: edge decides {decision:?} (p {mean}), host {:?} (p {})",
                s.source, s.decision, s.probability
            );
        }
    }
    assert!(worst <= tol, "edge vs host max |diff| {worst} > {tol}");
    worst
}

/// What an int8 model does on the edge against its golden file.
#[derive(Debug)]
struct Int8Check {
    /// |edge - tract at export|, per view: the same file in the same runtime.
    vs_export: f32,
    /// |edge - host float| of the TTA probability: 99th percentile and max.
    p99_vs_host: f32,
    max_vs_host: f32,
    /// Share of photos whose decision matches the host float decision.
    agreement: f64,
    /// Photos whose edge decision differs from the one tract's outputs at export give.
    unlike_export: usize,
}

/// Checks an int8 model against its golden file (host float outputs and tract's at export).
fn check_golden_int8(model: &Path, golden: &Golden) -> Int8Check {
    assert_eq!(golden.precision, Precision::Int8);
    let engine = Engine::load(model).unwrap();
    assert_eq!(engine.contract.deployment.precision, Precision::Int8);
    let mut ws = Workspace::default();
    let (mut vs_export, mut diffs, mut agree, mut unlike_export) = (0f32, Vec::new(), 0usize, 0);
    for s in &golden.samples {
        let (views, input_sha) = edge_views(&engine, &mut ws, &resolve(&s.source));
        assert_eq!(
            input_sha, s.input_sha256,
            "{}: preprocessing differs",
            s.source
        );
        for (e, t) in views.iter().zip(&s.tract_per_view) {
            vs_export = vs_export.max((e - t).abs());
        }
        let (mean, edge) = screen(&views, golden.threshold);
        diffs.push((mean - s.probability).abs());
        agree += usize::from(edge == s.decision);
        unlike_export += usize::from(edge != screen(&s.tract_per_view, golden.threshold).1);
    }
    diffs.sort_by(f32::total_cmp);
    let k = ((diffs.len() as f64 * 0.99).ceil() as usize).clamp(1, diffs.len()) - 1;
    Int8Check {
        vs_export,
        p99_vs_host: diffs[k],
        max_vs_host: *diffs.last().unwrap(),
        agreement: agree as f64 / golden.samples.len() as f64,
        unlike_export,
    }
}

/// The edge runs the file the export checked: same runtime, so the same outputs and decisions.
/// Integer kernels are exact; one 8-bit step allows for float rounding in the float layers on
/// another CPU.
fn assert_edge_is_the_export(c: &Int8Check) {
    assert!(c.vs_export <= 1.0 / 255.0, "edge vs tract at export: {c:?}");
    assert_eq!(
        c.unlike_export, 0,
        "edge and export decide differently: {c:?}"
    );
}

/// A shipped model's golden file, checked to belong to the file and to hold 64 real photos;
/// returns it with its count of real photos.
fn shipped_golden(model: &Path) -> (Golden, usize) {
    let golden: Golden = serde_json::from_str(
        &std::fs::read_to_string(model.with_extension("golden.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        golden.model_sha256,
        format!("{:x}", Sha256::digest(std::fs::read(model).unwrap())),
        "model and golden file out of step"
    );
    let real = golden
        .samples
        .iter()
        .filter(|s| s.source.starts_with("data:"))
        .count();
    assert!(real >= 64, "golden file has {real} real photos, want 64");
    (golden, real)
}

#[test]
fn shipped_int8_model_stays_within_its_bounds_of_the_host_float_outputs() {
    let model = repo().join("models/drscreen-default-int8.onnx");
    let (golden, _) = shipped_golden(&model);
    let c = check_golden_int8(&model, &golden);
    eprintln!(
        "shipped int8 model on {} photos: p99 |diff| {:.4}, max {:.4}, agreement {:.3}, vs export {:.1e}",
        golden.samples.len(),
        c.p99_vs_host,
        c.max_vs_host,
        c.agreement,
        c.vs_export
    );
    assert_edge_is_the_export(&c);
    // Issue 4's bounds on IDRiD's 83 validation photos, as the export measured them in tract
    // (the golden file's `quantization`, bound to this file by its sha256), and the file sizes.
    let report = golden
        .quantization
        .clone()
        .expect("int8 golden file without its report");
    assert!(
        report.misses().is_empty(),
        "the shipped int8 file misses issue 4's bounds on validation: {:?}",
        report.misses()
    );
    let bytes = |p: &Path| std::fs::metadata(p).unwrap().len() as f64;
    let ratio = bytes(&model) / bytes(&default_model());
    assert!(
        ratio <= INT8_SIZE_BOUND,
        "int8 file is {ratio:.3} of the float file"
    );
    // The same bounds against the host float network, on the golden photos (32 IDRiD, 32
    // SRahim, 4 synthetic). With 68 photos the p99 is the worst photo.
    assert!(
        c.p99_vs_host <= INT8_P99_BOUND,
        "p99 above issue 4's bound: {c:?}"
    );
    assert!(
        c.agreement >= INT8_AGREEMENT_BOUND,
        "decision agreement below issue 4's bound: {c:?}"
    );
}

#[test]
fn shipped_model_matches_its_golden_outputs_on_the_edge() {
    let model = default_model();
    let (golden, real) = shipped_golden(&model);
    let worst = check_golden(&model, &golden, 1e-4);
    eprintln!("shipped float model: edge vs host max |diff| {worst:.2e} on {real} real photos");

    // The full device path (decode, quality gate, preprocessing, views, inference, decision)
    // gives the host's per-view probabilities and decisions on the real golden photos.
    let mut s = Screener::new(Engine::load(&model).unwrap());
    for g in golden
        .samples
        .iter()
        .filter(|g| g.source.starts_with("data:"))
    {
        let r = s.screen_file(&resolve(&g.source));
        assert_eq!(r.per_view.len(), g.per_view.len(), "{}: {r:?}", g.source);
        for (e, h) in r.per_view.iter().zip(&g.per_view) {
            assert!((e - h).abs() <= 1e-4, "{}: device {e}, host {h}", g.source);
        }
        let want = match g.decision {
            drscreen_core::Decision::Refer => Outcome::Refer,
            drscreen_core::Decision::NoReferral => Outcome::NoReferral,
        };
        assert_eq!(r.outcome, want, "{}", g.source);
    }
}

/// One source from a label table, as `prepare --labels` reads it.
fn one_source(labels: &Path, images: Option<&Path>) -> Vec<SourceRecords> {
    read_sources(&[from_table(labels, images).unwrap()]).unwrap()
}

#[test]
fn core_gives_the_same_bytes_from_host_trainer_and_from_edge_runtime() {
    let dir = tempfile::tempdir().unwrap();
    // The source is named after the table's folder.
    std::fs::create_dir(dir.path().join("idrid")).unwrap();
    let labels = dir.path().join("idrid/labels.csv");
    let names = [
        "IDRiD_001_train.jpg",
        "IDRiD_140_train.jpg",
        "IDRiD_300_train.jpg",
        "IDRiD_413_train.jpg",
    ];
    let mut csv = String::from("image,level\n");
    for (i, n) in names.iter().enumerate() {
        csv += &format!("{n},{}\n", i % 2);
    }
    std::fs::write(&labels, csv).unwrap();
    let images = data_dir().join("idrid/images");
    let sources = one_source(&labels, Some(&images));
    // Both geometries: the whole frame (contract version 1) and the disc square (version 2),
    // whose cache also keeps the square before CLAHE for the trainer's camera augmentation.
    for fov in [None, Some(drscreen_core::FovParams::default())] {
        let spec = CacheSpec {
            size: 224,
            clip_limit: 2.0,
            tiles_x: 8,
            tiles_y: 8,
            interpolation: drscreen_core::Interpolation::Linear,
            fov,
        };
        let opts = PrepareOptions {
            positive: Positive::AnyDr,
            val: 0.0,
            test: 0.0,
            seed: 1,
            spec: spec.clone(),
            progress: false,
        };
        let out = dir.path().join(format!("cache-{}", fov.is_some()));
        prepare(&sources, &out, &opts).unwrap();
        let cache = Cache::open(&out).unwrap();
        let train = cache.split(Split::Train).unwrap();
        assert_eq!(train.len(), names.len());
        let mut ws = Workspace::default();
        for (i, id) in train.ids.iter().enumerate() {
            let p = edge_runtime::decode::load_rgb8(&images.join(id)).unwrap();
            let edge = ws
                .preprocess(&p.rgb, p.width, p.height, &spec.preprocess())
                .unwrap();
            assert!(
                train.image(i) == &edge[..],
                "{id} ({fov:?}): host cache and edge preprocessing differ"
            );
            match fov {
                Some(_) => {
                    let raw = train
                        .raw_image(i)
                        .expect("a field-of-view cache keeps the raw square");
                    let eq = ws.equalise(raw, 224, 224, &spec.clahe_params()).unwrap();
                    assert!(
                        eq == edge,
                        "{id}: CLAHE of the cached square is not the model input"
                    );
                }
                None => assert!(train.raw_image(i).is_none()),
            }
        }
    }
}

#[test]
fn a_fresh_model_trained_and_exported_now_agrees_between_host_and_edge() {
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("synth");
    write_dataset(
        &synth,
        &SynthOptions {
            n: 60,
            seed: 99,
            size: 256,
        },
    )
    .unwrap();
    let labels = synth.join("trainLabels.csv");
    let sources = one_source(&labels, None);
    // The field-of-view geometry (contract version 2), as the shipped model is prepared.
    let spec = CacheSpec {
        size: 64,
        clip_limit: 2.0,
        tiles_x: 8,
        tiles_y: 8,
        interpolation: drscreen_core::Interpolation::Area,
        fov: Some(drscreen_core::FovParams::default()),
    };
    let cache = dir.path().join("cache");
    let opts = PrepareOptions {
        positive: Positive::AnyDr,
        val: 0.3,
        test: 0.0,
        seed: 3,
        spec,
        progress: false,
    };
    prepare(&sources, &cache, &opts).unwrap();
    let run = dir.path().join("run");
    let mut cfg = TrainConfig {
        cache: cache.clone(),
        out: run.clone(),
        ..Default::default()
    };
    // Camera augmentation before CLAHE and framing jitter run in the loop.
    cfg.augment.camera = host_trainer::train::camera::CameraConfig {
        exposure: 0.5,
        colour_cast: 0.1,
        gamma: 0.3,
        blur: 1.0,
        noise: 4.0,
        jpeg_quality: 50,
    };
    cfg.augment.translate = 0.05;
    cfg.optim.epochs = 1;
    cfg.optim.max_batches_per_epoch = 3;
    train(&cfg, false, false).unwrap();
    let eval = run.join("eval-val");
    evaluate(&EvalOptions {
        run: run.clone(),
        cache,
        split: Split::Val,
        checkpoint: None,
        thresholds_from: None,
        target_sensitivity: 0.9,
        n_boot: 20,
        out: eval.clone(),
        no_tta: false,
    })
    .unwrap();
    // Fresh photos, not seen in training.
    let fresh = dir.path().join("fresh");
    write_dataset(
        &fresh,
        &SynthOptions {
            n: 6,
            seed: 1234,
            size: 300,
        },
    )
    .unwrap();
    let golden_photos: Vec<(String, PathBuf)> = std::fs::read_dir(fresh.join("train"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.display().to_string(), p))
        .collect();
    let model = dir.path().join("fresh.onnx");
    let options = ExportOptions {
        run: run.clone(),
        checkpoint: None,
        out: model.clone(),
        val_metrics: eval.join("metrics.json"),
        external_metrics: None,
        golden: golden_photos,
        quantize: None,
        npy_samples: 2,
    };
    let golden = export(&options).unwrap();
    let worst = check_golden(&model, &golden, 1e-4);
    eprintln!("fresh float model: edge vs host max |diff| {worst:.2e}");

    // The same run as int8, calibrated on its training photos.
    let int8 = dir.path().join("fresh-int8.onnx");
    let quant = QuantOptions {
        calib: 16,
        calib_offset: 0,
        calibration: Calibration::MinMax,
        bias_correction: BiasCorrection::Empirical,
        form: Form::ConvInteger,
        enforce_bounds: false,
        qat: None,
        float_weights: vec![],
        equalization: Equalization::All,
        equalize_headroom: 2.0,
        streams_headroom: 2.0,
        weight_rounding: WeightRounding::Gptq,
        calib_jitter: false,
        wide_streams: false,
    };
    let golden = export(&ExportOptions {
        out: int8.clone(),
        quantize: Some(quant.clone()),
        ..options.clone()
    })
    .unwrap();
    let report = golden.quantization.clone().unwrap();
    let c = check_golden_int8(&int8, &golden);
    eprintln!(
        "fresh int8 model: max |diff| {:.4} vs host; validation {report:?}",
        c.max_vs_host
    );
    assert_edge_is_the_export(&c);
    assert!(report.int8_bytes * 3 < report.float_bytes, "{report:?}");
    let correction = report
        .correction
        .clone()
        .expect("empirical bias correction report");
    assert_eq!(
        correction.images,
        16 * drscreen_core::SEED_VIEWS.len(),
        "{correction:?}"
    );

    // The same with the residual streams at 16 bits (two uint8 planes): the edge runs the file
    // the export checked, and it is still under a third of the float file.
    let wide = dir.path().join("fresh-wide.onnx");
    let golden = export(&ExportOptions {
        out: wide.clone(),
        quantize: Some(QuantOptions {
            wide_streams: true,
            ..quant.clone()
        }),
        ..options.clone()
    })
    .unwrap();
    let report = golden.quantization.clone().unwrap();
    assert!(report.wide_streams, "{report:?}");
    let c = check_golden_int8(&wide, &golden);
    eprintln!("fresh int8 model, 16-bit streams: {c:?}; validation {report:?}");
    assert_edge_is_the_export(&c);
    assert!(report.int8_bytes * 3 < report.float_bytes, "{report:?}");

    // The same, fine-tuned with its quantization (QAT): the file the edge runs is the one the
    // export checked, and the fine-tuning reports what it did.
    let qat = dir.path().join("fresh-qat.onnx");
    let golden = export(&ExportOptions {
        out: qat.clone(),
        quantize: Some(QuantOptions {
            qat: Some(QatOptions {
                epochs: 2,
                loss: QatLoss::Logit,
                ..QatOptions::default()
            }),
            ..quant.clone()
        }),
        ..options.clone()
    })
    .unwrap();
    let report = golden.quantization.clone().unwrap();
    let tuned = report.qat.clone().expect("QAT report");
    assert_eq!((tuned.epochs, tuned.loss), (2, QatLoss::Logit));
    assert!(tuned.first_epoch_mse.is_finite() && tuned.last_epoch_mse.is_finite());
    let c = check_golden_int8(&qat, &golden);
    eprintln!("fresh QAT int8 model: {c:?}; {tuned:?}");
    assert_edge_is_the_export(&c);

    // A calibration set larger than the training split is refused, and nothing is written.
    let refused = dir.path().join("refused.onnx");
    let err = export(&ExportOptions {
        out: refused.clone(),
        quantize: Some(QuantOptions {
            calib: 10_000,
            ..quant.clone()
        }),
        ..options.clone()
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("too small"), "{err:#}");
    assert!(!refused.exists() && !refused.with_extension("golden.json").exists());
    let err = export(&ExportOptions {
        out: refused.clone(),
        quantize: Some(QuantOptions {
            calib: 0,
            ..quant.clone()
        }),
        ..options.clone()
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("empty"), "{err:#}");
    assert!(!refused.exists());
    // Options that do not go together are refused before any calibration.
    for (bad, needle) in [
        (
            QuantOptions {
                bias_correction: BiasCorrection::Analytic,
                ..quant.clone()
            },
            "runs inside the empirical bias correction",
        ),
        (
            QuantOptions {
                float_weights: vec!["features.1".into()],
                qat: Some(QatOptions::default()),
                ..quant.clone()
            },
            "--float-weights with --qat-epochs",
        ),
        (
            QuantOptions {
                wide_streams: true,
                qat: Some(QatOptions::default()),
                ..quant.clone()
            },
            "--wide-streams with --qat-epochs",
        ),
        (
            QuantOptions {
                wide_streams: true,
                form: Form::QLinearConv,
                ..quant.clone()
            },
            "convinteger forms only",
        ),
    ] {
        let t0 = std::time::Instant::now();
        let err = export(&ExportOptions {
            out: refused.clone(),
            quantize: Some(bad),
            ..options.clone()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains(needle), "{err:#}");
        assert!(!refused.exists());
        eprintln!("refused in {:?}: {err:#}", t0.elapsed());
    }

    // A checkpoint of another network (its first convolution has 8 filters, not 32).
    let other = dir.path().join("other.safetensors");
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _ = vs
        .root()
        .sub("features")
        .sub("0")
        .sub("0")
        .zeros("weight", &[8, 3, 3, 3]);
    vs.save(&other).unwrap();
    let err = export(&ExportOptions {
        out: refused.clone(),
        checkpoint: Some(other),
        ..options
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("architecture"), "{err:#}");
    assert!(!refused.exists());
}

#[test]
fn export_refuses_bad_input_and_leaves_no_model_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    let missing = export(&ExportOptions {
        run: dir.path().join("no-run"),
        checkpoint: None,
        out: out.clone(),
        val_metrics: dir.path().join("none.json"),
        external_metrics: None,
        golden: vec![],
        quantize: None,
        npy_samples: 0,
    });
    assert!(format!("{:#}", missing.unwrap_err()).contains("run.json"));
    assert!(!out.exists());
}
