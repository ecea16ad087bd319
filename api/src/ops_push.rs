//! `renkei tenant push-gateway set|show|remove`: the tenant's push gateway for native apps.
//! The HMAC secret comes from an environment variable, is sealed with the master key, and is
//! never printed.

use clap::Subcommand;
use secrecy::{ExposeSecret as _, SecretString};

use crate::channels::{gateway, targets};
use crate::ops::Ops;
use crate::ops_audit::UsageError;

#[derive(Subcommand, Debug)]
pub enum PushGatewayAction {
    /// Set (or replace) the gateway. The secret is read from the environment variable named by
    /// `--secret-env` (at least 32 characters, e.g. `openssl rand -hex 32`), never from the
    /// command line.
    Set {
        #[arg(long)]
        tenant: String,
        /// https URL the notifications are POSTed to, e.g.
        /// https://push.vendor.example/_matrix/push/v1/notify
        #[arg(long)]
        url: String,
        /// Name of the environment variable holding the HMAC-SHA256 secret.
        #[arg(long)]
        secret_env: String,
    },
    /// Show the gateway (never the secret).
    Show {
        #[arg(long)]
        tenant: String,
    },
    /// Remove the gateway: native apps get no more pushes (their pushkeys are kept).
    Remove {
        #[arg(long)]
        tenant: String,
    },
}

pub async fn run(ops: &Ops, action: PushGatewayAction) -> anyhow::Result<()> {
    match action {
        PushGatewayAction::Set {
            tenant,
            url,
            secret_env,
        } => {
            let secret = std::env::var(&secret_env).map_err(|_| {
                UsageError(format!(
                    "environment variable {secret_env} (the gateway secret) is not set"
                ))
            })?;
            let secret = SecretString::from(secret.trim().to_owned());
            if secret.expose_secret().chars().count() < gateway::MIN_SECRET_CHARS {
                return Err(UsageError(format!(
                    "the gateway secret in {secret_env} must be at least {} characters",
                    gateway::MIN_SECRET_CHARS
                ))
                .into());
            }
            let url = targets::parse_push_url("url", &url, &ops.config.channels)
                .map_err(|e| UsageError(format!("--url: {}", e.message())))?;
            let t = ops.tenant(&tenant).await?;
            gateway::set(&ops.db, ops.master_key(), t.id, &url, &secret).await?;
            println!("tenant {tenant}: push gateway {url} (secret sealed)");
            println!(
                "each POST carries {}: sha256=<hex of HMAC-SHA256(secret, body)>",
                gateway::SIGNATURE_HEADER
            );
            Ok(())
        }
        PushGatewayAction::Show { tenant } => {
            let t = ops.tenant(&tenant).await?;
            match gateway::get(&ops.db, ops.master_key(), t.id).await? {
                Some(g) => {
                    println!("url      {}", g.url);
                    println!("secret   (sealed)");
                    println!("updated  {}", g.updated_at.to_rfc3339());
                }
                None => println!("tenant {tenant} has no push gateway"),
            }
            Ok(())
        }
        PushGatewayAction::Remove { tenant } => {
            let t = ops.tenant(&tenant).await?;
            if gateway::remove(&ops.db, t.id).await? {
                println!("tenant {tenant}: push gateway removed");
            } else {
                println!("tenant {tenant} had no push gateway");
            }
            Ok(())
        }
    }
}
