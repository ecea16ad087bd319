//! Where a purge cut one of a tenant's audit chains: the last removed event's seq and hash, signed.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_checkpoint")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The chain it cuts: 0 changes, 1 reads.
    pub chain: i16,
    pub seq: i64,
    pub hash: String,
    pub purged_before: DateTimeUtc,
    pub purged_events: i64,
    pub created_at: DateTimeUtc,
    pub signature: String,
}

impl ActiveModelBehavior for ActiveModel {}
