//! The model contract: everything the edge needs to feed a model exactly as it was trained, and to
//! read its output. It travels inside the ONNX file (`metadata_props`, key [`CONTRACT_KEY`], one
//! JSON value); the edge builds its pipeline from it and refuses a version it does not know.
//!
//! The defaults are the seed's recipe and the one place its constants live.

use crate::clahe::ClaheParams;
use crate::error::CoreError;
use crate::fov::FovParams;
use crate::pipeline::PreprocessSpec;
use crate::resize::Interpolation;
use crate::tta::{View, MAX_VIEWS, SEED_VIEWS};

/// The contract version this build writes. Version 2 adds the field-of-view geometry
/// ([`ModelContract::fov`]); version 1 files (whole frame) are still read.
pub const CONTRACT_VERSION: u32 = 2;
/// The oldest contract version this build reads.
pub const OLDEST_CONTRACT_VERSION: u32 = 1;
/// The ONNX `metadata_props` key that holds the contract JSON.
pub const CONTRACT_KEY: &str = "drscreen.contract";

/// Short free-text fields (dataset names, notes).
pub type Text = heapless::String<96>;

/// Memory layout of the model input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Layout {
    /// batch x channel x height x width.
    Nchw,
}

/// Input tensor: RGB, `[N, 3, height, width]`, values `byte / 255 * scale + offset`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct InputSpec {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    /// Channel order of the tensor; always "rgb" in version 1.
    pub channels: ChannelOrder,
    /// Value range fed to the network, after `/ 255`; the seed's is `[0, 1]`.
    pub range: [f32; 2],
}

/// Channel order of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ChannelOrder {
    Rgb,
}

/// Which grades count as the positive class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum PositiveClass {
    /// Any DR: grade 1-4 (the seed).
    AnyDr,
    /// Referable DR: grade 2-4.
    ReferableDr,
}

/// Which threshold the device uses by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum OperatingPoint {
    /// The validation threshold of best accuracy (the seed's search over 0.30-0.70).
    MaxAccuracy,
    /// The validation threshold that reaches the target sensitivity.
    TargetSensitivity,
}

/// Decision thresholds chosen on the validation split.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Thresholds {
    pub max_accuracy: f32,
    pub target_sensitivity: f32,
    /// The sensitivity that `target_sensitivity` was chosen to reach (e.g. 0.90).
    pub sensitivity_target: f32,
    pub default: OperatingPoint,
    /// The 95 % bootstrap interval `[lo, hi]` of `target_sensitivity` on validation: a
    /// probability inside it is one the validation data cannot place on either side of the
    /// threshold, and the device calls it borderline (refer or retake). Absent in older files.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub borderline: Option<[f32; 2]>,
}

/// One source of a model's training data: its name, licence, and photos in each split.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DataSource {
    pub name: heapless::String<24>,
    /// The licence as its holder states it; the model's weights inherit it.
    pub licence: Text,
    /// Whether that licence is open (a model trained on open sources alone is free to share).
    pub open_licence: bool,
    pub train_images: u32,
    pub val_images: u32,
}

/// Most sources one contract lists.
pub const MAX_SOURCES: usize = 8;

/// Where the model came from and how it did (filled by the exporter).
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DataSummary {
    /// The training sources' names (`idrid + aptos2019`).
    pub dataset: Text,
    /// Each training source with its licence (absent in files before version 2).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "heapless::Vec::is_empty")
    )]
    pub sources: heapless::Vec<DataSource, MAX_SOURCES>,
    pub train_images: u32,
    pub val_images: u32,
    pub val_auc: Option<f32>,
    pub val_sensitivity: Option<f32>,
    pub val_specificity: Option<f32>,
    pub external_dataset: Option<Text>,
    pub external_auc: Option<f32>,
}

/// Number format of a model file's weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Precision {
    #[default]
    Float32,
    /// Static int8: int8 weights, uint8 activations (a file exported with `--wide-streams` holds
    /// its residual streams at 16 bits, as two uint8 planes; its ONNX doc string says so).
    Int8,
}

