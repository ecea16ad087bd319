//! The patient's record in a room beyond the note: the patient data (form 9) with every earlier
//! version kept, and the care information sections (既往歴, 服薬, アレルギー, ADL, ケアプラン …),
//! versioned for optimistic concurrency so two nurses never silently overwrite each other.

use std::collections::BTreeMap;

use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    IntoActiveModel as _, QueryFilter as _, QueryOrder as _, Set,
};
use uuid::Uuid;

use entity::kinds::{AuditOutcome, CareInfoKind};
use entity::{care_info_version, patient_version, room};

use crate::authz::rooms::RoomAccess;
use crate::error::{AppError, AppResult};
use crate::service::audit::{self, Event, Origin};
use crate::service::rooms::{self, PatientForm};
use crate::service::{enum_name, forms, now};
use crate::state::AppState;

/// Longest care information section, in characters.
pub const CONTENT_MAX_CHARS: usize = 20_000;

/// The patient as the room holds it now, as a form (what a version keeps).
pub fn patient_of(room: &room::Model) -> PatientForm {
    PatientForm {
        name: room.patient_name.clone(),
        name_kana: room.patient_name_kana.clone(),
        birth_date: room.patient_birth_date,
        sex: room.patient_sex,
        address: room.patient_address.clone(),
        phone: room.patient_phone.clone(),
        care_level: room.patient_care_level,
        key_person: room.patient_key_person.clone(),
        primary_physician: room.patient_primary_physician.clone(),
        care_manager: room.patient_care_manager.clone(),
        notes: room.patient_notes.clone(),
    }
}

/// `updatePatient` (a member of an OPEN room with consent): the previous data becomes a
/// version; the label the city and invitees see follows the new name and birth date.
pub async fn update_patient(
    state: &AppState,
    access: &RoomAccess,
    patient: &PatientForm,
    origin: &Origin,
) -> AppResult<room::Model> {
    let txn = crate::db::begin_write(&state.db).await?;
    let current = rooms::writable_in(&txn, access.room.id, access.user_id).await?;
    let at = now();
    let previous = serde_json::to_value(patient_of(&current)).map_err(AppError::internal)?;
    patient_version::ActiveModel {
        id: Set(Uuid::now_v7()),
        room_id: Set(current.id),
        patient: Set(previous),
        replaced_at: Set(at),
        replaced_by: Set(access.user_id),
    }
    .insert(&txn)
    .await?;
    let mut changed = current.into_active_model();
    changed.patient_name = Set(patient.name.clone());
    changed.patient_name_kana = Set(patient.name_kana.clone());
    changed.patient_birth_date = Set(patient.birth_date);
    changed.patient_sex = Set(patient.sex);
    changed.patient_address = Set(patient.address.clone());
    changed.patient_phone = Set(patient.phone.clone());
    changed.patient_care_level = Set(patient.care_level);
    changed.patient_key_person = Set(patient.key_person.clone());
    changed.patient_primary_physician = Set(patient.primary_physician.clone());
    changed.patient_care_manager = Set(patient.care_manager.clone());
    changed.patient_notes = Set(patient.notes.clone());
    changed.patient_label = Set(patient.label());
    changed.updated_at = Set(at);
    let updated = changed.update(&txn).await?;
    let event = Event::new(updated.tenant_id, "patient.update", AuditOutcome::Allowed)
        .by(origin)
        .room(updated.id)
        .target("room", updated.id);
    audit::record(&txn, event).await?;
    txn.commit().await?;
    Ok(updated)
}

/// Earlier versions of the patient, oldest first.
pub async fn patient_versions(
    db: &impl ConnectionTrait,
    access: &RoomAccess,
) -> AppResult<Vec<patient_version::Model>> {
    Ok(patient_version::Entity::find()
        .filter(patient_version::Column::RoomId.eq(access.room.id))
        .order_by_asc(patient_version::Column::ReplacedAt)
        .all(db)
        .await?)
}

/// The current version of every section written, in the order of [`CareInfoKind`].
pub async fn sections(
    db: &impl ConnectionTrait,
    access: &RoomAccess,
) -> AppResult<Vec<care_info_version::Model>> {
    let rows = care_info_version::Entity::find()
        .filter(care_info_version::Column::RoomId.eq(access.room.id))
        .order_by_asc(care_info_version::Column::Version)
        .all(db)
        .await?;
    let mut current: BTreeMap<usize, care_info_version::Model> = BTreeMap::new();
    for row in rows {
        current.insert(kind_order(row.kind), row);
    }
    Ok(current.into_values().collect())
}

fn kind_order(kind: CareInfoKind) -> usize {
    use sea_orm::Iterable as _;
    CareInfoKind::iter()
        .position(|k| k == kind)
        .unwrap_or(usize::MAX)
}

/// `updateCareInfo`: writes version `expected + 1` of the section. `expected` is the version
/// the writer last read (absent or 0 for a new section); anything else than the current one is
/// CONFLICT. The unique (room, kind, version) key decides between two concurrent writers.
pub async fn update_section(
    state: &AppState,
    access: &RoomAccess,
    kind: CareInfoKind,
    content: &str,
    expected: Option<i32>,
    origin: &Origin,
) -> AppResult<care_info_version::Model> {
    let content = forms::multiline("content", content, CONTENT_MAX_CHARS)?;
    let expected = expected.unwrap_or(0);
    if expected < 0 {
        return Err(AppError::bad_input(
            "expectedVersion",
            "a version is 0 or more",
        ));
    }
    let txn = crate::db::begin_write(&state.db).await?;
    let room = rooms::writable_in(&txn, access.room.id, access.user_id).await?;
    let current = care_info_version::Entity::find()
        .filter(care_info_version::Column::RoomId.eq(room.id))
        .filter(care_info_version::Column::Kind.eq(kind))
        .order_by_desc(care_info_version::Column::Version)
        .one(&txn)
        .await?
        .map_or(0, |c| c.version);
    let stale = || {
        AppError::Conflict(format!(
            "the section is at version {current}, not {expected}: reload it and apply your change again"
        ))
    };
    if current != expected {
        return Err(stale());
    }
    let written = care_info_version::ActiveModel {
        id: Set(Uuid::now_v7()),
        room_id: Set(room.id),
        kind: Set(kind),
        version: Set(expected + 1),
        content: Set(content),
        updated_at: Set(now()),
        updated_by: Set(access.user_id),
    }
    .insert(&txn)
    .await
    .map_err(|e| match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => stale(),
        _ => e.into(),
    })?;
    let event = Event::new(room.tenant_id, "careinfo.update", AuditOutcome::Allowed)
        .by(origin)
        .room(room.id)
        .target("care_info", enum_name(&kind))
        .detail("version", written.version);
    audit::record(&txn, event).await?;
    txn.commit().await?;
    Ok(written)
}
