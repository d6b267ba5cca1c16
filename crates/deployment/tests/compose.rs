//! docker-compose.yml (with the SigNoz file it includes) against the code and
//! against the rules the project keeps: every variable given to a service is
//! one it reads, images pinned, ports on loopback, start-up ordered by health.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test that can't read its input fails loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use clap::CommandFactory;
use orders_deployment::compose::{Project, read_env_file};
use orders_deployment::repository_root;

/// The project as `docker compose up` loads it: with `.env`, SigNoz included.
fn project() -> Project {
    Project::as_compose_loads_it(&[]).unwrap()
}

/// The environment variables a clap command reads.
fn clap_variables(command: &clap::Command) -> BTreeSet<String> {
    command
        .get_arguments()
        .filter_map(clap::Arg::get_env)
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn every_variable_given_to_the_services_is_one_the_code_reads() {
    let project = project();
    let telemetry: BTreeSet<String> = orders_telemetry::ENVIRONMENT_VARIABLES
        .iter()
        .map(|&name| name.to_owned())
        .collect();
    for (service, command) in [
        ("orders-api", orders_api::Config::command()),
        ("orders-batch", orders_batch::Config::command()),
    ] {
        let read: BTreeSet<String> = clap_variables(&command)
            .union(&telemetry)
            .cloned()
            .collect();
        let given = &project.service(service).unwrap().environment;
        let unread: Vec<&String> = given.keys().filter(|name| !read.contains(*name)).collect();
        assert!(
            unread.is_empty(),
            "{service} is given {unread:?}, which it never reads"
        );
        // The ones that matter for the walkthrough are really there.
        for required in [
            "DATABASE_URL",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_SERVICE_NAME",
        ] {
            assert!(given.contains_key(required), "{service} lacks {required}");
        }
        assert_eq!(given["OTEL_SERVICE_NAME"], service);
    }
}

#[test]
fn the_variables_the_telemetry_reads_are_documented() {
    let readme = fs::read_to_string(repository_root().join("README.md")).unwrap();
    let undocumented: Vec<&str> = orders_telemetry::ENVIRONMENT_VARIABLES
        .iter()
        .copied()
        .filter(|name| !readme.contains(&format!("`{name}`")))
        .collect();
    assert!(undocumented.is_empty(), "README lacks {undocumented:?}");
}

#[test]
fn the_project_has_the_database_the_services_the_collector_and_signoz() {
    let project = project();
    assert_eq!(project.name.as_deref(), Some("orders-span-links"));
    let names: BTreeSet<&str> = project.services.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "postgres",
        "orders-api",
        "orders-batch",
        "otel-collector",
        "zookeeper",
        "init-clickhouse",
        "clickhouse",
        "signoz-telemetrystore-migrator",
        "signoz-otel-collector",
        "signoz",
    ]
    .into_iter()
    .collect();
    assert_eq!(names, expected);
    assert!(
        project
            .files
            .iter()
            .any(|file| file.ends_with("signoz/docker-compose.yml")),
        "SigNoz comes from its own file: {:?}",
        project.files
    );
}

#[test]
fn every_image_is_pinned_to_a_tag() {
    for (name, service) in &project().services {
        match (&service.image, &service.build_target) {
            (Some(image), None) => {
                let (_, tag) = image
                    .rsplit_once(':')
                    .unwrap_or_else(|| panic!("{name}: {image} has no tag"));
                assert!(
                    !tag.contains('/') && !tag.is_empty() && tag != "latest",
                    "{name}: {image} is not pinned"
                );
            }
            (None, Some(_)) => {}
            other => panic!("{name}: give an image or a build, not {other:?}"),
        }
    }
}

#[test]
fn published_ports_are_on_loopback_only() {
    let mut published = BTreeMap::new();
    for (name, service) in &project().services {
        for port in &service.ports {
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name} publishes {port} beyond this machine"
            );
            published.insert(port.clone(), name.clone());
        }
    }
    // What the walkthrough opens: the API and SigNoz's UI, nothing else.
    let expected: BTreeMap<String, String> = [
        ("127.0.0.1:3000:3000", "orders-api"),
        ("127.0.0.1:8080:8080", "signoz"),
    ]
    .into_iter()
    .map(|(port, name)| (port.to_owned(), name.to_owned()))
    .collect();
    assert_eq!(published, expected);
}

