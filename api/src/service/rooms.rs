//! Patient rooms: opening (after consent, forms 8 + 9), the room list, the end of service and
//! closing into a read-only archive.

use chrono::{Datelike as _, NaiveDate};
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, JoinType,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, RelationDef, Select,
    Set,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use entity::kinds::{
    ApplicationKind, ApplicationStatus, AuditOutcome, CareLevel, Consenter, NoteCategory,
    RoomStatus, Sex,
};
use entity::{application, room, room_member, tenant};

use crate::authz::rooms::{RoomAccess, RoomAdmin, RoomOpener};
use crate::error::{AppError, AppResult};
use crate::service::audit::{self, Event, Origin};
use crate::service::forms::{self, optional};
use crate::service::page::{self, Page};
use crate::service::{applications, consents, enum_name, invitations, memberships, notes, now};
use crate::state::AppState;

// ---------------------------------------------------------------------------------------------
// Forms 8 and 9: the patient and the consent
// ---------------------------------------------------------------------------------------------

/// The patient of a room, as entered (form 9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatientForm {
    pub name: String,
    pub name_kana: String,
    pub birth_date: NaiveDate,
    pub sex: Sex,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub care_level: Option<CareLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_person: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_physician: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub care_manager: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// Oldest birth date taken as plausible.
fn earliest_birth_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(NaiveDate::MIN)
}

/// Family and given name: split at the first space (half- or full-width).
fn split_name(name: &str) -> Option<(&str, &str)> {
    let (family, given) = name.split_once([' ', '\u{3000}'])?;
    let given = given.trim_matches([' ', '\u{3000}']);
    (!family.is_empty() && !given.is_empty()).then_some((family, given))
}

impl PatientForm {
    /// Checks and normalises the patient; `at` is its path (`patient`), `today` the tenant's date.
    pub fn validated(self, at: &str, today: NaiveDate) -> AppResult<PatientForm> {
        let name = forms::text(&format!("{at}.name"), &self.name, 100)?;
        if split_name(&name).is_none() {
            return Err(AppError::bad_input(
                format!("{at}.name"),
                "family and given name separated by a space (e.g. 山田 太郎)",
            ));
        }
        if self.birth_date >= today {
            return Err(AppError::bad_input(
                format!("{at}.birthDate"),
                "must be in the past",
            ));
        }
        if self.birth_date < earliest_birth_date() {
            return Err(AppError::bad_input(
                format!("{at}.birthDate"),
                "must not be before 1900-01-01",
            ));
        }
        let free = |field: &str, v: Option<&str>, max: usize| {
            optional(v, |v| forms::text(&format!("{at}.{field}"), v, max))
        };
        Ok(PatientForm {
            name,
            name_kana: forms::katakana(&format!("{at}.nameKana"), &self.name_kana)?,
            birth_date: self.birth_date,
            sex: self.sex,
            address: free("address", self.address.as_deref(), 200)?,
            phone: optional(self.phone.as_deref(), |v| {
                forms::phone(&format!("{at}.phone"), v)
            })?,
            care_level: self.care_level,
            key_person: free("keyPerson", self.key_person.as_deref(), 500)?,
            primary_physician: free("primaryPhysician", self.primary_physician.as_deref(), 200)?,
            care_manager: free("careManager", self.care_manager.as_deref(), 200)?,
            notes: free("notes", self.notes.as_deref(), 4000)?,
        })
    }

    /// `山田 太. (1940)`: family name, initial of the given name, birth year. Never the full
    /// name or the birth date.
    pub fn label(&self) -> String {
        patient_label(&self.name, self.birth_date)
    }
}

pub fn patient_label(name: &str, birth_date: NaiveDate) -> String {
    match split_name(name) {
        Some((family, given)) => {
            let initial: String = given.chars().take(1).collect();
            format!("{family} {initial}. ({})", birth_date.year())
        }
        None => {
            let initial: String = name.chars().take(1).collect();
            format!("{initial}. ({})", birth_date.year())
        }
    }
}

/// A consent in writing (form 8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsentForm {
    pub consenter: Consenter,
    pub consenter_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationship: Option<String>,
    pub consented_on: NaiveDate,
}

