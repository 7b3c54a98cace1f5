//! The inverse of [`float_model`]: a float drscreen ONNX file back into a run folder
//! (`run.json` + `best.safetensors`), so that an int8 file can be made again from the float
//! file that ships, when the training checkpoint is gone.
//!
//! Each convolution's folded weights and bias go in with an identity BatchNorm whose shift is the
//! bias ([`store_folded`]), and each dense layer's with an identity BatchNorm before it, so that
//! folding gives back every initializer of the file bit for bit; [`import`] checks that it does
//! before anything is written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use drscreen_core::contract::Precision;
use drscreen_core::{ModelContract, CONTRACT_KEY};
use prost::Message;
use tch::{nn, Device, Tensor};
use tract_onnx::pb::{tensor_proto::DataType, ModelProto, TensorProto};

use super::onnx::{float_model, store_folded, Weights};
use super::run::{var_weights, write_atomic};
use crate::data::cache::Cache;
use crate::data::labels::Positive;
use crate::model::arch::{Arch, BN_EPS};
use crate::model::net::Net;
use crate::train::config::TrainConfig;
use crate::train::fit::{run_file, RunInfo, BEST, RUN};

/// What an import wrote.
#[derive(Debug)]
pub struct Imported {
    pub run: PathBuf,
    pub contract: ModelContract,
    /// Initializers of the file, every one given back bit for bit by the imported checkpoint.
    pub initializers: usize,
}

