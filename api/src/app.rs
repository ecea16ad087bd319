//! Start-up: from a configuration to a bound, migrated, ready server.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use secrecy::ExposeSecret as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::auth::password::PasswordHasher;
use crate::auth::pki::MasterKey;
use crate::auth::ratelimit::RateLimiter;
use crate::auth::session::{SessionLimits, SessionStore};
use crate::auth::tls::{self, ServerIdentity, TlsConfigHandle};
use crate::auth::trust::{self, TrustStore};
use crate::config::Config;
use crate::graphql;
use crate::http::{self, HttpState};
use crate::redis_store::RedisHandle;
use crate::service::audit::AuditLog;
use crate::state::{AppState, TRUST_CHANNEL};

/// A server that has bound its port and is ready to accept connections.
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: TlsConfigHandle,
    state: AppState,
    router: axum::Router,
    background: Vec<JoinHandle<()>>,
    audit_writer: JoinHandle<()>,
    draining: Arc<std::sync::atomic::AtomicBool>,
}

impl App {
    /// Connects to the database (running pending migrations) and Redis, loads the TLS
    /// identity and the tenant CAs, bootstraps an empty database, and binds the listener.
    /// Any failure is one line naming what failed.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        create_private_dir(&config.data_dir)?;
        let mut db = crate::db::connect(&config).await?;
        // One instance migrates and bootstraps; the others wait here (released below).
        let migration_lock = crate::db::MigrationLock::acquire(&config).await?;
        let applied = crate::db::migrate_up(&db).await?;
        if applied > 0 {
            tracing::info!(applied, "database migrated");
        } else {
            tracing::info!("database schema up to date");
        }
        let redis = RedisHandle::connect(&config).await?;
        let master_key = Arc::new(load_master_key(&config)?);
        let concurrency = match config.password_hash_concurrency {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        };
        let hasher = PasswordHasher::new(concurrency);
        let limits = SessionLimits {
            idle: config.session_idle,
            absolute: config.session_absolute,
        };
        let (sessions, limiter) = match &redis {
            Some(r) => (
                SessionStore::redis(r.clone(), limits),
                RateLimiter::redis(r.clone()),
            ),
            None => (SessionStore::memory(limits), RateLimiter::memory()),
        };

        let identity = Arc::new(ServerIdentity::load(&config)?);
        let tls = TlsConfigHandle::new(trust::server_config(&identity, None)?);
        let trust = TrustStore::new(tls.clone(), identity);

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listener.local_addr().context("reading the bound address")?;