impl ConsentForm {
    pub fn validated(self, at: &str, today: NaiveDate) -> AppResult<ConsentForm> {
        let consenter_name =
            forms::text(&format!("{at}.consenterName"), &self.consenter_name, 100)?;
        let relationship = optional(self.relationship.as_deref(), |v| {
            forms::text(&format!("{at}.relationship"), v, 100)
        })?;
        if self.consenter != Consenter::Patient && relationship.is_none() {
            return Err(AppError::bad_input(
                format!("{at}.relationship"),
                "required when the consenter is not the patient",
            ));
        }
        if self.consented_on > today {
            return Err(AppError::bad_input(
                format!("{at}.consentedOn"),
                "must not be in the future",
            ));
        }
        if self.consented_on < earliest_birth_date() {
            return Err(AppError::bad_input(
                format!("{at}.consentedOn"),
                "not a plausible date",
            ));
        }
        Ok(ConsentForm {
            consenter: self.consenter,
            consenter_name,
            relationship,
            consented_on: self.consented_on,
        })
    }
}

/// Today in the tenant's time zone.
pub fn today(tenant: &tenant::Model) -> NaiveDate {
    let tz: chrono_tz::Tz = tenant.time_zone.parse().unwrap_or(chrono_tz::Asia::Tokyo);
    now().with_timezone(&tz).date_naive()
}

// ---------------------------------------------------------------------------------------------
// Lookup and lists
// ---------------------------------------------------------------------------------------------

/// A room of the caller's tenant; other tenants' rooms do not exist for it (NOT_FOUND).
pub async fn in_tenant(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    id: Uuid,
) -> AppResult<room::Model> {
    room::Entity::find_by_id(id)
        .one(db)
        .await?
        .filter(|r| r.tenant_id == tenant_id)
        .ok_or(AppError::NotFound)
}

/// Which rooms a list shows: the city all of its tenant's, anyone else those it is a current
/// member of (filtered in SQL, joined on membership).
#[derive(Debug, Clone, Copy)]
pub enum RoomScope {
    Tenant(Uuid),
    Member { tenant_id: Uuid, user_id: Uuid },
}

fn membership_join() -> RelationDef {
    room::Entity::belongs_to(room_member::Entity)
        .from(room::Column::Id)
        .to(room_member::Column::RoomId)
        .into()
}

fn scoped(scope: RoomScope, status: Option<RoomStatus>) -> Select<room::Entity> {
    let mut select = match scope {
        RoomScope::Tenant(t) => room::Entity::find().filter(room::Column::TenantId.eq(t)),
        RoomScope::Member { tenant_id, user_id } => room::Entity::find()
            .join(JoinType::InnerJoin, membership_join())
            .filter(room::Column::TenantId.eq(tenant_id))
            .filter(room_member::Column::UserId.eq(user_id))
            .filter(room_member::Column::LeftAt.is_null()),
    };
    if let Some(status) = status {
        select = select.filter(room::Column::Status.eq(status));
    }
    select
}

/// Newest opened first.
pub async fn list(
    db: &impl ConnectionTrait,
    scope: RoomScope,
    status: Option<RoomStatus>,
    first: u64,
    after: Option<Uuid>,
) -> AppResult<Page<room::Model>> {
    let total = scoped(scope, status).count(db).await?;
    let mut select = scoped(scope, status);
    if let Some(after) = after {
        select = select.filter(room::Column::Id.lt(after));
    }
    let items = select
        .order_by_desc(room::Column::Id)
        .limit(first + 1)
        .all(db)
        .await?;
    Ok(page::finish(items, first, total))
}

/// Rooms of a tenant by status, for `tenantStatistics`.
pub async fn count_by_status(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
) -> AppResult<Vec<(String, i64)>> {
    let rows: Vec<(RoomStatus, i64)> = room::Entity::find()
        .select_only()
        .column(room::Column::Status)
        .column_as(Expr::col(room::Column::Id).count(), "n")
        .filter(room::Column::TenantId.eq(tenant_id))
        .group_by(room::Column::Status)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|(s, n)| (enum_name(&s), n)).collect())
}

// ---------------------------------------------------------------------------------------------
// Opening
// ---------------------------------------------------------------------------------------------

