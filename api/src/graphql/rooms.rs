//! GraphQL types of patient rooms. A `Room` carries how the caller stands to it (member, city,
//! invitee), decided once by `authz::rooms::viewer`; each field asks that standing for the
//! capability it needs, and the service functions behind content take only that capability.

use async_graphql::{Context, Enum, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, FixedOffset};
use chrono_tz::Tz;

use entity::kinds::AuditOutcome;
use entity::{consent, invitation, room, room_member};

use crate::authz::rooms::RoomViewer;
use crate::error::AppError;
use crate::graphql::content::{
    CareInfoSection, Note, NoteConnection, NoteEdge, VitalRecord, VitalRecordConnection,
    VitalRecordEdge,
};
use crate::graphql::context::{Caller, ContextExt as _};
use crate::graphql::types::{Date, PageInfo, User, local, total};
use crate::service::audit::Event;
use crate::service::page;
use crate::service::rooms::{ConsentForm, PatientForm};
use crate::service::{care, invitations, memberships, notes, vitals};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::kinds::RoomStatus")]
pub enum RoomStatus {
    Open,
    Closing,
    Closed,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::kinds::Sex")]
pub enum Sex {
    Male,
    Female,
    Other,
    Unknown,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::kinds::CareLevel")]
pub enum CareLevel {
    NotApplicable,
    #[graphql(name = "SUPPORT_1")]
    Support1,
    #[graphql(name = "SUPPORT_2")]
    Support2,
    #[graphql(name = "CARE_1")]
    Care1,
    #[graphql(name = "CARE_2")]
    Care2,
    #[graphql(name = "CARE_3")]
    Care3,
    #[graphql(name = "CARE_4")]
    Care4,
    #[graphql(name = "CARE_5")]
    Care5,
    Pending,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::kinds::Consenter")]
pub enum Consenter {
    Patient,
    Family,
    Guardian,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::kinds::InvitationStatus")]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Declined,
    Revoked,
    Expired,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::kinds::NoteCategory")]
pub enum NoteCategory {
    Contact,
    Report,
    Question,
    VisitRecord,
    Discharge,
    EndOfService,
    Other,
}

#[derive(InputObject)]
pub struct PatientInput {
    pub name: String,
    pub name_kana: String,
    pub birth_date: Date,
    pub sex: Sex,
    pub address: Option<String>,
    pub phone: Option<String>,
    pub care_level: Option<CareLevel>,
    pub key_person: Option<String>,
    pub primary_physician: Option<String>,
    pub care_manager: Option<String>,
    pub notes: Option<String>,
}

impl From<PatientInput> for PatientForm {
    fn from(p: PatientInput) -> Self {
        PatientForm {
            name: p.name,
            name_kana: p.name_kana,
            birth_date: p.birth_date.0,
            sex: p.sex.into(),
            address: p.address,
            phone: p.phone,
            care_level: p.care_level.map(Into::into),
            key_person: p.key_person,
            primary_physician: p.primary_physician,
            care_manager: p.care_manager,
            notes: p.notes,
        }
    }
}

#[derive(InputObject)]
pub struct ConsentInput {
    pub consenter: Consenter,
    pub consenter_name: String,
    pub relationship: Option<String>,
    pub consented_on: Date,
}

impl From<ConsentInput> for ConsentForm {
    fn from(c: ConsentInput) -> Self {
        ConsentForm {
            consenter: c.consenter.into(),
            consenter_name: c.consenter_name,
            relationship: c.relationship,
            consented_on: c.consented_on.0,
        }
    }
}

/// A user by id, for the people a room shows (members, inviters, authors).
async fn user_of(ctx: &Context<'_>, id: uuid::Uuid, tz: Tz) -> Result<User> {
    Ok(User::by_id(ctx, Some(id), tz)
        .await?
        .ok_or(AppError::NotFound)?)
}

/// Records a read of patient data in the room (buffered, like every read event).
pub async fn audit_read(
    ctx: &Context<'_>,
    caller: &Caller,
    action: &'static str,
    room_id: uuid::Uuid,
) -> Result<()> {
    let state = ctx.state()?;
    let event = Event::new(caller.tenant.id, action, AuditOutcome::Allowed)
        .by(&caller.origin(ctx.request()?))
        .room(room_id)
        .target("room", room_id);
    state.audit.read(event).await?;
    Ok(())
}

pub struct Room {
    pub viewer: RoomViewer,
    pub tz: Tz,
}

impl Room {
    fn model(&self) -> &room::Model {
        &self.viewer.room
    }
}

#[Object]
impl Room {
    async fn id(&self) -> ID {
        ID(self.model().id.to_string())
    }
    async fn status(&self) -> RoomStatus {
        self.model().status.into()
    }
    async fn opened_at(&self) -> DateTime<FixedOffset> {
        local(self.model().opened_at, self.tz)
    }
    async fn closed_at(&self) -> Option<DateTime<FixedOffset>> {
        self.model().closed_at.map(|t| local(t, self.tz))
    }
    async fn end_reason(&self) -> Option<&str> {
        self.model().end_reason.as_deref()
    }
    /// Until when a closed room is kept as a read-only archive.
    async fn retain_until(&self) -> Option<Date> {
        self.model().retain_until.map(Date)
    }
    /// Family name, initial of the given name, birth year: what the city and invitees see.
    async fn patient_label(&self) -> &str {
        &self.model().patient_label
    }
    /// Members only.
    async fn patient(&self, ctx: &Context<'_>) -> Result<Patient> {
        ctx.request()?.note_room(self.model().id);
        let access = self.viewer.access()?;
        let caller = ctx.caller().await?;
        audit_read(ctx, caller, "patient.read", access.room.id).await?;
        Ok(Patient(access.room))
    }
    /// Members and the city.
    async fn members(&self, ctx: &Context<'_>) -> Result<Vec<RoomMember>> {
        ctx.request()?.note_room(self.model().id);
        self.viewer.sees_members()?;
        let state = ctx.state()?;
        let rows = memberships::of_room(&state.db, self.model().id).await?;
        Ok(rows
            .into_iter()
            .map(|m| RoomMember {
                model: m,
                tz: self.tz,
            })
            .collect())
    }
    /// The city.
    async fn invitations(&self, ctx: &Context<'_>) -> Result<Vec<Invitation>> {
        ctx.request()?.note_room(self.model().id);
        self.viewer.admin()?;
        let state = ctx.state()?;
        let rows = invitations::of_room(&state.db, self.model().id).await?;
        Ok(rows
            .into_iter()
            .map(|m| Invitation {
                model: m,
                tz: self.tz,
            })
            .collect())
    }
    /// Members and the city.
    async fn consents(&self, ctx: &Context<'_>) -> Result<Vec<Consent>> {
        ctx.request()?.note_room(self.model().id);
        self.viewer.sees_members()?;
        let state = ctx.state()?;
        let rows = crate::service::consents::for_room(&state.db, self.model().id).await?;
        Ok(rows
            .into_iter()
            .map(|m| Consent {
                model: m,
                tz: self.tz,
            })
            .collect())
    }
    /// The collaboration note, newest first (members only). `first`/`after` page towards
    /// older notes, `last`/`before` towards newer ones; cursors keep their place while notes
    /// are posted.
    #[allow(clippy::too_many_arguments)]
    async fn notes(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
        category: Option<NoteCategory>,
    ) -> Result<NoteConnection> {
        ctx.request()?.note_room(self.model().id);
        let access = self.viewer.access()?;
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let paging = match (
            first.is_some() || after.is_some(),
            last.is_some() || before.is_some(),
        ) {
            (true, true) => {
                return Err(AppError::bad_input(
                    "last",
                    "page with first/after or with last/before, not both",
                )
                .into());
            }
            (false, true) => notes::Paging::Backward {
                last: page::first(last).map_err(|_| {
                    AppError::bad_input(
                        "last",
                        format!("last must be between 1 and {}", page::MAX_PAGE),
                    )
                })?,
                before: page::after("notes", before.as_deref())
                    .map_err(|_| AppError::bad_input("before", "not a cursor of this list"))?,
            },
            (_, false) => notes::Paging::Forward {
                first: page::first(first)?,
                after: page::after("notes", after.as_deref())?,
            },
        };
        let found = notes::list(&state.db, &access, category.map(Into::into), paging).await?;
        audit_read(ctx, caller, "notes.read", access.room.id).await?;
        let cursors: Vec<String> = found
            .items
            .iter()
            .map(|n| page::cursor("notes", n.id))
            .collect();
        let page_info = match paging {
            notes::Paging::Forward { after, .. } => {
                PageInfo::forward(&cursors, found.has_next, after.is_some())
            }
            notes::Paging::Backward { before, .. } => PageInfo {
                has_next_page: before.is_some(),
                has_previous_page: found.has_next,
                start_cursor: cursors.first().cloned(),
                end_cursor: cursors.last().cloned(),
            },
        };
        Ok(NoteConnection {
            page_info,
            total_count: total(found.total),
            edges: found
                .items
                .into_iter()
                .zip(cursors)
                .map(|(n, cursor)| NoteEdge {
                    cursor,
                    node: Note {
                        model: n,
                        tz: self.tz,
                        room: self.viewer.clone(),
                    },
                })
                .collect(),
        })
    }
    /// Vital signs, newest measurement first, `from ≤ measuredAt ≤ to` (members only).
    async fn vitals(
        &self,
        ctx: &Context<'_>,
        from: Option<DateTime<FixedOffset>>,
        to: Option<DateTime<FixedOffset>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<VitalRecordConnection> {
        ctx.request()?.note_room(self.model().id);
        let access = self.viewer.access()?;
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let first = page::first(first)?;
        let after_id = page::after("vitals", after.as_deref())?;
        let found = vitals::list(
            &state.db,
            &access,
            from.map(|t| t.to_utc()),
            to.map(|t| t.to_utc()),
            first,
            after_id,
        )
        .await?;
        audit_read(ctx, caller, "vitals.read", access.room.id).await?;
        let cursors: Vec<String> = found
            .items
            .iter()
            .map(|v| page::cursor("vitals", v.id))
            .collect();
        Ok(VitalRecordConnection {
            page_info: PageInfo::forward(&cursors, found.has_next, after_id.is_some()),
            total_count: total(found.total),
            edges: found
                .items
                .into_iter()
                .zip(cursors)
                .map(|(model, cursor)| VitalRecordEdge {
                    cursor,
                    node: VitalRecord { model, tz: self.tz },
                })
                .collect(),
        })
    }
    /// The current version of each care information section written (members only).
    async fn care_info(&self, ctx: &Context<'_>) -> Result<Vec<CareInfoSection>> {
        ctx.request()?.note_room(self.model().id);
        let access = self.viewer.access()?;
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let sections = care::sections(&state.db, &access).await?;
        audit_read(ctx, caller, "careinfo.read", access.room.id).await?;
        Ok(sections
            .into_iter()
            .map(|model| CareInfoSection { model, tz: self.tz })
            .collect())
    }
    /// Notes by others, not deleted, posted after the caller's read marker (members only).
    async fn unread_count(&self, ctx: &Context<'_>) -> Result<i32> {
        ctx.request()?.note_room(self.model().id);
        let access = self.viewer.access()?;
        let state = ctx.state()?;
        Ok(total(
            notes::unread_count(&state.db, access.room.id, access.user_id).await?,
        ))
    }
}

/// The patient, read by members through `Room.patient`.
pub struct Patient(pub room::Model);

#[Object]
impl Patient {
    async fn name(&self) -> &str {
        &self.0.patient_name
    }
    async fn name_kana(&self) -> &str {
        &self.0.patient_name_kana
    }
    async fn birth_date(&self) -> Date {
        Date(self.0.patient_birth_date)
    }
    async fn sex(&self) -> Sex {
        self.0.patient_sex.into()
    }
    async fn address(&self) -> Option<&str> {
        self.0.patient_address.as_deref()
    }
    async fn phone(&self) -> Option<&str> {
        self.0.patient_phone.as_deref()
    }
    async fn care_level(&self) -> Option<CareLevel> {
        self.0.patient_care_level.map(Into::into)
    }
    /// キーパーソン: name, relation, phone as free text.
    async fn key_person(&self) -> Option<&str> {
        self.0.patient_key_person.as_deref()
    }
    async fn primary_physician(&self) -> Option<&str> {
        self.0.patient_primary_physician.as_deref()
    }
    async fn care_manager(&self) -> Option<&str> {
        self.0.patient_care_manager.as_deref()
    }
    async fn notes(&self) -> Option<&str> {
        self.0.patient_notes.as_deref()
    }
}

pub struct RoomMember {
    pub model: room_member::Model,
    pub tz: Tz,
}

#[Object]
impl RoomMember {
    async fn user(&self, ctx: &Context<'_>) -> Result<User> {
        user_of(ctx, self.model.user_id, self.tz).await
    }
    async fn joined_at(&self) -> DateTime<FixedOffset> {
        local(self.model.joined_at, self.tz)
    }
    async fn invited_by(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        match self.model.invited_by {
            Some(id) => Ok(Some(user_of(ctx, id, self.tz).await?)),
            None => Ok(None),
        }
    }
}

pub struct Consent {
    pub model: consent::Model,
    pub tz: Tz,
}

#[Object]
impl Consent {
    async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }
    async fn consenter(&self) -> Consenter {
        self.model.consenter.into()
    }
    async fn consenter_name(&self) -> &str {
        &self.model.consenter_name
    }
    /// Required when the consenter is not the patient.
    async fn relationship(&self) -> Option<&str> {
        self.model.relationship.as_deref()
    }
    async fn consented_on(&self) -> Date {
        Date(self.model.consented_on)
    }
    async fn recorded_by(&self, ctx: &Context<'_>) -> Result<User> {
        user_of(ctx, self.model.recorded_by, self.tz).await
    }
    async fn withdrawn_at(&self) -> Option<DateTime<FixedOffset>> {
        self.model.withdrawn_at.map(|t| local(t, self.tz))
    }
}

pub struct Invitation {
    pub model: invitation::Model,
    pub tz: Tz,
}

#[Object]
impl Invitation {
    async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }
    /// The room as the caller may see it: an invitee sees its id and patient label only.
    async fn room(&self, ctx: &Context<'_>) -> Result<Room> {
        let caller = ctx.caller().await?;
        room_for(ctx, caller, self.model.room_id).await
    }
    /// Family name, initial of the given name, birth year; never the full data.
    async fn patient_label(&self, ctx: &Context<'_>) -> Result<String> {
        let state = ctx.state()?;
        let room = crate::service::rooms::reload(&state.db, self.model.room_id).await?;
        Ok(room.patient_label)
    }
    async fn invitee(&self, ctx: &Context<'_>) -> Result<User> {
        user_of(ctx, self.model.invitee_id, self.tz).await
    }
    async fn invited_by(&self, ctx: &Context<'_>) -> Result<User> {
        user_of(ctx, self.model.invited_by, self.tz).await
    }
    async fn status(&self) -> InvitationStatus {
        invitations::effective_status(&self.model).into()
    }
    async fn created_at(&self) -> DateTime<FixedOffset> {
        local(self.model.created_at, self.tz)
    }
    async fn expires_at(&self) -> DateTime<FixedOffset> {
        local(self.model.expires_at, self.tz)
    }
}

#[derive(SimpleObject)]
pub struct RoomEdge {
    pub cursor: String,
    pub node: Room,
}

#[derive(SimpleObject)]
pub struct RoomConnection {
    pub edges: Vec<RoomEdge>,
    pub page_info: PageInfo,
    pub total_count: i32,
}

/// The room `id` of the caller's tenant as the caller may see it (NOT_FOUND for other
/// tenants, FORBIDDEN for those with no standing in it).
pub async fn room_for(ctx: &Context<'_>, caller: &Caller, id: uuid::Uuid) -> Result<Room> {
    let state = ctx.state()?;
    ctx.request()?.note_room(id);
    let room = crate::service::rooms::in_tenant(&state.db, caller.tenant.id, id).await?;
    let viewer = crate::authz::rooms::viewer(&state.db, &state.authz, &caller.user, room).await?;
    Ok(Room {
        viewer,
        tz: caller.tz(),
    })
}

/// The member capability for room `id` of the caller's tenant (NOT_FOUND for other tenants,
/// FORBIDDEN for non-members).
pub async fn member_of(
    ctx: &Context<'_>,
    caller: &Caller,
    id: uuid::Uuid,
) -> Result<crate::authz::rooms::RoomAccess> {
    let state = ctx.state()?;
    ctx.request()?.note_room(id);
    let room = crate::service::rooms::in_tenant(&state.db, caller.tenant.id, id).await?;
    Ok(crate::authz::rooms::member(
        &state.authz,
        &caller.user,
        room,
    )?)
}
