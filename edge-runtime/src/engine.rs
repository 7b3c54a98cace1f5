//! The model on the device: an ONNX file read with tract, its contract parsed and checked, the
//! network optimised once per process.
//!
//! The TTA views run as single-view calls of one batch-1 plan, spread over the engine's threads
//! ([`Views::PerView`]), not as one batch ([`Views::OneBatch`]): tract 0.23 runs a batch of 5
//! views 9-13x slower than one view, because at batch > 1 it lowers each pointwise convolution
//! through an einsum whose output reshape blocks the fused bias + ReLU6 epilogue (a pass over the
//! tensor each for the bias, the clip and a layout move; sonos/tract PR #2415). Both paths give the
//! same probabilities (a test checks); `docs/benchmarks.md` has the figures.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use drscreen_core::{ModelContract, CONTRACT_KEY};
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

/// Takes tract's Intel AMX int8 matrix kernels out of its kernel pool, once per process, before any
/// plan is built (tract fixes its instruction set at the first plan). Every tract plan of this
/// project is built after it: [`Engine::load_with`] and host-trainer's export call it.
///
/// On an Intel Xeon with AMX (seen 2026-12-04, 2 vCPUs under KVM), tract 0.23.9 picks
/// `avx512amx_mmm_i32_8x8` for the int8 file's convolutions, and the parity tests died with
/// SIGSEGV at its `tileloadd` in both of two runs, while libtorch trained in the same process;
/// with AMX int8 out of the pool (`TRACT_CPU_ISA=-amx-int8`) the same binary passed. The pool then falls back to the
/// AVX-512 VNNI kernels, which give the same integers. A `TRACT_CPU_ISA` of the operator's own is
/// kept and extended. Only x86_64 has the feature; elsewhere (a Pi) this does nothing.
pub fn avoid_tract_amx_kernels() {
    #[cfg(target_arch = "x86_64")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let knob = &tract_onnx::tract_core::tract_linalg::knobs::TRACT_CPU_ISA;
            let spec = match knob.get() {
                Some(own) if !own.trim().is_empty() => format!("{own},-amx-int8"),
                _ => "-amx-int8".to_string(),
            };
            knob.set(Some(spec));
        });
    }
}

/// How the TTA views of one screening go through tract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Views {
    /// One batch-1 plan, one call per view, views spread over the engine's threads (the default:
    /// the faster path in tract 0.23).
    PerView,
    /// One plan for a batch of all the views, one call (kept to measure against).
    OneBatch,
}

