//! Bench binary: training throughput (images/s) of host-trainer's MobileNetV2 step (forward,
//! focal loss, backward, Adam) at batch 10, on random 96x96 input, CPU or CUDA.
//!
//! `cargo bench -p host-trainer --bench train_throughput -- [--size 96] [--steps 60]`
//! Prints one JSON line per setting (last 17 units trainable = the seed; all trainable).
//! `scripts/bench_train.py` runs it beside the same model in PyTorch (Python).

use std::time::Instant;

use host_trainer::model::{Arch, Net};
use host_trainer::train::augment::training_device;
use host_trainer::train::loss::focal_loss;
use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (size, steps, batch) = (arg("--size", 96), arg("--steps", 60), arg("--batch", 10));
    let device = training_device();
    tch::manual_seed(0);
    for (label, trainable) in [("last_17_units", 17usize), ("all_layers", 52)] {
        let vs = nn::VarStore::new(device);
        let net = Net::new(&vs.root(), Arch::mobilenet_v2(1.0, size), trainable);
        let mut opt = nn::Adam::default().build(&vs, 5e-4).unwrap();
        let x = Tensor::rand(
            [batch as i64, 3, size as i64, size as i64],
            (Kind::Float, device),
        );
        let y = Tensor::randint(2, [batch as i64], (Kind::Float, device));
        let step = |opt: &mut nn::Optimizer| {
            let loss = focal_loss(&net.forward_t(&x, true), &y, 1.5, 0.5);
            opt.backward_step(&loss);
            loss.double_value(&[])
        };
        for _ in 0..5 {
            step(&mut opt);
        }
        let t = Instant::now();
        for _ in 0..steps {
            step(&mut opt);
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{{\"impl\":\"host-trainer (tch)\",\"setting\":\"{label}\",\"size\":{size},\"batch\":{batch},\"steps\":{steps},\"images_per_sec\":{:.1},\"device\":\"{device:?}\",\"threads\":{}}}",
            (steps * batch) as f64 / secs,
            tch::get_num_threads()
        );
    }
}
