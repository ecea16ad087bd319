//! The one error type of the API, mapped one-to-one onto the contract's `extensions.code`s.
//! Internal causes are logged here with context and never reach the client.

use async_graphql::ErrorExtensions;

/// Every refused operation ends as one of these. The variant decides the contract code.
///
/// It deliberately does not implement `Display`: async-graphql converts any `Display` error
/// into a GraphQL error without extensions, and every error here must carry its code. So `?`
/// in a resolver goes through [`From<AppError> for async_graphql::Error`], which sets them.
#[derive(Debug)]
pub enum AppError {
    Unauthenticated,
    CertificateRequired,
    Forbidden,
    NotFound,
    BadUserInput {
        field: String,
        message: String,
    },
    Conflict(String),
    AccountLocked {
        retry_after_seconds: Option<u64>,
    },
    AccountSuspended,
    PasswordChangeRequired,
    PledgeRequired,
    RateLimited {
        retry_after_seconds: u64,
    },
    /// Refused at the HTTP level before any GraphQL ran (body too large, wrong content type,
    /// a batch): `BAD_REQUEST` with this status.
    BadRequest {
        status: axum::http::StatusCode,
        message: String,
    },
    Unavailable(anyhow::Error),
    Internal(anyhow::Error),
}

impl AppError {
    pub fn bad_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::BadUserInput {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        AppError::Internal(cause.into())
    }

    pub fn unavailable(cause: impl Into<anyhow::Error>) -> Self {
        AppError::Unavailable(cause.into())
    }

    /// The message the client sees: fixed text, or the validation message we wrote ourselves.
    pub fn message(&self) -> String {
        match self {
            AppError::Unauthenticated => "authentication required".into(),
            AppError::CertificateRequired => "a valid client certificate is required".into(),
            AppError::Forbidden => "not allowed".into(),
            AppError::NotFound => "not found".into(),
            AppError::BadUserInput { message, .. } => message.clone(),
            AppError::Conflict(message) => message.clone(),
            AppError::AccountLocked { .. } => "account locked after too many failed logins".into(),
            AppError::AccountSuspended => "account suspended".into(),
            AppError::PasswordChangeRequired => "the password must be changed first".into(),
            AppError::PledgeRequired => "the pledge (form 6) must be accepted first".into(),
            AppError::RateLimited { .. } => "too many requests".into(),
            AppError::BadRequest { message, .. } => message.clone(),
            AppError::Unavailable(_) => "a backing service is unavailable; retry later".into(),
            AppError::Internal(_) => "internal error".into(),
        }
    }

    /// The contract's `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Unauthenticated => "UNAUTHENTICATED",
            AppError::CertificateRequired => "CERTIFICATE_REQUIRED",
            AppError::Forbidden => "FORBIDDEN",
            AppError::NotFound => "NOT_FOUND",
            AppError::BadUserInput { .. } => "BAD_USER_INPUT",
            AppError::Conflict(_) => "CONFLICT",
            AppError::AccountLocked { .. } => "ACCOUNT_LOCKED",
            AppError::AccountSuspended => "ACCOUNT_SUSPENDED",
            AppError::PasswordChangeRequired => "PASSWORD_CHANGE_REQUIRED",
            AppError::PledgeRequired => "PLEDGE_REQUIRED",
            AppError::RateLimited { .. } => "RATE_LIMITED",
            AppError::BadRequest { .. } => "BAD_REQUEST",
            AppError::Unavailable(_) => "UNAVAILABLE",
            AppError::Internal(_) => "INTERNAL",
        }
    }

    pub fn bad_request(status: axum::http::StatusCode, message: impl Into<String>) -> Self {
        AppError::BadRequest {
            status,
            message: message.into(),
        }
    }

    /// The HTTP status of a plain route's (or a refused HTTP request's) answer with this error.
    pub fn http_status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            AppError::Unauthenticated => StatusCode::UNAUTHORIZED,
            AppError::CertificateRequired
            | AppError::Forbidden
            | AppError::AccountLocked { .. }
            | AppError::AccountSuspended
            | AppError::PasswordChangeRequired
            | AppError::PledgeRequired => StatusCode::FORBIDDEN,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::BadUserInput { .. } => StatusCode::BAD_REQUEST,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::BadRequest { status, .. } => *status,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Converts to the GraphQL error the client sees, logging what the client must not see.
    pub fn into_graphql(self) -> async_graphql::Error {
        match &self {
            AppError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
            }
            AppError::Unavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "backing service unavailable");
            }
            _ => {}
        }
        let code = self.code();
        let message = self.message();
        async_graphql::Error::new(message).extend_with(|_, ext| {
            ext.set("code", code);
            match &self {
                AppError::BadUserInput { field, .. } => ext.set("field", field.as_str()),
                AppError::AccountLocked {
                    retry_after_seconds: Some(secs),
                } => ext.set("retryAfterSeconds", *secs),
                AppError::RateLimited {
                    retry_after_seconds,
                } => ext.set("retryAfterSeconds", *retry_after_seconds),
                _ => {}
            }
        })
    }
}

