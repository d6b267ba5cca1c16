//! Every collector configuration the project ships, read by the collector
//! `collector/builder-config.yaml` builds, at the release compose and
//! Kubernetes run: valid in the environment each place gives it, and using
//! exactly the components the build holds.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use orders_test_support::{
    Pod, collector_binary, compose_environment, kubernetes_container, repository_root, yaml_as_json,
};

/// `collector <args>` with nothing of this process's environment but
/// `environment`: its output, or the failure naming `place`.
fn collector(place: &str, args: &[&str], environment: &BTreeMap<String, String>) -> String {
    let ran = Command::new(collector_binary())
        .args(args)
        .current_dir(repository_root())
        .env_clear()
        .envs(environment)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "{place}: {said}");
    String::from_utf8(ran.stdout).unwrap()
}

#[test]
fn every_shipped_collector_configuration_is_valid_where_it_runs() {
    // The SigNoz Cloud settings, as the shell gives them to Compose.
    let cloud =
        std::fs::read_to_string(repository_root().join("signoz-cloud.env.example")).unwrap();
    let cloud: Vec<(&str, &str)> = cloud
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .collect();
    // Every overlay runs kubernetes/base's copy; laptop's renders every
    // Secret it reads.
    let pod = Pod {
        uid: "3d1e7b20-5a4c-4e9f-b862-0c9a7f1d5e34",
        name: "otel-collector-0",
        node: "node-a",
    };
    let laptop = kubernetes_container(
        "kubernetes/laptop",
        "StatefulSet/otel-collector",
        "otel-collector",
        &pod,
    );
    let places = [
        (
            "compose, with .env",
            "otel-collector.yaml",
            compose_environment("otel-collector", &[]),
        ),
        (
            "compose, with the SigNoz Cloud settings",
            "otel-collector.yaml",
            compose_environment("otel-collector", &cloud),
        ),
        (
            "kubernetes/laptop",
            "kubernetes/base/otel-collector.yaml",
            laptop.environment,
        ),
    ];
    for (place, config, environment) in &places {
        let config = format!("--config={config}");
        collector(place, &["validate", &config], environment);
    }
}

#[test]
fn the_build_holds_exactly_the_components_the_configuration_uses() {
    let listed = yaml_as_json(&collector("components", &["components"], &BTreeMap::new()));
    let config = std::fs::read_to_string(repository_root().join("otel-collector.yaml")).unwrap();
    let config = yaml_as_json(&config);
    for kind in ["receivers", "processors", "exporters", "extensions"] {
        let built: BTreeSet<&str> = listed[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|component| component["name"].as_str().unwrap())
            .collect();
        // `otlp_grpc/signoz` is an `otlp_grpc`.
        let used: BTreeSet<&str> = config[kind]
            .as_object()
            .unwrap()
            .keys()
            .map(|name| name.split('/').next().unwrap())
            .collect();
        assert_eq!(built, used, "{kind}");
    }
    assert_eq!(
        listed["buildinfo"]["version"], "0.165.1",
        "the release images run"
    );
}
