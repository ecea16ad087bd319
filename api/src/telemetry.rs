//! Logging: `tracing` to stderr, text for people or JSON for log shippers.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// The migrator's own lines ("Applying migration …", "… has been applied") are quieted:
/// `db::migrate_up` logs one line per migration.
const QUIET: &str = "sea_orm_migration=warn";

pub fn init(config: &Config) {
    install(&config.log, config.log_format);
}

fn install(directives: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{directives},{QUIET}")))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in files or journald.
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second init (tests building several apps) keeps the first subscriber.
    drop(result);
}

/// A fatal error before or during start-up, as one line: a JSON log record when the logs are
/// JSON, so a log shipper sees it too; plain `renkei: …` on stderr otherwise. When the
/// configuration itself did not load, `RENKEI_LOG_FORMAT` still decides.
pub fn fatal(config: Option<&Config>, message: &str) {
    let format = match config {
        Some(c) => c.log_format,
        None => match std::env::var("RENKEI_LOG_FORMAT").as_deref() {
            Ok("json") => LogFormat::Json,
            _ => LogFormat::Text,
        },
    };
    match format {
        LogFormat::Json => {
            if config.is_none() {
                install("error", LogFormat::Json);
            }
            tracing::error!(target: "renkei", "{message}");
        }
        LogFormat::Text => eprintln!("renkei: {message}"),
    }
}