/// A float initializer's values, from `float_data` or little-endian `raw_data`.
fn floats(t: &TensorProto) -> Result<Vec<f32>> {
    ensure!(
        t.data_type == DataType::Float as i32,
        "initializer {} is not float32 (data type {}): import the float file, not the int8 one",
        t.name,
        t.data_type
    );
    if !t.float_data.is_empty() {
        return Ok(t.float_data.clone());
    }
    ensure!(
        t.raw_data.len() % 4 == 0,
        "initializer {}: {} raw bytes is not a whole number of float32 values",
        t.name,
        t.raw_data.len()
    );
    Ok(t.raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// The file's initializers by name.
fn initializers(proto: &ModelProto) -> Result<HashMap<&str, &TensorProto>> {
    let graph = proto.graph.as_ref().context("the ONNX file has no graph")?;
    Ok(graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect())
}

/// Initializer `name` with shape `dims`.
fn tensor(inits: &HashMap<&str, &TensorProto>, name: &str, dims: &[i64]) -> Result<Vec<f32>> {
    let t = inits.get(name).with_context(|| {
        format!("the file has no initializer {name}: not a float model of this architecture")
    })?;
    ensure!(
        t.dims == dims,
        "initializer {name} has shape {:?}, the architecture needs {dims:?}",
        t.dims
    );
    let v = floats(t)?;
    let n: i64 = dims.iter().product();
    ensure!(
        v.len() as i64 == n,
        "initializer {name} holds {} values for shape {dims:?}",
        v.len()
    );
    Ok(v)
}

/// An identity BatchNorm `prefix` over `c` features (running_var + eps = 1).
fn identity_bn(w: &mut Weights, prefix: &str, c: usize) {
    let ch = vec![c as i64];
    w.insert(format!("{prefix}.weight"), (vec![1.0; c], ch.clone()));
    w.insert(format!("{prefix}.bias"), (vec![0.0; c], ch.clone()));
    w.insert(format!("{prefix}.running_mean"), (vec![0.0; c], ch.clone()));
    w.insert(
        format!("{prefix}.running_var"),
        (vec![(1.0 - BN_EPS) as f32; c], ch),
    );
}

/// Checkpoint tensors of `arch` whose folding gives back the float model `proto`.
pub fn weights_from_float(arch: &Arch, proto: &ModelProto) -> Result<Weights> {
    let inits = initializers(proto)?;
    let mut w = Weights::new();
    for u in arch.units() {
        let k = u.kernel as i64;
        let wf = tensor(
            &inits,
            &format!("{}.w", u.conv),
            &[u.cout as i64, (u.cin / u.groups) as i64, k, k],
        )?;
        let bf = tensor(&inits, &format!("{}.b", u.conv), &[u.cout as i64])?;
        store_folded(&mut w, u, &wf, &bf);
    }
    let mut width = arch.head.features;
    for (i, &(_, out)) in arch.head.hidden.iter().enumerate() {
        identity_bn(&mut w, &format!("head.bn{i}"), width);
        let name = format!("head.fc{i}");
        let dims = [out as i64, width as i64];
        w.insert(
            format!("{name}.weight"),
            (tensor(&inits, &format!("{name}.w"), &dims)?, dims.to_vec()),
        );
        w.insert(
            format!("{name}.bias"),
            (
                tensor(&inits, &format!("{name}.b"), &dims[..1])?,
                vec![dims[0]],
            ),
        );
        width = out;
    }
    let dims = [1, width as i64];
    w.insert(
        "head.out.weight".into(),
        (tensor(&inits, "head.out.w", &dims)?, dims.to_vec()),
    );
    w.insert(
        "head.out.bias".into(),
        (tensor(&inits, "head.out.b", &[1])?, vec![1]),
    );
    Ok(w)
}

/// Copies `w` into the variables of `vs`; every variable must be given and every tensor used.
pub fn load_weights(vs: &nn::VarStore, w: &Weights) -> Result<()> {
    let vars = vs.variables();
    for name in w.keys() {
        ensure!(
            vars.contains_key(name),
            "the network has no variable {name}"
        );
    }
    tch::no_grad(|| -> Result<()> {
        for (name, var) in &vars {
            let (data, shape) = w
                .get(name)
                .with_context(|| format!("no value for the network's variable {name}"))?;
            ensure!(
                var.size() == *shape,
                "{name}: the network's variable has shape {:?}, the value {shape:?}",
                var.size()
            );
            let t = Tensor::from_slice(data)
                .view(shape.as_slice())
                .to_device(var.device());
            var.shallow_clone().copy_(&t);
        }
        Ok(())
    })
}

/// Initializers of `a` that `b` does not hold bit for bit (by name), and the count compared.
fn initializer_mismatches(a: &ModelProto, b: &ModelProto) -> Result<(Vec<String>, usize)> {
    let (ia, ib) = (initializers(a)?, initializers(b)?);
    let mut bad = Vec::new();
    for (name, ta) in &ia {
        let same = match ib.get(name) {
            Some(tb) => {
                ta.dims == tb.dims && {
                    let (va, vb) = (floats(ta)?, floats(tb)?);
                    va.len() == vb.len()
                        && va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits())
                }
            }
            None => false,
        };
        if !same {
            bad.push(name.to_string());
        }
    }
    if ia.len() != ib.len() {
        bad.push(format!("{} vs {} initializers", ia.len(), ib.len()));
    }
    Ok((bad, ia.len()))
}

/// The contract carried by `proto`.
fn contract_of(proto: &ModelProto, path: &Path) -> Result<ModelContract> {
    let json = proto
        .metadata_props
        .iter()
        .find(|p| p.key == CONTRACT_KEY)
        .map(|p| p.value.as_str())
        .with_context(|| format!("{} has no drscreen contract", path.display()))?;
    let c: ModelContract = serde_json::from_str(json).with_context(|| {
        format!(
            "{}: the contract is not one this build reads",
            path.display()
        )
    })?;
    c.validate()
        .map_err(|e| anyhow::anyhow!("{}: contract refused: {e}", path.display()))?;
    Ok(c)
}

/// Writes a run folder `cfg.out` whose checkpoint is the float model `model`, for the cache
/// `cfg.cache` (which must be preprocessed as the model's contract says).
pub fn import(model: &Path, cfg: &TrainConfig) -> Result<Imported> {
    let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
    ensure!(!bytes.is_empty(), "{} is empty", model.display());
    let proto = ModelProto::decode(&bytes[..])
        .with_context(|| format!("{} is not an ONNX file", model.display()))?;
    let contract = contract_of(&proto, model)?;
    if contract.deployment.precision != Precision::Float32 {
        bail!(
            "{} is a {:?} model: import the float file it was made from",
            model.display(),
            contract.deployment.precision
        );
    }
    let out = &cfg.out;
    // Refused before any work, so a mistyped folder costs nothing.
    for name in [RUN, BEST] {
        let f = run_file(out, name);
        ensure!(
            !f.exists(),
            "{} already exists: import into a new run folder (nothing was written)",
            f.display()
        );
    }
    let cache = Cache::open(&cfg.cache)?;
    let spec = &cache.manifest.spec;
    ensure!(
        spec.preprocess() == contract.preprocess_spec(),
        "the cache {} is preprocessed as {:?}, the model as {:?}: prepare a cache for the model",
        cfg.cache.display(),
        spec.preprocess(),
        contract.preprocess_spec()
    );
    let positive = Positive::from(contract.positive_class);
    ensure!(
        cache.manifest.positive == positive,
        "the cache's positive class is {:?}, the model's {positive:?}",
        cache.manifest.positive
    );
    let arch = Arch::mobilenet_v2(cfg.model.width_mult, spec.size);
    let w = weights_from_float(&arch, &proto)?;
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = Net::new(&vs.root(), arch.clone(), 0);
    load_weights(&vs, &w)?;
    // The checkpoint must give the file back before it is written.
    let again = float_model(&arch, &var_weights(&vs)?, vec![])?;
    let (bad, initializers) = initializer_mismatches(&proto, &again)?;
    ensure!(
        bad.is_empty(),
        "the imported checkpoint does not give back {} of the file's initializers (first: {}): not a float model this build writes",
        bad.len(),
        bad[0]
    );
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let info = RunInfo {
        arch,
        config: cfg.clone(),
        cache_spec: spec.clone(),
        positive,
        device: format!("imported from {}", model.display()),
    };
    let ck = run_file(out, BEST);
    let tmp = ck.with_extension("tmp.safetensors");
    vs.save(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &ck).with_context(|| format!("writing {}", ck.display()))?;
    write_atomic(
        &run_file(out, RUN),
        serde_json::to_string_pretty(&info)?.as_bytes(),
    )?;
    Ok(Imported {
        run: out.clone(),
        contract,
        initializers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::onnx::fold_conv;

    /// A network whose BatchNorms are not the identity: random statistics, so that folding
    /// changes the weights and the import cannot give them back by accident.
    fn trained_like(seed: i64) -> (nn::VarStore, Net) {
        let _turn = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Net::new(&vs.root(), Arch::mobilenet_v2(1.0, 32), 0);
        tch::no_grad(|| {
            for (name, var) in vs.variables() {
                let r = Tensor::rand_like(&var);
                let v = if name.ends_with("running_var") {
                    r * 2.0 + 0.1
                } else if name.ends_with("running_mean") || name.ends_with(".bias") {
                    r - 0.5
                } else if name.contains("bn") && name.ends_with(".weight") {
                    r + 0.5
                } else {
                    continue;
                };
                var.shallow_clone().copy_(&v);
            }
        });
        (vs, net)
    }

    #[test]
    fn an_imported_float_model_gives_back_every_initializer_and_the_same_outputs() {
        let (vs, net) = trained_like(3);
        let proto = float_model(&net.arch, &var_weights(&vs).unwrap(), vec![]).unwrap();
        let w = weights_from_float(&net.arch, &proto).unwrap();
        let vs2 = nn::VarStore::new(Device::Cpu);
        let net2 = Net::new(&vs2.root(), net.arch.clone(), 0);
        load_weights(&vs2, &w).unwrap();
        let again = float_model(&net.arch, &var_weights(&vs2).unwrap(), vec![]).unwrap();
        let (bad, n) = initializer_mismatches(&proto, &again).unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert!(n > 100, "{n} initializers");
        // The first unit's stored weights differ from the original checkpoint's (its
        // BatchNorm was not the identity), yet they fold to the same tensor.
        let u = net.arch.units().next().unwrap();
        let orig = var_weights(&vs).unwrap();
        assert_ne!(
            orig[&format!("{}.weight", u.conv)].0,
            w[&format!("{}.weight", u.conv)].0
        );
        assert_eq!(fold_conv(&orig, u).unwrap(), fold_conv(&w, u).unwrap());
        // tch runs both the same (BatchNorm in eval mode against the folded identity).
        let x = Tensor::rand([2, 3, 32, 32], (tch::Kind::Float, Device::Cpu));
        let (a, b) = (net.forward_t(&x, false), net2.forward_t(&x, false));
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "logit diff {diff}");
    }

    #[test]
    fn a_file_without_the_architectures_tensors_is_refused_by_name() {
        let (vs, net) = trained_like(4);
        let mut proto = float_model(&net.arch, &var_weights(&vs).unwrap(), vec![]).unwrap();
        let graph = proto.graph.as_mut().unwrap();
        let u = net.arch.units().nth(5).unwrap();
        graph
            .initializer
            .retain(|t| t.name != format!("{}.w", u.conv));
        let e = format!("{:#}", weights_from_float(&net.arch, &proto).unwrap_err());
        assert!(e.contains(&format!("{}.w", u.conv)), "{e}");
        // Another width multiplier: the same tensor names with other shapes.
        let other = Arch::mobilenet_v2(0.5, 32);
        let proto = float_model(&net.arch, &var_weights(&vs).unwrap(), vec![]).unwrap();
        let e = format!("{:#}", weights_from_float(&other, &proto).unwrap_err());
        assert!(e.contains("has shape"), "{e}");
    }

    #[test]
    fn int8_initializers_are_refused() {
        let t = TensorProto {
            name: "features.0.0.w".into(),
            data_type: DataType::Int8 as i32,
            raw_data: vec![1, 2, 3],
            ..Default::default()
        };
        let e = format!("{:#}", floats(&t).unwrap_err());
        assert!(e.contains("not float32"), "{e}");
    }
}
