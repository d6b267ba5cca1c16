//! The environment `docker-compose.yml` gives a service, as Docker Compose
//! itself resolves it: the pinned `docker-compose config --format json`
//! (`.ci/tools/`), never a re-implementation of its merging and interpolation.

use std::collections::BTreeMap;
use std::process::Command;

use crate::{INSTALL_PINNED_TOOLS, pinned_python, repository_root, stdout_of};

/// The environment of `service` when `docker compose up` runs in the
/// repository with `shell` set (on top of `.env`, as Compose reads it).
#[must_use]
pub fn compose_environment(service: &str, shell: &[(&str, &str)]) -> BTreeMap<String, String> {
    let root = repository_root();
    // The Compose binary itself, found as .ci/run finds it: PyPI's
    // docker-compose wrapper drops its exit code.
    let find =
        "import compose, pathlib; print(pathlib.Path(compose.__file__).parent / 'docker-compose')";
    let found = Command::new(pinned_python()).args(["-c", find]).output();
    let tool = found
        .ok()
        .filter(|found| found.status.success())
        .map(|found| String::from_utf8_lossy(&found.stdout).trim().to_owned());
    let tool = tool.unwrap_or_else(|| {
        panic!("the pinned docker-compose is missing; install it: {INSTALL_PINNED_TOOLS}")
    });
    let output = Command::new(&tool)
        .args(["config", "--format", "json"])
        .current_dir(&root)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(shell.iter().copied())
        .output();
    let output = stdout_of("docker-compose config", output);
    let model: serde_json::Value = serde_json::from_slice(&output)
        .unwrap_or_else(|error| panic!("docker-compose config: {error}"));
    let environment = model["services"][service]["environment"]
        .as_object()
        .unwrap_or_else(|| panic!("compose gives {service} no environment"));
    environment
        .iter()
        .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_owned()))
        .collect()
}
