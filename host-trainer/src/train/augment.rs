//! Training augmentation on the training device (tch ops, batched): random horizontal flip,
//! rotation, zoom and framing shift (one affine warp; reflection padding as Keras' default fill
//! mode for whole-frame photos, black for a disc square, whose surround is black) and contrast.

use tch::{Device, Kind, Tensor};

use super::config::AugmentConfig;

/// Augments a batch `[N, 3, H, W]` in [0, 1]; returns a new tensor on the same device.
/// `black_surround`: pad the warp with black (a disc square) instead of reflecting.
pub fn augment(x: &Tensor, cfg: &AugmentConfig, black_surround: bool) -> Tensor {
    let (n, dev) = (x.size()[0], x.device());
    let uniform = |lo: f64, hi: f64| Tensor::rand([n], (Kind::Float, dev)) * (hi - lo) + lo;
    let mut x = x.shallow_clone();
    if cfg.hflip {
        let flip = Tensor::rand([n, 1, 1, 1], (Kind::Float, dev)).lt(0.5);
        x = x.flip([3]).where_self(&flip, &x);
    }
    if cfg.rotation > 0.0 || cfg.zoom > 0.0 || cfg.translate > 0.0 {
        let max_angle = cfg.rotation * 2.0 * std::f64::consts::PI;
        let angle = uniform(-max_angle, max_angle);
        let scale = uniform(1.0 - cfg.zoom, 1.0 + cfg.zoom);
        let (c, s) = (angle.cos() / &scale, angle.sin() / &scale);
        // Shifts in normalised coordinates ([-1, 1] spans the side).
        let (tx, ty) = (
            uniform(-2.0 * cfg.translate, 2.0 * cfg.translate),
            uniform(-2.0 * cfg.translate, 2.0 * cfg.translate),
        );
        let theta = Tensor::stack(&[&c, &(-&s), &tx, &s, &c, &ty], 1).view([n, 2, 3]);
        let grid = Tensor::affine_grid_generator(&theta, x.size(), false);
        // interpolation 0 = bilinear; padding 0 = zeros, 2 = reflection.
        x = x.grid_sampler(&grid, 0, if black_surround { 0 } else { 2 }, false);
    }
    if cfg.contrast > 0.0 {
        let f = uniform(1.0 - cfg.contrast, 1.0 + cfg.contrast).view([n, 1, 1, 1]);
        let mean = x.mean_dim(&[2i64, 3][..], true, Kind::Float);
        x = ((&x - &mean) * f + mean).clamp(0.0, 1.0);
    }
    x
}

/// The device training runs on: the first CUDA GPU when there is one, else the CPU.
pub fn training_device() -> Device {
    Device::cuda_if_available()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_shape_and_range_and_identity_config_is_identity() {
        let x = Tensor::rand([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let y = augment(&x, &AugmentConfig::default(), false);
        assert_eq!(y.size(), x.size());
        assert!(y.min().double_value(&[]) >= 0.0 && y.max().double_value(&[]) <= 1.0);
        let none = AugmentConfig {
            hflip: false,
            rotation: 0.0,
            zoom: 0.0,
            contrast: 0.0,
            translate: 0.0,
            camera: Default::default(),
        };
        assert!(augment(&x, &none, false).equal(&x));
        assert!(augment(&x, &none, true).equal(&x));
    }
}
