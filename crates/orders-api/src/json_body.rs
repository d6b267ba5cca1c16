//! A JSON body extractor whose every rejection is an [`ApiError`], so bad
//! bodies get the API's JSON error shape, and a message that names the field.
//!
//! Syntax errors (not JSON) are 400; JSON of the wrong shape is 422.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use orders::JsonObject;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::app::MAX_BODY_BYTES;
use crate::connections::BodyReadTimeout;
use crate::error::ApiError;

/// A request body parsed as JSON into `T`.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        check_content_type(request.headers())?;
        let timeout = request.extensions().get::<BodyReadTimeout>().copied();
        let read = Bytes::from_request(request, state);
        let read = match timeout {
            Some(BodyReadTimeout(timeout)) => tokio::time::timeout(timeout, read)
                .await
                .map_err(|_| ApiError::BodyReadTimeout(timeout))?,
            None => read.await,
        };
        let bytes = read.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                ApiError::UnreadableBody(rejection.body_text())
            }
        })?;
        parse(&bytes).map(Self)
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType(
            "missing Content-Type: expected application/json".to_owned(),
        ));
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {essence:?} is not supported: expected application/json"
        )))
    }
}

/// Parses a whole body: first as JSON, so any syntax error is a 400 however
/// late in the body it comes; then into `T`, which must be a JSON object, naming
/// the path of the first offending field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let document: Value = serde_json::from_slice(bytes)
        .map_err(|error| ApiError::MalformedJson(error.to_string()))?;
    let JsonObject(value) = serde_path_to_error::deserialize(document).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        ApiError::InvalidBody(if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        })
    })?;
    Ok(value)
}
