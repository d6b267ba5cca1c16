//! otel-collector.yaml (the project's collector) and signoz/otel-collector.yaml
//! (SigNoz's ingesting collector): whole pipelines, current component names,
//! and addresses that agree with docker-compose.yml.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test that can't read its input fails loudly"
)]

use std::collections::BTreeSet;

use orders_deployment::collector::{CollectorConfig, Pipeline};
use orders_deployment::compose::Project;
use orders_deployment::repository_root;
use serde_norway::Value;

fn project() -> Project {
    Project::as_compose_loads_it(&[]).unwrap()
}

fn ours() -> CollectorConfig {
    CollectorConfig::load(&repository_root().join("otel-collector.yaml")).unwrap()
}

fn signoz() -> CollectorConfig {
    CollectorConfig::load(&repository_root().join("signoz/otel-collector.yaml")).unwrap()
}

/// The port of a `host:port` endpoint in a component's settings.
fn port_of(config: &CollectorConfig, path: &[&str]) -> String {
    let mut value = &config.document;
    for key in path {
        value = value
            .get(key)
            .unwrap_or_else(|| panic!("no {} in the collector config", path.join(".")));
    }
    let endpoint = value.as_str().unwrap();
    endpoint.rsplit_once(':').unwrap().1.to_owned()
}

#[test]
fn every_component_in_a_pipeline_is_defined() {
    for (file, config) in [
        ("otel-collector.yaml", ours()),
        ("signoz/otel-collector.yaml", signoz()),
    ] {
        assert!(
            config.problems().is_empty(),
            "{file}: {:?}",
            config.problems()
        );
    }
}

#[test]
fn every_signal_goes_through_memory_limiter_resource_detection_and_batch() {
    let config = ours();
    let signals: BTreeSet<&str> = config.pipelines.iter().map(Pipeline::signal).collect();
    assert_eq!(signals, BTreeSet::from(["logs", "metrics", "traces"]));
    for pipeline in &config.pipelines {
        assert_eq!(pipeline.receivers, ["otlp"], "{}", pipeline.id);
        assert_eq!(
            pipeline.processors,
            ["memory_limiter", "resource_detection", "batch"],
            "{}: memory_limiter first, batch last",
            pipeline.id
        );
        assert_eq!(pipeline.exporters, ["otlp_grpc/signoz"], "{}", pipeline.id);
    }
    // The OTLP receiver takes both transports.
    let protocols = config.document["receivers"]["otlp"]["protocols"]
        .as_mapping()
        .unwrap();
    assert!(protocols.contains_key("grpc") && protocols.contains_key("http"));
    assert_eq!(config.enabled_extensions, ["health_check"]);
}

#[test]
fn component_names_are_the_ones_the_pinned_collector_expects() {
    // otel/opentelemetry-collector-contrib 0.159 renamed these; the old names
    // only warn today and will stop working.
    let config = ours();
    for deprecated in ["otlp", "otlphttp"] {
        assert!(
            !config
                .exporters
                .iter()
                .any(|id| id.split('/').next() == Some(deprecated)),
            "exporter {deprecated} is deprecated"
        );
    }
    assert!(
        !config
            .processors
            .iter()
            .any(|id| id.split('/').next() == Some("resourcedetection"))
    );
    let image = project()
        .service("otel-collector")
        .unwrap()
        .image
        .clone()
        .unwrap();
    assert!(
        image.starts_with("otel/opentelemetry-collector-contrib:"),
        "{image}"
    );
}

#[test]
fn the_collectors_read_only_variables_compose_gives_them() {
    // An unset ${env:...} becomes an empty string, which the collector then
    // refuses (or, worse, takes) at start-up.
    let project = project();
    for (service, config, exactly) in [
        ("otel-collector", ours(), true),
        ("signoz-otel-collector", signoz(), false),
    ] {
        let given: BTreeSet<String> = project
            .service(service)
            .unwrap()
            .environment
            .keys()
            .cloned()
            .collect();
        let read = config.environment_variables();
        assert!(
            read.is_subset(&given),
            "{service} reads {read:?}, is given {given:?}"
        );
        // The project's own collector is given nothing it does not read.
        if exactly {
            assert_eq!(read, given, "{service}");
        }
    }
}

#[test]
fn the_addresses_in_compose_and_the_collectors_agree() {
    let project = project();
    let ours = ours();
    let grpc_port = port_of(
        &ours,
        &["receivers", "otlp", "protocols", "grpc", "endpoint"],
    );
    // The services export over gRPC to the project's collector.
    for service in ["orders-api", "orders-batch"] {
        let environment = &project.service(service).unwrap().environment;
        assert_eq!(environment["OTEL_EXPORTER_OTLP_PROTOCOL"], "grpc");
        assert_eq!(
            environment["OTEL_EXPORTER_OTLP_ENDPOINT"],
            format!("http://otel-collector:{grpc_port}")
        );
    }
    // The project's collector forwards to SigNoz's collector, over gRPC, in
    // plain text inside the compose network.
    let collector = &project.service("otel-collector").unwrap().environment;
    let signoz_grpc_port = port_of(
        &signoz(),
        &["receivers", "otlp", "protocols", "grpc", "endpoint"],
    );
    assert_eq!(
        collector["SIGNOZ_OTLP_ENDPOINT"],
        format!("signoz-otel-collector:{signoz_grpc_port}")
    );
    assert_eq!(collector["SIGNOZ_OTLP_INSECURE"], "true");
    assert!(project.service("signoz-otel-collector").is_some());
    // SigNoz's collector writes where the compose file puts ClickHouse.
    let signoz = signoz();
    let traces = &signoz.document["exporters"]["clickhousetraces"]["datasource"];
    assert!(
        traces
            .as_str()
            .is_some_and(|dsn| dsn.starts_with("tcp://clickhouse:9000/")),
        "{traces:?}"
    );
    assert!(project.service("clickhouse").is_some());
    assert!(matches!(
        signoz.document["exporters"]["clickhousetraces"]["use_new_schema"],
        Value::Bool(true)
    ));
}
