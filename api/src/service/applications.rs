//! Applications: the city's numbered forms (registration 4+1-2/2-2A+5, change 7, suspension 3)
//! submitted, followed by reference number, and reviewed by the city. Approval does everything
//! the form asks for in one transaction, so it happens entirely or not at all.
//!
//! Approval is written so that two admins approving at once cannot both succeed: the
//! transaction first moves the application out of SUBMITTED with a conditional UPDATE, and the
//! one that finds it already moved rolls back with CONFLICT before creating anything.

use std::net::IpAddr;

use chrono::Datelike as _;
use futures_util::future::try_join_all;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, Select, Set,
};
use secrecy::SecretString;
use serde::Serialize;
use uuid::Uuid;

use entity::kinds::{
    AccountStatus, ApplicationKind, ApplicationStatus, AuditOutcome, Role, RoomStatus,
};
use entity::{application, facility, room, tenant, user};

use crate::auth::pki;
use crate::authz::{ApplicationScope, CityAdmin, FacilityAdmin};
use crate::error::{AppError, AppResult};
use crate::service::accounts;
use crate::service::audit::{self, Event, Origin};
use crate::service::certificates::{self, Issuance};
use crate::service::forms::{self, ChangeForm, RegistrationForm, StaffEntry, SuspensionForm};
use crate::service::page::{self, Page};
use crate::service::{counters, enum_name, facilities, invitations, now, rooms, tenants, users};
use crate::state::AppState;

/// Longest review note.
const MAX_NOTE: usize = 2000;

// ---------------------------------------------------------------------------------------------
// Submission
// ---------------------------------------------------------------------------------------------

/// `R2026-000123`: the tenant's sequence for the year (in the tenant's time zone).
async fn next_reference(db: &impl ConnectionTrait, tenant: &tenant::Model) -> AppResult<String> {
    let tz: chrono_tz::Tz = tenant.time_zone.parse().unwrap_or(chrono_tz::Asia::Tokyo);
    let year = now().with_timezone(&tz).year();
    let n = counters::take(db, tenant.id, &format!("application:{year}"), 1).await?;
    Ok(format!("R{year}-{n:06}"))
}

/// An application about to be filed (its payload already validated and serialised).
pub struct NewApplication<'a> {
    pub tenant: &'a tenant::Model,
    pub kind: ApplicationKind,
    pub facility_id: Option<Uuid>,
    pub submitted_by: Option<Uuid>,
    pub contact_email: Option<String>,
    pub payload: String,
    pub room_id: Option<Uuid>,
}

impl<'a> NewApplication<'a> {
    /// A form a facility admin files for its facility.
    fn of_facility(
        cap: &FacilityAdmin,
        tenant: &'a tenant::Model,
        kind: ApplicationKind,
        payload: String,
    ) -> Self {
        NewApplication {
            tenant,
            kind,
            facility_id: Some(cap.facility.id),
            submitted_by: Some(cap.admin.id),
            contact_email: None,
            payload,
            room_id: None,
        }
    }
}

/// Numbers and stores a validated application and records `application.submit`, in one
/// transaction.
async fn file(
    db: &sea_orm::DatabaseConnection,
    new: NewApplication<'_>,
    origin: &Origin,
) -> AppResult<application::Model> {
    let txn = crate::db::begin_write(db).await?;
    let created = file_in(&txn, new, origin).await?;
    txn.commit().await?;
    Ok(created)
}

/// Numbers and stores a validated application and records `application.submit`, in the
/// caller's transaction.
pub async fn file_in(
    txn: &impl ConnectionTrait,
    new: NewApplication<'_>,
    origin: &Origin,
) -> AppResult<application::Model> {
    let reference = next_reference(txn, new.tenant).await?;
    let at = now();
    let created = application::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(new.tenant.id),
        reference_number: Set(reference),
        kind: Set(new.kind),
        status: Set(ApplicationStatus::Submitted),
        facility_id: Set(new.facility_id),
        submitted_by: Set(new.submitted_by),
        contact_email: Set(new.contact_email),
        payload: Set(new.payload),
        submitted_at: Set(at),
        reviewed_by: Set(None),
        reviewed_at: Set(None),
        review_note: Set(None),
        outcome: Set(None),
        room_id: Set(new.room_id),
        updated_at: Set(at),
    }
    .insert(txn)
    .await?;
    let mut event = Event::new(new.tenant.id, "application.submit", AuditOutcome::Allowed)
        .by(origin)
        .target("application", created.id)
        .detail("kind", enum_name(&created.kind))
        .detail("referenceNumber", created.reference_number.clone());
    if let Some(facility) = created.facility_id {
        event = event.detail("facilityId", facility.to_string());
    }
    if let Some(room) = created.room_id {
        event = event.room(room);
    }
    audit::record(txn, event).await?;
    crate::notify::application_filed_in(txn, &created).await?;
    Ok(created)
}

pub fn to_json(value: &impl Serialize) -> AppResult<String> {
    serde_json::to_string(value).map_err(AppError::internal)
}

