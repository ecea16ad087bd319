//! Shared application state: configuration and handles to the backing services.
//! Instances keep nothing else, so any number of them can serve the same database and Redis.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::auth::password::PasswordHasher;
use crate::auth::pki::MasterKey;
use crate::auth::ratelimit::RateLimiter;
use crate::auth::session::SessionStore;
use crate::auth::trust::TrustStore;
use crate::authz::enforcer::Authorizer;
use crate::config::Config;
use crate::events::EventBus;
use crate::redis_store::RedisHandle;
use crate::service::audit::AuditLog;
use crate::storage::BlobStore;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: DatabaseConnection,
    pub redis: Option<RedisHandle>,
    pub master_key: Arc<MasterKey>,
    pub hasher: PasswordHasher,
    pub sessions: SessionStore,
    pub limiter: RateLimiter,
    pub trust: TrustStore,
    /// Read events (buffered); change events go through `service::audit::record`.
    pub audit: AuditLog,
    /// The casbin enforcer: tenant roles and room memberships of this instance.
    pub authz: Arc<Authorizer>,
    /// Live events for subscriptions (Redis pub/sub, or in-process without Redis).
    pub events: EventBus,
    /// Attachment bytes.
    pub blobs: Arc<dyn BlobStore>,
    /// Which login sessions live subscriptions depend on, checked together.
    pub live_sessions: crate::graphql::subscription::LiveSessions,
    /// Live events with their rows, read once per instance for every stream.
    pub live_feed: crate::graphql::live::LiveFeed,
    /// Live deliveries, gathered per stream and room for the audit.
    pub live_audit: crate::graphql::live::LiveAudit,
    /// Identity providers of federated login (discovery cache, HTTP client).
    pub oidc: crate::service::oidc::Providers,
    /// DataLoaders shared by the instance's WebSocket connections.
    pub live_loaders: crate::graphql::loaders::Loaders,
    /// Wakes this instance's notification delivery worker.
    pub notify: crate::notify::worker::Wake,
    /// SQL statements run through `db` (not the audit writer's), for tests and benchmarks.
    pub statements: Arc<std::sync::atomic::AtomicU64>,
}

/// Channel on which instances tell each other that tenant CAs or CRLs changed.
pub const TRUST_CHANNEL: &str = "trust-changed";

impl AppState {
    /// After a tenant was created or a certificate revoked: reload trust here at once, and tell
    /// the other instances (they also re-check every `trust_refresh_seconds`).
    pub async fn trust_changed(&self) {
        if let Err(e) = self.trust.reload(&self.db).await {
            tracing::error!(
                error = format!("{e:#}"),
                "reloading client certificate trust failed"
            );
        }
        if let Some(redis) = &self.redis
            && let Err(e) = redis.publish(TRUST_CHANNEL, "reload").await
        {
            tracing::warn!(error = %e, "could not announce a trust change; others pick it up on their next refresh");
        }
    }
}