/// Inserts the room and its first consent, in the caller's transaction.
pub async fn open_in(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    opened_by: Uuid,
    patient: &PatientForm,
    consent: &ConsentForm,
    origin: &Origin,
) -> AppResult<room::Model> {
    let at = now();
    let room = room::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        status: Set(RoomStatus::Open),
        patient_name: Set(patient.name.clone()),
        patient_name_kana: Set(patient.name_kana.clone()),
        patient_birth_date: Set(patient.birth_date),
        patient_sex: Set(patient.sex),
        patient_address: Set(patient.address.clone()),
        patient_phone: Set(patient.phone.clone()),
        patient_care_level: Set(patient.care_level),
        patient_key_person: Set(patient.key_person.clone()),
        patient_primary_physician: Set(patient.primary_physician.clone()),
        patient_care_manager: Set(patient.care_manager.clone()),
        patient_notes: Set(patient.notes.clone()),
        patient_label: Set(patient.label()),
        opened_by: Set(opened_by),
        opened_at: Set(at),
        closing_requested_at: Set(None),
        closed_by: Set(None),
        closed_at: Set(None),
        end_reason: Set(None),
        retain_until: Set(None),
        updated_at: Set(at),
    }
    .insert(db)
    .await?;
    let event = Event::new(tenant_id, "room.open", AuditOutcome::Allowed)
        .by(origin)
        .room(room.id)
        .target("room", room.id);
    audit::record(db, event).await?;
    consents::insert_in(db, &room, consent, opened_by, origin).await?;
    Ok(room)
}

/// `openRoom` (CITY_ADMIN): the room, its consent and its invitations, in one transaction.
pub async fn open(
    state: &AppState,
    opener: RoomOpener,
    patient: &PatientForm,
    consent: &ConsentForm,
    invitees: &[Uuid],
    origin: &Origin,
) -> AppResult<room::Model> {
    let txn = crate::db::begin_write(&state.db).await?;
    let room = open_in(
        &txn,
        opener.tenant_id,
        opener.admin_id,
        patient,
        consent,
        origin,
    )
    .await?;
    invitations::invite_in(
        &txn,
        &state.config,
        &room,
        invitees,
        opener.admin_id,
        None,
        "inviteUserIds",
        origin,
    )
    .await?;
    txn.commit().await?;
    Ok(room)
}

// ---------------------------------------------------------------------------------------------
// Writing, ending
// ---------------------------------------------------------------------------------------------

/// Re-reads the room inside a writing transaction and checks that `user` may write it now: a
/// current member (its membership row is locked against a concurrent removal on PostgreSQL;
/// SQLite's write lock serialises anyway), the room OPEN, a valid consent on file.
pub async fn writable_in(
    db: &impl ConnectionTrait,
    room_id: Uuid,
    user_id: Uuid,
) -> AppResult<room::Model> {
    if !memberships::is_current_locked(db, room_id, user_id).await? {
        return Err(AppError::Forbidden);
    }
    let room = room::Entity::find_by_id(room_id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound)?;
    if room.status != RoomStatus::Open {
        return Err(AppError::Conflict(format!(
            "the room is {} and cannot be written",
            enum_name(&room.status)
        )));
    }
    if !consents::has_valid(db, room_id).await? {
        return Err(AppError::Conflict(
            "no valid consent: the room is read-only until a new consent is recorded".into(),
        ));
    }
    Ok(room)
}

