//! One typed configuration, layered: built-in defaults, then an optional `renkei.toml`,
//! then `RENKEI_*` environment variables. Every setting is declared once in [`SETTINGS`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// A documented setting: its key in `renkei.toml`, its default and what it means.
/// The environment variable is `RENKEI_` + the key in upper case.
pub struct Setting {
    pub key: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// Every setting Renkei reads. The README's configuration table is checked against this list.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "env",
        default: "development",
        doc: "`development` or `production`. Production turns GraphQL introspection and GraphiQL off.",
    },
    Setting {
        key: "data_dir",
        default: "./data",
        doc: "Folder for the SQLite database, the generated TLS certificate, the master key, attachments and bootstrap credentials.",
    },
    Setting {
        key: "listen",
        default: "127.0.0.1:8443",
        doc: "Address and port of the HTTPS listener (`0.0.0.0:8443` in containers; port 0 picks a free port).",
    },
    Setting {
        key: "database_url",
        default: "sqlite://<data_dir>/renkei.db",
        doc: "`sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB`. Secret: never logged.",
    },
    Setting {
        key: "database_max_connections",
        default: "10",
        doc: "Connection pool size.",
    },
    Setting {
        key: "database_connect_timeout_seconds",
        default: "5",
        doc: "How long start-up and requests wait for a database connection.",
    },
    Setting {
        key: "redis_url",
        default: "(unset)",
        doc: "`redis://HOST:PORT[/DB]`. Unset: sessions, rate limits and events use in-process stores (one instance only). Secret.",
    },
    Setting {
        key: "redis_prefix",
        default: "renkei:",
        doc: "Prefix of every Redis key and channel, so several deployments can share one Redis.",
    },
    Setting {
        key: "redis_timeout_seconds",
        default: "3",
        doc: "Connect and command timeout for Redis.",
    },
    Setting {
        key: "tls_cert",
        default: "(unset)",
        doc: "PEM certificate chain of the server. Unset: a self-signed localhost certificate generated once into `<data_dir>/tls/`.",
    },
    Setting {
        key: "tls_key",
        default: "(unset)",
        doc: "PEM private key matching `tls_cert`; both or neither.",
    },
    Setting {
        key: "log",
        default: "info",
        doc: "Log filter in `tracing` syntax, e.g. `info,renkei=debug`. `RUST_LOG` wins when set.",
    },
    Setting {
        key: "log_format",
        default: "text",
        doc: "`text` or `json` (one JSON object per line, for log shippers).",
    },
    Setting {
        key: "graphql_max_depth",
        default: "16",
        doc: "Largest query depth accepted.",
    },
    Setting {
        key: "graphql_max_complexity",
        default: "5000",
        doc: "Largest query cost accepted: every selected field (aliases and `__typename` included) counts 1, times the page size (`first`/`last`, default 20) of each connection it is inside. A page of 100 notes with every field costs about 3,300.",
    },
    Setting {
        key: "max_body_bytes",
        default: "1048576",
        doc: "Largest JSON request body on `/graphql`, in bytes.",
    },
    Setting {
        key: "shutdown_grace_seconds",
        default: "20",
        doc: "On SIGTERM/SIGINT: how long in-flight requests may finish before connections are closed.",
    },
    Setting {
        key: "shutdown_drain_seconds",
        default: "0",
        doc: "On SIGTERM/SIGINT: how long to keep accepting and serving while `/readyz` answers 503 `draining`, so a load balancer stops sending first; then the grace period begins. Set it to the balancer's check interval times its failure count.",
    },
    Setting {
        key: "master_key",
        default: "(generated)",
        doc: "Base64 of 32 random bytes (`openssl rand -base64 32`) that seals every tenant CA's private key. Unset: generated once into `<data_dir>/master.key` (0600). Required in production, where all replicas must share it. Secret.",
    },
    Setting {
        key: "trusted_proxies",
        default: "(unset)",
        doc: "Comma-separated addresses or CIDRs of TLS-terminating proxies (nginx). Only from these is `X-SSL-Client-Cert` (and `X-Forwarded-For`) believed; from anyone else it is ignored.",
    },
    Setting {
        key: "session_idle_seconds",
        default: "1800",
        doc: "A login session ends after this long without a request (sliding).",
    },
    Setting {
        key: "session_absolute_seconds",
        default: "43200",
        doc: "A login session ends this long after login, whatever its activity.",
    },
    Setting {
        key: "login_max_failures",
        default: "5",
        doc: "Consecutive wrong passwords that lock an account.",
    },
    Setting {
        key: "lockout_seconds",
        default: "900",
        doc: "How long a locked account stays locked (or until `unlockUser`).",
    },
    Setting {
        key: "login_ip_max_failures",
        default: "20",
        doc: "Failed logins one client IP may make per `login_ip_window_seconds` before `RATE_LIMITED`.",
    },
    Setting {
        key: "login_ip_window_seconds",
        default: "900",
        doc: "Window of the per-IP login failure limit.",
    },
    Setting {
        key: "registration_ip_max_submissions",
        default: "10",
        doc: "Registrations (`submitRegistration`, public) one client IP may file per `public_rate_window_seconds` before `RATE_LIMITED`.",
    },
    Setting {
        key: "application_status_ip_max_lookups",
        default: "60",
        doc: "Public `applicationStatus` lookups one client IP may make per `public_rate_window_seconds` before `RATE_LIMITED`.",
    },
    Setting {
        key: "public_rate_window_seconds",
        default: "3600",
        doc: "Window of the per-IP limits on the public registration endpoints.",
    },
    Setting {
        key: "password_hash_concurrency",
        default: "0",
        doc: "Argon2id hashes running at once, on threads of lowest CPU priority (Linux SCHED_IDLE); 0 = one per CPU (at that priority a hash only takes CPU time other work leaves free). Bounds the memory and CPU a login storm can take from other requests.",
    },
    Setting {
        key: "certificate_check_interval_seconds",
        default: "86400",
        doc: "How often expired client certificates are marked EXPIRED (daily).",
    },
    Setting {
        key: "audit_retention_days",
        default: "1827",
        doc: "How long audit events are kept (5 years): `renkei audit purge` refuses to remove younger ones. 0 allows purging up to now (tests only).",
    },
    Setting {
        key: "audit_buffer_events",
        default: "10000",
        doc: "Read events waiting to be written in batches; when full, requests wait (back-pressure), none is dropped.",
    },
    Setting {
        key: "audit_read_events",
        default: "true",
        doc: "Record read events (`user.read`, `audit.read`, later `room.read` …). `false` exists only to measure the cost of auditing in benchmarks and is refused when `env` is `production`.",
    },
    Setting {
        key: "session_expiry_check_seconds",
        default: "60",
        doc: "How often ended sessions that expired (idle or absolute timeout) are recorded as `session.expire` audit events.",
    },
    Setting {
        key: "trust_refresh_seconds",
        default: "10",
        doc: "How often each instance re-reads tenant CAs and CRLs as a safety net (changes also arrive at once via Redis pub/sub).",
    },
    Setting {
        key: "authz_reload_seconds",
        default: "300",
        doc: "How often each instance reloads room memberships and tenant roles into its authorization enforcer as a safety net (changes arrive at once via Redis pub/sub).",
    },
    Setting {
        key: "invitation_ttl_days",
        default: "14",
        doc: "Days a room invitation stays open before it expires.",
    },
    Setting {
        key: "room_retention_years",
        default: "5",
        doc: "Years a closed room is kept as a read-only archive (medical records: 5 years, 医師法24条).",
    },
    Setting {
        key: "attachment_max_bytes",
        default: "20971520",
        doc: "Largest attachment (JPEG, PNG, HEIC, PDF) in bytes: 20 MiB.",
    },
    Setting {
        key: "attachment_video_max_bytes",
        default: "209715200",
        doc: "Largest video attachment (MP4) in bytes: 200 MiB. An upload request is cut off while streaming once its file passes this.",
    },
    Setting {
        key: "allowed_origins",
        default: "(origin of public_url)",
        doc: "Comma-separated browser origins (`https://renkei.example.jp`) allowed to send requests authenticated by the session cookie and to open `/graphql/ws`; unset, the origin of `public_url` (with neither, no browser origin is allowed). Bearer-token requests and requests without an `Origin` header (native apps) are not affected.",
    },
    Setting {
        key: "public_url",
        default: "(unset)",
        doc: "The server's external base URL (`https://renkei.example.jp`). Federated login sends `<public_url>/auth/oidc/<tenant>/callback` as its redirect URI; unset, it is built from the request's `Host`.",
    },
    Setting {
        key: "oidc_after_login_url",
        default: "/",
        doc: "Where a federated login sends the browser when it is done: the front-end. A failure appends `?oidc_error=<reason>`; no secret is ever put in it.",
    },
    Setting {
        key: "oidc_ca_file",
        default: "(unset)",
        doc: "PEM file of extra root certificates trusted for identity providers' HTTPS (a city's Keycloak behind an internal CA). The public web roots are always trusted.",
    },
    Setting {
        key: "oidc_timeout_seconds",
        default: "10",
        doc: "Timeout of each request to an identity provider (discovery, keys, token). Redirects are never followed.",
    },
    Setting {
        key: "bootstrap",
        default: "(true in development, false in production)",
        doc: "On an empty database, create tenant `demo` (デモ市) with CITY_ADMIN `admin` and write its credentials to `<data_dir>/bootstrap/credentials.json` (0600).",
    },
    Setting {
        key: "default_time_zone",
        default: "Asia/Tokyo",
        doc: "IANA time zone of new tenants; times are stored in UTC and rendered with the tenant's offset.",
    },
    Setting {
        key: "notification_email_digest_minutes",
        default: "15",
        doc: "Notification e-mail for ordinary notes is gathered into one digest every this many minutes (urgent notes, mentions and account notices go at once). 0: every notification at once.",
    },
    Setting {
        key: "notification_worker_interval_ms",
        default: "1000",
        doc: "How often each instance's delivery worker looks for due notifications (it also wakes at once after a note is posted on the same instance). 0: this instance runs no delivery worker (others deliver).",
    },
    Setting {
        key: "notification_max_attempts",
        default: "8",
        doc: "Tries per notification and channel before the delivery is marked FAILED (and audited `notification.failed`).",
    },
    Setting {
        key: "notification_retry_base_seconds",
        default: "10",
        doc: "Delay before the first retry of a failed delivery; it doubles with every try (with jitter) up to `notification_retry_max_seconds`.",
    },
    Setting {
        key: "notification_retry_max_seconds",
        default: "3600",
        doc: "Longest delay between two tries of a delivery.",
    },
    Setting {
        key: "notification_claim_seconds",
        default: "300",
        doc: "How long a worker's claim on a delivery lasts; a crashed instance's claims are taken over after it. Keep it above the channels' timeouts.",
    },
    Setting {
        key: "smtp_url",
        default: "(unset)",
        doc: "Mail server of e-mail notifications: `smtp://[USER:PASSWORD@]HOST[:587]` (STARTTLS required), `smtps://…[:465]` (implicit TLS), or `smtp://HOST:PORT?tls=none` (plain, for a relay on the same host). Unset: no e-mail is sent. Secret.",
    },
    Setting {
        key: "smtp_from",
        default: "(unset)",
        doc: "`From` of notification e-mails, e.g. `Renkei <renkei@city.example.jp>`; required with `smtp_url`.",
    },
    Setting {
        key: "smtp_ca_file",
        default: "(unset)",
        doc: "PEM file of extra root certificates trusted for the mail server's TLS (an internal relay). The public web roots are always trusted.",
    },
    Setting {
        key: "smtp_timeout_seconds",
        default: "10",
        doc: "Timeout of each SMTP command; a mail server that is down or slow only delays mail (retried later).",
    },
    Setting {
        key: "push_ca_file",
        default: "(unset)",
        doc: "PEM file of extra root certificates trusted for Web Push services and push gateways (tests, internal gateways). The public web roots are always trusted.",
    },
    Setting {
        key: "push_timeout_seconds",
        default: "10",
        doc: "Timeout of each request to a Web Push service or push gateway. Redirects are never followed.",
    },
    Setting {
        key: "push_allow_private_endpoints",
        default: "false",
        doc: "Accept Web Push endpoints and gateway URLs whose host is a loopback or private IP address. Off, such addresses are refused, so a subscription cannot make the server call into its own network. Tests only.",
    },
    Setting {
        key: "vapid_subject",
        default: "<public_url>",
        doc: "The `sub` of VAPID tokens (RFC 8292): a `mailto:` or `https:` URI push services may contact about this server. Unset: `public_url`; with neither, Web Push is off.",
    },
    Setting {
        key: "graphql_max_response_bytes",
        default: "8388608",
        doc: "Largest GraphQL response over HTTP, in bytes (8 MiB); a larger one is replaced by a `BAD_REQUEST` error (a mutation's change stays made).",
    },
];

