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

/// Held while one instance migrates and bootstraps, so any number may start at once on an empty
/// database: the others wait here, then find the schema current and the tenant made.
/// PostgreSQL: a session advisory lock on a connection of its own (released when that connection
/// ends, so a crashed holder frees it). SQLite: an exclusive lock on `<database file>.migrate-lock`.
pub struct MigrationLock {
    held: Held,
}

enum Held {
    Postgres(sea_orm::sqlx::PgConnection),
    File(std::fs::File),
}

/// The advisory lock key: "renkei.migrate" folded into an i64, the same in every instance.
const PG_MIGRATION_LOCK_KEY: i64 = 0x7265_6e6b_6569_6d67;

impl MigrationLock {
    pub async fn acquire(config: &Config) -> anyhow::Result<MigrationLock> {
        use sea_orm::sqlx::Connection as _;
        if config.database_url.is_sqlite() {
            let path = sqlite_lock_path(config);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening the migration lock {}", path.display()))?;
            let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                .await
                .context("waiting for the migration lock")?
                .with_context(|| format!("locking {}", path.display()))?;
            return Ok(MigrationLock {
                held: Held::File(file),
            });
        }
        let mut conn = sea_orm::sqlx::PgConnection::connect(config.database_url.expose())
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "database {} unreachable: {}",
                    config.database_url.redacted(),
                    one_line(&e.to_string())
                )
            })?;
        sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(PG_MIGRATION_LOCK_KEY)
            .execute(&mut conn)
            .await
            .context("taking the migration advisory lock")?;
        Ok(MigrationLock {
            held: Held::Postgres(conn),
        })
    }

    pub async fn release(self) {
        use sea_orm::sqlx::Connection as _;
        match self.held {
            Held::Postgres(mut conn) => {
                // Closing the session releases the lock too; unlocking first says so sooner.
                let _ = sea_orm::sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(PG_MIGRATION_LOCK_KEY)
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
            Held::File(file) => {
                let _ = file.unlock();
            }
        }
    }
}

/// `<database file>.migrate-lock` beside the SQLite file, or in the data directory.
fn sqlite_lock_path(config: &Config) -> std::path::PathBuf {
    let url = config.database_url.expose();
    let path = url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") {
        config.data_dir.join("renkei.db.migrate-lock")
    } else {
        std::path::PathBuf::from(format!("{path}.migrate-lock"))
    }
}

/// The migrations the database has not applied, read without writing anything (the migrator's
/// own status query first creates its table). None applied when the table does not exist.
pub async fn pending_migrations(db: &DatabaseConnection) -> anyhow::Result<Vec<String>> {
    use sea_orm::ConnectionTrait as _;
    let backend = db.get_database_backend();
    let applied: std::collections::HashSet<String> = match db
        .query_all_raw(sea_orm::Statement::from_string(
            backend,
            "SELECT version FROM seaql_migrations",
        ))
        .await
    {
        Ok(rows) => rows
            .iter()
            .filter_map(|r| r.try_get::<String>("", "version").ok())
            .collect(),
        Err(_) => std::collections::HashSet::new(),
    };
    Ok(Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .filter(|name| !applied.contains(name))
        .collect())
}

/// An operator command that only reads met a database whose schema is behind this binary.
#[derive(Debug, thiserror::Error)]
#[error(
    "the database schema is behind this renkei ({0} migration(s) pending): run `renkei migrate up` (or start `renkei serve`) first; this command only reads and never migrates"
)]
pub struct SchemaBehind(pub usize);

/// Refuses with [`SchemaBehind`] unless every migration is applied.
pub async fn require_current_schema(db: &DatabaseConnection) -> anyhow::Result<()> {
    let pending = pending_migrations(db).await?;
    if pending.is_empty() {
        Ok(())
    } else {
        Err(SchemaBehind(pending.len()).into())
    }
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
