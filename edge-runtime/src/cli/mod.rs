//! One module per subcommand.
pub mod calibrate;
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

/// A screener for `engine`, under the site calibration at `site` when one is given; says which
/// threshold it screens at.
pub fn screener(
    engine: edge_runtime::engine::Engine,
    site: Option<&std::path::Path>,
) -> anyhow::Result<edge_runtime::screen::Screener> {
    let own = engine.contract.threshold();
    let mut screener = edge_runtime::screen::Screener::new(engine);
    if let Some(path) = site {
        let s = edge_runtime::site::Site::load(
            path,
            &screener.engine.sha256,
            screener.engine.contract.positive_class,
        )?;
        eprintln!(
            "site {:?} ({}): threshold {:.4} from {} of its own graded photos (the model's own: {own:.4})",
            s.calibration.site,
            path.display(),
            s.calibration.threshold,
            s.calibration.photos - s.calibration.ungradable
        );
        screener = screener.with_site(s);
    } else {
        eprintln!(
            "no site calibration: screening at the model's own threshold {own:.4}, chosen on its training cameras; on a camera it never saw it can miss many referable eyes (models/README.md). Calibrate this camera before screening patients: `edge-runtime calibrate` (docs/deploy-pi.md), then --site or DRSCREEN_SITE"
        );
    }
    Ok(screener)
}