/// The configuration table as Markdown: one row per setting, as the README shows it.
pub fn settings_markdown() -> String {
    let mut out = String::from(
        "| environment variable | `renkei.toml` key | default | meaning |\n|---|---|---|---|\n",
    );
    for s in SETTINGS {
        out.push_str(&format!(
            "| `RENKEI_{}` | `{}` | `{}` | {} |\n",
            s.key.to_ascii_uppercase(),
            s.key,
            s.default,
            s.doc
        ));
    }
    out
}

/// Development or production: production hardens what development makes convenient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the database lives. SQLite is the embedded default; PostgreSQL is production.
#[derive(Clone)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    pub fn new(url: SecretString) -> Self {
        DatabaseUrl(url)
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    pub fn is_sqlite(&self) -> bool {
        self.expose().starts_with("sqlite:")
    }
    /// Scheme and host only, for logs: credentials and query strings never leave this type.
    pub fn redacted(&self) -> String {
        redact_url(self.expose())
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Removes user info, and the query string, from a URL for display.
/// The origin (`scheme://host[:port]`, lowercase) of a base URL such as `public_url`.
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    format!("{scheme}://{authority}").to_ascii_lowercase()
}

pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable url>".into();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let rest = match rest.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => rest.to_string(),
    };
    format!("{scheme}://{rest}")
}

