//! A container of `kubernetes/` as Kubernetes runs it: the overlay rendered
//! by the real `kubectl kustomize` (never a re-implementation of its
//! generators, hashed names and patches), then the container's environment
//! resolved from the rendered Secrets and `ConfigMap`s, and the pod's own
//! fields the test supplies, as the kubelet resolves it.
//! The YAML is read by the pinned tools' Python (`PyYAML`, `.ci/tools/`, which
//! the compose tests need already) into JSON, Secrets' base64 decoded by its
//! standard library: no YAML or base64 crate enters the lock for one helper.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::process::Command;

use serde_json::Value;

use crate::{python_json, repository_root, stdout_of};

/// Multi-document YAML on stdin to a JSON list; each Secret's `data` decoded.
const TO_JSON: &str = r#"
import base64, json, sys, yaml
objects = [o for o in yaml.safe_load_all(sys.stdin) if o]
for secret in (o for o in objects if o["kind"] == "Secret"):
    secret["data"] = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
json.dump(objects, sys.stdout)
"#;

/// A container as its pod runs it.
#[derive(Debug)]
pub struct Container {
    /// In place of the image's entrypoint; empty: the image's.
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// `envFrom`, then `env` over it, every reference resolved and `$(NAME)`
    /// expanded.
    pub environment: BTreeMap<String, String>,
    /// The variables expanded into others, which the process need not read.
    pub expanded: BTreeSet<String>,
    pub readiness: Option<HttpProbe>,
    pub liveness: Option<HttpProbe>,
}

impl Container {
    /// The environment less the variables only given to be expanded into others.
    #[must_use]
    pub fn read_by_the_process(&self) -> BTreeMap<String, String> {
        let mut environment = self.environment.clone();
        environment.retain(|name, _| !self.expanded.contains(name));
        environment
    }
}

/// The pod's fields a `fieldRef` reads, which the cluster would give it
/// (its labels are its template's).
#[derive(Debug)]
pub struct Pod<'a> {
    pub uid: &'a str,
    pub name: &'a str,
    /// The node it was scheduled on.
    pub node: &'a str,
}

/// An `httpGet` probe: its path, and its port as the number it names.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpProbe {
    pub path: String,
    pub port: u16,
}

/// `container` of `workload` (`Kind/name`, such as `CronJob/orders-batch`) as
/// `kubectl kustomize <overlay>` renders it, `overlay` relative to the
/// repository, run in `pod`. A Secret or `ConfigMap` it needs and the overlay
/// does not render (one the user creates in the cluster) fails the test,
/// naming it.
#[must_use]
pub fn kubernetes_container(
    overlay: &str,
    workload: &str,
    container: &str,
    pod: &Pod,
) -> Container {
    let objects = render(overlay);
    let (kind, name) = workload
        .split_once('/')
        .unwrap_or_else(|| panic!("{workload}: not Kind/name"));
    let found = objects
        .iter()
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{overlay} renders no {workload}"));
    // A CronJob's pod template is in its Job's.
    let spec = if kind == "CronJob" {
        &found["spec"]["jobTemplate"]["spec"]
    } else {
        &found["spec"]
    };
    let declared = list(&spec["template"]["spec"]["containers"])
        .find(|each| each["name"] == container)
        .unwrap_or_else(|| panic!("{overlay}'s {workload} has no container {container}"));
    let resolver = Resolver {
        overlay,
        objects: &objects,
        namespace: &found["metadata"]["namespace"],
        labels: &spec["template"]["metadata"]["labels"],
        pod,
    };
    let probe = |probe: &str| http_probe(declared, probe);
    let (environment, expanded) = resolver.environment(declared);
    Container {
        command: list(&declared["command"]).map(text).collect(),
        args: list(&declared["args"]).map(text).collect(),
        environment,
        expanded,
        readiness: probe("readinessProbe"),
        liveness: probe("livenessProbe"),
    }
}

/// Every object `kubectl kustomize <overlay>` renders.
fn render(overlay: &str) -> Vec<Value> {
    let rendering = format!("kubectl kustomize {overlay}");
    let kubectl = Command::new("kubectl")
        .args(["kustomize", overlay])
        .current_dir(repository_root())
        .output()
        .map_err(|error| match error.kind() {
            ErrorKind::NotFound => panic!(
                "kubectl is missing: install kubectl 1.32 (https://kubernetes.io/docs/tasks/tools/)"
            ),
            _ => error,
        });
    // Checked first: PyYAML reads a failed render as no objects.
    let yaml = stdout_of(&rendering, kubectl);
    let reading = format!("{rendering}, read by PyYAML");
    let objects = python_json(&reading, TO_JSON, &yaml);
    serde_json::from_value(objects).unwrap_or_else(|error| panic!("{reading}: {error}"))
}

/// Where a container's references are looked up: the objects rendered with
/// it, in its namespace, and its pod.
struct Resolver<'a> {
    overlay: &'a str,
    objects: &'a [Value],
    namespace: &'a Value,
    labels: &'a Value,
    pod: &'a Pod<'a>,
}

/// A reference to a `ConfigMap` or a Secret: `configMapKeyRef`, `secretRef`…
struct Reference<'a> {
    kind: &'static str,
    name: String,
    fields: &'a Value,
}