/// `requestRoomClosure` (a member): posts the END_OF_SERVICE note, makes the room CLOSING and
/// files a ROOM_CLOSURE application for the city, in one transaction.
pub async fn request_closure(
    state: &AppState,
    access: &RoomAccess,
    facility_id: Option<Uuid>,
    tenant: &tenant::Model,
    reason: &str,
    origin: &Origin,
) -> AppResult<application::Model> {
    let reason = forms::reason("reason", reason)?;
    let txn = crate::db::begin_write(&state.db).await?;
    let room = writable_in(&txn, access.room.id, access.user_id).await?;
    let note = notes::insert_in(
        &txn,
        &room,
        access.user_id,
        NoteCategory::EndOfService,
        &reason,
        origin,
    )
    .await?;
    let moved = room::Entity::update_many()
        .col_expr(
            room::Column::Status,
            Expr::value(enum_name(&RoomStatus::Closing)),
        )
        .col_expr(room::Column::ClosingRequestedAt, Expr::value(now()))
        .col_expr(room::Column::UpdatedAt, Expr::value(now()))
        .filter(room::Column::Id.eq(room.id))
        .filter(room::Column::Status.eq(RoomStatus::Open))
        .exec(&txn)
        .await?;
    if moved.rows_affected != 1 {
        return Err(AppError::Conflict("the room is no longer open".into()));
    }
    let event = Event::new(
        room.tenant_id,
        "room.closure_request",
        AuditOutcome::Allowed,
    )
    .by(origin)
    .room(room.id)
    .target("room", room.id);
    audit::record(&txn, event).await?;
    let payload = applications::to_json(&applications::RoomClosureForm {
        room_id: room.id,
        reason,
    })?;
    let app = applications::file_in(
        &txn,
        applications::NewApplication {
            tenant,
            kind: ApplicationKind::RoomClosure,
            facility_id,
            submitted_by: Some(access.user_id),
            contact_email: None,
            payload,
            room_id: Some(room.id),
        },
        origin,
    )
    .await?;
    crate::notify::closure_requested_in(&txn, &state.config, &room, access.user_id, app.id).await?;
    txn.commit().await?;
    state.notify.wake();
    state
        .events
        .publish([
            crate::events::LiveEvent::NotePosted {
                room_id: room.id,
                note_id: note.id,
            },
            crate::events::LiveEvent::RoomStatusChanged { room_id: room.id },
        ])
        .await;
    Ok(app)
}

/// Closes the room (from OPEN or CLOSING) in the caller's transaction: CLOSED, kept read-only
/// for its last members until the retention ends; pending invitations are revoked.
pub async fn close_in(
    db: &impl ConnectionTrait,
    state: &AppState,
    room: &room::Model,
    closed_by: Uuid,
    end_reason: &str,
    origin: &Origin,
) -> AppResult<room::Model> {
    let at = now();
    let years = i32::try_from(state.config.room_retention_years).unwrap_or(5);
    let closed_on = at.date_naive();
    let retain_until = closed_on.with_year(closed_on.year() + years).or_else(|| {
        closed_on
            .with_day(28)
            .and_then(|d| d.with_year(d.year() + years))
    });
    let moved = room::Entity::update_many()
        .col_expr(
            room::Column::Status,
            Expr::value(enum_name(&RoomStatus::Closed)),
        )
        .col_expr(room::Column::ClosedAt, Expr::value(at))
        .col_expr(room::Column::ClosedBy, Expr::value(closed_by))
        .col_expr(room::Column::EndReason, Expr::value(end_reason.to_string()))
        .col_expr(room::Column::RetainUntil, Expr::value(retain_until))
        .col_expr(room::Column::UpdatedAt, Expr::value(at))
        .filter(room::Column::Id.eq(room.id))
        .filter(room::Column::Status.ne(RoomStatus::Closed))
        .exec(db)
        .await?;
    if moved.rows_affected != 1 {
        return Err(AppError::Conflict("the room is already closed".into()));
    }
    invitations::revoke_pending_of_room_in(db, room, closed_by, origin).await?;
    let event = Event::new(room.tenant_id, "room.close", AuditOutcome::Allowed)
        .by(origin)
        .room(room.id)
        .target("room", room.id)
        .detail("endReason", end_reason.to_string());
    audit::record(db, event).await?;
    crate::notify::room_closed_in(db, &state.config, room, closed_by).await?;
    reload(db, room.id).await
}

