//! One module per subcommand.
#[cfg(feature = "capture")]
pub mod capture;
#[cfg(feature = "rpi")]
pub mod device;
pub mod preprocess;
pub mod screen;
pub mod watch;

/// `--threads N`: a whole number of at least 1.
pub fn parse_threads(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (leave --threads out for one per CPU core)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number: {e}")),
    }
}

/// Loads the model (`--model`, else the shipped default) to run each screening's views on up to
/// `threads` threads (default: the CPU's cores), and says so when it is not the format its export names as the device
/// default.
pub fn load_engine(
    model: Option<&std::path::Path>,
    threads: Option<usize>,
) -> anyhow::Result<edge_runtime::engine::Engine> {
    let path = match model {
        Some(p) => p.to_path_buf(),
        None => edge_runtime::engine::locate_model()?,
    };
    let engine = edge_runtime::engine::Engine::load(&path)?.with_threads(
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    );
    if let Some(note) = engine.deployment_note() {
        eprintln!("note: {note}");
    }
    Ok(engine)
}
