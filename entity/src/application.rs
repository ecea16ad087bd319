//! An application: one of the city's numbered forms, submitted, then reviewed by the city.

use sea_orm::entity::prelude::*;

use crate::kinds::{ApplicationKind, ApplicationStatus};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "applications")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// `R2026-000123`, unique per tenant.
    pub reference_number: String,
    pub kind: ApplicationKind,
    pub status: ApplicationStatus,
    pub facility_id: Option<Uuid>,
    /// Null for a registration filed without an account.
    pub submitted_by: Option<Uuid>,
    /// Registration only: how the applicant follows its status.
    pub contact_email: Option<String>,
    /// The validated form as JSON (the typed struct of its kind, re-serialised).
    pub payload: String,
    pub submitted_at: DateTimeUtc,
    pub reviewed_by: Option<Uuid>,
    pub reviewed_at: Option<DateTimeUtc>,
    pub review_note: Option<String>,
    /// What approval produced (ids of created facility and users), as JSON. Never secrets.
    pub outcome: Option<String>,
    /// The room a ROOM_* application is about (ROOM_CREATION: once approved).
    pub room_id: Option<Uuid>,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