/// Counts one public request from `ip` against `limit` per window; RATE_LIMITED beyond it.
async fn public_rate_limit(state: &AppState, what: &str, ip: IpAddr, limit: u64) -> AppResult<()> {
    let decision = state
        .limiter
        .hit(
            &format!("{what}:{ip}"),
            limit,
            state.config.public_rate_window,
        )
        .await
        .map_err(AppError::unavailable)?;
    if decision.allowed {
        Ok(())
    } else {
        Err(AppError::RateLimited {
            retry_after_seconds: decision.retry_after_seconds,
        })
    }
}

/// Registration (forms 4 + 1-2/2-2A + 5): public, rate limited per client IP. `caller` is set
/// when someone logged in files it; it is recorded as the submitter only within its tenant.
pub async fn submit_registration(
    state: &AppState,
    tenant_slug: &str,
    form: RegistrationForm,
    caller: Option<&user::Model>,
    origin: &Origin,
    ip: IpAddr,
) -> AppResult<(application::Model, tenant::Model)> {
    public_rate_limit(
        state,
        "registration",
        ip,
        state.config.registration_ip_max_submissions,
    )
    .await?;
    let tenant = tenants::by_slug(&state.db, tenant_slug)
        .await?
        .ok_or_else(|| AppError::bad_input("tenant", "no such municipality"))?;
    let form = form.validated()?;
    let submitted_by = caller.filter(|u| u.tenant_id == tenant.id).map(|u| u.id);
    let origin = Origin {
        actor_id: submitted_by,
        ..origin.clone()
    };
    let filed = file(
        &state.db,
        NewApplication {
            tenant: &tenant,
            kind: ApplicationKind::Registration,
            facility_id: None,
            submitted_by,
            contact_email: Some(form.contact_email.clone()),
            payload: to_json(&form)?,
            room_id: None,
        },
        &origin,
    )
    .await?;
    Ok((filed, tenant))
}

/// Change (form 7), by the facility's admin.
pub async fn submit_change(
    db: &sea_orm::DatabaseConnection,
    cap: &FacilityAdmin,
    tenant: &tenant::Model,
    payload: serde_json::Value,
    origin: &Origin,
) -> AppResult<application::Model> {
    let form = ChangeForm::parse(payload)?;
    let staff = facility_users(db, cap.facility.id).await?;
    check_change(&form, &staff).map_err(|e| match e {
        ChangeProblem::NotOfFacility(i) => AppError::bad_input(
            format!("changeStaff[{i}].userId"),
            "not a member of this facility",
        ),
        ChangeProblem::NoAdminLeft => AppError::bad_input(
            "changeStaff",
            "the facility must keep at least one active facility admin",
        ),
    })?;
    for (i, entry) in form.add_staff.iter().enumerate() {
        for (j, room_id) in entry.room_ids.iter().enumerate() {
            let field = format!("addStaff[{i}].roomIds[{j}]");
            let room = rooms::in_tenant(db, tenant.id, *room_id)
                .await
                .map_err(|_| AppError::bad_input(field.clone(), "no such room"))?;
            if room.status != RoomStatus::Open {
                return Err(AppError::bad_input(field, "the room is not open"));
            }
            // A facility reaches only rooms it already works in: the same answer as for a room
            // that does not exist, so the form does not tell which rooms exist.
            if !facility_in_room(db, cap.facility.id, room.id).await? {
                return Err(AppError::bad_input(field, "no such room"));
            }
        }
    }
    let new = NewApplication::of_facility(cap, tenant, ApplicationKind::Change, to_json(&form)?);
    file(db, new, origin).await
}

/// Whether an ACTIVE user of `facility_id` is a current member of `room_id` (form 7's rooms).
async fn facility_in_room(
    db: &impl ConnectionTrait,
    facility_id: Uuid,
    room_id: Uuid,
) -> AppResult<bool> {
    use entity::room_member;
    let member_ids: Vec<Uuid> = room_member::Entity::find()
        .select_only()
        .column(room_member::Column::UserId)
        .filter(room_member::Column::RoomId.eq(room_id))
        .filter(room_member::Column::LeftAt.is_null())
        .into_tuple()
        .all(db)
        .await?;
    if member_ids.is_empty() {
        return Ok(false);
    }
    let present = user::Entity::find()
        .filter(user::Column::Id.is_in(member_ids))
        .filter(user::Column::FacilityId.eq(facility_id))
        .filter(user::Column::Status.eq(AccountStatus::Active))
        .count(db)
        .await?;
    Ok(present > 0)
}

/// The people a room application names: ACTIVE users of the tenant (unknown or other
/// tenants' ids NOT_FOUND, others CONFLICT), without repeats.
async fn room_invitees(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    ids: &[Uuid],
    field: &str,
) -> AppResult<Vec<user::Model>> {
    if ids.len() > 200 {
        return Err(AppError::bad_input(field, "at most 200 people at once"));
    }
    let mut out: Vec<user::Model> = Vec::with_capacity(ids.len());
    for id in ids {
        if out.iter().any(|u| u.id == *id) {
            continue;
        }
        let user = users::in_tenant(db, tenant_id, *id).await?;
        if user.status != AccountStatus::Active {
            return Err(AppError::Conflict(format!(
                "{} is {} and cannot be invited",
                user.login_id,
                enum_name(&user.status)
            )));
        }
        out.push(user);
    }
    Ok(out)
}

/// What a ROOM_CREATION application carries (forms 8 + 9).
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomCreationForm {
    pub patient: rooms::PatientForm,
    pub consent: rooms::ConsentForm,
    pub member_ids: Vec<Uuid>,
}

