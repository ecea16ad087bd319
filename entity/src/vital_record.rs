//! One measurement session of vital signs (units fixed; LOINC codes in `api::service::vitals`).

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "vital_records")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub room_id: Uuid,
    pub recorded_by: Uuid,
    pub measured_at: DateTimeUtc,
    pub systolic_mm_hg: Option<i32>,
    pub diastolic_mm_hg: Option<i32>,
    pub pulse_per_min: Option<i32>,
    pub temperature_celsius: Option<f64>,
    pub spo2_percent: Option<i32>,
    pub respiratory_rate_per_min: Option<i32>,
    pub weight_kg: Option<f64>,
    pub blood_glucose_mg_dl: Option<i32>,
    pub note: Option<String>,
    pub created_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
