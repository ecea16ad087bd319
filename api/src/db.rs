//! Database connection and migrations, the same for SQLite and PostgreSQL.

use anyhow::Context as _;
use migration::{Migrator, MigratorTrait as _};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait as _,
};

use crate::config::Config;

/// Connects with the configured pool and timeouts. SQLite gets WAL, foreign keys and a busy
/// timeout, so concurrent requests wait for the write lock instead of failing.
pub async fn connect(config: &Config) -> anyhow::Result<DatabaseConnection> {
    if config.database_url.is_sqlite() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    }
    let mut options = ConnectOptions::new(config.database_url.expose().to_string());
    options
        .max_connections(config.database_max_connections)
        .min_connections(1)
        .connect_timeout(config.database_connect_timeout)
        .acquire_timeout(config.database_connect_timeout)
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(std::time::Duration::from_secs(10))
        });
    let connect = Database::connect(options);
    // The pool's own timeout covers acquiring; this bounds DNS and TCP as well.
    match tokio::time::timeout(config.database_connect_timeout * 2, connect).await {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(anyhow::anyhow!(
            "database {} unreachable: {}",
            config.database_url.redacted(),
            one_line(&e.to_string())
        )),
        Err(_) => Err(anyhow::anyhow!(
            "database {} unreachable: timed out after {:?}",
            config.database_url.redacted(),
            config.database_connect_timeout * 2
        )),
    }
}

/// Applies every pending migration and says how many there were.
pub async fn migrate_up(db: &DatabaseConnection) -> anyhow::Result<usize> {
    let pending = Migrator::get_pending_migrations(db)
        .await
        .context("reading migration status")?;
    for m in &pending {
        tracing::info!(migration = m.name(), "applying migration");
    }
    Migrator::up(db, None)
        .await
        .context("applying migrations")?;
    Ok(pending.len())
}

/// Opens a transaction that will write. On SQLite it takes the write lock at once (BEGIN
/// IMMEDIATE): a deferred transaction that reads first could not upgrade to a writer if another
/// connection wrote meanwhile, and would fail instead of waiting. PostgreSQL ignores the mode.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
