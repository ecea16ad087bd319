//! A client certificate issued to one user for one device. The private key is never stored.

use sea_orm::entity::prelude::*;

use crate::kinds::CertificateStatus;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "certificates")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    /// Lowercase hex without leading zeros, as in the certificate and the CRL.
    pub serial_hex: String,
    #[sea_orm(unique)]
    pub fingerprint_sha256: String,
    pub device_label: String,
    pub not_before: DateTimeUtc,
    pub not_after: DateTimeUtc,
    pub status: CertificateStatus,
    pub revoked_at: Option<DateTimeUtc>,
    pub revocation_reason: Option<String>,
    pub issued_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
    #[sea_orm(belongs_to, from = "user_id", to = "id")]
    pub user: BelongsTo<super::user::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}