        // The audit writer gets its own handle, taken before statement counting starts: the
        // count is what requests run.
        let audit_db = db.clone();
        let statements = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = statements.clone();
        db.set_metric_callback(move |info| {
            // Placeholders only: bound values never reach the log.
            tracing::trace!(target: "renkei::sql", sql = %info.statement.sql, elapsed = ?info.elapsed);
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        let (audit, audit_writer) = AuditLog::start(
            audit_db,
            config.audit_buffer_events,
            config.audit_read_events,
        );
        let authz = crate::authz::enforcer::Authorizer::new(
            crate::authz::sync::snapshot(&db)
                .await
                .map_err(|e| anyhow::anyhow!("loading room memberships: {e:?}"))?,
        )
        .await
        .context("building the authorization enforcer")?;
        tracing::info!(
            groupings = authz.groupings(),
            "authorization enforcer loaded"
        );
        let blobs = crate::storage::FileStore::new(config.data_dir.join("attachments"))
            .with_context(|| {
                format!(
                    "creating the attachment store under {}",
                    config.data_dir.display()
                )
            })?;
        let state = AppState {
            events: crate::events::EventBus::new(redis.clone()),
            blobs: Arc::new(blobs),
            live_sessions: crate::graphql::subscription::LiveSessions::default(),
            live_feed: crate::graphql::live::LiveFeed::default(),
            live_audit: crate::graphql::live::LiveAudit::default(),
            live_loaders: crate::graphql::loaders::Loaders::new(&db),
            oidc: crate::service::oidc::Providers::new(&config)
                .context("setting up the identity provider client")?,
            statements,
            notify: crate::notify::worker::Wake::default(),
            authz: Arc::new(authz),
            audit,
            config: Arc::new(config),
            db,
            redis,
            master_key,
            hasher,
            sessions,
            limiter,
            trust,
        };
        if state.config.bootstrap
            && let Some(path) = crate::service::tenants::bootstrap(
                &state.db,
                &state.master_key,
                &state.hasher,
                &state.config.data_dir,
                state.config.default_time_zone,
            )
            .await?
        {
            tracing::info!(path = %path.display(), "bootstrap: created tenant demo with CITY_ADMIN admin; credentials written (shown nowhere else)");
        }
        migration_lock.release().await;
        state.trust.reload(&state.db).await?;
        let channels = crate::channels::Channels::new(&state.config, state.master_key.clone())
            .context("setting up the notification channels")?;
        let background = spawn_background(&state, Arc::new(channels));

        let schema = graphql::build_schema(&state.config, Some(state.clone()));
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let router = http::router(HttpState {
            app: state.clone(),
            schema,
            draining: draining.clone(),
        });
        Ok(App {
            listener,
            local_addr,
            tls,
            state,
            router,
            background,
            audit_writer,
            draining,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves; then `/readyz` says draining while the server keeps
    /// serving for `shutdown_drain`, and in-flight requests finish within the grace period.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tracing::info!(addr = %self.local_addr, "listening on https://{}", self.local_addr);
        let grace = self.state.config.shutdown_grace;
        let drain = self.state.config.shutdown_drain;
        let draining = self.draining.clone();
        let shutdown = async move {
            shutdown.await;
            draining.store(true, std::sync::atomic::Ordering::Relaxed);
            if !drain.is_zero() {
                tracing::info!(
                    ?drain,
                    "draining: /readyz answers 503 before connections close"
                );
                tokio::time::sleep(drain).await;
            }
        };
        tls::serve(self.listener, self.tls, self.router, shutdown, grace).await;
        for task in self.background {
            task.abort();
        }
        // Requests are drained: write every buffered read event before the database goes.
        self.state.live_audit.flush(&self.state.audit).await;
        self.state.audit.close().await;
        if let Err(e) = self.audit_writer.await {
            tracing::error!(error = %e, "audit writer ended abnormally");
        }
        self.state.db.clone().close().await.ok();
    }
}

/// Periodic work every instance does: trust refresh (safety net for missed pub/sub messages),
/// the daily certificate expiry check, and trust-change messages from other instances.
fn spawn_background(
    state: &AppState,
    channels: Arc<dyn crate::notify::transport::Transport>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let s = state.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(s.config.trust_refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = s.trust.reload(&s.db).await {
                tracing::warn!(error = format!("{e:#}"), "periodic trust refresh failed");
            }
        }
    }));
    let s = state.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(s.config.certificate_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match crate::service::certificates::mark_expired(&s.db).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "marked expired client certificates"),
                Err(e) => tracing::warn!(error = ?e, "certificate expiry check failed"),
            }
            match crate::notify::sweep::certificates(&s.db, &s.config).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(notices = n, "certificate expiry notices written"),
                Err(e) => tracing::warn!(error = ?e, "certificate expiry notices failed"),
            }
        }
    }));
    if let Some(redis) = &state.redis {
        let s = state.clone();
        tasks.push(redis.subscribe(TRUST_CHANNEL, move |_| {
            let s = s.clone();
            async move {
                if let Err(e) = s.trust.reload(&s.db).await {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "trust reload after a change message failed"
                    );
                }
            }
        }));
    }
    if let Some(redis) = &state.redis {
        let events = state.events.clone();
        tasks.push(
            redis.subscribe(crate::events::EVENTS_CHANNEL, move |message| {
                events.on_message(&message);
                std::future::ready(())
            }),
        );
    }
    let s = state.clone();
    tasks.push(tokio::spawn(async move {
        s.live_sessions.run(&s.sessions).await;
    }));
    if !state.config.notification_worker_interval.is_zero() {
        tasks.push(tokio::spawn(crate::notify::worker::run(
            state.clone(),
            channels,
        )));
    }
    let s = state.clone();
    tasks.push(tokio::spawn(async move {
        s.live_feed.run(&s.events, &s.db).await;
    }));
    let s = state.clone();
    tasks.push(tokio::spawn(async move {
        s.live_audit.run(&s.audit).await;
    }));
    if let Some(redis) = &state.redis {
        let s = state.clone();
        tasks.push(
            redis.subscribe(crate::authz::sync::AUTHZ_CHANNEL, move |message| {
                let s = s.clone();
                async move { crate::authz::sync::on_message(&s, &message).await }
            }),
        );
    }
    let s = state.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(s.config.authz_reload);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // loaded at start-up just now
        loop {
            tick.tick().await;
            if let Err(e) = crate::authz::sync::full_reload(&s.db, &s.authz).await {
                tracing::warn!(error = ?e, "periodic authorization reload failed");
            }
        }
    }));
    let sessions = state.sessions.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tick.tick().await;
            sessions.sweep();
        }
    }));
    let s = state.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(s.config.session_expiry_check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Logins older than this have ended for sure; a day more covers time the server was down.
        let window = s.config.session_absolute + std::time::Duration::from_secs(86_400);
        loop {
            tick.tick().await;
            match crate::service::audit::record_session_expiries(&s.db, &s.sessions, window).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(expired = n, "recorded session expiries"),
                Err(e) => tracing::warn!(error = ?e, "recording session expiries failed"),
            }
        }
    }));
    tasks
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting data directory {}", dir.display()))?;
    }
    Ok(())
}

/// `RENKEI_MASTER_KEY`, or for the embedded default a key generated once into the data dir.
pub fn load_master_key(config: &Config) -> anyhow::Result<MasterKey> {
    if let Some(key) = &config.master_key {
        return MasterKey::from_base64(key.expose_secret())
            .map_err(|e| anyhow::anyhow!("RENKEI_MASTER_KEY: {e}"));
    }
    let path = config.data_dir.join("master.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => MasterKey::from_base64(text.trim())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = MasterKey::generate();
            crate::fsutil::write_private(&path, key.to_base64().expose_secret().as_bytes())?;
            tracing::info!(path = %path.display(), "generated a master key for the embedded default");
            Ok(key)
        }
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
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
