//! Tenants (municipalities): creation with their certificate authority and first CITY_ADMIN,
//! and the bootstrap of the embedded default.

use std::path::Path;

use anyhow::Context as _;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, Set,
};
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use entity::kinds::{AuditOutcome, Occupation, Role};
use entity::{tenant, tenant_ca, user};

use crate::auth::password::PasswordHasher;
use crate::auth::pki::{self, MasterKey, Pkcs12Encoding};
use crate::error::{AppError, AppResult};
use crate::service::audit::{self, Event};
use crate::service::certificates::{self, Issuance};
use crate::service::{now, users};

pub struct NewTenant {
    pub slug: String,
    pub name: String,
    pub admin_login_id: String,
    pub admin_display_name: String,
    pub time_zone: chrono_tz::Tz,
}

pub struct CreatedTenant {
    pub tenant: tenant::Model,
    pub admin: user::Model,
    pub admin_password: SecretString,
    pub admin_certificate: Issuance,
    pub ca_cert_pem: String,
}

/// Tenant slugs appear in URLs (`/pki/{slug}/crl`) and certificate subjects.
pub fn validate_slug(slug: &str) -> AppResult<()> {
    let ok = (2..=63).contains(&slug.len())
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(AppError::bad_input(
            "slug",
            "2-63 characters: lowercase letters, digits and inner hyphens",
        ))
    }
}

/// Login IDs: readable, typed on phones, one per person.
pub fn validate_login_id(login_id: &str) -> AppResult<()> {
    let ok = (3..=64).contains(&login_id.len())
        && login_id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(AppError::bad_input(
            "loginId",
            "3-64 characters: lowercase letters, digits, '.', '_' and '-'",
        ))
    }
}

/// Creates the tenant, its CA (key sealed with the master key), an empty CRL, and a first
/// CITY_ADMIN with a random initial password and a certificate, all in one transaction.
pub async fn create_tenant(
    db: &sea_orm::DatabaseConnection,
    master_key: &MasterKey,
    hasher: &PasswordHasher,
    input: NewTenant,
) -> AppResult<CreatedTenant> {
    validate_slug(&input.slug)?;
    validate_login_id(&input.admin_login_id)?;
    if input.name.trim().is_empty() {
        return Err(AppError::bad_input("name", "must not be empty"));
    }
    let tenant_id = Uuid::now_v7();
    let ca = {
        let (slug, name) = (input.slug.clone(), input.name.clone());
        tokio::task::spawn_blocking(move || pki::generate_tenant_ca(&slug, &name))
            .await
            .map_err(AppError::internal)?
            .map_err(AppError::internal)?
    };
    let sealed = ca
        .seal_key(master_key, tenant_id.as_bytes())
        .map_err(AppError::internal)?;
    let crl = pki::generate_crl(&ca, &[], 1, certificates::CRL_NEXT_UPDATE_DAYS)
        .map_err(AppError::internal)?;
    let password = SecretString::from(pki::random_password(16));
    let password_hash = hasher
        .hash(password.clone())
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("hashing: {e:?}")))?;

    let txn = crate::db::begin_write(db).await?;
    if tenant::Entity::find()
        .filter(tenant::Column::Slug.eq(input.slug.as_str()))
        .one(&txn)
        .await?
        .is_some()
    {
        return Err(AppError::Conflict(format!(
            "tenant '{}' already exists",
            input.slug
        )));
    }
    let at = now();
    let tenant = tenant::ActiveModel {
        id: Set(tenant_id),
        slug: Set(input.slug.clone()),
        name: Set(input.name.trim().to_string()),
        time_zone: Set(input.time_zone.name().to_string()),
        pkcs12_encoding: Set(Pkcs12Encoding::Modern.as_str().to_string()),
        facility_admin_delegation: Set(true),
        certificate_validity_days: Set(730),
        created_at: Set(at),
        updated_at: Set(at),
    }
    .insert(&txn)
    .await?;
    tenant_ca::ActiveModel {
        tenant_id: Set(tenant_id),
        cert_pem: Set(ca.cert_pem.clone()),
        key_sealed: Set(tenant_ca::SealedKey(sealed)),
        crl_number: Set(1),
        crl_der: Set(crl),
        crl_updated_at: Set(at),
        created_at: Set(at),
    }
    .insert(&txn)
    .await?;
    // Operator actions have no logged-in actor: the events say so by having none. The tenant
    // comes first in its chain, then its first admin and the admin's certificate.
    let admin_id = Uuid::now_v7();
    let created = Event::new(tenant.id, "tenant.create", AuditOutcome::Allowed)
        .target("tenant", tenant.id)
        .detail("slug", tenant.slug.clone())
        .detail("adminUserId", admin_id.to_string());
    audit::record(&txn, created).await?;
    let admin = users::insert(
        &txn,
        users::NewUser {
            id: admin_id,
            tenant_id,
            facility_id: None,
            login_id: input.admin_login_id.clone(),
            display_name: input.admin_display_name.clone(),
            display_name_kana: None,
            email: None,
            occupation: Occupation::MunicipalOfficer,
            role: Role::CityAdmin,
            password_hash,
        },
        &audit::Origin::default(),
    )
    .await?;
    let admin_certificate = certificates::issue_with_ca(
        &txn,
        &ca,
        &tenant,
        &admin,
        "initial",
        None,
        &audit::Origin::default(),
    )
    .await?;
    txn.commit().await?;
    Ok(CreatedTenant {
        tenant,
        admin,
        admin_password: password,
        admin_certificate,
        ca_cert_pem: ca.cert_pem,
    })
}

