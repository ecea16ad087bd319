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
    /// Tenants (platform operator): create one with its CA and first CITY_ADMIN.
    Tenant {
        #[command(subcommand)]
        action: TenantAction,
    },
    /// Client certificates: renewal lists, expiry marking.
    Certificates {
        #[command(subcommand)]
        action: CertificatesAction,
    },
    /// The audit trail: export, purge past retention, verify.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditAction {
    /// Write a tenant's audit events, oldest first, as JSON lines or CSV.
    Export {
        #[arg(long)]
        tenant: String,
        /// From this date (YYYY-MM-DD, midnight in the tenant's time zone) or RFC 3339 time, inclusive.
        #[arg(long)]
        from: Option<String>,
        /// Up to this date or time, exclusive.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: crate::ops_audit::ExportFormat,
        /// Write here (mode 0600) instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Remove events older than a date past the retention period (audit_retention_days),
    /// leaving a checkpoint signed with the tenant CA key so the rest still verifies.
    Purge {
        #[arg(long)]
        tenant: String,
        /// YYYY-MM-DD (midnight in the tenant's time zone) or RFC 3339 time.
        #[arg(long)]
        before: String,
    },
    /// Recompute a tenant's hash chain; exit status 1 when it is broken.
    Verify {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TenantAction {
    /// Create a tenant, its certificate authority and a first CITY_ADMIN. The admin's password,
    /// PKCS#12 bundle and its password are written once to `--out` (mode 0600), never printed.
    Create {
        /// Short lowercase name used in URLs and certificates, e.g. `kita`.
        #[arg(long)]
        slug: String,
        /// The municipality's name, e.g. 北区.
        #[arg(long)]
        name: String,
        /// Login ID of the first CITY_ADMIN.
        #[arg(long)]
        admin: String,
        /// Display name of the first CITY_ADMIN.
        #[arg(long, default_value = "管理者")]
        admin_name: String,
        /// Folder for credentials.json, the PKCS#12 bundle and ca.pem (default: <data_dir>/tenants/<slug>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The tenant's identity provider for federated login of its staff (OpenID Connect).
    Oidc {
        #[command(subcommand)]
        action: OidcAction,
    },
    /// The tenant's push gateway for native apps (HMAC-signed, Matrix push-gateway shaped).
    PushGateway {
        #[command(subcommand)]
        action: crate::ops_push::PushGatewayAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum OidcAction {
    /// Set (or replace) the provider. Checks the issuer's discovery document first. The client
    /// secret is read from the environment variable named by `--client-secret-env`, never from
    /// the command line, and stored sealed with the master key.
    Set {
        #[arg(long)]
        tenant: String,
        /// Issuer URL exactly as the provider's discovery document states it, e.g.
        /// https://sso.example.jp/realms/kita or https://login.microsoftonline.com/<tenant-id>/v2.0
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        client_id: String,
        /// Name of the environment variable holding the client secret.
        #[arg(long)]
        client_secret_env: String,
        /// Roles that may log in this way, e.g. CITY_ADMIN or CITY_ADMIN,FACILITY_ADMIN.
        #[arg(long)]
        allowed_roles: String,
        /// Link an unlinked subject at its first login when the ID token carries a verified
        /// e-mail address equal to exactly one user's.
        #[arg(long)]
        link_by_email: bool,
    },
    /// Show the provider (never the secret).
    Show {
        #[arg(long)]
        tenant: String,
    },
    /// Remove the provider and every account link to it.
    Remove {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertificatesAction {
    /// List ACTIVE certificates that expire within the period, soonest first (to renew them).
    Expiring {
        #[arg(long)]
        tenant: String,
        /// Period such as `30d`, `12h` or `90m`.
        #[arg(long, default_value = "30d", value_parser = parse_period)]
        within: std::time::Duration,
    },
    /// Mark certificates past their end date EXPIRED now (the server also does this daily).
    MarkExpired,
}

/// `30d`, `12h`, `90m`, `45s`.
pub fn parse_period(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a period like 30d, 12h or 90m"))?;
    let secs = match unit {
        "d" => n * 86_400,
        "h" => n * 3_600,
        "m" => n * 60,
        "s" | "" => n,
        _ => return Err(format!("'{s}': unit must be d, h, m or s")),
    };
    Ok(std::time::Duration::from_secs(secs))
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
