//! Puts libtorch's directory on the binaries' rpath, so `host-trainer` and its tests run without
//! LD_LIBRARY_PATH. torch-sys links against the PyTorch wheel (LIBTORCH_USE_PYTORCH=1) but does
//! not record where it is; we ask the same Python (the project venv) for it.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=PATH");
    let dir = match std::env::var("LIBTORCH") {
        Ok(root) => format!("{root}/lib"),
        Err(_) => {
            let python =
                std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into());
            let out = Command::new(&python)
                .args(["-c", "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))"])
                .output()
                .expect("run python to locate torch (activate the project venv: scripts/setup-torch-venv.sh)");
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
