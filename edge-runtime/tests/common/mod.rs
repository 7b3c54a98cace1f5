//! Paths the integration tests share: the checked-in fixtures and the handout's real data.

use std::path::{Path, PathBuf};

/// A file in `tests/fixtures`.
#[allow(dead_code)] // each test binary compiles this module; not all of them use fixtures
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A path in the real data (`$DRSCREEN_DATA`, else `../shared/data` beside the checkout).
pub fn data(rel: &str) -> PathBuf {
    let root = std::env::var_os("DRSCREEN_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let p = root.join(rel);
    assert!(p.exists(), "{} missing: set DRSCREEN_DATA", p.display());
    p
}
