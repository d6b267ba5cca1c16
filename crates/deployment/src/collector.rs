//! An OpenTelemetry Collector configuration, read the way the collector
//! resolves its pipelines: every component a pipeline names must be defined
//! in its section, by its full `type/name` id.

use std::collections::BTreeSet;
use std::path::Path;

use serde_norway::Value;

use crate::{FileError, read_yaml};

/// One pipeline: its id (`traces`, `metrics/spanmetrics`, ...) and the
/// components it names, in order.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub id: String,
    pub receivers: Vec<String>,
    pub processors: Vec<String>,
    pub exporters: Vec<String>,
}

impl Pipeline {
    /// The signal it carries: `traces`, `metrics` or `logs`.
    #[must_use]
    pub fn signal(&self) -> &str {
        self.id.split('/').next().unwrap_or(&self.id)
    }
}

/// The parts of a collector configuration that decide what runs.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub receivers: BTreeSet<String>,
    pub processors: BTreeSet<String>,
    pub exporters: BTreeSet<String>,
    pub connectors: BTreeSet<String>,
    pub extensions: BTreeSet<String>,
    /// `service.extensions`.
    pub enabled_extensions: Vec<String>,
    pub pipelines: Vec<Pipeline>,
    /// The whole document, for checks on component settings.
    pub document: Value,
}

impl CollectorConfig {
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let document = read_yaml(path)?;
        let shape = |what: String| FileError::shape(path, what);
        let ids = |section: &str| -> Result<BTreeSet<String>, FileError> {
            match document.get(section) {
                None | Some(Value::Null) => Ok(BTreeSet::new()),
                Some(Value::Mapping(components)) => components
                    .keys()
                    .map(|key| {
                        key.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| shape(format!("{section}: id {key:?}")))
                    })
                    .collect(),
                Some(other) => Err(shape(format!("{section} is {other:?}"))),
            }
        };
        let names = |value: Option<&Value>, what: &str| -> Result<Vec<String>, FileError> {
            match value {
                None => Ok(Vec::new()),
                Some(Value::Sequence(items)) => items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| shape(format!("{what}: {item:?}")))
                    })
                    .collect(),
                Some(other) => Err(shape(format!("{what} is {other:?}"))),
            }
        };

        let service = document
            .get("service")
            .ok_or_else(|| shape("no service section".to_owned()))?;
        let mut pipelines = Vec::new();
        let declared = service
            .get("pipelines")
            .and_then(Value::as_mapping)
            .ok_or_else(|| shape("no service.pipelines".to_owned()))?;
        for (id, pipeline) in declared {
            let id = id
                .as_str()
                .ok_or_else(|| shape(format!("pipeline id {id:?}")))?
                .to_owned();
            pipelines.push(Pipeline {
                receivers: names(pipeline.get("receivers"), &format!("{id}.receivers"))?,
                processors: names(pipeline.get("processors"), &format!("{id}.processors"))?,
                exporters: names(pipeline.get("exporters"), &format!("{id}.exporters"))?,
                id,
            });
        }

        Ok(Self {
            receivers: ids("receivers")?,
            processors: ids("processors")?,
            exporters: ids("exporters")?,
            connectors: ids("connectors")?,
            extensions: ids("extensions")?,
            enabled_extensions: names(service.get("extensions"), "service.extensions")?,
            pipelines,
            document,
        })
    }

    /// Every way the pipelines and the component sections disagree: a
    /// component named but not defined, a defined one no pipeline uses, a
    /// connector not both exporting and receiving, a pipeline without a
    /// receiver or an exporter. Empty when the configuration is whole.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut used = BTreeSet::new();
        for pipeline in &self.pipelines {
            if !matches!(pipeline.signal(), "traces" | "metrics" | "logs") {
                problems.push(format!("pipeline {}: unknown signal", pipeline.id));
            }
            for (kind, named, defined) in [
                ("receiver", &pipeline.receivers, &self.receivers),
                ("processor", &pipeline.processors, &self.processors),
                ("exporter", &pipeline.exporters, &self.exporters),
            ] {
                for name in named {
                    used.insert((kind, name.clone()));
                    let is_connector = kind != "processor" && self.connectors.contains(name);
                    if !defined.contains(name) && !is_connector {
                        problems.push(format!(
                            "pipeline {}: {kind} {name} is not defined",
                            pipeline.id
                        ));
                    }
                }
            }
            if pipeline.receivers.is_empty() || pipeline.exporters.is_empty() {
                problems.push(format!(
                    "pipeline {}: needs a receiver and an exporter",
                    pipeline.id
                ));
            }
        }
        for (kind, defined) in [
            ("receiver", &self.receivers),
            ("processor", &self.processors),
            ("exporter", &self.exporters),
        ] {
            for name in defined {
                if !used.contains(&(kind, name.clone())) {
                    problems.push(format!("{kind} {name} is defined but in no pipeline"));
                }
            }
        }
        for connector in &self.connectors {
            let exports = used.contains(&("exporter", connector.clone()));
            let receives = used.contains(&("receiver", connector.clone()));
            if !(exports && receives) {
                problems.push(format!(
                    "connector {connector} must be an exporter of one pipeline and a receiver of another"
                ));
            }
        }
        for extension in &self.enabled_extensions {
            if !self.extensions.contains(extension) {
                problems.push(format!("extension {extension} is not defined"));
            }
        }
        problems
    }

    /// The `${env:NAME}` variables the configuration reads.
    #[must_use]
    pub fn environment_variables(&self) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        collect_env_references(&self.document, &mut found);
        found
    }
}

fn collect_env_references(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::String(text) => {
            let mut rest = text.as_str();
            while let Some(start) = rest.find("${env:") {
                let body = &rest[start + "${env:".len()..];
                let end = body.find(['}', ':']).unwrap_or(body.len());
                found.insert(body[..end].to_owned());
                rest = &body[end..];
            }
        }
        Value::Sequence(items) => items
            .iter()
            .for_each(|item| collect_env_references(item, found)),
        Value::Mapping(entries) => entries
            .values()
            .for_each(|item| collect_env_references(item, found)),
        Value::Tagged(tagged) => collect_env_references(&tagged.value, found),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> CollectorConfig {
        let path = std::env::temp_dir().join(format!(
            "collector-{}-{}.yaml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        let config = CollectorConfig::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        config
    }

    #[test]
    fn a_component_named_but_not_defined_is_a_problem() {
        let config = config(
            "receivers: {otlp: {}}\nprocessors: {batch: {}}\nexporters: {debug: {}}\n\
             extensions: {}\nservice:\n  extensions: [health_check]\n  pipelines:\n    \
             traces: {receivers: [otlp], processors: [batch, memory_limiter], exporters: [debug, otlp_grpc/x]}\n",
        );
        assert_eq!(
            config.problems(),
            [
                "pipeline traces: processor memory_limiter is not defined",
                "pipeline traces: exporter otlp_grpc/x is not defined",
                "extension health_check is not defined",
            ]
        );
    }

    #[test]
    fn connectors_and_env_references_are_understood() {
        let config = config(
            "receivers: {otlp: {}}\nconnectors: {meter: {}}\n\
             exporters: {a: {endpoint: '${env:A}'}, b: {key: 'k-${env:B:-x}'}}\n\
             service:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [a, meter]}\n    \
             metrics: {receivers: [meter], exporters: [b]}\n",
        );
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        assert_eq!(
            config
                .environment_variables()
                .into_iter()
                .collect::<Vec<_>>(),
            ["A", "B"]
        );
    }
}
