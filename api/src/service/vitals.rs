//! Vital signs (バイタル): one record per measurement session, units fixed, the plausible ranges
//! of DOMAIN.md, and the LOINC/UCUM codes that the FHIR export uses (JP Core
//! JP_Observation_VitalSigns).

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, Set,
};
use uuid::Uuid;

use entity::kinds::AuditOutcome;
use entity::vital_record;

use crate::authz::rooms::RoomAccess;
use crate::error::{AppError, AppResult};
use crate::events::LiveEvent;
use crate::service::audit::{self, Event, Origin};
use crate::service::page::{self, Page};
use crate::service::{forms, now, rooms};
use crate::state::AppState;

/// How far in the future a measurement time may lie (clock skew of the device).
pub const FUTURE_TOLERANCE_MINUTES: i64 = 5;
const NOTE_MAX_CHARS: usize = 2_000;

/// One kind of measured value: its input field, LOINC code, UCUM unit and plausible range.
#[derive(Debug, Clone, Copy)]
pub struct Vital {
    pub field: &'static str,
    pub loinc: &'static str,
    pub display: &'static str,
    pub ucum: &'static str,
    pub min: f64,
    pub max: f64,
}

pub const SYSTOLIC: Vital = Vital {
    field: "systolicMmHg",
    loinc: "8480-6",
    display: "Systolic blood pressure",
    ucum: "mm[Hg]",
    min: 40.0,
    max: 300.0,
};
pub const DIASTOLIC: Vital = Vital {
    field: "diastolicMmHg",
    loinc: "8462-4",
    display: "Diastolic blood pressure",
    ucum: "mm[Hg]",
    min: 20.0,
    max: 200.0,
};
pub const PULSE: Vital = Vital {
    field: "pulsePerMin",
    loinc: "8867-4",
    display: "Heart rate",
    ucum: "/min",
    min: 20.0,
    max: 250.0,
};
pub const TEMPERATURE: Vital = Vital {
    field: "temperatureCelsius",
    loinc: "8310-5",
    display: "Body temperature",
    ucum: "Cel",
    min: 30.0,
    max: 45.0,
};
pub const SPO2: Vital = Vital {
    field: "spo2Percent",
    loinc: "2708-6",
    display: "Oxygen saturation in Arterial blood",
    ucum: "%",
    min: 50.0,
    max: 100.0,
};
pub const RESPIRATORY_RATE: Vital = Vital {
    field: "respiratoryRatePerMin",
    loinc: "9279-1",
    display: "Respiratory rate",
    ucum: "/min",
    min: 4.0,
    max: 80.0,
};
pub const WEIGHT: Vital = Vital {
    field: "weightKg",
    loinc: "29463-7",
    display: "Body weight",
    ucum: "kg",
    min: 1.0,
    max: 300.0,
};
pub const GLUCOSE: Vital = Vital {
    field: "bloodGlucoseMgDl",
    loinc: "2339-0",
    display: "Glucose [Mass/volume] in Blood",
    ucum: "mg/dL",
    min: 10.0,
    max: 1000.0,
};
/// The blood pressure panel that carries systolic and diastolic as components.
pub const BLOOD_PRESSURE_PANEL: (&str, &str) =
    ("85354-9", "Blood pressure panel with all children optional");

/// What `recordVitals` asks to record.
#[derive(Debug, Clone, Default)]
pub struct VitalsForm {
    pub measured_at: DateTime<Utc>,
    pub systolic: Option<i32>,
    pub diastolic: Option<i32>,
    pub pulse: Option<i32>,
    pub temperature: Option<f64>,
    pub spo2: Option<i32>,
    pub respiratory_rate: Option<i32>,
    pub weight: Option<f64>,
    pub glucose: Option<i32>,
    pub note: Option<String>,
}

fn in_range(vital: &Vital, value: Option<f64>) -> AppResult<()> {
    match value {
        Some(v) if !v.is_finite() || v < vital.min || v > vital.max => Err(AppError::bad_input(
            vital.field,
            format!(
                "{} must be between {} and {} {}",
                vital.field, vital.min, vital.max, vital.ucum
            ),
        )),
        _ => Ok(()),
    }
}

