//! The parity tests link host-trainer (libtorch): put libtorch on their rpath, as host-trainer does.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let dir = match std::env::var("LIBTORCH") {
        Ok(root) => format!("{root}/lib"),
        Err(_) => {
            let python =
                std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into());
            let out = Command::new(&python)
                .args([
                    "-c",
                    "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
                ])
                .output()
                .expect("run python to locate torch (source scripts/torch-env.sh)");
            assert!(
                out.status.success(),
                "{python} cannot import torch: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        }
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
}
