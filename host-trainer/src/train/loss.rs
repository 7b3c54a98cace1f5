//! Binary focal loss (Lin et al. 2017) as the seed used it: probabilities clipped to [eps, 1-eps].

use tch::Tensor;

/// Clip of the seed's Keras loss (`K.epsilon()`).
pub const EPS: f64 = 1e-7;

/// Mean focal loss of `logits` `[N, 1]` against `targets` `[N]` in {0, 1}:
/// `-alpha_t (1 - p_t)^gamma ln p_t`, `p_t = p` for positives and `1 - p` for negatives,
/// `alpha_t = alpha` for positives and `1 - alpha` for negatives.
pub fn focal_loss(logits: &Tensor, targets: &Tensor, gamma: f64, alpha: f64) -> Tensor {
    let p = logits.squeeze_dim(1).sigmoid().clamp(EPS, 1.0 - EPS);
    let y = targets.to_kind(p.kind());
    let pt: Tensor = &y * &p + (1.0 - &y) * (1.0 - &p);
    let alpha_t: Tensor = &y * alpha + (1.0 - &y) * (1.0 - alpha);
    let one_minus_pt: Tensor = 1.0 - &pt;
    (-alpha_t * one_minus_pt.pow_tensor_scalar(gamma) * pt.log()).mean(p.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_hand_computed_value() {
        // logits 0 and ln 3 -> p = 0.5 and 0.75; targets 1 and 0.
        let logits = Tensor::from_slice(&[0.0f32, 3f32.ln()]).view([2, 1]);
        let targets = Tensor::from_slice(&[1.0f32, 0.0]);
        let got = focal_loss(&logits, &targets, 1.5, 0.25).double_value(&[]);
        // positive: -0.25 * 0.5^1.5 * ln 0.5 ; negative: p_t = 0.25, -0.75 * 0.75^1.5 * ln 0.25
        let want = (-0.25 * 0.5f64.powf(1.5) * 0.5f64.ln()
            - 0.75 * 0.75f64.powf(1.5) * 0.25f64.ln())
            / 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // gamma 0, alpha 0.5 is half the binary cross-entropy.
        let bce = focal_loss(&logits, &targets, 0.0, 0.5).double_value(&[]);
        let want_bce = 0.5 * (-(0.5f64.ln()) - 0.25f64.ln()) / 2.0;
        assert!((bce - want_bce).abs() < 1e-6);
    }
}