impl VitalsForm {
    pub fn validated(mut self, now: DateTime<Utc>) -> AppResult<VitalsForm> {
        let int = |v: Option<i32>| v.map(f64::from);
        in_range(&SYSTOLIC, int(self.systolic))?;
        in_range(&DIASTOLIC, int(self.diastolic))?;
        in_range(&PULSE, int(self.pulse))?;
        in_range(&TEMPERATURE, self.temperature)?;
        in_range(&SPO2, int(self.spo2))?;
        in_range(&RESPIRATORY_RATE, int(self.respiratory_rate))?;
        in_range(&WEIGHT, self.weight)?;
        in_range(&GLUCOSE, int(self.glucose))?;
        if let (Some(sys), Some(dia)) = (self.systolic, self.diastolic)
            && dia >= sys
        {
            return Err(AppError::bad_input(
                DIASTOLIC.field,
                "the diastolic pressure must be below the systolic",
            ));
        }
        let any = self.systolic.is_some()
            || self.diastolic.is_some()
            || self.pulse.is_some()
            || self.temperature.is_some()
            || self.spo2.is_some()
            || self.respiratory_rate.is_some()
            || self.weight.is_some()
            || self.glucose.is_some();
        if !any {
            return Err(AppError::bad_input(
                "input",
                "record at least one measured value",
            ));
        }
        if self.measured_at > now + Duration::minutes(FUTURE_TOLERANCE_MINUTES) {
            return Err(AppError::bad_input(
                "measuredAt",
                format!("must not be more than {FUTURE_TOLERANCE_MINUTES} minutes in the future"),
            ));
        }
        self.note = forms::optional(self.note.as_deref(), |n| {
            forms::multiline("note", n, NOTE_MAX_CHARS)
        })?;
        Ok(self)
    }
}

/// `recordVitals` (a member of an OPEN room with consent).
pub async fn record(
    state: &AppState,
    access: &RoomAccess,
    form: VitalsForm,
    origin: &Origin,
) -> AppResult<vital_record::Model> {
    let form = form.validated(now())?;
    let txn = crate::db::begin_write(&state.db).await?;
    let room = rooms::writable_in(&txn, access.room.id, access.user_id).await?;
    let measured_at = DateTime::from_timestamp_micros(form.measured_at.timestamp_micros())
        .unwrap_or(form.measured_at);
    let created = vital_record::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(room.tenant_id),
        room_id: Set(room.id),
        recorded_by: Set(access.user_id),
        measured_at: Set(measured_at),
        systolic_mm_hg: Set(form.systolic),
        diastolic_mm_hg: Set(form.diastolic),
        pulse_per_min: Set(form.pulse),
        temperature_celsius: Set(form.temperature),
        spo2_percent: Set(form.spo2),
        respiratory_rate_per_min: Set(form.respiratory_rate),
        weight_kg: Set(form.weight),
        blood_glucose_mg_dl: Set(form.glucose),
        note: Set(form.note),
        created_at: Set(now()),
    }
    .insert(&txn)
    .await?;
    let event = Event::new(room.tenant_id, "vitals.record", AuditOutcome::Allowed)
        .by(origin)
        .room(room.id)
        .target("vital_record", created.id);
    audit::record(&txn, event).await?;
    txn.commit().await?;
    state
        .events
        .publish([LiveEvent::VitalsRecorded {
            room_id: created.room_id,
            record_id: created.id,
        }])
        .await;
    Ok(created)
}

/// A page of the room's vitals, newest measurement first, `from ≤ measuredAt ≤ to`. The
/// cursor is the record id; paging goes on from that record's (measuredAt, id).
pub async fn list(
    db: &impl ConnectionTrait,
    access: &RoomAccess,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    first: u64,
    after: Option<Uuid>,
) -> AppResult<Page<vital_record::Model>> {
    // Times are stored to the microsecond: compare at that precision on both databases.
    let from = from.map(|t| micros(t, true));
    let to = to.map(|t| micros(t, false));
    let base = || {
        let mut select =
            vital_record::Entity::find().filter(vital_record::Column::RoomId.eq(access.room.id));
        if let Some(from) = from {
            select = select.filter(vital_record::Column::MeasuredAt.gte(from));
        }
        if let Some(to) = to {
            select = select.filter(vital_record::Column::MeasuredAt.lte(to));
        }
        select
    };
    let total = base().count(db).await?;
    let mut select = base();
    if let Some(after) = after {
        let cursor = vital_record::Entity::find_by_id(after)
            .filter(vital_record::Column::RoomId.eq(access.room.id))
            .one(db)
            .await?
            .ok_or_else(|| AppError::bad_input("after", "not a cursor of this list"))?;
        select = select.filter(
            sea_orm::Condition::any()
                .add(vital_record::Column::MeasuredAt.lt(cursor.measured_at))
                .add(
                    sea_orm::Condition::all()
                        .add(vital_record::Column::MeasuredAt.eq(cursor.measured_at))
                        .add(vital_record::Column::Id.lt(cursor.id)),
                ),
        );
    }
    let items = select
        .order_by_desc(vital_record::Column::MeasuredAt)
        .order_by_desc(vital_record::Column::Id)
        .limit(first + 1)
        .all(db)
        .await?;
    Ok(page::finish(items, first, total))
}

