//! What a resolver knows about the request: the connection it came over and the credentials
//! it carried. Authentication turns these into a caller.

use async_graphql::Context;
use secrecy::SecretString;

use crate::auth::tls::ConnectionInfo;
use crate::error::AppError;
use crate::state::AppState;

/// Per-request facts, put into the GraphQL request data by the HTTP and WebSocket handlers.
pub struct RequestContext {
    pub connection: ConnectionInfo,
    /// `Authorization: Bearer …`, or the session cookie.
    pub session_token: Option<SecretString>,
}

pub trait ContextExt {
    fn state(&self) -> Result<&AppState, AppError>;
    fn request(&self) -> Result<&RequestContext, AppError>;
}

impl ContextExt for Context<'_> {
    fn state(&self) -> Result<&AppState, AppError> {
        self.data::<AppState>()
            .map_err(|_| AppError::internal(anyhow::anyhow!("AppState missing from schema data")))
    }
    fn request(&self) -> Result<&RequestContext, AppError> {
        self.data::<RequestContext>().map_err(|_| {
            AppError::internal(anyhow::anyhow!("RequestContext missing from request data"))
        })
    }
}