#[test]
fn services_start_after_what_they_need_is_ready() {
    let project = project();
    for (name, service) in &project.services {
        for (dependency, condition) in &service.depends_on {
            let target = project
                .service(dependency)
                .unwrap_or_else(|| panic!("{name} depends on unknown {dependency}"));
            match condition.as_str() {
                "service_healthy" => assert!(
                    target.has_healthcheck,
                    "{name} waits for {dependency} to be healthy, which has no healthcheck"
                ),
                "service_completed_successfully" => assert!(
                    target.restart.as_deref() != Some("unless-stopped")
                        && target.restart.as_deref() != Some("always"),
                    "{name} waits for {dependency} to complete, which restarts forever"
                ),
                "service_started" => {}
                other => panic!("{name}: unknown condition {other}"),
            }
            // A service without profiles must not need one that a profile can
            // switch off: SigNoz Cloud users run without the signoz profile.
            if service.profiles.is_empty() {
                assert!(
                    target.profiles.is_empty(),
                    "{name} depends on {dependency}, which only runs in {:?}",
                    target.profiles
                );
            }
        }
    }
    for service in ["orders-api", "orders-batch"] {
        let depends_on = &project.service(service).unwrap().depends_on;
        assert_eq!(
            depends_on.get("postgres").map(String::as_str),
            Some("service_healthy")
        );
        assert!(depends_on.contains_key("otel-collector"), "{service}");
    }
    assert!(project.service("postgres").unwrap().has_healthcheck);
    for name in ["clickhouse", "zookeeper", "signoz"] {
        assert!(project.service(name).unwrap().has_healthcheck, "{name}");
    }
}

#[test]
fn local_signoz_runs_only_under_its_profile_which_env_turns_on() {
    let root = repository_root();
    let variables = read_env_file(&root.join(".env")).unwrap();
    assert_eq!(
        variables.get("COMPOSE_PROFILES").map(String::as_str),
        Some("signoz")
    );
    for (name, service) in &project().services {
        let in_signoz_file = service.file.ends_with("signoz/docker-compose.yml");
        assert_eq!(
            service.profiles == ["signoz"],
            in_signoz_file,
            "{name}: profiles {:?}",
            service.profiles
        );
    }
    // The SigNoz Cloud example, given instead of .env, turns no profile on.
    let cloud = read_env_file(&root.join("signoz-cloud.env.example")).unwrap();
    assert!(!cloud.contains_key("COMPOSE_PROFILES"));
    let with_cloud = Project::load(&root.join("docker-compose.yml"), &cloud).unwrap();
    let collector = &with_cloud.service("otel-collector").unwrap().environment;
    assert_eq!(
        collector["SIGNOZ_OTLP_ENDPOINT"],
        "ingest.us.signoz.cloud:443"
    );
    assert_eq!(collector["SIGNOZ_OTLP_INSECURE"], "false");
}

#[test]
fn named_volumes_are_declared_and_mounted_files_exist() {
    let project = project();
    for (name, service) in &project.services {
        for volume in &service.volumes {
            let source = volume.split(':').next().unwrap();
            if source.starts_with('.') || source.starts_with('/') {
                let directory = service.file.parent().unwrap();
                assert!(
                    directory.join(source).exists(),
                    "{name} mounts {source}, which is not in the repository"
                );
            } else {
                assert!(
                    project.volumes.contains(source),
                    "{name} mounts undeclared volume {source}"
                );
            }
        }
    }
}

#[test]
fn the_services_are_built_from_the_dockerfile_targets() {
    let root = repository_root();
    let dockerfile = fs::read_to_string(root.join("Dockerfile")).unwrap();
    let stages: BTreeSet<String> = dockerfile
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["FROM", _, as_, stage] if as_.eq_ignore_ascii_case("as") => {
                    Some((*stage).to_owned())
                }
                _ => None,
            }
        })
        .collect();
    let project = project();
    for service in ["orders-api", "orders-batch"] {
        let target = project.service(service).unwrap().build_target.clone();
        assert_eq!(target.as_deref(), Some(service));
        assert!(stages.contains(service), "no stage {service} in {stages:?}");
    }
    // Both service images run as the unprivileged user of the runtime stage.
    assert!(
        dockerfile.contains("\nUSER 10001:10001\n"),
        "the runtime stage sets a non-root user"
    );
    // Migrations are compiled into the binaries, so the build context has them.
    let ignore = fs::read_to_string(root.join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|line| line == "!migrations/"));
}
