//! Every graph output of a model run once in tract, each as `OUTDIR/<index>.npy`: with
//! `scripts/compare_int8_layers.py`, which makes every intermediate tensor of an int8 file a graph
//! output, it shows where tract and onnxruntime start to differ.
//!
//! `cargo run --release -p edge-runtime --example dump_tensors -- MODEL.onnx INPUT.npy OUTDIR`
//!
//! `INPUT.npy`: one float32 `[1, 3, S, S]` array (the `.npy` the script writes: little-endian,
//! C order). Outputs of type uint8 stay uint8; every other type is written as float32.

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use drscreen_core::npy::to_npy;
use tract_onnx::prelude::*;

/// The float32 data and shape of a NumPy 1.0 `.npy` file (little-endian, C order).
fn read_npy_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    ensure!(
        bytes.len() > 10 && &bytes[..6] == b"\x93NUMPY",
        "not a .npy file"
    );
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(bytes.get(10..10 + len).context("truncated header")?)?;
    ensure!(
        header.contains("'<f4'") && header.contains("'fortran_order': False"),
        "expected little-endian float32 in C order, header {header}"
    );
    let dims = header
        .split_once("'shape': (")
        .and_then(|(_, r)| r.split_once(')'))
        .context("no shape in the header")?
        .0;
    let shape: Vec<usize> = dims
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>().context("bad dimension"))
        .collect::<Result<_>>()?;
    let data: Vec<f32> = bytes[10 + len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    ensure!(
        data.len() == shape.iter().product::<usize>(),
        "{} values for shape {shape:?}",
        data.len()
    );
    Ok((shape, data))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, input, out] = &args[..] else {
        bail!("usage: dump_tensors MODEL.onnx INPUT.npy OUTDIR");
    };
    let (shape, data) = read_npy_f32(&std::fs::read(input).with_context(|| input.clone())?)
        .with_context(|| format!("reading {input}"))?;
    edge_runtime::engine::avoid_tract_amx_kernels();
    let plan = tract_onnx::onnx()
        .model_for_path(model)?
        .with_input_fact(0, f32::fact(&shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let outputs = plan.run(tvec!(Tensor::from_shape(&shape, &data)?.into()))?;
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out)?;
    for (i, t) in outputs.iter().enumerate() {
        let dims = t.shape().to_vec();
        let bytes = if t.datum_type().unquantized() == u8::datum_type() {
            // A quantized uint8 tensor's bytes are its stored values.
            to_npy(&dims, t.as_bytes())
        } else {
            let t = t.cast_to::<f32>()?;
            to_npy(
                &dims,
                t.to_plain_array_view::<f32>()?
                    .as_slice()
                    .context("not contiguous")?,
            )
        }
        .context("shape and data disagree")?;
        std::fs::write(out.join(format!("{i}.npy")), bytes)?;
    }
    println!("{} outputs written to {}", outputs.len(), out.display());
    Ok(())
}
