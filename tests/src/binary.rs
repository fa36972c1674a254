//! Building and locating the `order-example` binary under test.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

static BINARY: OnceLock<PathBuf> = OnceLock::new();

/// The workspace root (the parent of this package's directory).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the acceptance package lives inside the workspace")
}

/// The cargo target directory: `CARGO_TARGET_DIR` (relative to the workspace root when
/// relative) or the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The `order-example` binary, built once per test process with
/// `$CARGO build -p order-example --bin order-example`.
///
/// Set `ORDER_EXAMPLE_BIN` to test a prebuilt binary instead (no build is run).
/// Panics with cargo's output when the build fails.
pub fn order_example_binary() -> &'static Path {
    BINARY.get_or_init(|| {
        if let Some(path) = env::var_os("ORDER_EXAMPLE_BIN") {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "ORDER_EXAMPLE_BIN={} is not a file",
                path.display()
            );
            return path;
        }
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(&cargo)
            .args(["build", "-p", "order-example", "--bin", "order-example"])
            .current_dir(workspace_root())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&cargo).display()));
        if !out.status.success() {
            panic!(
                "`cargo build -p order-example` failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let path = target_dir().join("debug").join("order-example");
        assert!(
            path.is_file(),
            "cargo built order-example but {} does not exist",
            path.display()
        );
        path
    })
}
