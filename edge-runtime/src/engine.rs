//! The model on the device: an ONNX file read with tract, its contract parsed and checked, the
//! network optimised once for a batch of exactly the contract's TTA views.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use drscreen_core::{ModelContract, CONTRACT_KEY};
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

/// A loaded model: contract, identity and the optimised tract plan.
pub struct Engine {
    pub contract: ModelContract,
    pub path: PathBuf,
    pub sha256: String,
    plan: std::sync::Arc<TypedRunnableModel>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// Sets how many threads tract's matrix kernels use (1 = the calling thread only).
pub fn set_threads(n: usize) {
    use tract_linalg::multithread::{set_default_executor, Executor};
    set_default_executor(if n <= 1 {
        Executor::SingleThread
    } else {
        Executor::multithread(n)
    });
}

/// Reads the contract JSON from an ONNX file's `metadata_props`.
pub fn read_contract(
    model: &tract_onnx::prelude::InferenceModel,
    path: &Path,
) -> Result<ModelContract> {
    let key = format!("onnx.metadata_props.{CONTRACT_KEY}");
    let Some(value) = model.properties.get(&key) else {
        bail!(
            "{} has no drscreen contract: re-export it with `host-trainer export`",
            path.display()
        );
    };
    let view = value
        .to_plain_array_view::<String>()
        .map_err(|e| anyhow!("{}: contract is not text: {e}", path.display()))?;
    let json = view
        .iter()
        .next()
        .with_context(|| format!("{}: empty contract", path.display()))?;
    let contract: ModelContract = serde_json::from_str(json)
        .with_context(|| format!("{}: the contract is not one this build understands (re-export the model, or update edge-runtime)", path.display()))?;
    contract
        .validate()
        .map_err(|e| anyhow!("{}: contract refused: {e}", path.display()))?;
    Ok(contract)
}

impl Engine {
    /// Loads and optimises `path` for batches of the contract's TTA views.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading model {}", path.display()))?;
        ensure!(!bytes.is_empty(), "model {} is empty", path.display());
        let model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(|e| {
                anyhow!(
                    "{} is not an ONNX model tract can read: {e}",
                    path.display()
                )
            })?;
        let contract = read_contract(&model, path)?;
        let (n, s) = (contract.tta.len(), contract.input.width as usize);
        let h = contract.input.height as usize;
        let plan = model
            .with_input_fact(0, f32::fact([n, 3, h, s]).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| {
                anyhow!(
                    "{}: cannot build the network for a {n}x3x{h}x{s} batch: {e}",
                    path.display()
                )
            })?;
        Ok(Engine {
            contract,
            path: path.to_path_buf(),
            sha256: format!("{:x}", Sha256::digest(&bytes)),
            plan,
        })
    }

    /// A note for the operator when this file is not the format the export named as the device
    /// default (an int8 file that tract runs slower than its float twin, say).
    pub fn deployment_note(&self) -> Option<String> {
        let d = &self.contract.deployment;
        (d.precision != d.device_default).then(|| {
            let ms = |v: Option<f32>| v.map_or("?".to_string(), |v| format!("{v:.0} ms"));
            format!(
                "{} is {:?}, but its export names {:?} as the device default (tract, all views: float {}, int8 {})",
                self.path.display(),
                d.precision,
                d.device_default,
                ms(d.tract_ms_float),
                ms(d.tract_ms_int8)
            )
        })
    }

    /// Runs one batch (`views x 3 x H x W` floats, as [`drscreen_core::write_views`] writes it)
    /// and returns one probability per view.
    pub fn run(&self, batch: Vec<f32>) -> Result<Vec<f32>> {
        let (n, h, w) = (
            self.contract.tta.len(),
            self.contract.input.height as usize,
            self.contract.input.width as usize,
        );
        ensure!(
            batch.len() == n * 3 * h * w,
            "batch has {} values, the model needs {n}x3x{h}x{w}",
            batch.len()
        );
        let input = tract_ndarray::Array4::from_shape_vec((n, 3, h, w), batch)?.into_tensor();
        let out = self
            .plan
            .run(tvec!(input.into()))
            .map_err(|e| anyhow!("inference failed: {e}"))?;
        let probs: Vec<f32> = out[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect();
        ensure!(
            probs.len() == n,
            "model returned {} values for {n} views",
            probs.len()
        );
        Ok(probs)
    }
}

/// The shipped default model: `$DRSCREEN_MODEL`, else `models/drscreen-default.onnx` of this checkout.
pub fn default_model() -> PathBuf {
    std::env::var_os("DRSCREEN_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/drscreen-default.onnx")
        })
}
