//! The `renkei` command line: serve, migrate, schema.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "renkei",
    version,
    about = "Renkei: home medical and care collaboration backend"
)]
pub struct Cli {
    /// Configuration file (default: ./renkei.toml when it exists). RENKEI_* variables override it.
    #[arg(long, global = true, env = "RENKEI_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply pending migrations, then serve HTTPS until SIGTERM/SIGINT.
    Serve,
    /// Database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Print the GraphQL schema (SDL) to stdout.
    Schema,
    /// Print every setting with its default and meaning (the README's configuration table).
    Settings,
}

#[derive(Subcommand, Debug)]
pub enum MigrateAction {
    /// Apply all pending migrations.
    Up,
    /// Roll back the last applied migrations.
    Down {
        /// How many to roll back.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// List migrations and whether each is applied.
    Status,
}