/// `requestRoom` (STAFF or FACILITY_ADMIN): the city's approval opens the room and invites the
/// listed people and the requester.
pub async fn submit_room_creation(
    db: &sea_orm::DatabaseConnection,
    authz: &crate::authz::enforcer::Authorizer,
    caller: &user::Model,
    tenant: &tenant::Model,
    form: RoomCreationForm,
    origin: &Origin,
) -> AppResult<application::Model> {
    if !crate::authz::rooms::tenant_may(authz, caller, "rooms", "request") {
        return Err(AppError::Forbidden);
    }
    let today = rooms::today(tenant);
    let form = RoomCreationForm {
        patient: form.patient.validated("patient", today)?,
        consent: form.consent.validated("consent", today)?,
        member_ids: room_invitees(db, tenant.id, &form.member_ids, "memberIds")
            .await?
            .iter()
            .map(|u| u.id)
            .collect(),
    };
    file(
        db,
        NewApplication {
            tenant,
            kind: ApplicationKind::RoomCreation,
            facility_id: caller.facility_id,
            submitted_by: Some(caller.id),
            contact_email: None,
            payload: to_json(&form)?,
            room_id: None,
        },
        origin,
    )
    .await
}

/// What a ROOM_MEMBERSHIP application carries (form 9 or 7).
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomMembershipForm {
    pub room_id: Uuid,
    pub user_ids: Vec<Uuid>,
}

/// `requestRoomMembers`: a member of the room, or a FACILITY_ADMIN for its own facility's
/// people, asks the city to invite `user_ids`.
pub async fn submit_room_membership(
    state: &AppState,
    caller: &user::Model,
    tenant: &tenant::Model,
    room: entity::room::Model,
    user_ids: &[Uuid],
    origin: &Origin,
) -> AppResult<application::Model> {
    if room.tenant_id != caller.tenant_id {
        return Err(AppError::NotFound);
    }
    let member = crate::authz::rooms::member_may(&state.authz, caller, &room, "members", "request");
    let facility_admin =
        crate::authz::rooms::tenant_may(&state.authz, caller, "members", "request");
    if !member && !facility_admin {
        return Err(AppError::Forbidden);
    }
    if user_ids.is_empty() {
        return Err(AppError::bad_input("userIds", "name at least one person"));
    }
    let invitees = room_invitees(&state.db, tenant.id, user_ids, "userIds").await?;
    // A facility admin outside the room speaks for its own people only.
    if !member
        && invitees
            .iter()
            .any(|u| u.facility_id.is_none() || u.facility_id != caller.facility_id)
    {
        return Err(AppError::Forbidden);
    }
    let ids = invitees.iter().map(|u| u.id).collect();
    if room.status != RoomStatus::Open {
        return Err(AppError::Conflict(format!(
            "the room is {}",
            enum_name(&room.status)
        )));
    }
    let form = RoomMembershipForm {
        room_id: room.id,
        user_ids: ids,
    };
    file(
        &state.db,
        NewApplication {
            tenant,
            kind: ApplicationKind::RoomMembership,
            facility_id: caller.facility_id,
            submitted_by: Some(caller.id),
            contact_email: None,
            payload: to_json(&form)?,
            room_id: Some(room.id),
        },
        origin,
    )
    .await
}

enum ChangeProblem {
    NotOfFacility(usize),
    NoAdminLeft,
}

/// Whether form 7 fits the facility's current staff: every changed person belongs to it, and
/// at least one active facility admin remains afterwards.
fn check_change(form: &ChangeForm, staff: &[user::Model]) -> Result<(), ChangeProblem> {
    for (i, change) in form.change_staff.iter().enumerate() {
        if !staff.iter().any(|u| u.id == change.user_id) {
            return Err(ChangeProblem::NotOfFacility(i));
        }
    }
    let stays_admin = |u: &user::Model| {
        let flag = form
            .change_staff
            .iter()
            .find(|c| c.user_id == u.id)
            .and_then(|c| c.facility_admin);
        u.status != AccountStatus::Suspended && flag.unwrap_or(u.role == Role::FacilityAdmin)
    };
    let admins = staff.iter().filter(|u| stays_admin(u)).count()
        + form.add_staff.iter().filter(|s| s.facility_admin).count();
    if admins == 0 {
        return Err(ChangeProblem::NoAdminLeft);
    }
    Ok(())
}

async fn facility_users(
    db: &impl ConnectionTrait,
    facility_id: Uuid,
) -> AppResult<Vec<user::Model>> {
    Ok(user::Entity::find()
        .filter(user::Column::FacilityId.eq(facility_id))
        .all(db)
        .await?)
}

