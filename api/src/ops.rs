//! Operator commands (`renkei tenant …`, `renkei certificates …`): the same services the API
//! uses, run against the configured database without starting a server.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use crate::auth::password::PasswordHasher;
use crate::auth::pki::MasterKey;
use crate::config::Config;
use crate::service::{certificates, tenants};

pub struct Ops {
    pub config: Arc<Config>,
    pub db: sea_orm::DatabaseConnection,
    master_key: MasterKey,
}

pub struct ExpiringRow {
    pub login_id: String,
    pub serial: String,
    pub device: String,
    pub not_after: String,
}

impl Ops {
    /// Connects and migrates (under the migration lock, as `serve` does), for commands that
    /// write; the master key must be the servers' (config or data dir).
    pub async fn open(config: Config) -> anyhow::Result<Ops> {
        let db = crate::db::connect(&config).await?;
        let lock = crate::db::MigrationLock::acquire(&config).await?;
        let migrated = crate::db::migrate_up(&db).await;
        lock.release().await;
        migrated?;
        Self::with(config, db)
    }

    /// For commands that only read: never migrates, refuses with
    /// [`crate::db::SchemaBehind`] when the schema is behind this binary.
    pub async fn open_read_only(config: Config) -> anyhow::Result<Ops> {
        let db = crate::db::connect(&config).await?;
        crate::db::require_current_schema(&db).await?;
        Self::with(config, db)
    }

    fn with(config: Config, db: sea_orm::DatabaseConnection) -> anyhow::Result<Ops> {
        let master_key = crate::app::load_master_key(&config)?;
        Ok(Ops {
            config: Arc::new(config),
            db,
            master_key,
        })
    }

    pub async fn create_tenant(
        &self,
        slug: &str,
        name: &str,
        admin: &str,
        admin_name: &str,
        out: &Path,
    ) -> anyhow::Result<PathBuf> {
        let hasher = PasswordHasher::new(1);
        let created = tenants::create_tenant(
            &self.db,
            &self.master_key,
            &hasher,
            tenants::NewTenant {
                slug: slug.into(),
                name: name.into(),
                admin_login_id: admin.into(),
                admin_display_name: admin_name.into(),
                time_zone: self.config.default_time_zone,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
        // Running servers pick the new CA up on their next trust refresh (or at once via Redis).
        if let Ok(Some(redis)) = crate::redis_store::RedisHandle::connect(&self.config).await {
            redis
                .publish(crate::state::TRUST_CHANNEL, "reload")
                .await
                .ok();
        }
        tenants::write_credentials(out, &created)
    }

    pub async fn expiring(
        &self,
        tenant: &str,
        within: std::time::Duration,
    ) -> anyhow::Result<Vec<ExpiringRow>> {
        let t = self.tenant(tenant).await?;
        let tz: chrono_tz::Tz = t.time_zone.parse().unwrap_or(chrono_tz::Asia::Tokyo);
        let until = crate::service::now()
            + chrono::Duration::from_std(within).context("period too long")?;
        let rows = certificates::expiring(&self.db, t.id, until)
            .await
            .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
        Ok(rows
            .into_iter()
            .map(|(c, u)| ExpiringRow {
                login_id: u.map(|u| u.login_id).unwrap_or_default(),
                serial: c.serial_hex,
                device: c.device_label,
                not_after: c.not_after.with_timezone(&tz).to_rfc3339(),
            })
            .collect())
    }

    /// The tenant named on the command line; an unknown slug is a usage error (exit 2).
    pub async fn tenant(&self, slug: &str) -> anyhow::Result<entity::tenant::Model> {
        tenants::by_slug(&self.db, slug)
            .await
            .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?
            .ok_or_else(|| crate::ops_audit::UsageError(format!("no tenant '{slug}'")).into())
    }

    /// `renkei tenant oidc set|show|remove`.
    pub async fn oidc(&self, action: crate::cli::OidcAction) -> anyhow::Result<()> {
        use crate::cli::OidcAction;
        use crate::service::oidc;
        match action {
            OidcAction::Set {
                tenant,
                issuer,
                client_id,
                client_secret_env,
                allowed_roles,
                link_by_email,
            } => {
                let secret = std::env::var(&client_secret_env).map_err(|_| {
                    crate::ops_audit::UsageError(format!(
                        "environment variable {client_secret_env} (the client secret) is not set"
                    ))
                })?;
                let allowed_roles = oidc::parse_roles(&allowed_roles)
                    .map_err(|e| crate::ops_audit::UsageError(describe(&e)))?;
                self.tenant(&tenant).await?;
                // A typo in the issuer is found now, not at the first login.
                let providers = oidc::Providers::new(&self.config)?;
                providers
                    .discover(issuer.trim(), true)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
                let saved = oidc::configure(
                    &self.db,
                    &self.master_key,
                    &tenant,
                    oidc::IdpConfig {
                        issuer: issuer.trim().to_owned(),
                        client_id,
                        client_secret: secrecy::SecretString::from(secret),
                        allowed_roles,
                        link_by_email,
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
                println!(
                    "tenant {tenant}: federated login through {} for {}",
                    saved.issuer, saved.allowed_roles
                );
                match &self.config.public_url {
                    Some(url) => println!(
                        "register this redirect URI at the provider: {url}/auth/oidc/{tenant}/callback"
                    ),
                    None => println!(
                        "register this redirect URI at the provider: https://<this server>/auth/oidc/{tenant}/callback (set public_url to print it exactly)"
                    ),
                }
                Ok(())
            }
            OidcAction::Show { tenant } => {
                let t = self.tenant(&tenant).await?;
                match oidc::idp_of(&self.db, t.id)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?
                {
                    Some(idp) => {
                        println!("issuer         {}", idp.issuer);
                        println!("client id      {}", idp.client_id);
                        println!("client secret  (sealed)");
                        println!("allowed roles  {}", idp.allowed_roles);
                        println!("link by e-mail {}", idp.link_by_email);
                        println!("updated        {}", idp.updated_at.to_rfc3339());
                    }
                    None => println!("tenant {tenant} has no identity provider"),
                }
                Ok(())
            }
            OidcAction::Remove { tenant } => {
                let removed = oidc::remove(&self.db, &tenant)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
                if removed {
                    println!("tenant {tenant}: identity provider and its account links removed");
                } else {
                    println!("tenant {tenant} had no identity provider");
                }
                Ok(())
            }
        }
    }

    pub fn master_key(&self) -> &MasterKey {
        &self.master_key
    }

    pub async fn mark_expired(&self) -> anyhow::Result<u64> {
        certificates::mark_expired(&self.db)
            .await
            .map_err(|e| anyhow::anyhow!("{}", describe(&e)))
    }
}

/// Operator-facing text for a service error: the message, and for internal errors the cause.
pub(crate) fn describe(e: &crate::error::AppError) -> String {
    match e {
        crate::error::AppError::Internal(cause) | crate::error::AppError::Unavailable(cause) => {
            format!("{cause:#}")
        }
        other => other.message(),
    }
}
