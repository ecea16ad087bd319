//! Client certificates: issuance (returned once as PKCS#12), revocation with a fresh CRL,
//! expiry marking, and renewal lists.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, Set,
};
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use entity::kinds::{AuditOutcome, CertificateStatus};
use entity::{certificate, tenant, tenant_ca, user};

use crate::auth::pki::{
    self, CaMaterial, MasterKey, Pkcs12Encoding, RevocationReason, RevokedEntry,
};
use crate::error::{AppError, AppResult};
use crate::service::audit::{self, Event, Origin};
use crate::service::now;

/// Clients re-fetch the CRL at least this often; we regenerate it on every revocation anyway.
pub const CRL_NEXT_UPDATE_DAYS: u32 = 7;

/// What issuing produced. The bundle and its password exist only here, on their way to the
/// one response that shows them.
pub struct Issuance {
    pub certificate: certificate::Model,
    pub pkcs12_der: Vec<u8>,
    pub pkcs12_password: SecretString,
}

impl std::fmt::Debug for Issuance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuance")
            .field("certificate", &self.certificate.id)
            .finish_non_exhaustive()
    }
}

/// The tenant's CA with its key unsealed, for signing.
pub async fn load_ca(
    db: &impl ConnectionTrait,
    master_key: &MasterKey,
    tenant_id: Uuid,
) -> AppResult<CaMaterial> {
    let row = tenant_ca::Entity::find_by_id(tenant_id)
        .one(db)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("tenant {tenant_id} has no CA")))?;
    CaMaterial::from_sealed(
        &row.cert_pem,
        &row.key_sealed.0,
        master_key,
        tenant_id.as_bytes(),
    )
    .map_err(|e| {
        AppError::internal(anyhow::anyhow!(
            "unsealing the CA key of tenant {tenant_id}: {e}"
        ))
    })
}

pub fn validate_device_label(label: &str) -> AppResult<String> {
    let label = label.trim();
    if label.is_empty() || label.chars().count() > 64 || label.chars().any(char::is_control) {
        return Err(AppError::bad_input(
            "deviceLabel",
            "1-64 characters, no control characters",
        ));
    }
    Ok(label.to_string())
}

/// A certificate made and packed, not yet stored: the slow crypto (key generation, PKCS#12
/// key derivation) happens here, outside any database transaction.
pub struct Prepared {
    issued: pki::IssuedCertificate,
    pkcs12_der: Vec<u8>,
    password: SecretString,
    encoding: Pkcs12Encoding,
    device_label: String,
    tenant_id: Uuid,
    user_id: Uuid,
}

/// Issues a certificate for `user` with the tenant's CA: the CA is read, the certificate made
/// outside the transaction, then stored and audited in one short write transaction.
pub async fn issue(
    db: &sea_orm::DatabaseConnection,
    master_key: &MasterKey,
    tenant: &tenant::Model,
    user: &user::Model,
    device_label: &str,
    encoding: Option<Pkcs12Encoding>,
    origin: &Origin,
) -> AppResult<Issuance> {
    let ca = load_ca(db, master_key, tenant.id).await?;
    if user.status == entity::kinds::AccountStatus::Suspended {
        return Err(AppError::Conflict(
            "the account is suspended: reactivate it before issuing a certificate".into(),
        ));
    }
    let prepared = prepare(&ca, tenant, user.id, &user.login_id, device_label, encoding).await?;
    let txn = crate::db::begin_write(db).await?;
    let issuance = store(&txn, prepared, origin).await?;
    txn.commit().await?;
    Ok(issuance)
}

/// Issues with an already unsealed CA inside the caller's transaction (tenant creation).
pub async fn issue_with_ca(
    db: &impl ConnectionTrait,
    ca: &CaMaterial,
    tenant: &tenant::Model,
    user: &user::Model,
    device_label: &str,
    encoding: Option<Pkcs12Encoding>,
    origin: &Origin,
) -> AppResult<Issuance> {
    let prepared = prepare(ca, tenant, user.id, &user.login_id, device_label, encoding).await?;
    store(db, prepared, origin).await
}

