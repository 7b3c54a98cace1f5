//! The screening decision from a probability and a threshold.

use crate::error::CoreError;

/// What the device tells the operator about a gradable photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Decision {
    /// Probability below the threshold: rescreen on the routine schedule.
    NoReferral,
    /// Probability at or above the threshold: refer to an eye specialist.
    Refer,
}

/// `p >= threshold` -> [`Decision::Refer`], else [`Decision::NoReferral`].
///
/// A probability or threshold that is NaN or outside [0, 1] is an error, never "no referral".
pub fn decide(probability: f32, threshold: f32) -> Result<Decision, CoreError> {
    if !(0.0..=1.0).contains(&probability) {
        return Err(CoreError::Param {
            name: "probability",
            reason: "NaN or outside [0, 1]",
        });
    }
    if !(0.0..=1.0).contains(&threshold) {
        return Err(CoreError::Param {
            name: "threshold",
            reason: "NaN or outside [0, 1]",
        });
    }
    Ok(if probability >= threshold {
        Decision::Refer
    } else {
        Decision::NoReferral
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_inclusive_and_nan_is_refused() {
        assert_eq!(decide(0.49, 0.5), Ok(Decision::NoReferral));
        assert_eq!(decide(0.5, 0.5), Ok(Decision::Refer));
        assert!(decide(f32::NAN, 0.5).is_err());
        assert!(decide(0.3, f32::NAN).is_err());
        assert!(decide(1.01, 0.5).is_err());
    }
}
