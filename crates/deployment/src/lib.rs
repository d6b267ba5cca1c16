//! The deployment files read as the tools that run them read them, so tests
//! can hold them to the code: `docker-compose.yml` and the SigNoz compose file
//! it includes ([`compose`]), and the collector configurations
//! ([`collector`]). There is no Docker engine where the tests run: what
//! compose would start is checked by this crate's tests, and orders-batch's
//! end-to-end test runs both binaries with the environment compose gives them.

pub mod collector;
pub mod compose;

use std::path::{Path, PathBuf};

use serde_norway::Value;

/// A deployment file can't be read as the tool that runs it reads it.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("{path}: {what}")]
    Shape { path: PathBuf, what: String },
}

impl FileError {
    fn shape(path: &Path, what: impl Into<String>) -> Self {
        Self::Shape {
            path: path.to_owned(),
            what: what.into(),
        }
    }
}

/// The YAML document in `path`.
fn read_yaml(path: &Path) -> Result<Value, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_norway::from_str(&text).map_err(|source| FileError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// The repository's top directory, where `docker-compose.yml` lives.
#[must_use]
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
