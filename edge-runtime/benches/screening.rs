//! Bench binary: one screening end to end (decode + quality gate + preprocessing + the TTA
//! views through tract + decision), per photo, model and thread count; median of N runs.
//!
//! `cargo bench -p edge-runtime --bench screening -- --model M.onnx [--threads 1] [--one-batch] PHOTO...`
//! (`--one-batch`: all views in one batched tract call instead of one call per view.)
//! Prints one JSON line per photo with stage medians. `scripts/bench_screen.py` runs it beside
//! the Python peer (OpenCV + onnxruntime) in the same run.

use std::time::Instant;

use edge_runtime::engine::{Engine, Views};
use edge_runtime::screen::Screener;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let model = opt("--model").expect("--model M.onnx");
    let threads: usize = opt("--threads").and_then(|t| t.parse().ok()).unwrap_or(1);
    let runs: usize = opt("--runs").and_then(|t| t.parse().ok()).unwrap_or(15);
    let views = if args.iter().any(|a| a == "--one-batch") {
        Views::OneBatch
    } else {
        Views::PerView
    };
    let takes_value = |a: &str| ["--model", "--threads", "--runs"].contains(&a);
    let photos: Vec<&String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            !a.starts_with("--") && !args.get(i.wrapping_sub(1)).is_some_and(|p| takes_value(p))
        })
        .map(|(_, a)| a)
        .collect();
    let t = Instant::now();
    let engine = Engine::load_with(std::path::Path::new(&model), views).expect("model");
    let mut s = Screener::new(engine.with_threads(threads));
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    for photo in photos {
        let bytes = std::fs::read(photo).expect("photo");
        let mut recs = Vec::new();
        for _ in 0..runs + 1 {
            recs.push(s.screen_bytes(photo, &bytes, Instant::now()));
        }
        recs.remove(0); // warm-up
        let med = |f: &dyn Fn(&edge_runtime::record::Record) -> f64| {
            let mut v: Vec<f64> = recs.iter().map(f).collect();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        println!(
            "{{\"photo\":\"{photo}\",\"model\":\"{model}\",\"threads\":{threads},\"views\":\"{views:?}\",\"outcome\":\"{:?}\",\"load_ms\":{load_ms:.1},\"decode_ms\":{:.2},\"quality_ms\":{:.2},\"preprocess_ms\":{:.2},\"inference_ms\":{:.2},\"total_ms\":{:.2}}}",
            recs[0].outcome,
            med(&|r| r.latency.decode_ms),
            med(&|r| r.latency.quality_ms),
            med(&|r| r.latency.preprocess_ms),
            med(&|r| r.latency.inference_ms),
            med(&|r| r.latency.total_ms)
        );
    }
    // Peak resident memory of this process (Linux).
    let hwm = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        });
    println!(
        "{{\"peak_rss_kb\":{}}}",
        hwm.unwrap_or_else(|| "null".into())
    );
}