/// `closeRoom` (CITY_ADMIN). A pending ROOM_CLOSURE application of the room is approved with it.
pub async fn close(
    state: &AppState,
    admin: &RoomAdmin,
    end_reason: &str,
    origin: &Origin,
) -> AppResult<room::Model> {
    let end_reason = forms::reason("endReason", end_reason)?;
    let txn = crate::db::begin_write(&state.db).await?;
    let room = close_in(
        &txn,
        state,
        &admin.room,
        admin.admin_id,
        &end_reason,
        origin,
    )
    .await?;
    let pending = application::Entity::find()
        .filter(application::Column::RoomId.eq(room.id))
        .filter(application::Column::Kind.eq(ApplicationKind::RoomClosure))
        .filter(application::Column::Status.eq(ApplicationStatus::Submitted))
        .all(&txn)
        .await?;
    for app in pending {
        applications::conclude_in(
            &txn,
            &app,
            admin.admin_id,
            "closed by the city (closeRoom)",
            origin,
        )
        .await?;
    }
    txn.commit().await?;
    Ok(room)
}

/// A rejected closure: CLOSING → OPEN again.
pub async fn reopen_in(db: &impl ConnectionTrait, room_id: Uuid, origin: &Origin) -> AppResult<()> {
    let moved = room::Entity::update_many()
        .col_expr(
            room::Column::Status,
            Expr::value(enum_name(&RoomStatus::Open)),
        )
        .col_expr(
            room::Column::ClosingRequestedAt,
            Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
        )
        .col_expr(room::Column::UpdatedAt, Expr::value(now()))
        .filter(room::Column::Id.eq(room_id))
        .filter(room::Column::Status.eq(RoomStatus::Closing))
        .exec(db)
        .await?;
    if moved.rows_affected == 1 {
        let room = reload(db, room_id).await?;
        let event = Event::new(room.tenant_id, "room.reopen", AuditOutcome::Allowed)
            .by(origin)
            .room(room.id)
            .target("room", room.id);
        audit::record(db, event).await?;
    }
    Ok(())
}

pub async fn reload(db: &impl ConnectionTrait, id: Uuid) -> AppResult<room::Model> {
    room::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("room {id} vanished")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_shows_family_name_initial_and_year_only() {
        let born = NaiveDate::from_ymd_opt(1940, 5, 1).unwrap();
        assert_eq!(patient_label("山田 太郎", born), "山田 太. (1940)");
        assert_eq!(patient_label("山田\u{3000}太郎", born), "山田 太. (1940)");
        assert!(!patient_label("山田 太郎", born).contains("太郎"));
        assert!(!patient_label("山田 太郎", born).contains("05"));
    }

    #[test]
    fn patients_are_validated_field_by_field() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        let good = PatientForm {
            name: "山田 太郎".into(),
            name_kana: "ヤマダ タロウ".into(),
            birth_date: NaiveDate::from_ymd_opt(1940, 5, 1).unwrap(),
            sex: Sex::Male,
            address: None,
            phone: Some("03-1234-5678".into()),
            care_level: Some(CareLevel::Care2),
            key_person: None,
            primary_physician: None,
            care_manager: None,
            notes: None,
        };
        assert!(good.clone().validated("patient", today).is_ok());
        let field = |p: PatientForm| match p.validated("patient", today) {
            Err(AppError::BadUserInput { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(PatientForm {
                name: "山田太郎".into(),
                ..good.clone()
            }),
            "patient.name"
        );
        assert_eq!(
            field(PatientForm {
                name_kana: "やまだ".into(),
                ..good.clone()
            }),
            "patient.nameKana"
        );
        assert_eq!(
            field(PatientForm {
                birth_date: today,
                ..good.clone()
            }),
            "patient.birthDate"
        );
        assert_eq!(
            field(PatientForm {
                phone: Some("12".into()),
                ..good
            }),
            "patient.phone"
        );
    }

    #[test]
    fn a_family_consent_names_the_relationship() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        let consent = ConsentForm {
            consenter: Consenter::Family,
            consenter_name: "山田 花子".into(),
            relationship: None,
            consented_on: today,
        };
        assert!(matches!(
            consent.clone().validated("consent", today),
            Err(AppError::BadUserInput { field, .. }) if field == "consent.relationship"
        ));
        assert!(
            ConsentForm {
                relationship: Some("長女".into()),
                ..consent.clone()
            }
            .validated("consent", today)
            .is_ok()
        );
        assert!(
            ConsentForm {
                consenter: Consenter::Patient,
                consented_on: today.succ_opt().unwrap(),
                ..consent
            }
            .validated("consent", today)
            .is_err()
        );
    }
}