/// Writes a new tenant admin's credentials to `dir` (0700): `credentials.json` (0600) with
/// exactly the keys the README documents, the PKCS#12 bundle (0600) and the CA certificate.
pub fn write_credentials(
    dir: &Path,
    created: &CreatedTenant,
) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    let p12_name = format!("{}.p12", created.admin.login_id);
    crate::fsutil::write_private(&dir.join(&p12_name), &created.admin_certificate.pkcs12_der)?;
    std::fs::write(dir.join("ca.pem"), &created.ca_cert_pem)
        .with_context(|| format!("writing {}", dir.join("ca.pem").display()))?;
    let credentials = serde_json::json!({
        "tenant": created.tenant.slug,
        "loginId": created.admin.login_id,
        "password": created.admin_password.expose_secret(),
        "pkcs12Path": p12_name,
        "pkcs12Password": created.admin_certificate.pkcs12_password.expose_secret(),
        "caCertPath": "ca.pem",
    });
    let path = dir.join("credentials.json");
    let text = serde_json::to_string_pretty(&credentials).context("encoding credentials")?;
    crate::fsutil::write_private(&path, text.as_bytes())?;
    Ok(path)
}

/// On an empty database: tenant `demo` with CITY_ADMIN `admin`, credentials written under
/// `<data_dir>/bootstrap/`. Several instances starting at once: one creates, the rest skip.
pub async fn bootstrap(
    db: &sea_orm::DatabaseConnection,
    master_key: &MasterKey,
    hasher: &PasswordHasher,
    data_dir: &Path,
    time_zone: chrono_tz::Tz,
) -> anyhow::Result<Option<std::path::PathBuf>> {
    if tenant::Entity::find()
        .count(db)
        .await
        .context("counting tenants")?
        > 0
    {
        return Ok(None);
    }
    let created = match create_tenant(
        db,
        master_key,
        hasher,
        NewTenant {
            slug: "demo".into(),
            name: "デモ市".into(),
            admin_login_id: "admin".into(),
            admin_display_name: "デモ市 管理者".into(),
            time_zone,
        },
    )
    .await
    {
        Ok(created) => created,
        Err(AppError::Conflict(_)) => return Ok(None),
        Err(e) => anyhow::bail!("bootstrap failed: {e:?}"),
    };
    let path = write_credentials(&data_dir.join("bootstrap"), &created)?;
    Ok(Some(path))
}

/// Finds a tenant by slug.
pub async fn by_slug(db: &impl ConnectionTrait, slug: &str) -> AppResult<Option<tenant::Model>> {
    Ok(tenant::Entity::find()
        .filter(tenant::Column::Slug.eq(slug))
        .one(db)
        .await?)
}

/// The CA row of a tenant by slug (certificate and current CRL), for the public PKI endpoints.
pub async fn ca_and_crl(
    db: &impl ConnectionTrait,
    slug: &str,
) -> AppResult<Option<tenant_ca::Model>> {
    let Some(tenant) = by_slug(db, slug).await? else {
        return Ok(None);
    };
    Ok(tenant_ca::Entity::find_by_id(tenant.id).one(db).await?)
}

/// Switches rule ⑫ (facility admins manage their own staff's certificates and passwords) and
/// records `tenant.update`.
pub async fn set_facility_admin_delegation(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    enabled: bool,
    origin: &audit::Origin,
) -> AppResult<tenant::Model> {
    let tenant = tenant::Entity::find_by_id(tenant_id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound)?;
    let mut active: tenant::ActiveModel = tenant.into();
    active.facility_admin_delegation = Set(enabled);
    active.updated_at = Set(now());
    let updated = active.update(db).await?;
    let event = Event::new(tenant_id, "tenant.update", AuditOutcome::Allowed)
        .by(origin)
        .target("tenant", tenant_id)
        .detail("facilityAdminDelegation", enabled.to_string());
    audit::record(db, event).await?;
    Ok(updated)
}
