//! One notification on one external channel: due when, claimed by whom, tried how often.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A way to reach a person; IN_APP is the inbox itself (no delivery row).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(
    rs_type = "String",
    db_type = "String(StringLen::N(16))",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Channel {
    InApp,
    WebPush,
    Gateway,
    Email,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(
    rs_type = "String",
    db_type = "String(StringLen::N(16))",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryState {
    /// Waiting for `due_at`.
    Pending,
    /// Claimed by a worker until `claimed_until`.
    Sending,
    Sent,
    /// Given up: a permanent error, or the retry limit.
    Failed,
    /// Not sent, on purpose: no target, the channel or the room was turned off meanwhile,
    /// the recipient left the room or was suspended.
    Skipped,
}

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notification_deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub notification_id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub channel: Channel,
    pub state: DeliveryState,
    /// An e-mail that waits for the next digest.
    pub digest: bool,
    pub due_at: DateTimeUtc,
    pub attempts: i32,
    pub claimed_by: Option<Uuid>,
    pub claimed_until: Option<DateTimeUtc>,
    /// The last transient or permanent reason; never content or secrets.
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
