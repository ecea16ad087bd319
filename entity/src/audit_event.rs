//! One audit event. Rows are only ever inserted; `hash` chains each of a tenant's two chains
//! (0: changes, 1: reads) in `seq` order.

use sea_orm::entity::prelude::*;

use crate::kinds::AuditOutcome;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_event")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Which of the tenant's chains: 0 changes (written with the change), 1 reads (buffered).
    pub chain: i16,
    /// Position in its chain: 1, 2, 3 … with no gaps (a purge removes a prefix).
    pub seq: i64,
    pub at: DateTimeUtc,
    pub actor_id: Option<Uuid>,
    /// Hex SHA-256 of the session token the request came with.
    pub session_hash: Option<String>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub room_id: Option<Uuid>,
    pub outcome: AuditOutcome,
    pub ip: Option<String>,
    pub certificate_serial: Option<String>,
    /// A small JSON object, stored as the exact text that was hashed.
    pub detail: String,
    /// Hex SHA-256 over the previous event's hash and this event's canonical encoding.
    pub hash: String,
}

impl ActiveModelBehavior for ActiveModel {}