/// Suspension (form 3), by the facility's admin: some of its users (already looked up in the
/// tenant by the caller), or the whole facility.
pub async fn submit_suspension(
    db: &sea_orm::DatabaseConnection,
    cap: &FacilityAdmin,
    tenant: &tenant::Model,
    targets: Vec<user::Model>,
    reason: &str,
    whole_facility: bool,
    origin: &Origin,
) -> AppResult<application::Model> {
    let reason = forms::reason("reason", reason)?;
    if targets.is_empty() && !whole_facility {
        return Err(AppError::bad_input(
            "userIds",
            "name at least one user, or set wholeFacility",
        ));
    }
    if whole_facility && cap.facility.status == AccountStatus::Suspended {
        return Err(AppError::Conflict(
            "the facility is already suspended".into(),
        ));
    }
    let mut ids = Vec::with_capacity(targets.len());
    for target in targets {
        if ids.contains(&target.id) {
            continue;
        }
        if target.facility_id != Some(cap.facility.id) {
            return Err(AppError::Forbidden);
        }
        if target.status == AccountStatus::Suspended {
            return Err(AppError::Conflict(format!(
                "{} is already suspended",
                target.login_id
            )));
        }
        ids.push(target.id);
    }
    let form = SuspensionForm {
        user_ids: ids,
        reason,
        whole_facility,
    };
    let new =
        NewApplication::of_facility(cap, tenant, ApplicationKind::Suspension, to_json(&form)?);
    file(db, new, origin).await
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// One application of the caller's tenant: NOT_FOUND outside the tenant, FORBIDDEN outside
/// the caller's scope.
pub async fn get(
    db: &impl ConnectionTrait,
    scope: ApplicationScope,
    id: Uuid,
) -> AppResult<application::Model> {
    let app = application::Entity::find_by_id(id)
        .one(db)
        .await?
        .filter(|a| a.tenant_id == scope.tenant_id())
        .ok_or(AppError::NotFound)?;
    if scope.covers(&app) {
        Ok(app)
    } else {
        Err(AppError::Forbidden)
    }
}

fn scoped(scope: ApplicationScope) -> Select<application::Entity> {
    let select =
        application::Entity::find().filter(application::Column::TenantId.eq(scope.tenant_id()));
    match scope {
        ApplicationScope::Tenant(_) => select,
        ApplicationScope::Facility { facility_id, .. } => {
            select.filter(application::Column::FacilityId.eq(facility_id))
        }
        ApplicationScope::Submitter { user_id, .. } => {
            select.filter(application::Column::SubmittedBy.eq(user_id))
        }
    }
}

/// The caller's applications, newest first, filtered by kind and status.
pub async fn list(
    db: &impl ConnectionTrait,
    scope: ApplicationScope,
    kind: Option<ApplicationKind>,
    status: Option<ApplicationStatus>,
    first: u64,
    after: Option<Uuid>,
) -> AppResult<Page<application::Model>> {
    let mut select = scoped(scope);
    if let Some(kind) = kind {
        select = select.filter(application::Column::Kind.eq(kind));
    }
    if let Some(status) = status {
        select = select.filter(application::Column::Status.eq(status));
    }
    let total = select.clone().count(db).await?;
    if let Some(after) = after {
        select = select.filter(application::Column::Id.lt(after));
    }
    let items = select
        .order_by_desc(application::Column::Id)
        .limit(first + 1)
        .all(db)
        .await?;
    Ok(page::finish(items, first, total))
}

/// Public: the status of a registration by its reference number and the contact e-mail it
/// gave (case-insensitive), and nothing else. Rate limited per client IP.
pub async fn status_for_applicant(
    state: &AppState,
    tenant_slug: Option<&str>,
    reference_number: &str,
    contact_email: &str,
    ip: IpAddr,
) -> AppResult<Option<ApplicationStatus>> {
    public_rate_limit(
        state,
        "application-status",
        ip,
        state.config.application_status_ip_max_lookups,
    )
    .await?;
    let reference = reference_number.trim();
    let email = contact_email.trim().to_lowercase();
    if reference.is_empty() || reference.len() > 16 || email.is_empty() {
        return Ok(None);
    }
    let mut select = application::Entity::find()
        .filter(application::Column::ReferenceNumber.eq(reference))
        .filter(application::Column::Kind.eq(ApplicationKind::Registration));
    if let Some(slug) = tenant_slug {
        let Some(tenant) = tenants::by_slug(&state.db, slug).await? else {
            return Ok(None);
        };
        select = select.filter(application::Column::TenantId.eq(tenant.id));
    }
    let found = select.all(&state.db).await?;
    Ok(found
        .into_iter()
        .find(|a| {
            a.contact_email
                .as_deref()
                .is_some_and(|e| e.to_lowercase() == email)
        })
        .map(|a| a.status))
}

// ---------------------------------------------------------------------------------------------
// Withdrawal and review
// ---------------------------------------------------------------------------------------------

/// Moves the application from SUBMITTED to `to` if nobody did first: the guard that makes one
/// of two concurrent reviews win. Returns whether this caller moved it.
async fn claim(
    db: &impl ConnectionTrait,
    id: Uuid,
    to: ApplicationStatus,
    reviewer: Option<Uuid>,
    note: Option<&str>,
) -> AppResult<bool> {
    let at = now();
    let mut update = application::Entity::update_many()
        .col_expr(
            application::Column::Status,
            Expr::value(sea_orm::ActiveEnum::to_value(&to)),
        )
        .col_expr(application::Column::UpdatedAt, Expr::value(at))
        .filter(application::Column::Id.eq(id))
        .filter(application::Column::Status.eq(ApplicationStatus::Submitted));
    if let Some(reviewer) = reviewer {
        update = update
            .col_expr(application::Column::ReviewedBy, Expr::value(reviewer))
            .col_expr(application::Column::ReviewedAt, Expr::value(at))
            .col_expr(
                application::Column::ReviewNote,
                Expr::value(note.map(str::to_string)),
            );
    }
    let moved = update.exec(db).await?.rows_affected == 1;
    if moved {
        crate::notify::application_status_in(db, id).await?;
    }
    Ok(moved)
}

fn already_decided(app: &application::Model) -> AppError {
    AppError::Conflict(format!(
        "application {} is already {}",
        app.reference_number,
        enum_name(&app.status)
    ))
}

/// The submitter takes its application back while it is still SUBMITTED.
pub async fn withdraw(
    db: &sea_orm::DatabaseConnection,
    caller: &user::Model,
    id: Uuid,
    origin: &Origin,
) -> AppResult<application::Model> {
    let app = application::Entity::find_by_id(id)
        .one(db)
        .await?
        .filter(|a| a.tenant_id == caller.tenant_id)
        .ok_or(AppError::NotFound)?;
    if app.submitted_by != Some(caller.id) {
        return Err(AppError::Forbidden);
    }
    let txn = crate::db::begin_write(db).await?;
    if !claim(&txn, id, ApplicationStatus::Withdrawn, None, None).await? {
        return Err(already_decided(&reload(&txn, id).await?));
    }
    let event = Event::new(app.tenant_id, "application.withdraw", AuditOutcome::Allowed)
        .by(origin)
        .target("application", id)
        .detail("referenceNumber", app.reference_number.clone());
    audit::record(&txn, event).await?;
    let withdrawn = reload(&txn, id).await?;
    txn.commit().await?;
    Ok(withdrawn)
}

async fn reload(db: &impl ConnectionTrait, id: Uuid) -> AppResult<application::Model> {
    application::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("application {id} vanished")))
}