#[derive(Debug, Clone)]
pub struct Config {
    pub env: Environment,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub database_url: DatabaseUrl,
    pub database_max_connections: u32,
    pub database_connect_timeout: Duration,
    pub redis_url: Option<RedisUrl>,
    pub redis_prefix: String,
    pub redis_timeout: Duration,
    pub tls: Option<TlsFiles>,
    pub log: String,
    pub log_format: LogFormat,
    pub graphql_max_depth: usize,
    pub graphql_max_complexity: usize,
    pub graphql_max_response_bytes: usize,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub shutdown_drain: Duration,
    pub default_time_zone: chrono_tz::Tz,
    pub master_key: Option<SecretString>,
    pub trusted_proxies: Vec<IpNet>,
    pub session_idle: Duration,
    pub session_absolute: Duration,
    pub login_max_failures: u32,
    pub lockout: Duration,
    pub login_ip_max_failures: u64,
    pub login_ip_window: Duration,
    pub registration_ip_max_submissions: u64,
    pub application_status_ip_max_lookups: u64,
    pub public_rate_window: Duration,
    pub password_hash_concurrency: usize,
    pub certificate_check_interval: Duration,
    pub audit_retention_days: u32,
    pub audit_buffer_events: usize,
    pub audit_read_events: bool,
    pub session_expiry_check: Duration,
    pub trust_refresh: Duration,
    pub authz_reload: Duration,
    pub invitation_ttl_days: u32,
    pub room_retention_years: u32,
    pub attachment_max_bytes: u64,
    pub attachment_video_max_bytes: u64,
    /// Lowercase, without a trailing slash.
    pub allowed_origins: Vec<String>,
    /// Without a trailing slash.
    pub public_url: Option<String>,
    pub oidc_after_login_url: String,
    pub oidc_ca_file: Option<PathBuf>,
    pub oidc_timeout: Duration,
    pub bootstrap: bool,
    pub notification_email_digest_minutes: u32,
    pub notification_worker_interval: Duration,
    pub notification_max_attempts: u32,
    pub notification_retry_base: Duration,
    pub notification_retry_max: Duration,
    pub notification_claim: Duration,
    /// E-mail and push channels of notifications.
    pub channels: ChannelsConfig,
}

