//! The Redis connection: one multiplexed connection that reconnects by itself, keys under
//! the configured prefix, every command bounded by a timeout so a dead Redis fails fast.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::Config;

#[derive(Clone)]
pub struct RedisHandle {
    client: redis::Client,
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
            ConnectionManager::new_with_config(client.clone(), manager_config),
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
            client,
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

    /// Publishes on a channel under the prefix.
    pub async fn publish(&self, channel: &str, message: &str) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        let channel = self.key(channel);
        tokio::time::timeout(
            self.timeout,
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .query_async::<i64>(&mut conn),
        )
        .await
        .map_err(|_| anyhow::anyhow!("redis publish timed out"))??;
        Ok(())
    }

    /// Calls `on_message` for every message on `channel` until the process ends, reconnecting
    /// (with a pause) whenever Redis goes away.
    pub fn subscribe<F, Fut>(&self, channel: &str, on_message: F) -> tokio::task::JoinHandle<()>
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let client = self.client.clone();
        let channel = self.key(channel);
        tokio::spawn(async move {
            use futures_util::StreamExt as _;
            loop {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if let Err(e) = pubsub.subscribe(&channel).await {
                            tracing::warn!(error = %e, channel, "redis subscribe failed");
                        } else {
                            let mut messages = pubsub.on_message();
                            while let Some(msg) = messages.next().await {
                                let payload: String = msg.get_payload().unwrap_or_default();
                                on_message(payload).await;
                            }
                            tracing::warn!(channel, "redis subscription ended; reconnecting");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, channel, "redis pub/sub connect failed"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
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