/// `t` at microsecond precision, rounded up or down.
fn micros(t: DateTime<Utc>, up: bool) -> DateTime<Utc> {
    let mut us = t.timestamp_micros();
    if up && !t.timestamp_subsec_nanos().is_multiple_of(1_000) {
        us += 1;
    }
    DateTime::from_timestamp_micros(us).unwrap_or(t)
}

/// Every vital record of the room, oldest first (the FHIR export).
pub async fn all(
    db: &impl ConnectionTrait,
    access: &RoomAccess,
) -> AppResult<Vec<vital_record::Model>> {
    Ok(vital_record::Entity::find()
        .filter(vital_record::Column::RoomId.eq(access.room.id))
        .order_by_asc(vital_record::Column::MeasuredAt)
        .order_by_asc(vital_record::Column::Id)
        .all(db)
        .await?)
}

/// One record by id, whatever its room (live events: each stream checks the room itself).
pub async fn by_id(db: &impl ConnectionTrait, id: Uuid) -> AppResult<Option<vital_record::Model>> {
    Ok(vital_record::Entity::find_by_id(id).one(db).await?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn field(err: AppError) -> String {
        match err {
            AppError::BadUserInput { field, .. } => field,
            other => panic!("expected BAD_USER_INPUT, got {other:?}"),
        }
    }

    fn form() -> VitalsForm {
        VitalsForm {
            measured_at: Utc::now(),
            temperature: Some(36.5),
            ..Default::default()
        }
    }

    #[test]
    fn ranges_are_inclusive_and_name_the_field() {
        let now = Utc::now();
        assert!(
            VitalsForm {
                temperature: Some(30.0),
                ..form()
            }
            .validated(now)
            .is_ok()
        );
        assert!(
            VitalsForm {
                temperature: Some(45.0),
                ..form()
            }
            .validated(now)
            .is_ok()
        );
        let err = VitalsForm {
            temperature: Some(45.1),
            ..form()
        }
        .validated(now)
        .unwrap_err();
        assert_eq!(field(err), "temperatureCelsius");
        let err = VitalsForm {
            spo2: Some(49),
            ..form()
        }
        .validated(now)
        .unwrap_err();
        assert_eq!(field(err), "spo2Percent");
        let err = VitalsForm {
            weight: Some(f64::NAN),
            ..form()
        }
        .validated(now)
        .unwrap_err();
        assert_eq!(field(err), "weightKg");
        let err = VitalsForm {
            glucose: Some(1001),
            ..form()
        }
        .validated(now)
        .unwrap_err();
        assert_eq!(field(err), "bloodGlucoseMgDl");
    }

    #[test]
    fn diastolic_below_systolic_at_least_one_value_not_in_the_future() {
        let now = Utc::now();
        let bp = |s, d| VitalsForm {
            systolic: Some(s),
            diastolic: Some(d),
            temperature: None,
            ..form()
        };
        assert!(bp(120, 80).validated(now).is_ok());
        assert_eq!(
            field(bp(80, 80).validated(now).unwrap_err()),
            "diastolicMmHg"
        );
        let empty = VitalsForm {
            temperature: None,
            ..form()
        };
        assert_eq!(field(empty.validated(now).unwrap_err()), "input");
        let soon = VitalsForm {
            measured_at: now + Duration::minutes(4),
            ..form()
        };
        assert!(soon.validated(now).is_ok());
        let later = VitalsForm {
            measured_at: now + Duration::minutes(6),
            ..form()
        };
        assert_eq!(field(later.validated(now).unwrap_err()), "measuredAt");
    }
}