/// Settings of the notification channels (`crate::channels`).
#[derive(Debug, Clone)]
pub struct ChannelsConfig {
    pub smtp: Option<SmtpConfig>,
    pub push_ca_file: Option<PathBuf>,
    pub push_timeout: Duration,
    pub push_allow_private_endpoints: bool,
    /// `mailto:` or `https:` URI; `None` turns Web Push off.
    pub vapid_subject: Option<String>,
}

/// How TLS is used with the mail server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtp://`: STARTTLS, required.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Implicit,
    /// `smtp://…?tls=none`: plain text.
    None,
}

#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub user: Option<String>,
    pub password: Option<SecretString>,
    /// Parsed `smtp_from`.
    pub from: lettre::message::Mailbox,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.user.as_ref().map(|_| "***"))
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

/// An address range, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpNet {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr.trim().parse().map_err(|_| ())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| ())?,
            None => max,
        };
        if prefix > max {
            return Err(());
        }
        Ok(IpNet { addr, prefix })
    }
}

#[derive(Clone)]
pub struct RedisUrl(SecretString);

impl RedisUrl {
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(self.expose()))
    }
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A setting that could not be used. Displays as one line naming the setting and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    pub setting: String,
    pub reason: String,
}

/// Where a value came from, so an error names the place the user has to fix.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Env,
}

#[derive(Debug, Default)]
struct RawSettings {
    values: BTreeMap<&'static str, (String, Source)>,
}

impl RawSettings {
    fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.as_str())
    }

    fn name(&self, key: &str) -> String {
        match self.values.get(key) {
            Some((_, Source::File(path))) => format!("{key} (in {})", path.display()),
            _ => format!("RENKEI_{}", key.to_ascii_uppercase()),
        }
    }

    fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            setting: self.name(key),
            reason: reason.into(),
        }
    }

    /// The value with the declared default applied.
    fn value(&self, key: &'static str) -> Option<&str> {
        self.get(key).or_else(|| {
            SETTINGS
                .iter()
                .find(|s| s.key == key)
                .map(|s| s.default)
                .filter(|d| !d.starts_with('(') && !d.contains('<'))
        })
    }

    fn parse<T: std::str::FromStr>(&self, key: &'static str, what: &str) -> Result<T, ConfigError> {
        let raw = self.value(key).unwrap_or_default();
        raw.trim()
            .parse::<T>()
            .map_err(|_| self.err(key, format!("'{raw}' is not {what}")))
    }

    fn positive<T>(&self, key: &'static str, what: &str) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + Default,
    {
        let v: T = self.parse(key, what)?;
        if v <= T::default() {
            return Err(self.err(key, "must be greater than 0"));
        }
        Ok(v)
    }
}