/// One account an approval created, with its secrets on their way to the one response that
/// shows them.
pub struct IssuedAccount {
    pub user: user::Model,
    pub initial_password: SecretString,
    pub certificate: Issuance,
}

impl std::fmt::Debug for IssuedAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedAccount")
            .field("user", &self.user.id)
            .finish_non_exhaustive()
    }
}

/// What a review produced.
#[derive(Debug)]
pub struct Review {
    pub application: application::Model,
    pub issued: Vec<IssuedAccount>,
    /// The room a ROOM_* application concerns.
    pub room: Option<room::Model>,
}

/// Reviews an application (CITY_ADMIN): rejects it with a note, or approves it and carries out
/// the form. CONFLICT when it is no longer SUBMITTED, also when another review won a race.
pub async fn review(
    state: &AppState,
    cap: CityAdmin,
    tenant: &tenant::Model,
    id: Uuid,
    approve: bool,
    note: Option<&str>,
    origin: &Origin,
) -> AppResult<Review> {
    let note = match note {
        Some(n) if !n.trim().is_empty() => Some(forms::text("note", n, MAX_NOTE)?),
        _ => None,
    };
    if !approve && note.is_none() {
        return Err(AppError::bad_input(
            "note",
            "a rejection needs a note telling the applicant why",
        ));
    }
    let app = application::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .filter(|a| a.tenant_id == cap.tenant_id)
        .ok_or(AppError::NotFound)?;
    if app.status != ApplicationStatus::Submitted {
        return Err(already_decided(&app));
    }
    let decided = Decided {
        app: &app,
        reviewer: cap.user_id,
        note: note.as_deref(),
        origin,
    };
    if !approve {
        let txn = crate::db::begin_write(&state.db).await?;
        decided.claim(&txn, ApplicationStatus::Rejected).await?;
        decided.record(&txn, "application.reject", None).await?;
        if app.kind == ApplicationKind::RoomClosure
            && let Some(room_id) = app.room_id
        {
            // The end of service is not confirmed: the room goes on.
            rooms::reopen_in(&txn, room_id, origin).await?;
        }
        let application = reload(&txn, id).await?;
        let room = match application.room_id {
            Some(room_id) => Some(rooms::reload(&txn, room_id).await?),
            None => None,
        };
        txn.commit().await?;
        return Ok(Review {
            application,
            issued: Vec::new(),
            room,
        });
    }
    match app.kind {
        ApplicationKind::Registration => approve_registration(state, tenant, &decided).await,
        ApplicationKind::Change => approve_change(state, tenant, &decided).await,
        ApplicationKind::Suspension => approve_suspension(state, tenant, &decided).await,
        ApplicationKind::RoomCreation => approve_room_creation(state, tenant, &decided).await,
        ApplicationKind::RoomMembership => approve_room_membership(state, &decided).await,
        ApplicationKind::RoomClosure => approve_room_closure(state, &decided).await,
    }
}

/// Approves a pending application as a side effect of a direct act (`closeRoom` concludes the
/// room's ROOM_CLOSURE), in the caller's transaction.
pub async fn conclude_in(
    txn: &impl ConnectionTrait,
    app: &application::Model,
    reviewer: Uuid,
    note: &str,
    origin: &Origin,
) -> AppResult<()> {
    let decided = Decided {
        app,
        reviewer,
        note: Some(note),
        origin,
    };
    decided.claim(txn, ApplicationStatus::Approved).await?;
    decided.record(txn, "application.approve", None).await
}

