//! Start-up: from a configuration to a bound, migrated, ready server.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::auth::tls::{self, ServerIdentity, TlsConfigHandle};
use crate::config::Config;
use crate::graphql;
use crate::http::{self, HttpState};
use crate::redis_store::RedisHandle;
use crate::state::AppState;

/// A server that has bound its port and is ready to accept connections.
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: TlsConfigHandle,
    state: AppState,
    router: axum::Router,
}

impl App {
    /// Connects to the database (running pending migrations) and Redis, loads the TLS
    /// identity, and binds the listener. Any failure is one line naming what failed.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let db = crate::db::connect(&config).await?;
        let applied = crate::db::migrate_up(&db).await?;
        if applied > 0 {
            tracing::info!(applied, "database migrated");
        } else {
            tracing::info!("database schema up to date");
        }
        let redis = RedisHandle::connect(&config).await?;
        let identity = ServerIdentity::load(&config)?;
        let tls = TlsConfigHandle::new(tls::server_config(&identity)?);
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listener.local_addr().context("reading the bound address")?;

        let state = AppState {
            config: std::sync::Arc::new(config),
            db,
            redis,
        };
        let schema = graphql::build_schema(&state.config, Some(state.clone()));
        let router = http::router(HttpState {
            app: state.clone(),
            schema,
        });
        Ok(App {
            listener,
            local_addr,
            tls,
            state,
            router,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests within the grace period.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tracing::info!(addr = %self.local_addr, "listening on https://{}", self.local_addr);
        let grace = self.state.config.shutdown_grace;
        tls::serve(self.listener, self.tls, self.router, shutdown, grace).await;
        self.state.db.clone().close().await.ok();
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