pub async fn prepare(
    ca: &CaMaterial,
    tenant: &tenant::Model,
    user_id: Uuid,
    login_id: &str,
    device_label: &str,
    encoding: Option<Pkcs12Encoding>,
) -> AppResult<Prepared> {
    let device_label = validate_device_label(device_label)?;
    let encoding = match encoding {
        Some(e) => e,
        None => tenant
            .pkcs12_encoding
            .parse()
            .unwrap_or(Pkcs12Encoding::Modern),
    };
    let validity_days = u32::try_from(tenant.certificate_validity_days).unwrap_or(730);
    let password = SecretString::from(pki::random_password(20));
    // Key generation and PBKDF2 are CPU work: keep them off the async workers.
    let (issued, pkcs12_der) = {
        let ca = ca.clone();
        let slug = tenant.slug.clone();
        let login_id = login_id.to_string();
        let password = password.clone();
        tokio::task::spawn_blocking(move || -> Result<_, pki::PkiError> {
            let issued = pki::issue_client_certificate(&ca, &slug, &login_id, validity_days)?;
            let p12 = pki::build_pkcs12(
                &issued,
                &ca.cert_der,
                &login_id,
                password.expose_secret(),
                encoding,
            )?;
            Ok((issued, p12))
        })
        .await
        .map_err(AppError::internal)?
        .map_err(AppError::internal)?
    };
    Ok(Prepared {
        issued,
        pkcs12_der,
        password,
        encoding,
        device_label,
        tenant_id: tenant.id,
        user_id,
    })
}

/// Stores a prepared certificate and records `certificate.issue` on `db` (the transaction).
pub async fn store(
    db: &impl ConnectionTrait,
    prepared: Prepared,
    origin: &Origin,
) -> AppResult<Issuance> {
    let Prepared {
        issued,
        pkcs12_der,
        password,
        encoding,
        device_label,
        tenant_id,
        user_id,
    } = prepared;
    let issued_by = origin.actor_id;
    let certificate = certificate::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        user_id: Set(user_id),
        serial_hex: Set(issued.serial_hex.clone()),
        fingerprint_sha256: Set(issued.fingerprint_sha256.clone()),
        device_label: Set(device_label),
        not_before: Set(issued.not_before),
        not_after: Set(issued.not_after),
        status: Set(CertificateStatus::Active),
        revoked_at: Set(None),
        revocation_reason: Set(None),
        issued_by: Set(issued_by),
        created_at: Set(now()),
    }
    .insert(db)
    .await?;
    let event = Event::new(tenant_id, "certificate.issue", AuditOutcome::Allowed)
        .by(origin)
        .target("certificate", certificate.id)
        .detail("serial", certificate.serial_hex.clone())
        .detail("userId", user_id.to_string())
        .detail("encoding", encoding.as_str());
    audit::record(db, event).await?;
    Ok(Issuance {
        certificate,
        pkcs12_der,
        pkcs12_password: password,
    })
}

pub fn validate_reason(reason: &str) -> AppResult<String> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(AppError::bad_input("reason", "1-500 characters"));
    }
    Ok(reason.to_string())
}

/// Revokes one certificate and regenerates the tenant CRL in the caller's transaction.
/// Ending the sessions bound to it and reloading TLS trust are the caller's (after commit).
pub async fn revoke(
    db: &impl ConnectionTrait,
    master_key: &MasterKey,
    certificate: certificate::Model,
    reason: &str,
    origin: &Origin,
) -> AppResult<certificate::Model> {
    let reason = validate_reason(reason)?;
    if certificate.status == CertificateStatus::Revoked {
        return Err(AppError::Conflict("certificate already revoked".into()));
    }
    let tenant_id = certificate.tenant_id;
    let revoked = mark_revoked(db, certificate, &reason, origin).await?;
    regenerate_crl(db, master_key, tenant_id).await?;
    Ok(revoked)
}

/// Marks one certificate REVOKED and records `certificate.revoke`; the caller regenerates the
/// CRL once for all it revoked.
pub async fn mark_revoked(
    db: &impl ConnectionTrait,
    certificate: certificate::Model,
    reason: &str,
    origin: &Origin,
) -> AppResult<certificate::Model> {
    let tenant_id = certificate.tenant_id;
    let mut active: certificate::ActiveModel = certificate.into();
    active.status = Set(CertificateStatus::Revoked);
    active.revoked_at = Set(Some(now()));
    active.revocation_reason = Set(Some(reason.to_string()));
    let revoked = active.update(db).await?;
    let event = Event::new(tenant_id, "certificate.revoke", AuditOutcome::Allowed)
        .by(origin)
        .target("certificate", revoked.id)
        .detail("serial", revoked.serial_hex.clone())
        .detail("userId", revoked.user_id.to_string())
        .detail("reason", reason.to_string());
    audit::record(db, event).await?;
    Ok(revoked)
}