/// The review being carried out: who decides, with which note.
struct Decided<'a> {
    app: &'a application::Model,
    reviewer: Uuid,
    note: Option<&'a str>,
    origin: &'a Origin,
}

impl Decided<'_> {
    /// Takes the application out of SUBMITTED in this transaction, or CONFLICT.
    async fn claim(&self, txn: &impl ConnectionTrait, to: ApplicationStatus) -> AppResult<()> {
        if claim(txn, self.app.id, to, Some(self.reviewer), self.note).await? {
            Ok(())
        } else {
            Err(already_decided(&reload(txn, self.app.id).await?))
        }
    }

    /// Records the decision and, for an approval, what it produced.
    async fn record(
        &self,
        txn: &impl ConnectionTrait,
        action: &'static str,
        outcome: Option<&Outcome>,
    ) -> AppResult<()> {
        if let Some(outcome) = outcome {
            let mut active: application::ActiveModel = reload(txn, self.app.id).await?.into();
            active.outcome = Set(Some(to_json(outcome)?));
            if let Some(facility) = outcome.facility_id {
                active.facility_id = Set(Some(facility));
            }
            if let Some(room) = outcome.room_id {
                active.room_id = Set(Some(room));
            }
            active.update(txn).await?;
        }
        let event = Event::new(self.app.tenant_id, action, AuditOutcome::Allowed)
            .by(self.origin)
            .target("application", self.app.id)
            .detail("kind", enum_name(&self.app.kind))
            .detail("referenceNumber", self.app.reference_number.clone());
        audit::record(txn, event).await?;
        Ok(())
    }

    fn form<T: serde::de::DeserializeOwned>(&self) -> AppResult<T> {
        serde_json::from_str(&self.app.payload).map_err(|e| {
            AppError::internal(anyhow::anyhow!(
                "stored payload of application {} does not parse: {e}",
                self.app.id
            ))
        })
    }
}

/// What an approval made, kept on the application (ids only, never secrets).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Outcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    facility_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    created_user_ids: Vec<Uuid>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    changed_user_ids: Vec<Uuid>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    suspended_user_ids: Vec<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    invitation_ids: Vec<Uuid>,
}

/// An account made ready outside the transaction: password hashed, certificate signed and
/// packed (the slow parts), login ID taken from the facility's sequence.
struct PreparedAccount {
    new: users::NewUser,
    password: SecretString,
    certificate: certificates::Prepared,
}

/// `f0012-001`: the facility's code and the person's number in it.
fn login_id(code: &str, number: i64) -> String {
    format!("{}-{number:03}", code.to_lowercase())
}

/// Takes login numbers for `count` new people of the facility in a short transaction of its
/// own, so the slow hashing and signing that follow hold no lock. Numbers of an approval that
/// then loses a race are not reused.
async fn take_staff_numbers(
    db: &sea_orm::DatabaseConnection,
    tenant_id: Uuid,
    facility_id: Uuid,
    count: usize,
) -> AppResult<i64> {
    let count = u32::try_from(count)
        .map_err(|_| AppError::bad_input("staff", "too many people in one application"))?;
    let txn = crate::db::begin_write(db).await?;
    let first = counters::take(&txn, tenant_id, &format!("staff:{facility_id}"), count).await?;
    txn.commit().await?;
    Ok(first)
}

async fn prepare_accounts(
    state: &AppState,
    tenant: &tenant::Model,
    facility_id: Uuid,
    code: &str,
    first_number: i64,
    entries: &[StaffEntry],
) -> AppResult<Vec<PreparedAccount>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let ca = certificates::load_ca(&state.db, &state.master_key, tenant.id).await?;
    let jobs = entries.iter().zip(first_number..).map(|(entry, number)| {
        let ca = &ca;
        async move {
            let id = Uuid::now_v7();
            let login_id = login_id(code, number);
            let password = SecretString::from(pki::random_password(16));
            let password_hash = state
                .hasher
                .hash(password.clone())
                .await
                .map_err(|e| AppError::internal(anyhow::anyhow!("hashing: {e:?}")))?;
            let certificate =
                certificates::prepare(ca, tenant, id, &login_id, &entry.device_label, None).await?;
            Ok::<_, AppError>(PreparedAccount {
                new: users::NewUser {
                    id,
                    tenant_id: tenant.id,
                    facility_id: Some(facility_id),
                    login_id,
                    display_name: entry.display_name.clone(),
                    display_name_kana: entry.display_name_kana.clone(),
                    email: entry.email.clone(),
                    occupation: entry.occupation,
                    role: if entry.facility_admin {
                        Role::FacilityAdmin
                    } else {
                        Role::Staff
                    },
                    password_hash,
                },
                password,
                certificate,
            })
        }
    });
    try_join_all(jobs).await
}

/// Stores prepared accounts with their certificates in the transaction.
async fn store_accounts(
    txn: &impl ConnectionTrait,
    prepared: Vec<PreparedAccount>,
    origin: &Origin,
) -> AppResult<Vec<IssuedAccount>> {
    let mut issued = Vec::with_capacity(prepared.len());
    for account in prepared {
        let user = users::insert(txn, account.new, origin).await?;
        let certificate = certificates::store(txn, account.certificate, origin).await?;
        issued.push(IssuedAccount {
            user,
            initial_password: account.password,
            certificate,
        });
    }
    Ok(issued)
}

