//! The one description of the network: MobileNetV2 (torchvision layer names) with TF "SAME" padding
//! and the seed's head. The tch builder ([`super::net`]) and the ONNX exporter both walk this.

use serde::{Deserialize, Serialize};

/// BatchNorm epsilon of the TF-slim weights (torchvision uses 1e-5; the weights need 1e-3).
pub const BN_EPS: f64 = 1e-3;

/// One convolution + BatchNorm (+ ReLU6) unit of the backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvUnit {
    /// Weight prefix of the convolution, e.g. `features.2.conv.1.0`.
    pub conv: String,
    /// Weight prefix of its BatchNorm, e.g. `features.2.conv.1.1`.
    pub bn: String,
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    /// TF "SAME" padding as (top, bottom, left, right) for this layer's input size.
    pub pad: [usize; 4],
    pub relu6: bool,
    /// Input height, width.
    pub in_hw: (usize, usize),
    /// Output height, width.
    pub out_hw: (usize, usize),
}

/// A stage of the backbone: its units in order, and whether the input is added to the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub name: String,
    pub units: Vec<ConvUnit>,
    pub residual: bool,
}

impl Block {
    /// The convolution whose output the residual sum adds the block's input to (its last, a
    /// linear 1x1 projection), in a block with a residual sum.
    pub fn projection(&self) -> Option<&ConvUnit> {
        self.units.last().filter(|_| self.residual)
    }
}

/// The seed's classifier head after global average pooling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    /// Width of the pooled features (1280 at width 1.0).
    pub features: usize,
    /// Hidden dense widths with their dropout before them: (dropout, width).
    pub hidden: Vec<(f64, usize)>,
    /// Dropout before the output unit.
    pub final_dropout: f64,
}

/// The whole network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arch {
    pub width_mult: f64,
    pub input_size: usize,
    pub blocks: Vec<Block>,
    pub head: Head,
}

/// torchvision's `_make_divisible(v, 8)`.
fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = ((v + d / 2.0) as usize / divisor * divisor).max(divisor);
    if (new_v as f64) < 0.9 * v {
        new_v += divisor;
    }
    new_v
}

/// TF "SAME" padding of one spatial axis: (before, after), output size.
pub fn same_pad(input: usize, kernel: usize, stride: usize) -> (usize, usize, usize) {
    let out = input.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2, out)
}

impl Arch {
    /// MobileNetV2 at `width_mult` for square inputs of `input_size` with the seed's head
    /// (BN -> Dropout 0.5 -> Dense 256 ReLU -> BN -> Dropout 0.3 -> Dense 128 ReLU -> Dropout 0.2 -> Dense 1).
    pub fn mobilenet_v2(width_mult: f64, input_size: usize) -> Self {
        // (expansion t, channels c, repeats n, first stride s), torchvision's table.
        const SETTINGS: [(usize, usize, usize, usize); 7] = [
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ];
        let mut hw = (input_size, input_size);
        let mut unit = |conv: String, bn: String, cin, cout, kernel, stride, groups, relu6| {
            let (t, b, oh) = same_pad(hw.0, kernel, stride);
            let (l, r, ow) = same_pad(hw.1, kernel, stride);
            let u = ConvUnit {
                conv,
                bn,
                cin,
                cout,
                kernel,
                stride,
                groups,
                pad: [t, b, l, r],
                relu6,
                in_hw: hw,
                out_hw: (oh, ow),
            };
            hw = (oh, ow);
            u
        };
        let mut cin = make_divisible(32.0 * width_mult, 8);
        let last = make_divisible(1280.0 * width_mult.max(1.0), 8);
        let mut blocks = vec![Block {
            name: "features.0".into(),
            units: vec![unit(
                "features.0.0".into(),
                "features.0.1".into(),
                3,
                cin,
                3,
                2,
                1,
                true,
            )],
            residual: false,
        }];
        let mut idx = 1;
        for (t, c, n, s) in SETTINGS {
            let cout = make_divisible(c as f64 * width_mult, 8);
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                let hidden = cin * t;
                let p = format!("features.{idx}.conv");
                let mut units = Vec::new();
                let mut k = 0;
                if t != 1 {
                    units.push(unit(
                        format!("{p}.0.0"),
                        format!("{p}.0.1"),
                        cin,
                        hidden,
                        1,
                        1,
                        1,
                        true,
                    ));
                    k = 1;
                }
                units.push(unit(
                    format!("{p}.{k}.0"),
                    format!("{p}.{k}.1"),
                    hidden,
                    hidden,
                    3,
                    stride,
                    hidden,
                    true,
                ));
                units.push(unit(
                    format!("{p}.{}", k + 1),
                    format!("{p}.{}", k + 2),
                    hidden,
                    cout,
                    1,
                    1,
                    1,
                    false,
                ));
                blocks.push(Block {
                    name: format!("features.{idx}"),
                    units,
                    residual: stride == 1 && cin == cout,
                });
                cin = cout;
                idx += 1;
            }
        }
        blocks.push(Block {
            name: format!("features.{idx}"),
            units: vec![unit(
                format!("features.{idx}.0"),
                format!("features.{idx}.1"),
                cin,
                last,
                1,
                1,
                1,
                true,
            )],
            residual: false,
        });
        Arch {
            width_mult,
            input_size,
            blocks,
            head: Head {
                features: last,
                hidden: vec![(0.5, 256), (0.3, 128)],
                final_dropout: 0.2,
            },
        }
    }

    /// All backbone units in order.
    pub fn units(&self) -> impl Iterator<Item = &ConvUnit> {
        self.blocks.iter().flat_map(|b| b.units.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_shapes_and_names_at_224() {
        let a = Arch::mobilenet_v2(1.0, 224);
        assert_eq!(a.blocks.len(), 19);
        assert_eq!(a.units().count(), 52);
        let last = a.blocks.last().unwrap();
        assert_eq!(last.units[0].conv, "features.18.0");
        assert_eq!(last.units[0].cout, 1280);
        assert_eq!(last.units[0].out_hw, (7, 7));
        assert_eq!(a.blocks[1].units[1].conv, "features.1.conv.1");
        assert_eq!(a.blocks[1].units[1].bn, "features.1.conv.2");
        assert_eq!(a.blocks[2].units[2].bn, "features.2.conv.3");
        assert_eq!(a.blocks.iter().filter(|b| b.residual).count(), 10);
    }

    #[test]
    fn same_padding_is_tf_asymmetric_on_even_sizes() {
        assert_eq!(same_pad(224, 3, 2), (0, 1, 112));
        assert_eq!(same_pad(7, 3, 2), (1, 1, 4));
        assert_eq!(same_pad(96, 3, 1), (1, 1, 96));
        assert_eq!(same_pad(96, 1, 1), (0, 0, 96));
        let a = Arch::mobilenet_v2(1.0, 96);
        assert_eq!(a.blocks[0].units[0].pad, [0, 1, 0, 1]);
        assert_eq!(a.blocks.last().unwrap().units[0].out_hw, (3, 3));
    }

    #[test]
    fn width_multiplier_rounds_like_torchvision() {
        let a = Arch::mobilenet_v2(0.5, 96);
        assert_eq!(a.blocks[0].units[0].cout, 16);
        assert_eq!(a.head.features, 1280);
        assert_eq!(make_divisible(0.35 * 32.0, 8), 16);
    }
}
