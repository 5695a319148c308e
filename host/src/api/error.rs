//! A command's error answered over HTTP: each kind of failure has one status, and every
//! error is the one shape `{error: {code, message, help}, allowed: false}`.

use crate::codes::Kind;
use crate::service::error::ServiceError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The HTTP status of a kind of failure.
pub fn status(kind: Kind) -> StatusCode {
    StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = status(self.kind);
        let mut body = json!({ "error": self.data, "allowed": false });
        if let (Some(Value::Object(extra)), Some(obj)) = (self.extra, body.as_object_mut()) {
            obj.extend(extra);
        }
        let mut response = (status, Json(body)).into_response();
        let retry = match (self.retry_after, self.kind) {
            (Some(s), _) => Some(s),
            (None, Kind::Unavailable) => Some(1),
            _ => None,
        };
        if let Some(s) = retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        // A request whose body was cut off ends its connection: the rest of the body is
        // not waited for.
        if self.kind == Kind::Timeout {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// An answer of the host's own, as JSON.
pub(crate) fn answer<T: serde::Serialize>(value: T) -> ApiResult {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| ServiceError::internal(e.to_string()))
}

pub(crate) type ApiResult = Result<Json<Value>, ServiceError>;
