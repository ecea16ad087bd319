//! A tenant's push gateway for native apps: its URL and HMAC secret (sealed with the master
//! key), and the Matrix push-gateway shaped body sent to it.

use entity::tenant_ca::SealedKey;
use entity::tenant_push_gateway;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, EntityTrait, Set};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::auth::pki::MasterKey;

/// Shortest gateway secret accepted: 32 characters (e.g. `openssl rand -hex 16`).
pub const MIN_SECRET_CHARS: usize = 32;

/// Header carrying `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "X-Renkei-Signature";
/// Header carrying the notification id: a gateway may drop a retried duplicate by it.
pub const NOTIFICATION_HEADER: &str = "X-Renkei-Notification-Id";

fn aad(tenant_id: Uuid) -> Vec<u8> {
    format!("push-gateway:{tenant_id}").into_bytes()
}

/// The configured gateway of a tenant, secret unsealed. Debug never shows the secret.
pub struct Gateway {
    pub url: String,
    pub secret: SecretString,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

pub async fn set(
    db: &impl ConnectionTrait,
    master_key: &MasterKey,
    tenant_id: Uuid,
    url: &reqwest::Url,
    secret: &SecretString,
) -> anyhow::Result<()> {
    let sealed = master_key
        .encrypt(secret.expose_secret().as_bytes(), &aad(tenant_id))
        .map_err(|e| anyhow::anyhow!("sealing the gateway secret: {e}"))?;
    tenant_push_gateway::Entity::insert(tenant_push_gateway::ActiveModel {
        tenant_id: Set(tenant_id),
        url: Set(url.to_string()),
        secret_sealed: Set(SealedKey(sealed)),
        updated_at: Set(chrono::Utc::now()),
    })
    .on_conflict(
        OnConflict::column(tenant_push_gateway::Column::TenantId)
            .update_columns([
                tenant_push_gateway::Column::Url,
                tenant_push_gateway::Column::SecretSealed,
                tenant_push_gateway::Column::UpdatedAt,
            ])
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

pub async fn get(
    db: &impl ConnectionTrait,
    master_key: &MasterKey,
    tenant_id: Uuid,
) -> anyhow::Result<Option<Gateway>> {
    let Some(row) = tenant_push_gateway::Entity::find_by_id(tenant_id)
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let secret = master_key
        .decrypt(&row.secret_sealed.0, &aad(tenant_id))
        .map_err(|e| anyhow::anyhow!("unsealing the gateway secret of tenant {tenant_id}: {e}"))?;
    let secret = String::from_utf8(secret.expose_secret().to_vec())
        .map_err(|_| anyhow::anyhow!("the gateway secret of tenant {tenant_id} is not UTF-8"))?;
    Ok(Some(Gateway {
        url: row.url,
        secret: SecretString::from(secret),
        updated_at: row.updated_at,
    }))
}

/// True when there was one.
pub async fn remove(db: &impl ConnectionTrait, tenant_id: Uuid) -> anyhow::Result<bool> {
    Ok(tenant_push_gateway::Entity::delete_by_id(tenant_id)
        .exec(db)
        .await?
        .rows_affected
        > 0)
}

/// `sha256=<hex>` of the body under the secret.
pub fn signature(secret: &SecretString, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose_secret().as_bytes());
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}
