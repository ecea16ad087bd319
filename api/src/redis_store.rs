//! The Redis connection: one multiplexed connection that reconnects by itself, keys under
//! the configured prefix, every command bounded by a timeout so a dead Redis fails fast.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::Config;

#[derive(Clone)]
pub struct RedisHandle {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl RedisHandle {
    pub async fn connect(config: &Config) -> anyhow::Result<Option<RedisHandle>> {
        let Some(url) = &config.redis_url else {
            return Ok(None);
        };
        let redacted = crate::config::redact_url(url.expose());
        let client = redis::Client::open(url.expose())
            .map_err(|e| anyhow::anyhow!("redis {redacted}: {e}"))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.redis_timeout))
            .set_response_timeout(Some(config.redis_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = tokio::time::timeout(
            config.redis_timeout * 3,
            ConnectionManager::new_with_config(client, manager_config),
        )
        .await
        .map_err(|_| anyhow::anyhow!("redis {redacted} unreachable: timed out"))?
        .map_err(|e| {
            anyhow::anyhow!(
                "redis {redacted} unreachable: {}",
                crate::db::one_line(&e.to_string())
            )
        })?;
        Ok(Some(RedisHandle {
            conn,
            prefix: config.redis_prefix.clone(),
            timeout: config.redis_timeout,
        }))
    }

    /// The full key for a name under this deployment's prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        let pong: String =
            tokio::time::timeout(self.timeout, redis::cmd("PING").query_async(&mut conn))
                .await
                .map_err(|_| anyhow::anyhow!("redis ping timed out"))??;
        anyhow::ensure!(pong == "PONG", "unexpected redis reply");
        Ok(())
    }
}
