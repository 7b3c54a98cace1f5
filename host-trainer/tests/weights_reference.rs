//! The TF-slim ImageNet weights reproduce the float64 NumPy reference features through our
//! MobileNetV2 (TF padding, BN eps 1e-3, input scaled to [-1, 1] inside the network).

use host_trainer::model::{load_backbone, Arch, Net};
use host_trainer::paths::{data_dir, imagenet_weights};
use tch::{nn, Device, Kind, Tensor};

fn reference(name: &str) -> Tensor {
    let p = data_dir().join("weights").join(name);
    assert!(
        p.exists(),
        "{} missing: set DRSCREEN_DATA to the handout data folder",
        p.display()
    );
    Tensor::read_npy(&p).unwrap().to_kind(Kind::Float)
}

#[test]
fn tf_slim_weights_reproduce_reference_features() {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = Net::new(&vs.root(), Arch::mobilenet_v2(1.0, 224), 0);
    load_backbone(&mut vs, &imagenet_weights()).unwrap();
    let input = reference("reference_input_IDRiD_001_train_224_nchw.npy");
    assert_eq!(input.size(), [1, 3, 224, 224]);
    // The reference input is already in [-1, 1]; the network takes [0, 1] and scales inside.
    let feats = tch::no_grad(|| net.features(&((input + 1.0) / 2.0), false));
    let want = reference("reference_features_tf_padding.npy");
    let diff = (feats - want.view([1, 1280])).abs().max().double_value(&[]);
    assert!(
        diff < 1e-4,
        "max |diff| {diff} against the TF-padding reference"
    );
}

#[test]
fn weights_of_another_architecture_are_refused() {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _net = Net::new(&vs.root(), Arch::mobilenet_v2(0.5, 96), 0);
    let err = load_backbone(&mut vs, &imagenet_weights()).unwrap_err();
    assert!(
        format!("{err:#}").contains("shape")
            || format!("{err:#}").contains("mismatch")
            || format!("{err:#}").contains("size"),
        "{err:#}"
    );
}