/// A loaded model: contract, identity and the optimised tract plan.
pub struct Engine {
    pub contract: ModelContract,
    pub path: PathBuf,
    pub sha256: String,
    views: Views,
    threads: usize,
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
    /// Loads and optimises `path`: views run one per call ([`Views::PerView`]) on one thread.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, Views::PerView)
    }

    /// Loads and optimises `path` for `views`.
    pub fn load_with(path: &Path, views: Views) -> Result<Self> {
        avoid_tract_amx_kernels();
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
        let n = match views {
            Views::PerView => 1,
            Views::OneBatch => contract.tta.len(),
        };
        let (h, s) = (
            contract.input.height as usize,
            contract.input.width as usize,
        );
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
            views,
            threads: 1,
            plan,
        })
    }

    /// Runs the views of a screening on up to `n` threads (each view is one call; with
    /// [`Views::OneBatch`] there is one call and this has no effect). tract's own kernels stay
    /// single-threaded: views are the coarser, cheaper unit to share out.
    pub fn with_threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Threads a screening may use (see [`Engine::with_threads`]).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// How the views go through tract.
    pub fn views(&self) -> Views {
        self.views
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
    /// and returns one probability per view, in view order.
    pub fn run(&self, batch: &[f32]) -> Result<Vec<f32>> {
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
        let probs = match self.views {
            Views::OneBatch => self.call(batch, n)?,
            Views::PerView => {
                // Worker k runs views k, k + workers, ...; the results go back in view order.
                let workers = self.threads.min(n).max(1);
                let worker = |k: usize| -> Result<Vec<f32>> {
                    batch
                        .chunks_exact(3 * h * w)
                        .skip(k)
                        .step_by(workers)
                        .map(|view| Ok(self.call(view, 1)?[0]))
                        .collect()
                };
                let per_worker: Vec<Vec<f32>> = if workers == 1 {
                    vec![worker(0)?]
                } else {
                    std::thread::scope(|scope| {
                        let worker = &worker;
                        let handles: Vec<_> = (0..workers)
                            .map(|k| scope.spawn(move || worker(k)))
                            .collect();
                        handles
                            .into_iter()
                            .map(|h| {
                                h.join().unwrap_or_else(|_| {
                                    Err(anyhow!("an inference thread panicked"))
                                })
                            })
                            .collect::<Result<_>>()
                    })?
                };
                (0..n)
                    .map(|i| per_worker[i % per_worker.len()][i / per_worker.len()])
                    .collect()
            }
        };
        ensure!(
            probs.len() == n,
            "model returned {} values for {n} views",
            probs.len()
        );
        Ok(probs)
    }

    /// One tract call on `count` consecutive views; one probability per view.
    fn call(&self, views: &[f32], count: usize) -> Result<Vec<f32>> {
        let (h, w) = (
            self.contract.input.height as usize,
            self.contract.input.width as usize,
        );
        let input = Tensor::from_shape(&[count, 3, h, w], views)?;
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
            probs.len() == count,
            "model returned {} values for {count} views",
            probs.len()
        );
        Ok(probs)
    }
}

/// The shipped model in the source tree this crate was built from (tests and benchmarks).
pub fn default_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/drscreen-default.onnx")
}

/// The file name of the shipped model.
pub const DEFAULT_MODEL_FILE: &str = "drscreen-default.onnx";

/// Where the device looks for its model when `--model` is not given, in order: `$DRSCREEN_MODEL`;
/// beside the binary; `models/` beside it; `../share/drscreen/` from it (a `/usr/local` or
/// `/opt` install); `/usr/share/drscreen/`; `../../models/` from it (a `target/release` build in
/// a checkout).
pub fn model_candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("DRSCREEN_MODEL") {
        return vec![PathBuf::from(p)];
    }
    let mut c = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        c.push(dir.join(DEFAULT_MODEL_FILE));
        c.push(dir.join("models").join(DEFAULT_MODEL_FILE));
        c.push(dir.join("../share/drscreen").join(DEFAULT_MODEL_FILE));
        c.push(PathBuf::from("/usr/share/drscreen").join(DEFAULT_MODEL_FILE));
        c.push(dir.join("../../models").join(DEFAULT_MODEL_FILE));
    } else {
        c.push(PathBuf::from("/usr/share/drscreen").join(DEFAULT_MODEL_FILE));
    }
    c
}

/// The first of [`model_candidates`] that exists, or an error listing where it looked.
pub fn locate_model() -> Result<PathBuf> {
    let candidates = model_candidates();
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "no model found; looked in: {}. Pass --model FILE, set DRSCREEN_MODEL, or install \
         {DEFAULT_MODEL_FILE} beside the binary or in /usr/share/drscreen",
        looked.join(", ")
    )
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use tract_onnx::tract_core::tract_linalg::isa::{native, Isa};

    #[test]
    fn a_loaded_engine_leaves_tracts_amx_int8_kernels_out() {
        // Loading a model takes AMX int8 out before the plan fixes tract's instruction set; on a
        // machine with AMX the set would hold it otherwise (this one's did, 2026-12-04).
        let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/drscreen-default-int8.onnx");
        super::Engine::load(&model).unwrap();
        assert!(!native().has(Isa::X86_64AmxInt8));
    }
}
