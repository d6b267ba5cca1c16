//! Where the service binaries under test are, built first when needed.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The `orders-api` binary: the build named by `ORDERS_API_BIN` (say,
/// `target/release/orders-api`), else the one cargo built for this test run
/// when these are the tests of its own package, else the one in this test's
/// target profile directory (`target/<profile>/orders-api`), built first with
/// `cargo build` (with orders-batch) when it is missing or older than its sources
/// (`cargo test -p orders-batch` alone does not build it).
///
/// An up-to-date binary is used as it is: building it again under another
/// feature set would make cargo rebuild the shared dependencies on every
/// alternation.
#[must_use]
pub fn orders_api_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| locate("orders-api", "ORDERS_API_BIN"))
        .clone()
}

/// The `orders-batch` binary: the build named by `ORDERS_BATCH_BIN` (say,
/// `target/release/orders-batch`), else the one cargo built for this test run
/// when these are the tests of its own package, else the one in this test's
/// target profile directory (`target/<profile>/orders-batch`), built first
/// with `cargo build` (with orders-api) when it is missing or older than its
/// sources. Used as it is when up to date, as [`orders_api_binary`] is.
#[must_use]
pub fn orders_batch_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| locate("orders-batch", "ORDERS_BATCH_BIN"))
        .clone()
}

/// The release builds of `orders-api` and `orders-batch`, the builds the
/// Dockerfile ships: the ones `ORDERS_API_BIN` and `ORDERS_BATCH_BIN` name,
/// else `target/release/<name>`, built first with `cargo build --release`
/// when missing or older than their sources. For the end-to-end test, so
/// that what runs in a container is what the test ran.
#[must_use]
pub fn release_binaries() -> (PathBuf, PathBuf) {
    static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PATHS
        .get_or_init(|| {
            let release = profile_dir().with_file_name("release");
            (
                locate_in("orders-api", "ORDERS_API_BIN", &release),
                locate_in("orders-batch", "ORDERS_BATCH_BIN", &release),
            )
        })
        .clone()
}

/// The binary `name`, built by the package of the same name in
/// `crates/<name>`, unless `override_var` names another build.
fn locate(name: &str, override_var: &str) -> PathBuf {
    if std::env::var_os(override_var).is_none()
        && let Some(binary) = std::env::var_os(format!("CARGO_BIN_EXE_{name}"))
    {
        // Set by cargo when it runs the tests of the binary's own package.
        return PathBuf::from(binary);
    }
    locate_in(name, override_var, &profile_dir())
}

/// This test's profile directory: `target/<profile>` of
/// `target/<profile>/deps/<test executable>`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe()
        .unwrap_or_else(|error| panic!("where is this test executable? {error}"));
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in target/<profile>/deps", exe.display()))
        .to_owned()
}

/// The binary `name` in `profile_dir`, built first when missing or stale,
/// unless `override_var` names another build.
fn locate_in(name: &str, override_var: &str, profile_dir: &Path) -> PathBuf {
    if let Some(binary) = std::env::var_os(override_var) {
        return PathBuf::from(binary);
    }
    let binary = profile_dir.join(name);
    if !up_to_date(name, &binary) {
        build(name, profile_dir, override_var);
    }
    assert!(
        binary.exists(),
        "{} does not exist after building it; set {override_var}",
        binary.display()
    );
    binary
}

/// The workspace root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether `binary` exists and is newer than every source it is built from.
fn up_to_date(name: &str, binary: &Path) -> bool {
    let Ok(built) = std::fs::metadata(binary).and_then(|metadata| metadata.modified()) else {
        return false;
    };
    let workspace = workspace();
    // What cargo rebuilds the binary for when it changes: files elsewhere
    // (a README, another crate's dependencies) would make this build again
    // on every run, for nothing.
    let own = format!("crates/{name}/src");
    let sources = [
        own.as_str(),
        "migrations",
        "crates/orders/src",
        "crates/orders/build.rs",
        "crates/telemetry/src",
        "crates/span-links/src",
    ];
    sources
        .iter()
        .all(|source| newest_change(&workspace.join(source)).is_none_or(|changed| changed <= built))
}

/// The latest modification time of `path` or anything below it (hidden files
/// excepted).
fn newest_change(path: &Path) -> Option<SystemTime> {
    let metadata = std::fs::metadata(path).ok()?;
    if !metadata.is_dir() {
        return metadata.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|entry| newest_change(&entry.path()))
        .max()
}

/// Both service binaries, `name` among them, built in the profile of
/// `profile_dir`: in one cargo run, so that either is built with the same
/// dependency features and a later build of the other reuses them.
fn build(name: &str, profile_dir: &Path, override_var: &str) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "--package",
        "orders-api",
        "--package",
        "orders-batch",
    ]);
    match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") | None => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(profile) => {
            build.args(["--profile", profile]);
        }
    }
    let output = build
        .current_dir(workspace())
        .output()
        .unwrap_or_else(|error| panic!("cannot run cargo build for {name}: {error}"));
    assert!(
        output.status.success(),
        "cargo build for {name} failed ({}); set {override_var} to use a built binary\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
