//! Writes the network as ONNX with the prost types tract-onnx exposes (`tract_onnx::pb`), from
//! the same [`Arch`] the tch builder uses: BatchNorm folded into the convolutions (and the head's
//! BatchNorms into the dense layers that follow them), TF padding as asymmetric `pads`, dropout
//! gone, `[0,1] -> [-1,1]` scaling and the sigmoid inside. Input `input` `[batch, 3, H, W]` (batch
//! symbolic), output `probability` `[batch, 1]`.

use std::collections::HashMap;

use anyhow::{ensure, Context, Result};
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::model::arch::{Arch, Block, ConvUnit, BN_EPS};

/// ONNX opset written (Clip with min/max inputs, opset-13 semantics throughout).
pub const OPSET: i64 = 13;
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "probability";

/// Named float tensors of a checkpoint: values and shape.
pub type Weights = HashMap<String, (Vec<f32>, Vec<i64>)>;

fn get<'a>(w: &'a Weights, name: &str) -> Result<&'a (Vec<f32>, Vec<i64>)> {
    w.get(name).with_context(|| {
        format!("checkpoint has no tensor {name}: not a model of this architecture")
    })
}

/// BatchNorm as a per-channel affine map: `y = scale * x + shift` (eval mode, eps 1e-3).
fn bn_affine(w: &Weights, prefix: &str, channels: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let g = &get(w, &format!("{prefix}.weight"))?.0;
    let b = &get(w, &format!("{prefix}.bias"))?.0;
    let m = &get(w, &format!("{prefix}.running_mean"))?.0;
    let v = &get(w, &format!("{prefix}.running_var"))?.0;
    ensure!(
        g.len() == channels && b.len() == channels && m.len() == channels && v.len() == channels,
        "{prefix}: expected {channels} channels"
    );
    let scale: Vec<f32> = (0..channels)
        .map(|c| (g[c] as f64 / (v[c] as f64 + BN_EPS).sqrt()) as f32)
        .collect();
    let shift: Vec<f32> = (0..channels)
        .map(|c| (b[c] as f64 - m[c] as f64 * scale[c] as f64) as f32)
        .collect();
    Ok((scale, shift))
}

/// Convolution weights with the unit's BatchNorm folded in: (`W` OIHW, bias).
pub fn fold_conv(w: &Weights, u: &ConvUnit) -> Result<(Vec<f32>, Vec<f32>)> {
    let (cw, shape) = get(w, &format!("{}.weight", u.conv))?;
    let expect = [
        u.cout as i64,
        (u.cin / u.groups) as i64,
        u.kernel as i64,
        u.kernel as i64,
    ];
    ensure!(
        shape[..] == expect,
        "{}.weight has shape {shape:?}, the architecture needs {expect:?}",
        u.conv
    );
    let (scale, shift) = bn_affine(w, &u.bn, u.cout)?;
    let per_out = cw.len() / u.cout;
    let folded = cw
        .iter()
        .enumerate()
        .map(|(i, &x)| x * scale[i / per_out])
        .collect();
    Ok((folded, shift))
}

/// Stores folded convolution weights `wf` (OIHW) and bias `bf` as unit `u`'s tensors in `w`,
/// with an identity BatchNorm whose shift is the bias, so that [`fold_conv`] gives them back.
pub fn store_folded(w: &mut Weights, u: &ConvUnit, wf: &[f32], bf: &[f32]) {
    let c = u.cout;
    let k = u.kernel as i64;
    let shape = vec![c as i64, (u.cin / u.groups) as i64, k, k];
    w.insert(format!("{}.weight", u.conv), (wf.to_vec(), shape));
    let bn = &u.bn;
    let ch = vec![c as i64];
    // running_var + eps = 1, so the fold scales by exactly 1.
    w.insert(format!("{bn}.weight"), (vec![1.0; c], ch.clone()));
    w.insert(format!("{bn}.bias"), (bf.to_vec(), ch.clone()));
    w.insert(format!("{bn}.running_mean"), (vec![0.0; c], ch.clone()));
    w.insert(
        format!("{bn}.running_var"),
        (vec![(1.0 - BN_EPS) as f32; c], ch),
    );
}