/// Which file of an export a device loads by default, and why.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Deployment {
    /// This file's number format.
    pub precision: Precision,
    /// The format a device should load by default (the faster one in tract, measured at export).
    pub device_default: Precision,
    /// tract latency of all TTA views of one screening, float and int8, as measured at export
    /// (milliseconds, one thread, one call per view as the device runs them; exports before
    /// 2026-12 timed one batched call; `None` when only one format was built).
    pub tract_ms_float: Option<f32>,
    pub tract_ms_int8: Option<f32>,
}

impl Default for Deployment {
    fn default() -> Self {
        Deployment {
            precision: Precision::Float32,
            device_default: Precision::Float32,
            tract_ms_float: None,
            tract_ms_int8: None,
        }
    }
}

/// The contract one model file carries.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ModelContract {
    pub contract_version: u32,
    pub input: InputSpec,
    /// CLAHE on the L* channel of OpenCV's 8-bit L*a*b*.
    pub clahe: ClaheParams,
    /// Resize to the input size (after CLAHE in version 1, before it in version 2).
    pub resize: Interpolation,
    /// Version 2: the square around the fundus disc is what is resized ([`crate::fov`]), and CLAHE
    /// runs at the input size. Absent in version 1 (the whole frame, CLAHE at full size).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub fov: Option<FovParams>,
    /// TTA views; the output is the mean of their probabilities.
    pub tta: heapless::Vec<View, MAX_VIEWS>,
    pub thresholds: Thresholds,
    pub positive_class: PositiveClass,
    /// The output is a probability of the positive class (sigmoid inside the model).
    pub output_is_probability: bool,
    pub data: DataSummary,
    /// Number format of this file and the device default (absent in older files: float32).
    #[cfg_attr(feature = "serde", serde(default))]
    pub deployment: Deployment,
}

impl Default for ModelContract {
    /// The seed: 96x96 RGB NCHW in [0, 1], CLAHE 2.0 / 8x8 on L*, bilinear resize of the whole
    /// frame (version 1), five views, threshold 0.5 until validation picks one, any DR positive.
    fn default() -> Self {
        let mut tta = heapless::Vec::new();
        // SEED_VIEWS has 5 <= MAX_VIEWS entries.
        let _ = tta.extend_from_slice(&SEED_VIEWS);
        Self {
            contract_version: 1,
            input: InputSpec {
                width: 96,
                height: 96,
                layout: Layout::Nchw,
                channels: ChannelOrder::Rgb,
                range: [0.0, 1.0],
            },
            clahe: ClaheParams::default(),
            resize: Interpolation::Linear,
            fov: None,
            tta,
            thresholds: Thresholds {
                max_accuracy: 0.5,
                target_sensitivity: 0.5,
                sensitivity_target: 0.9,
                default: OperatingPoint::TargetSensitivity,
                borderline: None,
            },
            positive_class: PositiveClass::AnyDr,
            output_is_probability: true,
            data: DataSummary::default(),
            deployment: Deployment::default(),
        }
    }
}

impl ModelContract {
    /// Checks that this build can honour the contract; the error says what is off.
    pub fn validate(&self) -> Result<(), CoreError> {
        if !(OLDEST_CONTRACT_VERSION..=CONTRACT_VERSION).contains(&self.contract_version) {
            return Err(CoreError::Param {
                name: "contract_version",
                reason: "this build reads contract versions 1 and 2: update edge-runtime",
            });
        }
        if (self.contract_version >= 2) != self.fov.is_some() {
            return Err(CoreError::Param {
                name: "fov",
                reason: "version 2 contracts declare the field of view, version 1 contracts do not",
            });
        }
        if self.input.width == 0
            || self.input.height == 0
            || self.input.width > 4096
            || self.input.height > 4096
        {
            return Err(CoreError::Param {
                name: "input size",
                reason: "must be 1..=4096 per side",
            });
        }
        if self.input.range != [0.0, 1.0] {
            return Err(CoreError::Param {
                name: "input range",
                reason: "version 1 feeds [0, 1]",
            });
        }
        if self.tta.is_empty() {
            return Err(CoreError::Param {
                name: "tta",
                reason: "at least one view",
            });
        }
        if !self.output_is_probability {
            return Err(CoreError::Param {
                name: "output",
                reason: "version 1 needs a probability output",
            });
        }
        for t in [
            self.thresholds.max_accuracy,
            self.thresholds.target_sensitivity,
        ] {
            if !(0.0..=1.0).contains(&t) {
                return Err(CoreError::Param {
                    name: "threshold",
                    reason: "NaN or outside [0, 1]",
                });
            }
        }
        if let Some([lo, hi]) = self.thresholds.borderline {
            let t = self.thresholds.target_sensitivity;
            if !(0.0 <= lo && lo <= t && t <= hi && hi <= 1.0) {
                return Err(CoreError::Param {
                    name: "borderline",
                    reason: "the band must hold the threshold, within [0, 1]",
                });
            }
        }
        Ok(())
    }

