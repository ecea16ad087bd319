//! A patient room (患者部屋): one per patient, opened by the city after consent (forms 8, 9).

use sea_orm::entity::prelude::*;

use crate::kinds::{CareLevel, RoomStatus, Sex};

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "rooms")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub status: RoomStatus,
    pub patient_name: String,
    pub patient_name_kana: String,
    pub patient_birth_date: Date,
    pub patient_sex: Sex,
    pub patient_address: Option<String>,
    pub patient_phone: Option<String>,
    pub patient_care_level: Option<CareLevel>,
    pub patient_key_person: Option<String>,
    pub patient_primary_physician: Option<String>,
    pub patient_care_manager: Option<String>,
    pub patient_notes: Option<String>,
    /// Family name, initial of the given name, birth year: what the city and invitees see.
    pub patient_label: String,
    pub opened_by: Uuid,
    pub opened_at: DateTimeUtc,
    pub closing_requested_at: Option<DateTimeUtc>,
    pub closed_by: Option<Uuid>,
    pub closed_at: Option<DateTimeUtc>,
    pub end_reason: Option<String>,
    /// A closed room is kept read-only until this day (records retention).
    pub retain_until: Option<Date>,
    pub updated_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