/// Accumulates nodes and initializers with unique names.
#[derive(Default)]
pub struct Graph {
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<TensorProto>,
    n: usize,
    /// Scalar constants already written, by name.
    scalars: std::collections::HashSet<String>,
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}
pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

impl Graph {
    pub fn fresh(&mut self, hint: &str) -> String {
        self.n += 1;
        format!("{hint}_{}", self.n)
    }

    pub fn init_f32(&mut self, name: &str, dims: &[i64], data: Vec<f32>) -> String {
        self.inits.push(TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            float_data: data,
            ..Default::default()
        });
        name.into()
    }

    /// A float scalar constant, written once however often it is asked for.
    pub fn scalar_f32(&mut self, name: &str, v: f32) -> String {
        if self.scalars.insert(name.to_string()) {
            self.init_f32(name, &[], vec![v]);
        }
        name.into()
    }

    /// An integer tensor (`UINT8`, `INT8`, `INT32`) stored little-endian in `raw_data`.
    pub fn init_raw(
        &mut self,
        name: &str,
        dims: &[i64],
        data_type: DataType,
        raw: Vec<u8>,
    ) -> String {
        self.inits.push(TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: data_type as i32,
            raw_data: raw,
            ..Default::default()
        });
        name.into()
    }

    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        hint: &str,
    ) -> String {
        let out = self.fresh(hint);
        self.nodes.push(NodeProto {
            op_type: op.into(),
            name: out.clone(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    /// ONNX `pads` from the unit's (top, bottom, left, right): `[top, left, bottom, right]`.
    pub fn conv_attrs(u: &ConvUnit) -> Vec<AttributeProto> {
        let [t, b, l, r] = u.pad.map(|p| p as i64);
        vec![
            attr_ints("kernel_shape", &[u.kernel as i64, u.kernel as i64]),
            attr_ints("strides", &[u.stride as i64, u.stride as i64]),
            attr_ints("pads", &[t, l, b, r]),
            attr_int("group", u.groups as i64),
        ]
    }
}

fn value_info(name: &str, dims: &[tensor_shape_proto::dimension::Value]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| tensor_shape_proto::Dimension {
                            value: Some(d.clone()),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// How the backbone is written: the float model and the int8 model share everything else.
pub trait Emit {
    /// The backbone's first tensor, from the `[0,1]` input.
    fn stem(&mut self, g: &mut Graph) -> Result<String>;
    /// One convolution unit with BatchNorm folded in (`w` OIHW, `bias`), and its ReLU6 if it has one.
    fn unit(
        &mut self,
        g: &mut Graph,
        u: &ConvUnit,
        x: &str,
        w: Vec<f32>,
        bias: Vec<f32>,
    ) -> Result<String>;
    /// A block's residual sum `a + b`.
    fn residual(&mut self, g: &mut Graph, block: &Block, a: &str, b: &str) -> Result<String>;
    /// The last backbone tensor as float features for the pooling.
    fn features(&mut self, g: &mut Graph, x: &str) -> Result<String>;
    /// One dense layer of the head: `x W^T + b`, `w` is `[cout, cin]`.
    fn dense(
        &mut self,
        g: &mut Graph,
        name: &str,
        x: &str,
        w: Vec<f32>,
        b: Vec<f32>,
        dims: [i64; 2],
    ) -> Result<String> {
        let wn = g.init_f32(&format!("{name}.w"), &dims, w);
        let bn = g.init_f32(&format!("{name}.b"), &dims[..1], b);
        Ok(g.node("Gemm", &[x, &wn, &bn], vec![attr_int("transB", 1)], "dense"))
    }
}

/// The float backbone: `Conv`, `Clip(0, 6)`, `Add`. It remembers the tensors calibration
/// measures (`taps`: key, tensor name), by unit and block name.
#[derive(Debug, Default)]
pub struct FloatEmit {
    pub taps: Vec<(String, String)>,
    /// The stem's output (`2x - 1`).
    pub stem_output: String,
}

/// Calibration key of a unit's output.
pub fn unit_key(u: &ConvUnit) -> String {
    u.conv.clone()
}

/// Calibration key of a block's residual sum.
pub fn residual_key(b: &Block) -> String {
    format!("{}.residual", b.name)
}

impl Emit for FloatEmit {
    fn stem(&mut self, g: &mut Graph) -> Result<String> {
        let two = g.scalar_f32("const_two", 2.0);
        let minus_one = g.scalar_f32("const_minus_one", -1.0);
        let scaled = g.node("Mul", &[INPUT, &two], vec![], "scale");
        self.stem_output = g.node("Add", &[&scaled, &minus_one], vec![], "shift");
        Ok(self.stem_output.clone())
    }

    fn unit(
        &mut self,
        g: &mut Graph,
        u: &ConvUnit,
        x: &str,
        w: Vec<f32>,
        bias: Vec<f32>,
    ) -> Result<String> {
        let k = u.kernel as i64;
        let wn = g.init_f32(
            &format!("{}.w", u.conv),
            &[u.cout as i64, (u.cin / u.groups) as i64, k, k],
            w,
        );
        let bn = g.init_f32(&format!("{}.b", u.conv), &[u.cout as i64], bias);
        let mut y = g.node("Conv", &[x, &wn, &bn], Graph::conv_attrs(u), "conv");
        if u.relu6 {
            let zero = g.scalar_f32("const_zero", 0.0);
            let six = g.scalar_f32("const_six", 6.0);
            y = g.node("Clip", &[&y, &zero, &six], vec![], "relu6");
        }
        self.taps.push((unit_key(u), y.clone()));
        Ok(y)
    }

    fn residual(&mut self, g: &mut Graph, block: &Block, a: &str, b: &str) -> Result<String> {
        let y = g.node("Add", &[a, b], vec![], "residual");
        self.taps.push((residual_key(block), y.clone()));
        Ok(y)
    }

    fn features(&mut self, _g: &mut Graph, x: &str) -> Result<String> {
        Ok(x.to_string())
    }
}

/// The network, with the backbone written by `emit`.
pub fn build_graph(arch: &Arch, w: &Weights, g: &mut Graph, emit: &mut dyn Emit) -> Result<String> {
    let mut x = emit.stem(g)?;
    for block in &arch.blocks {
        let input = x.clone();
        for u in &block.units {
            let (wt, bias) = fold_conv(w, u)?;
            x = emit.unit(g, u, &x, wt, bias)?;
        }
        if block.residual {
            x = emit.residual(g, block, &x, &input)?;
        }
    }
    let x = emit.features(g, &x)?;
    let pooled = g.node("GlobalAveragePool", &[&x], vec![], "gap");
    let mut x = g.node("Flatten", &[&pooled], vec![attr_int("axis", 1)], "flat");
    // Head: Dense ReLU, repeated, then the output unit.
    let layers = head_layers(arch, w)?;
    let last = layers.len() - 1;
    for (i, d) in layers.into_iter().enumerate() {
        x = emit.dense(g, &d.name, &x, d.w, d.b, d.dims)?;
        if i < last {
            x = g.node("Relu", &[&x], vec![], "relu");
        }
    }
    let logit = x;
    g.nodes.push(NodeProto {
        op_type: "Sigmoid".into(),
        name: OUTPUT.into(),
        input: vec![logit],
        output: vec![OUTPUT.into()],
        ..Default::default()
    });
    Ok(OUTPUT.into())
}

/// One dense layer of the head with the BatchNorm before it folded in.
pub struct Dense {
    pub name: String,
    /// `[cout, cin]`, row-major.
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    /// `[cout, cin]`.
    pub dims: [i64; 2],
}

/// The head's dense layers in order (BN -> (dropout) -> Dense ReLU, repeated, each BN folded into
/// the Dense after it; then the output unit, no ReLU).
pub fn head_layers(arch: &Arch, w: &Weights) -> Result<Vec<Dense>> {
    let mut layers = Vec::new();
    let mut width = arch.head.features;
    for (i, &(_, out)) in arch.head.hidden.iter().enumerate() {
        let (scale, shift) = bn_affine(w, &format!("head.bn{i}"), width)?;
        let name = format!("head.fc{i}");
        let (wt, b) = dense_weights(w, &name, width, out, Some((&scale, &shift)))?;
        layers.push(Dense {
            name,
            w: wt,
            b,
            dims: [out as i64, width as i64],
        });
        width = out;
    }
    let (wt, b) = dense_weights(w, "head.out", width, 1, None)?;
    layers.push(Dense {
        name: "head.out".into(),
        w: wt,
        b,
        dims: [1, width as i64],
    });
    Ok(layers)
}

/// Weights `[cout, cin]` and bias of a dense layer, with an optional preceding per-feature
/// affine (a folded BatchNorm) folded in.
fn dense_weights(
    w: &Weights,
    prefix: &str,
    cin: usize,
    cout: usize,
    pre: Option<(&[f32], &[f32])>,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (wt, shape) = get(w, &format!("{prefix}.weight"))?;
    ensure!(
        shape[..] == [cout as i64, cin as i64],
        "{prefix}.weight has shape {shape:?}, expected [{cout}, {cin}]"
    );
    let mut b = get(w, &format!("{prefix}.bias"))?.0.clone();
    let mut wt = wt.clone();
    if let Some((scale, shift)) = pre {
        for o in 0..cout {
            let row = &mut wt[o * cin..(o + 1) * cin];
            let extra: f64 = row
                .iter()
                .zip(shift)
                .map(|(a, s)| *a as f64 * *s as f64)
                .sum();
            b[o] = (b[o] as f64 + extra) as f32;
            for (a, s) in row.iter_mut().zip(scale) {
                *a *= s;
            }
        }
    }
    Ok((wt, b))
}

/// Wraps a graph into a model with the contract in `metadata_props`.
pub fn model(
    arch: &Arch,
    g: Graph,
    output: String,
    metadata: Vec<(String, String)>,
    doc: &str,
) -> ModelProto {
    use tensor_shape_proto::dimension::Value::{DimParam, DimValue};
    let s = arch.input_size as i64;
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "drscreen host-trainer".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: doc.into(),
        graph: Some(GraphProto {
            name: "drscreen_mobilenet_v2".into(),
            node: g.nodes,
            initializer: g.inits,
            input: vec![value_info(
                INPUT,
                &[
                    DimParam("batch".into()),
                    DimValue(3),
                    DimValue(s),
                    DimValue(s),
                ],
            )],
            output: vec![value_info(
                &output,
                &[DimParam("batch".into()), DimValue(1)],
            )],
            ..Default::default()
        }),
        metadata_props: metadata
            .into_iter()
            .map(|(key, value)| StringStringEntryProto { key, value })
            .collect(),
        ..Default::default()
    }
}

/// The float model: folded convolutions as `Conv`, residuals as `Add`.
pub fn float_model(
    arch: &Arch,
    w: &Weights,
    metadata: Vec<(String, String)>,
) -> Result<ModelProto> {
    let mut g = Graph::default();
    let out = build_graph(arch, w, &mut g, &mut FloatEmit::default())?;
    Ok(model(
        arch,
        g,
        out,
        metadata,
        "MobileNetV2 + seed head, float32, BatchNorm folded",
    ))
}
