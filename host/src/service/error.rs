//! The service's error: a status, a code, a message naming what was wrong and where, and
//! what to do; every failure of every route is answered in this one shape.

use crate::auth::AuthError;
use crate::runtime::HostError;
use crate::store::StoreError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use clearance_core::ErrorData;
use serde_json::{Value, json};

/// An API error: a status and `{code, message, help}`, always with `"allowed": false`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) data: ErrorData,
    pub(crate) extra: Option<Value>,
    /// Seconds to wait before retrying (`retry-after`); 503 answers default to 1.
    pub(crate) retry_after: Option<u32>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &str,
        message: impl Into<String>,
        help: &str,
    ) -> ApiError {
        ApiError {
            status,
            data: ErrorData {
                code: code.into(),
                message: message.into(),
                help: help.into(),
            },
            extra: None,
            retry_after: None,
        }
    }

    pub(crate) fn bad(data: ErrorData) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            data,
            extra: None,
            retry_after: None,
        }
    }

    pub(crate) fn store(e: StoreError, help: &str) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store.failed",
            e.to_string(),
            help,
        )
    }

    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "host.internal",
            message,
            "nothing was written",
        )
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> ApiError {
        let status = match &e {
            HostError::Module(d)
                if d.code.starts_with("request.")
                    || d.code.starts_with("facts.")
                    || d.code.starts_with("policy.") =>
            {
                StatusCode::BAD_REQUEST
            }
            HostError::NotLoaded | HostError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            data: e.data(),
            extra: None,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.data, "allowed": false });
        if let (Some(Value::Object(extra)), Some(obj)) = (self.extra, body.as_object_mut()) {
            obj.extend(extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        let retry = match (self.retry_after, self.status) {
            (Some(s), _) => Some(s),
            (None, StatusCode::SERVICE_UNAVAILABLE) => Some(1),
            _ => None,
        };
        if let Some(s) = retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        // A request whose body was cut off ends its connection: the rest of the body is
        // not waited for.
        if self.status == StatusCode::REQUEST_TIMEOUT {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            e.code,
            e.message,
            "send `Authorization: Bearer <credential>`: a service key (clearance keys create) or a user token from the configured issuer",
        )
    }
}

pub(crate) fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "auth.forbidden",
        message,
        "nothing was decided, written or revealed; ask with a credential scoped to it",
    )
}

/// An answer of the host's own, as JSON.
pub(crate) fn answer<T: serde::Serialize>(value: T) -> ApiResult {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| ApiError::internal(e.to_string()))
}

pub(crate) type ApiResult = Result<Json<Value>, ApiError>;
