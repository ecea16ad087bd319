//! The end-to-end harness: `spawn_app()` starts a real Renkei server over TLS on port 0 with
//! its own database (a fresh SQLite file or PostgreSQL database) and its own Redis key prefix,
//! and hands out typed clients that can present client certificates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod client;
pub mod fixtures;
pub mod oidc;
pub mod peers;
pub mod proxy;
pub mod stats;
pub mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use renkei::app::App;
use renkei::config::Config;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tokio::sync::oneshot;

pub use client::{Gql, TestClient, UploadFile};
pub use fixtures::Person;

/// Which database the suite runs on: `RENKEI_TEST_DB=sqlite|postgres` (default sqlite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn backend() -> Backend {
    match std::env::var("RENKEI_TEST_DB").as_deref() {
        Ok("postgres") | Ok("postgresql") | Ok("pg") => Backend::Postgres,
        Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("RENKEI_TEST_DB={other}: expected sqlite or postgres"),
    }
}

pub fn pg_admin_url() -> String {
    std::env::var("RENKEI_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("RENKEI_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Knobs a test may turn; everything else is the server's default configuration.
#[derive(Debug, Clone, Default)]
pub struct TestOptions {
    /// Use Redis for this app. Default: yes on PostgreSQL, no (in-process stores) on SQLite, so
    /// the two suite runs cover both stores.
    pub redis: Option<bool>,
    /// Point Redis at this URL instead (e.g. a [`proxy::TcpProxy`] in front of the real one).
    pub redis_url: Option<String>,
    /// Point the database at this URL instead of the per-test one (PostgreSQL only).
    pub database_url: Option<String>,
    /// Extra `RENKEI_*` settings.
    pub env: Vec<(String, String)>,
    /// Share another app's database and Redis prefix (for multi-instance tests).
    pub share_with: Option<SharedBackends>,
}

/// What two instances of one deployment share.
#[derive(Debug, Clone)]
pub struct SharedBackends {
    pub database_url: String,
    pub redis_prefix: String,
    pub data_dir: PathBuf,
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base_url: String,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub redis_prefix: String,
    pub uses_redis: bool,
    /// Direct database access for assertions the API cannot make.
    pub db: DatabaseConnection,
    pub server_ca_pem: Vec<u8>,
    state: renkei::state::AppState,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _tempdir: Option<Arc<tempfile::TempDir>>,
    pg_database: Option<String>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestOptions::default()).await
}

pub async fn spawn_app_with(opts: TestOptions) -> TestApp {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (tempdir, data_dir) = match &opts.share_with {
        Some(shared) => (None, shared.data_dir.clone()),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("renkei-test-")
                .tempdir()
                .unwrap();
            let path = dir.path().to_path_buf();
            (Some(Arc::new(dir)), path)
        }
    };
    let mut pg_database = None;
    let database_url = if let Some(shared) = &opts.share_with {
        shared.database_url.clone()
    } else if let Some(url) = &opts.database_url {
        url.clone()
    } else {
        match backend() {
            Backend::Sqlite => format!("sqlite://{}/renkei.db?mode=rwc", data_dir.display()),
            Backend::Postgres => {
                let name = format!("renkei_test_{id}");
                let admin = Database::connect(pg_admin_url())
                    .await
                    .expect("PostgreSQL for tests");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .unwrap();
                admin.close().await.ok();
                pg_database = Some(name.clone());
                replace_db_name(&pg_admin_url(), &name)
            }
        }
    };
    let uses_redis =
        opts.redis.unwrap_or(backend() == Backend::Postgres) || opts.redis_url.is_some();
    let redis_prefix = match &opts.share_with {
        Some(shared) => shared.redis_prefix.clone(),
        None => format!("renkei-test:{id}:"),
    };

    let mut env: Vec<(String, String)> = vec![
        ("RENKEI_LISTEN".into(), "127.0.0.1:0".into()),
        ("RENKEI_DATA_DIR".into(), data_dir.display().to_string()),
        ("RENKEI_DATABASE_URL".into(), database_url.clone()),
        ("RENKEI_DATABASE_MAX_CONNECTIONS".into(), "5".into()),
        ("RENKEI_REDIS_PREFIX".into(), redis_prefix.clone()),
        ("RENKEI_SHUTDOWN_GRACE_SECONDS".into(), "5".into()),
        // Tests make their own tenants; the demo tenant is tested on its own.
        ("RENKEI_BOOTSTRAP".into(), "false".into()),
        // Argon2id at full strength is the point, but tests log in a lot.
        ("RENKEI_PASSWORD_HASH_CONCURRENCY".into(), "4".into()),
        (
            "RENKEI_LOG".into(),
            std::env::var("RENKEI_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        ),
    ];
    if uses_redis {
        env.push((
            "RENKEI_REDIS_URL".into(),
            opts.redis_url.clone().unwrap_or_else(redis_url),
        ));
    }
    env.extend(opts.env.iter().cloned());
    let config = Config::from_sources(None, env).expect("test configuration");
    renkei::telemetry::init(&config);

    let app = App::build(config).await.expect("the app starts");
    let addr = app.local_addr();
    let state = app.state().clone();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        rx.await.ok();
    }));
    let server_ca_pem = std::fs::read(data_dir.join("tls/server.crt")).unwrap();
    let db = Database::connect(database_url.clone()).await.unwrap();
    TestApp {
        addr,
        base_url: format!("https://127.0.0.1:{}", addr.port()),
        data_dir,
        database_url,
        redis_prefix,
        uses_redis,
        db,
        server_ca_pem,
        state,
        shutdown: Some(tx),
        server: Some(server),
        _tempdir: tempdir,
        pg_database,
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl TestApp {
    /// A client with no client certificate.
    pub fn client(&self) -> TestClient {
        TestClient::new(self, None)
    }

    /// A client presenting this PEM certificate chain and private key.
    pub fn client_with_identity(&self, identity_pem: &[u8]) -> TestClient {
        TestClient::new(self, Some(identity_pem))
    }

    /// What a second instance of the same deployment needs.
    pub fn shared_backends(&self) -> SharedBackends {
        SharedBackends {
            database_url: self.database_url.clone(),
            redis_prefix: self.redis_prefix.clone(),
            data_dir: self.data_dir.clone(),
        }
    }

    /// Sends the shutdown signal and waits for the server to drain.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.send(()).ok();
        }
        if let Some(server) = self.server.take() {
            server.await.ok();
        }
    }

    /// Triggers shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        if let Some(tx) = self.shutdown.take() {
            tx.send(()).ok();
        }
        self.server.take()
    }

    /// The server's own state, for fixtures made through service functions.
    pub fn state(&self) -> &renkei::state::AppState {
        &self.state
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.send(()).ok();
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        if let Some(name) = self.pg_database.take() {
            // Drop runs inside the test's runtime, which cannot block on itself.
            std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    if let Ok(admin) = Database::connect(pg_admin_url()).await {
                        admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            ))
                            .await
                            .ok();
                        admin.close().await.ok();
                    }
                });
            })
            .join()
            .ok();
        }
    }
}