impl Resolver<'_> {
    /// As the kubelet sets it: each `envFrom` source in order, then `env`,
    /// a later definition replacing an earlier one; and the names expanded.
    fn environment(&self, container: &Value) -> (BTreeMap<String, String>, BTreeSet<String>) {
        let mut environment = BTreeMap::new();
        let mut expanded = BTreeSet::new();
        for source in list(&container["envFrom"]) {
            let prefix = source["prefix"].as_str().unwrap_or_default();
            let reference = reference(source, "configMapRef", "secretRef");
            for (key, value) in self.keys(&reference, "its envFrom").unwrap_or_default() {
                environment.insert(format!("{prefix}{key}"), value);
            }
        }
        for variable in list(&container["env"]) {
            let name = text(&variable["name"]);
            let from = &variable["valueFrom"];
            let value = if from.is_null() {
                let value = variable["value"].as_str().unwrap_or_default();
                Some(expand(&name, value, &environment, &mut expanded))
            } else if from["fieldRef"].is_object() {
                Some(self.field(&text(&from["fieldRef"]["fieldPath"])))
            } else {
                self.key(&reference(from, "configMapKeyRef", "secretKeyRef"), &name)
            };
            if let Some(value) = value {
                environment.insert(name, value);
            }
        }
        (environment, expanded)
    }

    /// The pod's field at `path`, as the Downward API gives it.
    fn field(&self, path: &str) -> String {
        match path {
            "metadata.uid" => self.pod.uid.to_owned(),
            "metadata.name" => self.pod.name.to_owned(),
            "metadata.namespace" => text(self.namespace),
            "spec.nodeName" => self.pod.node.to_owned(),
            other => match other
                .strip_prefix("metadata.labels['")
                .and_then(|label| label.strip_suffix("']"))
            {
                Some(label) => text(&self.labels[label]),
                None => panic!("fieldRef {other}: not resolved here"),
            },
        }
    }

    /// The value of the key `reference` names, for `variable`; none where it
    /// is optional and missing.
    fn key(&self, reference: &Reference, variable: &str) -> Option<String> {
        let key = text(&reference.fields["key"]);
        let value = self.keys(reference, variable)?.remove(&key);
        let Reference { kind, name, fields } = reference;
        assert!(
            value.is_some() || optional(fields),
            "{kind} {name} has no key {key}, which {variable} needs"
        );
        value
    }

    /// The keys and values of the object `reference` names, or none where it
    /// is optional and not rendered; `needed_by` for the message.
    fn keys(&self, reference: &Reference, needed_by: &str) -> Option<BTreeMap<String, String>> {
        let Reference { kind, name, fields } = reference;
        let Some(found) = self.objects.iter().find(|object| {
            object["kind"] == *kind
                && object["metadata"]["name"] == *name
                && object["metadata"]["namespace"] == *self.namespace
        }) else {
            assert!(
                optional(fields),
                "{} renders no {kind} {name}, which {needed_by} needs: the cluster's, created by hand; test an overlay that generates it",
                self.overlay
            );
            return None;
        };
        // The API server stores `stringData` over `data`.
        let data = entries(&found["data"]).chain(entries(&found["stringData"]));
        Some(
            data.map(|(key, value)| (key.clone(), text(value)))
                .collect(),
        )
    }
}

/// The value of `variable`, `value` with each `$(NAME)` replaced by NAME's
/// value so far, as the kubelet expands it: `$$` is a `$`, an unknown name
/// stays as written. The names replaced, but `variable`'s own, join `expanded`.
fn expand(
    variable: &str,
    value: &str,
    environment: &BTreeMap<String, String>,
    expanded: &mut BTreeSet<String>,
) -> String {
    let mut result = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        result.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            result.push('$');
            rest = after;
            continue;
        }
        let reference = rest
            .strip_prefix("$(")
            .and_then(|inside| inside.split_once(')'));
        let known = reference.and_then(|(name, after)| Some((name, environment.get(name)?, after)));
        if let Some((name, found, after)) = known {
            result.push_str(found);
            if name != variable {
                expanded.insert(name.to_owned());
            }
            rest = after;
        } else {
            result.push('$');
            rest = &rest[1..];
        }
    }
    result + rest
}

/// The reference `holder` makes through its field `config_map` or `secret`.
fn reference<'a>(holder: &'a Value, config_map: &str, secret: &str) -> Reference<'a> {
    let (kind, fields) = match (&holder[config_map], &holder[secret]) {
        (fields @ Value::Object(_), _) => ("ConfigMap", fields),
        (_, fields @ Value::Object(_)) => ("Secret", fields),
        _ => panic!("{holder}: only ConfigMaps and Secrets are resolved here"),
    };
    let name = text(&fields["name"]);
    Reference { kind, name, fields }
}

fn optional(reference: &Value) -> bool {
    reference["optional"] == true
}

/// `container`'s `probe`, if it is an `httpGet`; a named port resolved to its
/// `containerPort`.
fn http_probe(container: &Value, probe: &str) -> Option<HttpProbe> {
    let get = container[probe].get("httpGet")?;
    // A number, or the name of one of the container's ports.
    let named = list(&container["ports"]).find(|port| port["name"] == get["port"]);
    let port = named.map_or(&get["port"], |port| &port["containerPort"]);
    let port = port
        .as_u64()
        .and_then(|port| u16::try_from(port).ok())
        .unwrap_or_else(|| panic!("{probe}: port {port}, not a port of the container"));
    let path = get["path"].as_str().unwrap_or("/").to_owned();
    Some(HttpProbe { path, port })
}

fn list(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

fn entries(value: &Value) -> impl Iterator<Item = (&String, &Value)> {
    value.as_object().into_iter().flatten()
}

/// A string, as Kubernetes requires names and values to be.
fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{value}: not a string"))
        .to_owned()
}
