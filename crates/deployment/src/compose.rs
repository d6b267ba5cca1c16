//! The Compose model of the project as `docker compose` would load it:
//! `docker-compose.yml` with the files it `include`s, YAML merge keys applied
//! and `${VAR:-default}` interpolated from the variables given (the project's
//! `.env`, as Compose reads it).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_norway::Value;

use crate::{FileError, read_yaml, repository_root};

/// One service, with the parts the checks look at.
#[derive(Debug, Clone)]
pub struct Service {
    /// The compose file that defines it.
    pub file: PathBuf,
    pub image: Option<String>,
    /// `build.target`, for services built from the project's Dockerfile.
    pub build_target: Option<String>,
    /// `environment`, merged and interpolated.
    pub environment: BTreeMap<String, String>,
    /// `ports`, as written.
    pub ports: Vec<String>,
    /// `depends_on`: service name to condition (`service_started` for the
    /// short form).
    pub depends_on: BTreeMap<String, String>,
    pub profiles: Vec<String>,
    pub has_healthcheck: bool,
    /// `volumes`, as written (`source:target[:mode]`).
    pub volumes: Vec<String>,
    pub restart: Option<String>,
}

/// The whole project: every service of every file, and the named volumes.
#[derive(Debug, Clone)]
pub struct Project {
    pub name: Option<String>,
    pub files: Vec<PathBuf>,
    pub services: BTreeMap<String, Service>,
    pub volumes: BTreeSet<String>,
}

impl Project {
    /// The project as `docker compose` in the repository loads it: the
    /// repository's `.env`, then `shell` (variables set in the user's shell
    /// win over `.env`), interpolated into `docker-compose.yml` and what it
    /// includes.
    pub fn as_compose_loads_it(shell: &[(&str, &str)]) -> Result<Self, FileError> {
        let root = repository_root();
        let mut variables = read_env_file(&root.join(".env"))?;
        variables.extend(
            shell
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        Self::load(&root.join("docker-compose.yml"), &variables)
    }

    /// Loads `file` and everything it includes, interpolating with `variables`.
    pub fn load(file: &Path, variables: &BTreeMap<String, String>) -> Result<Self, FileError> {
        let mut project = Self {
            name: None,
            files: Vec::new(),
            services: BTreeMap::new(),
            volumes: BTreeSet::new(),
        };
        project.add_file(file, variables, true)?;
        Ok(project)
    }

    /// The service called `name`.
    #[must_use]
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.get(name)
    }

    fn add_file(
        &mut self,
        file: &Path,
        variables: &BTreeMap<String, String>,
        top_level: bool,
    ) -> Result<(), FileError> {
        let mut document = read_yaml(file)?;
        document.apply_merge().map_err(|source| FileError::Parse {
            path: file.to_owned(),
            source,
        })?;
        let shape = |what: String| FileError::shape(file, what);
        let document = document
            .as_mapping()
            .ok_or_else(|| shape("not a mapping".to_owned()))?;
        self.files.push(file.to_owned());
        if top_level {
            self.name = document
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }

        let directory = file.parent().unwrap_or(Path::new("."));
        for included in sequence(document.get("include")) {
            let path = included
                .as_str()
                .or_else(|| included.get("path").and_then(Value::as_str))
                .ok_or_else(|| shape(format!("include entry {included:?}")))?;
            self.add_file(&directory.join(path), variables, false)?;
        }

        if let Some(volumes) = document.get("volumes").and_then(Value::as_mapping) {
            self.volumes
                .extend(volumes.keys().filter_map(Value::as_str).map(str::to_owned));
        }
        let services = document
            .get("services")
            .and_then(Value::as_mapping)
            .ok_or_else(|| shape("no services".to_owned()))?;
        for (name, definition) in services {
            let name = name
                .as_str()
                .ok_or_else(|| shape(format!("service name {name:?}")))?;
            let service = Service::read(file, name, definition, variables).map_err(shape)?;
            if self.services.insert(name.to_owned(), service).is_some() {
                return Err(shape(format!("service {name} is defined twice")));
            }
        }
        Ok(())
    }
}

impl Service {
    fn read(
        file: &Path,
        name: &str,
        definition: &Value,
        variables: &BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let text = |value: &Value| -> Result<String, String> {
            let raw = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                other => return Err(format!("service {name}: {other:?} is not a scalar")),
            };
            interpolate(&raw, variables).map_err(|error| format!("service {name}: {error}"))
        };
        let texts = |key: &str| -> Result<Vec<String>, String> {
            sequence(definition.get(key)).iter().map(text).collect()
        };