/// The one HTTP face of an error: its status and the GraphQL-shaped body
/// `{"errors":[{"message", "extensions":{"code", …}}]}` every route answers with.
impl axum::response::IntoResponse for AppError {
    fn into_response(self) -> axum::response::Response {
        let status = self.http_status();
        let retry_after = match &self {
            AppError::RateLimited {
                retry_after_seconds,
            } => Some(*retry_after_seconds),
            _ => None,
        };
        let error = self.into_graphql();
        let body = serde_json::json!({ "errors": [{
            "message": error.message,
            "extensions": error.extensions,
        }] });
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<AppError> for async_graphql::Error {
    fn from(err: AppError) -> Self {
        err.into_graphql()
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(err: sea_orm::DbErr) -> Self {
        use sea_orm::{DbErr, RuntimeErr, SqlErr};
        if let Some(SqlErr::UniqueConstraintViolation(detail)) = err.sql_err() {
            tracing::info!(detail, "unique constraint violation");
            return AppError::Conflict("already exists".into());
        }
        match err {
            DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => AppError::Unavailable(err.into()),
            DbErr::Query(RuntimeErr::SqlxError(ref e))
            | DbErr::Exec(RuntimeErr::SqlxError(ref e))
                if is_connection_error(e) =>
            {
                AppError::Unavailable(err.into())
            }
            // sea-orm reports a dead connection under a statement like this, without the cause.
            DbErr::Query(RuntimeErr::Internal(ref m))
            | DbErr::Exec(RuntimeErr::Internal(ref m))
                if m.contains("connection") =>
            {
                AppError::Unavailable(err.into())
            }
            other => AppError::Internal(other.into()),
        }
    }
}

/// Errors of the connection rather than of the statement: the database went away (restart,
/// failover, `pg_terminate_backend`), refuses connections, or the pool had none to give.
fn is_connection_error(e: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error;
    match e {
        Error::Io(_)
        | Error::Tls(_)
        | Error::Protocol(_)
        | Error::PoolTimedOut
        | Error::PoolClosed
        | Error::WorkerCrashed => true,
        Error::Database(db) => db.code().is_some_and(|code| is_connection_sqlstate(&code)),
        _ => false,
    }
}

/// PostgreSQL's connection exceptions (class 08), administrator shutdown and crash (57P01-03),
/// and too many connections (53300); SQLite's busy/locked never count.
fn is_connection_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
}

impl From<redis::RedisError> for AppError {
    fn from(err: redis::RedisError) -> Self {
        AppError::Unavailable(err.into())
    }
}

pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_error_never_leaks_its_cause() {
        let err = AppError::internal(anyhow::anyhow!("password=hunter2 at db host 10.0.0.1"));
        let gql = err.into_graphql();
        assert_eq!(gql.message, "internal error");
        let ext = format!("{:?}", gql.extensions);
        assert!(ext.contains("INTERNAL"));
        assert!(!ext.contains("hunter2"));
    }

    #[test]
    fn bad_input_names_the_field() {
        let gql = AppError::bad_input("temperatureCelsius", "out of range").into_graphql();
        let ext = format!("{:?}", gql.extensions);
        assert!(ext.contains("BAD_USER_INPUT"), "{ext}");
        assert!(ext.contains("temperatureCelsius"), "{ext}");
    }
}
