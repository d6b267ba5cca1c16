//! The environment `docker-compose.yml` gives a service, as Docker Compose
//! itself resolves it: the pinned `docker-compose config --format json`
//! (`.ci/tools/`), never a re-implementation of its merging and interpolation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// The repository's top directory, where `docker-compose.yml` lives.
#[must_use]
pub fn repository_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Checks that `service` reads every variable in `environment`: its
/// `command`'s, or one of `also`.
pub fn assert_reads_every_variable(
    service: &str,
    command: &clap::Command,
    also: &[&str],
    environment: &BTreeMap<String, String>,
) {
    let own = command
        .get_arguments()
        .filter_map(|arg| arg.get_env()?.to_str());
    let reads: Vec<&str> = own.chain(also.iter().copied()).collect();
    let unread: Vec<&String> = environment
        .keys()
        .filter(|name| !reads.contains(&name.as_str()))
        .collect();
    assert!(
        unread.is_empty(),
        "compose gives {service} {unread:?}, which it never reads"
    );
}

/// The environment of `service` when `docker compose up` runs in the
/// repository with `shell` set (on top of `.env`, as Compose reads it).
#[must_use]
pub fn compose_environment(service: &str, shell: &[(&str, &str)]) -> BTreeMap<String, String> {
    let root = repository_root();
    // The Compose binary itself, found as .ci/run finds it: PyPI's
    // docker-compose wrapper drops its exit code.
    let python = root.join(".ci/tools/.venv/bin/python");
    let find =
        "import compose, pathlib; print(pathlib.Path(compose.__file__).parent / 'docker-compose')";
    let found = Command::new(&python).args(["-c", find]).output();
    let tool = found
        .ok()
        .filter(|found| found.status.success())
        .map(|found| String::from_utf8_lossy(&found.stdout).trim().to_owned());
    let tool = tool.unwrap_or_else(|| {
        panic!("the pinned docker-compose is missing; install it: python3 -m venv .ci/tools/.venv && .ci/tools/.venv/bin/pip install -r .ci/tools/requirements.txt")
    });
    let output = Command::new(&tool)
        .args(["config", "--format", "json"])
        .current_dir(&root)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(shell.iter().copied())
        .output()
        .unwrap_or_else(|error| panic!("{tool}: {error}"));
    assert!(
        output.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let model: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("docker-compose config: {error}"));
    let environment = model["services"][service]["environment"]
        .as_object()
        .unwrap_or_else(|| panic!("compose gives {service} no environment"));
    environment
        .iter()
        .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_owned()))
        .collect()
}