        let mut environment = BTreeMap::new();
        match definition.get("environment") {
            None => {}
            Some(Value::Mapping(entries)) => {
                for (key, value) in entries {
                    let key = key
                        .as_str()
                        .ok_or_else(|| format!("service {name}: environment key {key:?}"))?;
                    let value = if value.is_null() {
                        String::new()
                    } else {
                        text(value)?
                    };
                    environment.insert(key.to_owned(), value);
                }
            }
            Some(Value::Sequence(entries)) => {
                for entry in entries {
                    let entry = text(entry)?;
                    let (key, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
                    environment.insert(key.to_owned(), value.to_owned());
                }
            }
            Some(other) => return Err(format!("service {name}: environment {other:?}")),
        }

        let mut depends_on = BTreeMap::new();
        match definition.get("depends_on") {
            None => {}
            Some(Value::Sequence(names)) => {
                for dependency in names {
                    depends_on.insert(text(dependency)?, "service_started".to_owned());
                }
            }
            Some(Value::Mapping(entries)) => {
                for (dependency, options) in entries {
                    let condition = options
                        .get("condition")
                        .and_then(Value::as_str)
                        .unwrap_or("service_started");
                    depends_on.insert(text(dependency)?, condition.to_owned());
                }
            }
            Some(other) => return Err(format!("service {name}: depends_on {other:?}")),
        }

        Ok(Self {
            file: file.to_owned(),
            image: definition.get("image").map(text).transpose()?,
            build_target: definition
                .get("build")
                .and_then(|build| build.get("target"))
                .map(text)
                .transpose()?,
            environment,
            ports: texts("ports")?,
            depends_on,
            profiles: texts("profiles")?,
            has_healthcheck: definition
                .get("healthcheck")
                .is_some_and(|check| check.get("disable") != Some(&Value::Bool(true))),
            volumes: texts("volumes")?,
            restart: definition.get("restart").map(text).transpose()?,
        })
    }
}

impl Service {
    /// The environment with addresses of the compose network replaced: each
    /// `(from, to)` swaps `from` (a `host:port` as containers see it) for `to`
    /// (where the same thing listens outside Docker).
    #[must_use]
    pub fn environment_with_addresses(&self, addresses: &[(&str, &str)]) -> Vec<(String, String)> {
        self.environment
            .iter()
            .map(|(name, value)| {
                let value = addresses
                    .iter()
                    .fold(value.clone(), |value, (from, to)| value.replace(from, to));
                (name.clone(), value)
            })
            .collect()
    }
}

/// The items of a YAML sequence; none for anything else.
fn sequence(value: Option<&Value>) -> &[Value] {
    match value {
        Some(Value::Sequence(items)) => items,
        _ => &[],
    }
}

/// Compose's interpolation: `$$` is a literal `$`; `${NAME}`, `${NAME:-default}`
/// (default when unset or empty) and `${NAME-default}` (default when unset)
/// take the value from `variables`. Unset without a default is an error here,
/// where Compose would warn and use an empty string.
pub fn interpolate(raw: &str, variables: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {raw:?}"))?;
            let expression = &body[..end];
            out.push_str(
                &resolve(expression, variables).map_err(|error| format!("{raw:?}: {error}"))?,
            );
            rest = &body[end + 1..];
        } else {
            return Err(format!("{raw:?}: bare $ (write $$ or ${{NAME}})"));
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(expression: &str, variables: &BTreeMap<String, String>) -> Result<String, String> {
    let (name, default, empty_counts_as_unset) =
        if let Some((name, default)) = expression.split_once(":-") {
            (name, Some(default), true)
        } else if let Some((name, default)) = expression.split_once('-') {
            (name, Some(default), false)
        } else {
            (expression, None, false)
        };
    if name.is_empty() || !name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
        return Err(format!("unsupported expression ${{{expression}}}"));
    }
    match (variables.get(name), default) {
        (Some(value), Some(default)) if value.is_empty() && empty_counts_as_unset => {
            Ok(default.to_owned())
        }
        (Some(value), _) => Ok(value.clone()),
        (None, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err(format!("{name} is not set and has no default")),
    }
}

/// The variables of a `.env`-style file: `NAME=value` lines, `#` comments.
pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, FileError> {
    let text = fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut variables = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| FileError::shape(path, format!("{line:?} is not NAME=value")))?;
        variables.insert(name.trim().to_owned(), value.trim().to_owned());
    }
    Ok(variables)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn interpolation_follows_compose() {
        let set = vars(&[("A", "x"), ("EMPTY", "")]);
        assert_eq!(interpolate("${A:-d}", &set).unwrap(), "x");
        assert_eq!(
            interpolate("${B:-0 0 * * * *}", &set).unwrap(),
            "0 0 * * * *"
        );
        assert_eq!(interpolate("${EMPTY:-d}", &set).unwrap(), "d");
        assert_eq!(interpolate("${EMPTY-d}", &set).unwrap(), "");
        assert_eq!(interpolate("a$$b ${A}", &set).unwrap(), "a$b x");
        assert!(interpolate("${B}", &set).is_err());
        assert!(interpolate("$A", &set).is_err());
        assert!(interpolate("${A", &set).is_err());
    }
}