async fn approve_registration(
    state: &AppState,
    tenant: &tenant::Model,
    decided: &Decided<'_>,
) -> AppResult<Review> {
    let form: RegistrationForm = decided.form()?;
    let facility_id = Uuid::now_v7();
    let (code, first) = {
        let txn = crate::db::begin_write(&state.db).await?;
        let code = facilities::take_code(&txn, tenant.id).await?;
        let count = u32::try_from(form.staff.len()).unwrap_or(u32::MAX);
        let first = counters::take(&txn, tenant.id, &format!("staff:{facility_id}"), count).await?;
        txn.commit().await?;
        (code, first)
    };
    let prepared = prepare_accounts(state, tenant, facility_id, &code, first, &form.staff).await?;

    let txn = crate::db::begin_write(&state.db).await?;
    decided.claim(&txn, ApplicationStatus::Approved).await?;
    let facility = facilities::insert(
        &txn,
        tenant.id,
        facility_id,
        code,
        form.facility.to_new(),
        decided.origin,
    )
    .await?;
    let issued = store_accounts(&txn, prepared, decided.origin).await?;
    let outcome = Outcome {
        facility_id: Some(facility.id),
        created_user_ids: issued.iter().map(|i| i.user.id).collect(),
        ..Outcome::default()
    };
    decided
        .record(&txn, "application.approve", Some(&outcome))
        .await?;
    let application = reload(&txn, decided.app.id).await?;
    txn.commit().await?;
    state.trust_changed().await;
    Ok(Review {
        application,
        issued,
        room: None,
    })
}

async fn approve_change(
    state: &AppState,
    tenant: &tenant::Model,
    decided: &Decided<'_>,
) -> AppResult<Review> {
    let form: ChangeForm = decided.form()?;
    let facility = owning_facility(&state.db, decided.app).await?;
    if facility.status == AccountStatus::Suspended {
        return Err(AppError::Conflict("the facility is suspended".into()));
    }
    let prepared = if form.add_staff.is_empty() {
        Vec::new()
    } else {
        let code = {
            let txn = crate::db::begin_write(&state.db).await?;
            let code = facilities::ensure_code(&txn, &facility).await?;
            txn.commit().await?;
            code
        };
        let first =
            take_staff_numbers(&state.db, tenant.id, facility.id, form.add_staff.len()).await?;
        prepare_accounts(state, tenant, facility.id, &code, first, &form.add_staff).await?
    };

    let txn = crate::db::begin_write(&state.db).await?;
    decided.claim(&txn, ApplicationStatus::Approved).await?;
    // The staff may have changed since submission: the form must still fit.
    let staff = facility_users(&txn, facility.id).await?;
    check_change(&form, &staff).map_err(|e| match e {
        ChangeProblem::NotOfFacility(i) => AppError::Conflict(format!(
            "changeStaff[{i}] is no longer a member of the facility"
        )),
        ChangeProblem::NoAdminLeft => {
            AppError::Conflict("the facility would be left without an active facility admin".into())
        }
    })?;
    if let Some(changes) = &form.facility {
        facilities::apply_changes(&txn, facility.clone(), changes, decided.origin).await?;
    }
    let issued = store_accounts(&txn, prepared, decided.origin).await?;
    let mut invitation_ids = Vec::new();
    for (entry, account) in form.add_staff.iter().zip(&issued) {
        for room_id in &entry.room_ids {
            let room = rooms::in_tenant(&txn, tenant.id, *room_id).await?;
            // Checked again: the facility's members may have left since submission.
            if !facility_in_room(&txn, facility.id, room.id).await? {
                return Err(AppError::Conflict(
                    "the facility no longer has a member in a room the change names".into(),
                ));
            }
            let made = invitations::invite_in(
                &txn,
                &state.config,
                &room,
                &[account.user.id],
                decided.reviewer,
                Some(decided.app.id),
                "addStaff.roomIds",
                decided.origin,
            )
            .await?;
            invitation_ids.extend(made.iter().map(|i| i.id));
        }
    }
    let mut changed_user_ids = Vec::new();
    for change in &form.change_staff {
        let Some(current) = staff.iter().find(|u| u.id == change.user_id) else {
            continue;
        };
        let updated = users::apply_change(&txn, current.clone(), change, decided.origin).await?;
        changed_user_ids.push(updated.id);
    }
    let outcome = Outcome {
        created_user_ids: issued.iter().map(|i| i.user.id).collect(),
        changed_user_ids,
        invitation_ids,
        ..Outcome::default()
    };
    decided
        .record(&txn, "application.approve", Some(&outcome))
        .await?;
    let application = reload(&txn, decided.app.id).await?;
    txn.commit().await?;
    if !issued.is_empty() {
        state.trust_changed().await;
    }
    Ok(Review {
        application,
        issued,
        room: None,
    })
}

async fn owning_facility(
    db: &impl ConnectionTrait,
    app: &application::Model,
) -> AppResult<facility::Model> {
    let id = app.facility_id.ok_or_else(|| {
        AppError::internal(anyhow::anyhow!("application {} has no facility", app.id))
    })?;
    facilities::in_tenant(db, app.tenant_id, id).await
}

