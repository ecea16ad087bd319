//! Shared application state: configuration and handles to the backing services.
//! Instances keep nothing else, so any number of them can serve the same database and Redis.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::config::Config;
use crate::redis_store::RedisHandle;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: DatabaseConnection,
    pub redis: Option<RedisHandle>,
}
