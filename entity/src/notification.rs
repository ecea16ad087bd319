//! One notification for one recipient: an inbox entry and the outbox record its deliveries
//! go out from. Carries ids and kinds only, never content.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

use crate::kinds::NoteCategory;

/// What happened, from the recipient's side.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[sea_orm(
    rs_type = "String",
    db_type = "String(StringLen::N(32))",
    rename_all = "SCREAMING_SNAKE_CASE"
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NotificationKind {
    /// A note in one of my rooms (not mine).
    NotePosted,
    /// A note that mentions me.
    Mention,
    /// A reply to my note.
    Reply,
    /// An invitation to a room.
    Invitation,
    /// The end of service was requested in one of my rooms (for the city: please close it).
    RoomClosureRequested,
    /// One of my rooms was closed.
    RoomClosed,
    /// An application of my facility changed status (facility admins).
    ApplicationStatusChanged,
    /// A new application arrived (city admins).
    ApplicationSubmitted,
    /// My certificate expires within 30 days.
    CertificateExpiring30,
    /// My certificate expires within 7 days.
    CertificateExpiring7,
    /// My account was logged in with a certificate never used before.
    NewCertificateLogin,
}

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notifications")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub kind: NotificationKind,
    /// Names the event; unique per user.
    pub dedup_key: String,
    pub room_id: Option<Uuid>,
    /// The note, invitation, application or certificate.
    pub event_id: Option<Uuid>,
    pub note_category: Option<NoteCategory>,
    pub urgent: bool,
    /// Shown in the inbox (the recipient's IN_APP channel was on).
    pub in_app: bool,
    pub created_at: DateTimeUtc,
    pub read_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
