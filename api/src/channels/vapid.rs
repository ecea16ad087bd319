//! A tenant's VAPID key pair (RFC 8292): generated once, its private half sealed with the master
//! key like CA keys, and the ES256 JWT that authenticates every push request with it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use entity::tenant_ca::SealedKey;
use entity::tenant_push_vapid;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use sea_orm::{ConnectionTrait, EntityTrait, Set};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::auth::pki::MasterKey;

/// How long a VAPID JWT is valid: RFC 8292 allows at most 24 hours.
const JWT_LIFETIME_SECONDS: i64 = 12 * 3600;

fn aad(tenant_id: Uuid) -> Vec<u8> {
    format!("vapid:{tenant_id}").into_bytes()
}

/// The tenant's key pair, unsealed for signing. Never printed.
pub struct VapidKey {
    pair: EcdsaKeyPair,
    /// Uncompressed P-256 point, base64url without padding.
    pub public_key: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// The tenant's public key (the browser's `applicationServerKey`), generating the pair on first
/// use. Two instances racing both insert-or-ignore, then read the one that won.
pub async fn public_key(
    db: &impl ConnectionTrait,
    master_key: &MasterKey,
    tenant_id: Uuid,
) -> anyhow::Result<String> {
    Ok(row(db, master_key, tenant_id).await?.public_key)
}

/// The tenant's key pair for signing.
pub async fn key(
    db: &impl ConnectionTrait,
    master_key: &MasterKey,
    tenant_id: Uuid,
) -> anyhow::Result<VapidKey> {
    let row = row(db, master_key, tenant_id).await?;
    let pkcs8 = master_key
        .decrypt(&row.private_key_sealed.0, &aad(tenant_id))
        .map_err(|e| anyhow::anyhow!("unsealing the VAPID key of tenant {tenant_id}: {e}"))?;
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.expose_secret(),
        &SystemRandom::new(),
    )
    .map_err(|_| anyhow::anyhow!("the VAPID key of tenant {tenant_id} is not a P-256 key"))?;
    let public_key = B64URL.encode(pair.public_key().as_ref());
    if public_key != row.public_key {
        anyhow::bail!("the VAPID key of tenant {tenant_id} does not match its public key");
    }
    Ok(VapidKey { pair, public_key })
}

async fn row(
    db: &impl ConnectionTrait,
    master_key: &MasterKey,
    tenant_id: Uuid,
) -> anyhow::Result<tenant_push_vapid::Model> {
    if let Some(row) = tenant_push_vapid::Entity::find_by_id(tenant_id)
        .one(db)
        .await?
    {
        return Ok(row);
    }
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("generating a VAPID key failed"))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| anyhow::anyhow!("reading the generated VAPID key failed"))?;
    let sealed = master_key
        .encrypt(pkcs8.as_ref(), &aad(tenant_id))
        .map_err(|e| anyhow::anyhow!("sealing the VAPID key: {e}"))?;
    tenant_push_vapid::Entity::insert(tenant_push_vapid::ActiveModel {
        tenant_id: Set(tenant_id),
        public_key: Set(B64URL.encode(pair.public_key().as_ref())),
        private_key_sealed: Set(SealedKey(sealed)),
        created_at: Set(chrono::Utc::now()),
    })
    .on_conflict_do_nothing_on([tenant_push_vapid::Column::TenantId])
    .exec_without_returning(db)
    .await?;
    tenant_push_vapid::Entity::find_by_id(tenant_id)
        .one(db)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the VAPID key of tenant {tenant_id} vanished"))
}

impl VapidKey {
    /// `Authorization` header value for a push to `endpoint`: `vapid t=<JWT>, k=<public key>`,
    /// the JWT's `aud` the endpoint's origin, `exp` 12 hours ahead, `sub` the operator contact.
    pub fn authorization(&self, endpoint: &reqwest::Url, subject: &str) -> anyhow::Result<String> {
        let audience = endpoint.origin().ascii_serialization();
        let exp = chrono::Utc::now().timestamp() + JWT_LIFETIME_SECONDS;
        let header = B64URL.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = B64URL.encode(serde_json::to_vec(&serde_json::json!({
            "aud": audience,
            "exp": exp,
            "sub": subject,
        }))?);
        let signing_input = format!("{header}.{claims}");
        let signature = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing the VAPID token failed"))?;
        Ok(format!(
            "vapid t={signing_input}.{}, k={}",
            B64URL.encode(signature.as_ref()),
            self.public_key
        ))
    }
}
