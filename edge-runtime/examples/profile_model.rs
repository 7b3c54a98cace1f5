//! Per-node profile of a model in tract: where the time goes and which kernels run.
//!
//! `cargo run --release -p edge-runtime --example profile_model -- MODEL.onnx [--batch 5]
//! [--runs 20] [--top 25] [--size 224]` (one thread)
//!
//! Each node's evaluation is timed over `--runs` runs (after one warm-up); the output lists the
//! time per op type and the slowest nodes with tract's own description of the op (for a
//! convolution or matrix product: the kernel it chose).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tract_onnx::prelude::*;

fn arg(args: &[String], name: &str, default: usize) -> Result<usize> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .with_context(|| format!("{name} needs a value"))?
            .parse()
            .with_context(|| format!("{name} must be a number")),
        None => Ok(default),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .context("usage: profile_model MODEL.onnx [--batch N] [--runs N] [--top N] [--size N]")?;
    let (batch, runs) = (arg(&args, "--batch", 5)?, arg(&args, "--runs", 20)?);
    let top = arg(&args, "--top", 25)?;
    edge_runtime::engine::avoid_tract_amx_kernels();
    let model = tract_onnx::onnx().model_for_path(path)?;
    let size = arg(&args, "--size", 224)?;
    let plan = model
        .with_input_fact(0, f32::fact([batch, 3, size, size]).into())?
        .into_optimized()?
        .into_runnable()?;
    let input: Tensor =
        tract_ndarray::Array4::from_shape_fn((batch, 3, size, size), |(n, c, y, x)| {
            ((n * 7 + c * 13 + y * 3 + x) % 255) as f32 / 255.0
        })
        .into_tensor();
    let mut state = tract_onnx::tract_core::plan::SimpleState::new(&plan)?;
    let mut times: Vec<Duration> = vec![Duration::ZERO; plan.model().nodes().len()];
    let mut total = Duration::ZERO;
    for run in 0..=runs {
        let t0 = Instant::now();
        state.run_plan_with_eval(
            tvec!(input.clone().into()),
            |ctx, op_state, node, inputs| {
                let t = Instant::now();
                let r = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                if run > 0 {
                    times[node.id] += t.elapsed();
                }
                r
            },
        )?;
        if run > 0 {
            total += t0.elapsed();
        }
    }
    let per = |d: Duration| d.as_secs_f64() * 1e3 / runs as f64;
    println!(
        "{path}: batch {batch} at {size} px, 1 thread, {runs} runs: {:.2} ms per run",
        per(total)
    );
    let mut by_op: BTreeMap<String, (Duration, usize)> = BTreeMap::new();
    for node in plan.model().nodes() {
        let e = by_op.entry(node.op().name().to_string()).or_default();
        e.0 += times[node.id];
        e.1 += 1;
    }
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by_key(|o| std::cmp::Reverse(o.1 .0));
    println!("\n{:>9} {:>6} {:>5}  op", "ms/run", "share", "nodes");
    for (op, (d, n)) in ops.iter().filter(|o| !o.1 .0.is_zero()) {
        println!(
            "{:>9.3} {:>5.1}% {:>5}  {op}",
            per(*d),
            100.0 * d.as_secs_f64() / total.as_secs_f64(),
            n
        );
    }
    let mut nodes: Vec<_> = plan.model().nodes().iter().collect();
    nodes.sort_by_key(|n| std::cmp::Reverse(times[n.id]));
    println!("\nslowest {top} nodes:");
    for node in nodes.into_iter().take(top) {
        let info = node.op().info().unwrap_or_default().join("; ");
        println!(
            "{:>9.3} ms  {} ({})  {}",
            per(times[node.id]),
            node.name,
            node.op().name(),
            info.chars().take(160).collect::<String>()
        );
    }
    Ok(())
}