async fn approve_suspension(
    state: &AppState,
    tenant: &tenant::Model,
    decided: &Decided<'_>,
) -> AppResult<Review> {
    let form: SuspensionForm = decided.form()?;
    let facility = owning_facility(&state.db, decided.app).await?;
    let txn = crate::db::begin_write(&state.db).await?;
    decided.claim(&txn, ApplicationStatus::Approved).await?;
    let suspension = if form.whole_facility {
        let (_, suspension) = accounts::suspend_facility_in(
            &txn,
            &state.master_key,
            facility,
            &form.reason,
            decided.origin,
        )
        .await?;
        suspension
    } else {
        let targets = user::Entity::find()
            .filter(user::Column::Id.is_in(form.user_ids.iter().copied()))
            .filter(user::Column::FacilityId.eq(facility.id))
            .all(&txn)
            .await?;
        accounts::suspend_in(
            &txn,
            &state.master_key,
            tenant.id,
            targets,
            &form.reason,
            decided.origin,
        )
        .await?
    };
    let outcome = Outcome {
        suspended_user_ids: suspension.users.iter().map(|u| u.id).collect(),
        ..Outcome::default()
    };
    decided
        .record(&txn, "application.approve", Some(&outcome))
        .await?;
    let application = reload(&txn, decided.app.id).await?;
    txn.commit().await?;
    accounts::finish_suspension(state, &suspension, decided.origin).await?;
    Ok(Review {
        application,
        issued: Vec::new(),
        room: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_ids_are_the_facility_code_and_a_number() {
        assert_eq!(login_id("F0012", 3), "f0012-003");
        assert_eq!(login_id("F0012", 1234), "f0012-1234");
        assert!(crate::service::tenants::validate_login_id(&login_id("F0001", 1)).is_ok());
    }
}

async fn approve_room_creation(
    state: &AppState,
    tenant: &tenant::Model,
    decided: &Decided<'_>,
) -> AppResult<Review> {
    let form: RoomCreationForm = decided.form()?;
    let txn = crate::db::begin_write(&state.db).await?;
    decided.claim(&txn, ApplicationStatus::Approved).await?;
    let room = rooms::open_in(
        &txn,
        tenant.id,
        decided.reviewer,
        &form.patient,
        &form.consent,
        decided.origin,
    )
    .await?;
    // The requester works in the room it asked for.
    let mut invitees = form.member_ids.clone();
    if let Some(submitter) = decided.app.submitted_by
        && !invitees.contains(&submitter)
    {
        invitees.push(submitter);
    }
    let made = invitations::invite_in(
        &txn,
        &state.config,
        &room,
        &invitees,
        decided.reviewer,
        Some(decided.app.id),
        "memberIds",
        decided.origin,
    )
    .await?;
    let invitation_ids = made.iter().map(|i| i.id).collect();
    finish_room_approval(txn, decided, room, invitation_ids).await
}

async fn approve_room_membership(state: &AppState, decided: &Decided<'_>) -> AppResult<Review> {
    let form: RoomMembershipForm = decided.form()?;
    let txn = crate::db::begin_write(&state.db).await?;
    decided.claim(&txn, ApplicationStatus::Approved).await?;
    let room = rooms::in_tenant(&txn, decided.app.tenant_id, form.room_id).await?;
    // Since submission some may have joined or been invited: they are left as they are.
    let mut invitees = Vec::new();
    for id in form.user_ids {
        let already = crate::service::memberships::current(&txn, room.id, id)
            .await?
            .is_some()
            || invitations::pending_for(&txn, room.id, id).await?.is_some();
        if !already {
            invitees.push(id);
        }
    }
    let made = invitations::invite_in(
        &txn,
        &state.config,
        &room,
        &invitees,
        decided.reviewer,
        Some(decided.app.id),
        "userIds",
        decided.origin,
    )
    .await?;
    let invitation_ids = made.iter().map(|i| i.id).collect();
    finish_room_approval(txn, decided, room, invitation_ids).await
}

/// What a ROOM_CLOSURE application carries: the end-of-service reason the member posted.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomClosureForm {
    pub room_id: Uuid,
    pub reason: String,
}

async fn approve_room_closure(state: &AppState, decided: &Decided<'_>) -> AppResult<Review> {
    let form: RoomClosureForm = decided.form()?;
    let txn = crate::db::begin_write(&state.db).await?;
    decided.claim(&txn, ApplicationStatus::Approved).await?;
    let room = rooms::in_tenant(&txn, decided.app.tenant_id, form.room_id).await?;
    let room = rooms::close_in(
        &txn,
        state,
        &room,
        decided.reviewer,
        &form.reason,
        decided.origin,
    )
    .await?;
    finish_room_approval(txn, decided, room, Vec::new()).await
}

/// Records what a ROOM_* approval did and commits it.
async fn finish_room_approval(
    txn: sea_orm::DatabaseTransaction,
    decided: &Decided<'_>,
    room: room::Model,
    invitation_ids: Vec<Uuid>,
) -> AppResult<Review> {
    let outcome = Outcome {
        room_id: Some(room.id),
        invitation_ids,
        ..Outcome::default()
    };
    decided
        .record(&txn, "application.approve", Some(&outcome))
        .await?;
    let application = reload(&txn, decided.app.id).await?;
    txn.commit().await?;
    Ok(Review {
        application,
        issued: Vec::new(),
        room: Some(room),
    })
}
