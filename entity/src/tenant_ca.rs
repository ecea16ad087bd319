//! A tenant's certificate authority: certificate, sealed private key, current CRL.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenant_cas")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    pub cert_pem: String,
    /// Sealed with the master key; see `auth::pki::MasterKey`.
    pub key_sealed: SealedKey,
    pub crl_number: i64,
    pub crl_der: Vec<u8>,
    pub crl_updated_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
}

/// A CA private key sealed with the master key. Ciphertext, but kept out of logs all the same.
#[derive(Clone, PartialEq, Eq, DeriveValueType)]
pub struct SealedKey(pub String);

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedKey(..)")
    }
}

impl ActiveModelBehavior for ActiveModel {}
