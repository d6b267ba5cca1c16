//! The one error type of the API and its JSON shape:
//! `{"error": {"code": "...", "message": "...", "details": [...]}}`.
//!
//! Every failure a client can cause maps to a 4xx here; a 500 means a bug or a
//! broken database, never bad input. A message quotes at most
//! [`MAX_MESSAGE_CHARS`] characters, however much of its input a client sends.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use orders::order::FieldError;
use orders::{StoreError, ValidationErrors};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The JSON does not have the shape of the expected document: a field is
    /// missing, unknown or of the wrong type.
    #[error("{0}")]
    InvalidBody(String),
    /// The document has the right shape but breaks a rule.
    #[error("{0}")]
    Validation(#[from] ValidationErrors),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    UnreadableBody(String),
    #[error("the request body did not arrive within {0:?}")]
    BodyReadTimeout(std::time::Duration),
    #[error("order id {0:?} is not a UUID")]
    InvalidOrderId(String),
    /// A path segment that is not even text (invalid percent-encoded UTF-8).
    #[error("{0}")]
    InvalidPath(String),
    #[error("Idempotency-Key must be 1 to 255 visible ASCII characters")]
    InvalidIdempotencyKey,
    #[error("this Idempotency-Key was used for a different order")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is in progress; retry later")]
    IdempotencyKeyInFlight,
    #[error("order {0} does not exist")]
    OrderNotFound(Uuid),
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("the database did not answer within {0:?}")]
    DatabaseTimeout(std::time::Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every error answer: `{"error": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ErrorDetail<'a> {
    code: ErrorCode,
    /// Names the offending field; quotes at most 200 characters of the input.
    message: String,
    /// Every broken rule, for `validation_failed` only.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    #[schema(min_items = 1)]
    details: &'a [FieldError],
}

/// What went wrong, for programs to tell apart: docs/http-api.md has a row
/// for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    MalformedJson,
    InvalidBody,
    ValidationFailed,
    UnsupportedMediaType,
    PayloadTooLarge,
    UnreadableBody,
    RequestTimeout,
    InvalidOrderId,
    InvalidPath,
    InvalidIdempotencyKey,
    IdempotencyKeyReused,
    IdempotencyKeyInFlight,
    OrderNotFound,
    NotFound,
    MethodNotAllowed,
    DatabaseUnavailable,
    InternalError,
}

impl ErrorCode {
    /// The status every error of this code is answered with.
    #[must_use]
    pub fn status(self) -> StatusCode {
        match self {
            Self::MalformedJson
            | Self::UnreadableBody
            | Self::InvalidOrderId
            | Self::InvalidPath
            | Self::InvalidIdempotencyKey => StatusCode::BAD_REQUEST,
            Self::IdempotencyKeyInFlight => StatusCode::CONFLICT,
            Self::InvalidBody | Self::ValidationFailed | Self::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::OrderNotFound | Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::DatabaseUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ApiError {
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.code().status()
    }

    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::MalformedJson(_) => ErrorCode::MalformedJson,
            Self::InvalidBody(_) => ErrorCode::InvalidBody,
            Self::Validation(_) => ErrorCode::ValidationFailed,
            Self::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            Self::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::UnreadableBody(_) => ErrorCode::UnreadableBody,
            Self::BodyReadTimeout(_) => ErrorCode::RequestTimeout,
            Self::InvalidOrderId(_) => ErrorCode::InvalidOrderId,
            Self::InvalidPath(_) => ErrorCode::InvalidPath,
            Self::InvalidIdempotencyKey => ErrorCode::InvalidIdempotencyKey,
            Self::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            Self::IdempotencyKeyInFlight => ErrorCode::IdempotencyKeyInFlight,
            Self::OrderNotFound(_) => ErrorCode::OrderNotFound,
            Self::RouteNotFound => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::DatabaseTimeout(_) => ErrorCode::DatabaseUnavailable,
            Self::Store(error) if error.is_unavailable() => ErrorCode::DatabaseUnavailable,
            Self::Store(_) => ErrorCode::InternalError,
        }
    }
}

/// Longest error message, in characters: messages quote what the client sent
/// (an id, a JSON value), and a 10 KB id must not come back as a 10 KB answer.
pub const MAX_MESSAGE_CHARS: usize = 200;

fn bounded(mut message: String) -> String {
    if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(cut);
        message.push('…');
    }
    message
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Database details stay in the logs, not in answers to clients.
        let message = match &self {
            Self::Store(error) if error.is_unavailable() => {
                tracing::warn!(error = %error, "database unavailable");
                "the database is unavailable, try again later".to_owned()
            }
            Self::Store(error) => {
                tracing::error!(error = %error, "request failed");
                "internal error".to_owned()
            }
            other => bounded(other.to_string()),
        };
        let details = match &self {
            Self::Validation(errors) => errors.fields(),
            _ => &[],
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message,
                details,
            },
        };
        (status, Json(body)).into_response()
    }
}