    /// The borderline band of the default threshold, when the contract declares one (it is
    /// measured for the target-sensitivity point only).
    pub fn borderline(&self) -> Option<[f32; 2]> {
        match self.thresholds.default {
            OperatingPoint::TargetSensitivity => self.thresholds.borderline,
            OperatingPoint::MaxAccuracy => None,
        }
    }

    /// The preprocessing this contract asks for.
    pub fn preprocess_spec(&self) -> PreprocessSpec {
        PreprocessSpec {
            clahe: self.clahe,
            out_width: self.input.width as usize,
            out_height: self.input.height as usize,
            interpolation: self.resize,
            fov: self.fov,
        }
    }

    /// The threshold of the default operating point.
    pub fn threshold(&self) -> f32 {
        match self.thresholds.default {
            OperatingPoint::MaxAccuracy => self.thresholds.max_accuracy,
            OperatingPoint::TargetSensitivity => self.thresholds.target_sensitivity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_contract_is_the_seed_and_valid() {
        let c = ModelContract::default();
        c.validate().unwrap();
        assert_eq!(c.preprocess_spec(), PreprocessSpec::default());
        assert_eq!(&c.tta[..], &SEED_VIEWS[..]);
    }

    #[test]
    fn unknown_version_and_bad_fields_are_refused() {
        let mut c = ModelContract {
            contract_version: 3,
            ..Default::default()
        };
        assert!(c.validate().is_err());
        c.contract_version = 2;
        assert!(c.validate().is_err(), "version 2 without its field of view");
        c.fov = Some(FovParams::default());
        c.validate().unwrap();
        c.contract_version = 1;
        assert!(c.validate().is_err(), "version 1 with a field of view");
        c.fov = None;
        c.input.range = [0.0, 255.0];
        assert!(
            c.validate().is_err(),
            "a 0-255 model must not be fed 0-1 silently"
        );
    }

    #[test]
    fn the_borderline_band_holds_the_threshold() {
        let mut c = ModelContract::default();
        c.thresholds.target_sensitivity = 0.2;
        c.thresholds.borderline = Some([0.15, 0.3]);
        c.validate().unwrap();
        assert_eq!(c.borderline(), Some([0.15, 0.3]));
        c.thresholds.default = OperatingPoint::MaxAccuracy;
        assert_eq!(
            c.borderline(),
            None,
            "measured for the target-sensitivity point only"
        );
        for bad in [[0.25, 0.3], [0.1, 0.18], [-0.1, 0.3], [0.15, 1.2]] {
            c.thresholds.borderline = Some(bad);
            assert!(c.validate().is_err(), "{bad:?}");
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn contract_round_trips_through_json() {
        let c = ModelContract::default();
        let s = serde_json::to_string(&c).unwrap();
        let back: ModelContract = serde_json::from_str(&s).unwrap();
        assert_eq!(back, c);
        assert!(s.contains("\"brightness\":1.1"), "{s}");
        assert!(
            !s.contains("fov"),
            "a version 1 contract is written as before: {s}"
        );
        let v2 = ModelContract {
            contract_version: 2,
            fov: Some(FovParams::default()),
            ..Default::default()
        };
        let back: ModelContract =
            serde_json::from_str(&serde_json::to_string(&v2).unwrap()).unwrap();
        assert_eq!(back, v2);
        assert_eq!(back.preprocess_spec().fov, Some(FovParams::default()));
    }
}
