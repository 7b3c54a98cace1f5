//! One module per subcommand.
#[cfg(feature = "capture")]
pub mod capture;
#[cfg(feature = "rpi")]
pub mod device;
pub mod preprocess;
pub mod screen;
pub mod watch;

/// Loads the model (`--model`, else the shipped default) to run each screening's views on up to
/// `threads` threads (default: the CPU's cores), and says so when it is not the format its export names as the device
/// default.
pub fn load_engine(
    model: Option<&std::path::Path>,
    threads: Option<usize>,
) -> anyhow::Result<edge_runtime::engine::Engine> {
    let path = model.map_or_else(edge_runtime::engine::default_model, |p| p.to_path_buf());
    let engine = edge_runtime::engine::Engine::load(&path)?.with_threads(
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    );
    if let Some(note) = engine.deployment_note() {
        eprintln!("note: {note}");
    }
    Ok(engine)
}