impl Config {
    /// Loads the configuration the server runs with: `renkei.toml` (or the file named by
    /// `config_file`) when present, then the process environment.
    pub fn load(config_file: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match config_file {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("renkei.toml"), false),
        };
        let toml = match std::fs::read_to_string(&path) {
            Ok(text) => Some((path, text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => None,
            Err(e) => {
                return Err(ConfigError {
                    setting: format!("config file {}", path.display()),
                    reason: e.to_string(),
                });
            }
        };
        Config::from_sources(
            toml.as_ref().map(|(p, t)| (p.as_path(), t.as_str())),
            std::env::vars(),
        )
    }

    /// Builds a configuration from a `renkei.toml` text and environment pairs; tests use this
    /// directly so they never touch the process environment.
    pub fn from_sources(
        toml: Option<(&Path, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut raw = RawSettings::default();
        if let Some((path, text)) = toml {
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError {
                setting: format!("config file {}", path.display()),
                reason: e.message().to_string(),
            })?;
            for (key, value) in table {
                let Some(setting) = SETTINGS.iter().find(|s| s.key == key) else {
                    return Err(ConfigError {
                        setting: format!("{key} (in {})", path.display()),
                        reason: "unknown setting".into(),
                    });
                };
                let text = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    _ => {
                        return Err(ConfigError {
                            setting: format!("{key} (in {})", path.display()),
                            reason: "must be a string, number or boolean".into(),
                        });
                    }
                };
                raw.values
                    .insert(setting.key, (text, Source::File(path.to_path_buf())));
            }
        }
        for (name, value) in env {
            let Some(key) = name.strip_prefix("RENKEI_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            // Other RENKEI_* variables (the test harness's, for one) are not settings.
            if let Some(setting) = SETTINGS.iter().find(|s| s.key == key) {
                raw.values.insert(setting.key, (value, Source::Env));
            }
        }
        Config::from_raw(&raw)
    }

    fn from_raw(raw: &RawSettings) -> Result<Config, ConfigError> {
        let env = match raw.value("env").unwrap_or_default() {
            "development" | "dev" => Environment::Development,
            "production" | "prod" => Environment::Production,
            other => {
                return Err(raw.err(
                    "env",
                    format!("'{other}' is not one of development, production"),
                ));
            }
        };
        let data_dir = PathBuf::from(raw.value("data_dir").unwrap_or_default());
        if data_dir.as_os_str().is_empty() {
            return Err(raw.err("data_dir", "must not be empty"));
        }
        let listen: SocketAddr = raw.parse("listen", "an address of the form host:port")?;

        let database_url = match raw.get("database_url").map(str::trim) {
            None | Some("") => {
                let path = data_dir.join("renkei.db");
                SecretString::from(format!("sqlite://{}?mode=rwc", path.display()))
            }
            Some(url)
                if url.starts_with("sqlite:")
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://") =>
            {
                SecretString::from(url.to_string())
            }
            Some(_) => {
                return Err(raw.err(
                    "database_url",
                    "must start with sqlite: or postgres:// (value not shown: it may hold a password)",
                ));
            }
        };
        let redis_url = match raw.get("redis_url").map(str::trim) {
            None | Some("") => None,
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                Some(RedisUrl(SecretString::from(url.to_string())))
            }
            Some(_) => {
                return Err(raw.err(
                    "redis_url",
                    "must start with redis:// or rediss:// (value not shown: it may hold a password)",
                ));
            }
        };
        let redis_prefix = raw.value("redis_prefix").unwrap_or_default().to_string();

        let tls = match (raw.get("tls_cert"), raw.get("tls_key")) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert: PathBuf::from(cert),
                    key: PathBuf::from(key),
                };
                if !files.cert.is_file() {
                    return Err(raw.err(
                        "tls_cert",
                        format!("{} is not a readable file", files.cert.display()),
                    ));
                }
                if !files.key.is_file() {
                    return Err(raw.err(
                        "tls_key",
                        format!("{} is not a readable file", files.key.display()),
                    ));
                }
                Some(files)
            }
            (Some(_), None) => return Err(raw.err("tls_key", "must be set when tls_cert is set")),
            (None, Some(_)) => return Err(raw.err("tls_cert", "must be set when tls_key is set")),
        };

        let log_format = match raw.value("log_format").unwrap_or_default() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(raw.err("log_format", format!("'{other}' is not one of text, json")));
            }
        };
        let default_time_zone: chrono_tz::Tz =
            raw.parse("default_time_zone", "an IANA time zone such as Asia/Tokyo")?;

        let master_key = match raw.get("master_key").map(str::trim) {
            None | Some("") => None,
            Some(k) => {
                let valid = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, k)
                    .map(|bytes| bytes.len() == 32)
                    .unwrap_or(false);
                if !valid {
                    return Err(raw.err(
                        "master_key",
                        "must be base64 of exactly 32 bytes, e.g. from `openssl rand -base64 32` (value not shown)",
                    ));
                }
                Some(SecretString::from(k.to_string()))
            }
        };
        if env == Environment::Production && master_key.is_none() {
            return Err(raw.err(
                "master_key",
                "must be set in production: every replica needs the same key to use the tenant CAs",
            ));
        }
        let mut trusted_proxies = Vec::new();
        if let Some(list) = raw.get("trusted_proxies") {
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let net = item.parse::<IpNet>().map_err(|()| {
                    raw.err(
                        "trusted_proxies",
                        format!("'{item}' is not an IP address or CIDR range"),
                    )
                })?;
                trusted_proxies.push(net);
            }
        }
        let allowed_origins: Vec<String> = raw
            .get("allowed_origins")
            .map(|list| {
                list.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                    .filter(|o| !o.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(bad) = allowed_origins
            .iter()
            .find(|o| !(o.starts_with("https://") || o.starts_with("http://")))
        {
            return Err(raw.err(
                "allowed_origins",
                format!("'{bad}' is not an origin like https://renkei.example.jp"),
            ));
        }
        let public_url = match raw
            .get("public_url")
            .map(|u| u.trim().trim_end_matches('/'))
        {
            None | Some("") => None,
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                Some(url.to_owned())
            }
            Some(url) => {
                return Err(raw.err(
                    "public_url",
                    format!("'{url}' is not a base URL like https://renkei.example.jp"),
                ));
            }
        };
        // Unset, the browser origins allowed are the one of `public_url` (none without it).
        let allowed_origins = if raw.get("allowed_origins").is_some() {
            allowed_origins
        } else {
            public_url.iter().map(|url| origin_of(url)).collect()
        };
        let oidc_after_login_url = raw
            .get("oidc_after_login_url")
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        if !(oidc_after_login_url.starts_with('/')
            || oidc_after_login_url.starts_with("https://")
            || oidc_after_login_url.starts_with("http://"))
        {
            return Err(raw.err(
                "oidc_after_login_url",
                format!("'{oidc_after_login_url}' is neither a path (/app) nor a URL"),
            ));
        }
        let public_url_for_channels = public_url.clone();
        let oidc_ca_file = raw
            .get("oidc_ca_file")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let secs = |key: &'static str| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(
                raw.positive(key, "a positive whole number of seconds")?,
            ))
        };
        let session_idle = secs("session_idle_seconds")?;
        let session_absolute = secs("session_absolute_seconds")?;
        let audit_read_events = match raw.value("audit_read_events").unwrap_or_default() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            other => {
                return Err(raw.err(
                    "audit_read_events",
                    format!("'{other}' is not true or false"),
                ));
            }
        };
        if !audit_read_events && env == Environment::Production {
            return Err(raw.err(
                "audit_read_events",
                "reads must be audited in production (MHLW guideline 6.0 §17)".to_owned(),
            ));
        }
        let bootstrap = match raw.value("bootstrap").unwrap_or_default() {
            // Production's first tenant comes from `renkei tenant create`.
            "" => env == Environment::Development,
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            other => return Err(raw.err("bootstrap", format!("'{other}' is not true or false"))),
        };

        Ok(Config {
            master_key,
            trusted_proxies,
            session_idle,
            session_absolute,
            login_max_failures: raw.positive("login_max_failures", "a positive whole number")?,
            lockout: secs("lockout_seconds")?,
            login_ip_max_failures: raw
                .positive("login_ip_max_failures", "a positive whole number")?,
            login_ip_window: secs("login_ip_window_seconds")?,
            registration_ip_max_submissions: raw
                .positive("registration_ip_max_submissions", "a positive whole number")?,
            application_status_ip_max_lookups: raw.positive(
                "application_status_ip_max_lookups",
                "a positive whole number",
            )?,
            public_rate_window: secs("public_rate_window_seconds")?,
            password_hash_concurrency: raw.parse("password_hash_concurrency", "a whole number")?,
            certificate_check_interval: secs("certificate_check_interval_seconds")?,
            audit_retention_days: raw.parse("audit_retention_days", "a whole number of days")?,
            audit_buffer_events: raw.positive("audit_buffer_events", "a positive whole number")?,
            audit_read_events,
            session_expiry_check: secs("session_expiry_check_seconds")?,
            trust_refresh: secs("trust_refresh_seconds")?,
            authz_reload: secs("authz_reload_seconds")?,
            invitation_ttl_days: raw
                .positive("invitation_ttl_days", "a positive whole number of days")?,
            room_retention_years: raw
                .positive("room_retention_years", "a positive whole number of years")?,
            attachment_max_bytes: raw
                .positive("attachment_max_bytes", "a positive whole number of bytes")?,
            attachment_video_max_bytes: raw.positive(
                "attachment_video_max_bytes",
                "a positive whole number of bytes",
            )?,
            allowed_origins,
            public_url,
            oidc_after_login_url,
            oidc_ca_file,
            oidc_timeout: secs("oidc_timeout_seconds")?,
            bootstrap,
            notification_email_digest_minutes: raw.parse(
                "notification_email_digest_minutes",
                "a whole number of minutes",
            )?,
            notification_worker_interval: Duration::from_millis(raw.parse(
                "notification_worker_interval_ms",
                "a whole number of milliseconds",
            )?),
            notification_max_attempts: raw
                .positive("notification_max_attempts", "a positive whole number")?,
            notification_retry_base: secs("notification_retry_base_seconds")?,
            notification_retry_max: secs("notification_retry_max_seconds")?,
            notification_claim: secs("notification_claim_seconds")?,
            channels: channels_config(raw, public_url_for_channels.as_deref())?,
            env,
            data_dir,
            listen,
            database_url: DatabaseUrl(database_url),
            database_max_connections: raw
                .positive("database_max_connections", "a positive whole number")?,
            database_connect_timeout: Duration::from_secs(raw.positive(
                "database_connect_timeout_seconds",
                "a positive whole number of seconds",
            )?),
            redis_url,
            redis_prefix,
            redis_timeout: Duration::from_secs(raw.positive(
                "redis_timeout_seconds",
                "a positive whole number of seconds",
            )?),
            tls,
            log: raw.value("log").unwrap_or("info").to_string(),
            log_format,
            graphql_max_depth: raw.positive("graphql_max_depth", "a positive whole number")?,
            graphql_max_complexity: raw
                .positive("graphql_max_complexity", "a positive whole number")?,
            graphql_max_response_bytes: raw.positive(
                "graphql_max_response_bytes",
                "a positive whole number of bytes",
            )?,
            max_body_bytes: raw.positive("max_body_bytes", "a positive whole number of bytes")?,
            shutdown_grace: Duration::from_secs(
                raw.parse("shutdown_grace_seconds", "a whole number of seconds")?,
            ),
            shutdown_drain: Duration::from_secs(
                raw.parse("shutdown_drain_seconds", "a whole number of seconds")?,
            ),
            default_time_zone,
        })
    }

    pub fn is_production(&self) -> bool {
        self.env == Environment::Production
    }
}