/// Every revoked certificate of the tenant into a new CRL with the next number.
pub async fn regenerate_crl(
    db: &impl ConnectionTrait,
    master_key: &MasterKey,
    tenant_id: Uuid,
) -> AppResult<()> {
    // Lock the CA row (PostgreSQL) so two revocations cannot both write CRL n+1.
    let row = tenant_ca::Entity::find_by_id(tenant_id)
        .lock_exclusive()
        .one(db)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("tenant {tenant_id} has no CA")))?;
    let ca = CaMaterial::from_sealed(
        &row.cert_pem,
        &row.key_sealed.0,
        master_key,
        tenant_id.as_bytes(),
    )
    .map_err(|e| AppError::internal(anyhow::anyhow!("unsealing the CA key: {e}")))?;
    let revoked: Vec<RevokedEntry> = certificate::Entity::find()
        .filter(certificate::Column::TenantId.eq(tenant_id))
        .filter(certificate::Column::Status.eq(CertificateStatus::Revoked))
        .order_by_asc(certificate::Column::RevokedAt)
        .all(db)
        .await?
        .into_iter()
        .map(|c| RevokedEntry {
            serial_hex: c.serial_hex,
            revoked_at: c.revoked_at.unwrap_or(c.created_at),
            reason: c
                .revocation_reason
                .as_deref()
                .and_then(|r| r.parse::<RevocationReason>().ok()),
        })
        .collect();
    let number = row.crl_number + 1;
    let crl = pki::generate_crl(
        &ca,
        &revoked,
        u64::try_from(number).unwrap_or(1),
        CRL_NEXT_UPDATE_DAYS,
    )
    .map_err(AppError::internal)?;
    let mut active: tenant_ca::ActiveModel = row.into();
    active.crl_number = Set(number);
    active.crl_der = Set(crl);
    active.crl_updated_at = Set(now());
    active.update(db).await?;
    Ok(())
}

/// Marks ACTIVE certificates past `not_after` as EXPIRED, recording `certificate.expire` for
/// each in the same transaction; returns how many.
pub async fn mark_expired(db: &sea_orm::DatabaseConnection) -> AppResult<u64> {
    let at = now();
    let txn = crate::db::begin_write(db).await?;
    let expired = certificate::Entity::find()
        .filter(certificate::Column::Status.eq(CertificateStatus::Active))
        .filter(certificate::Column::NotAfter.lt(at))
        .all(&txn)
        .await?;
    if expired.is_empty() {
        txn.rollback().await?;
        return Ok(0);
    }
    certificate::Entity::update_many()
        .col_expr(
            certificate::Column::Status,
            sea_orm::sea_query::Expr::value(sea_orm::ActiveEnum::to_value(
                &CertificateStatus::Expired,
            )),
        )
        .filter(certificate::Column::Id.is_in(expired.iter().map(|c| c.id)))
        .exec(&txn)
        .await?;
    let events = expired
        .iter()
        .map(|c| {
            Event::new(c.tenant_id, "certificate.expire", AuditOutcome::Allowed)
                .target("certificate", c.id)
                .detail("serial", c.serial_hex.clone())
                .detail("userId", c.user_id.to_string())
        })
        .collect();
    audit::record_all(&txn, events).await?;
    txn.commit().await?;
    Ok(expired.len() as u64)
}

/// ACTIVE certificates of the tenant that expire before `until`, soonest first, with their users.
pub async fn expiring(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    until: DateTime<Utc>,
) -> AppResult<Vec<(certificate::Model, Option<user::Model>)>> {
    Ok(certificate::Entity::find()
        .filter(certificate::Column::TenantId.eq(tenant_id))
        .filter(certificate::Column::Status.eq(CertificateStatus::Active))
        .filter(certificate::Column::NotAfter.lt(until))
        .order_by_asc(certificate::Column::NotAfter)
        .find_also_related(user::Entity)
        .all(db)
        .await?)
}

/// A certificate row by the fingerprint presented on a connection.
pub async fn by_fingerprint(
    db: &impl ConnectionTrait,
    fingerprint: &str,
) -> AppResult<Option<certificate::Model>> {
    Ok(certificate::Entity::find()
        .filter(certificate::Column::FingerprintSha256.eq(fingerprint))
        .one(db)
        .await?)
}

pub async fn for_user(
    db: &impl ConnectionTrait,
    user_id: Uuid,
) -> AppResult<Vec<certificate::Model>> {
    Ok(certificate::Entity::find()
        .filter(certificate::Column::UserId.eq(user_id))
        .order_by_desc(certificate::Column::CreatedAt)
        .all(db)
        .await?)
}