fn optional_path(raw: &RawSettings, key: &str) -> Option<PathBuf> {
    raw.get(key)
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

fn flag(raw: &RawSettings, key: &'static str) -> Result<bool, ConfigError> {
    match raw.value(key).unwrap_or_default() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(raw.err(key, format!("'{other}' is not true or false"))),
    }
}

fn channels_config(
    raw: &RawSettings,
    public_url: Option<&str>,
) -> Result<ChannelsConfig, ConfigError> {
    let secs = |key: &'static str| -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(
            raw.positive(key, "a positive whole number of seconds")?,
        ))
    };
    let smtp = match raw.get("smtp_url").map(str::trim).filter(|u| !u.is_empty()) {
        None => None,
        Some(text) => {
            // Only the scheme and host may appear in an error: the URL can hold a password.
            let bad = |reason: &str| raw.err("smtp_url", reason.to_owned());
            let url = reqwest::Url::parse(text)
                .map_err(|_| bad("not a URL like smtp://mail.example.jp:587"))?;
            let tls_param = url
                .query_pairs()
                .find(|(k, _)| k == "tls")
                .map(|(_, v)| v.into_owned());
            let (tls, default_port) = match (url.scheme(), tls_param.as_deref()) {
                ("smtps", None) => (SmtpTls::Implicit, 465),
                ("smtp", None | Some("starttls")) => (SmtpTls::StartTls, 587),
                ("smtp", Some("none")) => (SmtpTls::None, 25),
                ("smtp" | "smtps", Some(_)) => {
                    return Err(bad("tls= must be starttls or none (smtp://) or absent"));
                }
                _ => return Err(bad("the scheme must be smtp:// or smtps://")),
            };
            let host = url
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| bad("no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| bad("the user or password is not UTF-8"))
            };
            let user = match url.username() {
                "" => None,
                u => Some(decode(u)?),
            };
            let password = match url.password() {
                None => None,
                Some(p) => Some(SecretString::from(decode(p)?)),
            };
            let from_text = raw
                .get("smtp_from")
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .ok_or_else(|| raw.err("smtp_from", "required when smtp_url is set"))?;
            let from = from_text.parse::<lettre::message::Mailbox>().map_err(|_| {
                raw.err(
                    "smtp_from",
                    format!("'{from_text}' is not an address like Renkei <renkei@example.jp>"),
                )
            })?;
            Some(SmtpConfig {
                host,
                port: url.port().unwrap_or(default_port),
                tls,
                user,
                password,
                from,
                ca_file: optional_path(raw, "smtp_ca_file"),
                timeout: secs("smtp_timeout_seconds")?,
            })
        }
    };
    let vapid_subject = match raw
        .get("vapid_subject")
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(s) if s.starts_with("mailto:") || s.starts_with("https://") => Some(s.to_owned()),
        Some(s) => {
            return Err(raw.err(
                "vapid_subject",
                format!("'{s}' is neither a mailto: nor an https:// URI"),
            ));
        }
        None => public_url
            .filter(|u| u.starts_with("https://"))
            .map(str::to_owned),
    };
    Ok(ChannelsConfig {
        smtp,
        push_ca_file: optional_path(raw, "push_ca_file"),
        push_timeout: secs("push_timeout_seconds")?,
        push_allow_private_endpoints: flag(raw, "push_allow_private_endpoints")?,
        vapid_subject,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bootstrap_is_on_in_development_off_in_production_unless_set() {
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let dev = Config::from_sources(None, env(&[])).unwrap();
        assert!(dev.bootstrap);
        let prod = env(&[("RENKEI_ENV", "production"), ("RENKEI_MASTER_KEY", key)]);
        assert!(!Config::from_sources(None, prod.clone()).unwrap().bootstrap);
        let mut explicit = prod;
        explicit.push(("RENKEI_BOOTSTRAP".into(), "true".into()));
        assert!(Config::from_sources(None, explicit).unwrap().bootstrap);
        let off = env(&[("RENKEI_BOOTSTRAP", "false")]);
        assert!(!Config::from_sources(None, off).unwrap().bootstrap);
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let c = Config::from_sources(None, env(&[])).unwrap();
        assert_eq!(c.env, Environment::Development);
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert!(c.database_url.is_sqlite());
        assert!(c.database_url.expose().contains("data/renkei.db"));
        assert!(c.redis_url.is_none());
        assert!(c.tls.is_none());
        assert_eq!(c.default_time_zone, chrono_tz::Asia::Tokyo);
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let file = "listen = \"0.0.0.0:9000\"\nenv = \"production\"\nmaster_key = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n";
        let c = Config::from_sources(
            Some((Path::new("renkei.toml"), file)),
            env(&[("RENKEI_LISTEN", "127.0.0.1:9001")]),
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(c.env, Environment::Production);
    }

    #[test]
    fn bad_value_names_the_setting_in_one_line() {
        let err = Config::from_sources(None, env(&[("RENKEI_LISTEN", "nowhere")])).unwrap_err();
        let line = err.to_string();
        assert!(line.contains("RENKEI_LISTEN"), "{line}");
        assert!(!line.contains('\n'));

        let err = Config::from_sources(Some((Path::new("x.toml"), "listen = \"nope\"")), env(&[]))
            .unwrap_err();
        assert!(err.to_string().contains("listen (in x.toml)"), "{err}");

        let err = Config::from_sources(None, env(&[("RENKEI_ENV", "staging")])).unwrap_err();
        assert!(err.to_string().contains("RENKEI_ENV"));
        let err = Config::from_sources(None, env(&[("RENKEI_DATABASE_MAX_CONNECTIONS", "0")]))
            .unwrap_err();
        assert!(err.to_string().contains("greater than 0"));
    }

    #[test]
    fn secrets_never_appear_in_errors_or_debug() {
        let err = Config::from_sources(
            None,
            env(&[("RENKEI_DATABASE_URL", "mysql://u:s3cret@h/db")]),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("s3cret"));
        let c = Config::from_sources(
            None,
            env(&[
                (
                    "RENKEI_DATABASE_URL",
                    "postgres://u:s3cret@db:5432/renkei?sslmode=require",
                ),
                ("RENKEI_REDIS_URL", "redis://:r3dis@cache:6379/0"),
            ]),
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret") && !dbg.contains("r3dis"), "{dbg}");
        assert!(dbg.contains("db:5432"));
    }

    #[test]
    fn unknown_file_keys_are_refused_and_foreign_env_ignored() {
        let err = Config::from_sources(Some((Path::new("r.toml"), "lisen = \"x\"")), env(&[]))
            .unwrap_err();
        assert!(err.to_string().contains("unknown setting"));
        assert!(Config::from_sources(None, env(&[("RENKEI_TEST_DB", "postgres")])).is_ok());
    }

    #[test]
    fn readme_configuration_table_is_current() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md");
        assert!(
            readme.contains(&settings_markdown()),
            "README.md's configuration table is stale: paste the output of `renkei settings`"
        );
    }

    #[test]
    fn production_requires_a_valid_master_key() {
        let err = Config::from_sources(None, env(&[("RENKEI_ENV", "production")])).unwrap_err();
        assert!(err.to_string().contains("RENKEI_MASTER_KEY"), "{err}");
        let err =
            Config::from_sources(None, env(&[("RENKEI_MASTER_KEY", "c2hvcnQ=")])).unwrap_err();
        assert!(err.to_string().contains("32 bytes") && !err.to_string().contains("c2hvcnQ"));
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let c = Config::from_sources(
            None,
            env(&[("RENKEI_ENV", "production"), ("RENKEI_MASTER_KEY", key)]),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains(key));
    }

    #[test]
    fn trusted_proxies_parse_cidrs() {
        let c = Config::from_sources(
            None,
            env(&[("RENKEI_TRUSTED_PROXIES", "172.28.0.0/16, ::1")]),
        )
        .unwrap();
        assert!(c.trusted_proxies[0].contains("172.28.3.4".parse().unwrap()));
        assert!(!c.trusted_proxies[0].contains("172.29.0.1".parse().unwrap()));
        assert!(c.trusted_proxies[1].contains("::1".parse().unwrap()));
        let err = Config::from_sources(None, env(&[("RENKEI_TRUSTED_PROXIES", "10.0.0.0/33")]))
            .unwrap_err();
        assert!(err.to_string().contains("RENKEI_TRUSTED_PROXIES"));
    }

    #[test]
    fn tls_files_come_in_pairs() {
        let err =
            Config::from_sources(None, env(&[("RENKEI_TLS_CERT", "/etc/hosts")])).unwrap_err();
        assert!(err.to_string().contains("RENKEI_TLS_KEY"));
    }
}
