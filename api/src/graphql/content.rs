//! GraphQL types of room content: notes with their replies, mentions, attachments, revisions
//! and 既読, vital records, and care information. They are reached only through a `Room`
//! whose caller is a member (`RoomViewer::access`), so they check nothing again; the details
//! of a page of notes are read through the per-request loaders.

use async_graphql::{Context, Enum, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, FixedOffset};
use chrono_tz::Tz;

use entity::{attachment, care_info_version, note, note_revision, read_marker, vital_record};

use crate::authz::rooms::RoomViewer;
use crate::error::AppError;
use crate::graphql::loaders::Loaders;
use crate::graphql::rooms::{NoteCategory, Room};
use crate::graphql::types::{PageInfo, User, local};
use crate::service::notes::NoteKey;

fn loaders<'a>(ctx: &'a Context<'_>) -> Result<&'a Loaders> {
    ctx.data::<Loaders>().map_err(|_| {
        AppError::internal(anyhow::anyhow!("Loaders missing from request data")).into_graphql()
    })
}

/// A user by id, for the people of room content.
pub async fn person(ctx: &Context<'_>, id: uuid::Uuid, tz: Tz) -> Result<User> {
    Ok(User::by_id(ctx, Some(id), tz)
        .await?
        .ok_or(AppError::NotFound)?)
}

/// A post of the collaboration note, as a member reads it.
pub struct Note {
    pub model: note::Model,
    pub tz: Tz,
    pub room: RoomViewer,
}

#[Object]
impl Note {
    async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }
    async fn room(&self) -> Room {
        Room {
            viewer: self.room.clone(),
            tz: self.tz,
        }
    }
    async fn author(&self, ctx: &Context<'_>) -> Result<User> {
        person(ctx, self.model.author_id, self.tz).await
    }
    async fn category(&self) -> NoteCategory {
        self.model.category.into()
    }
    /// Marked urgent by its author (`postNote(input: { urgent: true })`).
    async fn urgent(&self) -> bool {
        self.model.urgent
    }
    /// Empty once deleted.
    async fn body(&self) -> &str {
        if self.model.deleted_at.is_some() {
            ""
        } else {
            &self.model.body
        }
    }
    /// The note of the same room this one answers.
    async fn reply_to(&self, ctx: &Context<'_>) -> Result<Option<Note>> {
        let Some(id) = self.model.reply_to_id else {
            return Ok(None);
        };
        Ok(loaders(ctx)?
            .notes
            .load_one(id)
            .await?
            .filter(|n| n.room_id == self.model.room_id)
            .map(|model| Note {
                model,
                tz: self.tz,
                room: self.room.clone(),
            }))
    }
    async fn mentions(&self, ctx: &Context<'_>) -> Result<Vec<User>> {
        let ids = loaders(ctx)?
            .mentions
            .load_one(self.model.id)
            .await?
            .unwrap_or_default();
        let mut people = Vec::with_capacity(ids.len());
        for id in ids {
            people.push(person(ctx, id, self.tz).await?);
        }
        Ok(people)
    }
    async fn attachments(&self, ctx: &Context<'_>) -> Result<Vec<Attachment>> {
        if self.model.deleted_at.is_some() {
            return Ok(Vec::new());
        }
        Ok(loaders(ctx)?
            .attachments
            .load_one(self.model.id)
            .await?
            .unwrap_or_default()
            .into_iter()
            .map(Attachment)
            .collect())
    }
    async fn created_at(&self) -> DateTime<FixedOffset> {
        local(self.model.created_at, self.tz)
    }
    async fn edited_at(&self) -> Option<DateTime<FixedOffset>> {
        self.model.edited_at.map(|t| local(t, self.tz))
    }
    async fn deleted_at(&self) -> Option<DateTime<FixedOffset>> {
        self.model.deleted_at.map(|t| local(t, self.tz))
    }
    async fn deletion_reason(&self) -> Option<&str> {
        self.model.deletion_reason.as_deref()
    }
    /// Earlier bodies, oldest first; `editedAt` is when each was written. None once the note
    /// is deleted (the record keeps them for the audit).
    async fn revisions(&self, ctx: &Context<'_>) -> Result<Vec<NoteRevision>> {
        if self.model.deleted_at.is_some() {
            return Ok(Vec::new());
        }
        Ok(loaders(ctx)?
            .revisions
            .load_one(self.model.id)
            .await?
            .unwrap_or_default()
            .into_iter()
            .map(|model| NoteRevision { model, tz: self.tz })
            .collect())
    }
    /// 既読: who (other than the author) has read it, and when they first did.
    async fn read_by(&self, ctx: &Context<'_>) -> Result<Vec<NoteRead>> {
        Ok(loaders(ctx)?
            .read_by
            .load_one(NoteKey::from(&self.model))
            .await?
            .unwrap_or_default()
            .into_iter()
            .map(|model| NoteRead { model, tz: self.tz })
            .collect())
    }
}

pub struct NoteRevision {
    model: note_revision::Model,
    tz: Tz,
}

#[Object]
impl NoteRevision {
    async fn body(&self) -> &str {
        &self.model.body
    }
    /// When this body was written.
    async fn edited_at(&self) -> DateTime<FixedOffset> {
        local(self.model.written_at, self.tz)
    }
}

pub struct NoteRead {
    model: read_marker::Model,
    tz: Tz,
}

#[Object]
impl NoteRead {
    async fn user(&self, ctx: &Context<'_>) -> Result<User> {
        person(ctx, self.model.user_id, self.tz).await
    }
    async fn read_at(&self) -> DateTime<FixedOffset> {
        local(self.model.read_at, self.tz)
    }
}

pub struct Attachment(pub attachment::Model);

#[Object]
impl Attachment {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn file_name(&self) -> &str {
        &self.0.file_name
    }
    /// Sniffed from the bytes at upload.
    async fn content_type(&self) -> &str {
        &self.0.content_type
    }
    async fn size_bytes(&self) -> i32 {
        i32::try_from(self.0.size_bytes).unwrap_or(i32::MAX)
    }
    /// Lowercase hex SHA-256 of the bytes.
    async fn sha256(&self) -> &str {
        &self.0.sha256
    }
    /// `GET` it with the session (bearer or cookie) over the bound certificate; members only.
    async fn url(&self) -> String {
        format!("/attachments/{}", self.0.id)
    }
}

#[derive(SimpleObject)]
pub struct NoteEdge {
    pub cursor: String,
    pub node: Note,
}

#[derive(SimpleObject)]
pub struct NoteConnection {
    pub edges: Vec<NoteEdge>,
    pub page_info: PageInfo,
    pub total_count: i32,
}

/// What `postNote` posts.
#[derive(InputObject)]
pub struct PostNoteInput {
    pub room_id: ID,
    #[graphql(default_with = "Some(NoteCategory::Contact)")]
    pub category: Option<NoteCategory>,
    pub body: String,
    pub reply_to_id: Option<ID>,
    pub mention_user_ids: Option<Vec<ID>>,
    pub attachment_ids: Option<Vec<ID>>,
    /// Idempotency key: the same key from the same user returns the same note.
    pub client_mutation_id: Option<String>,
    /// Breaks through quiet hours and MENTIONS_AND_URGENT room settings of every member.
    #[graphql(default = false)]
    pub urgent: bool,
}

/// One measurement session; units fixed (LOINC codes and UCUM units in the descriptions).
pub struct VitalRecord {
    pub model: vital_record::Model,
    pub tz: Tz,
}

#[Object]
impl VitalRecord {
    async fn id(&self) -> ID {
        ID(self.model.id.to_string())
    }
    async fn measured_at(&self) -> DateTime<FixedOffset> {
        local(self.model.measured_at, self.tz)
    }
    async fn recorded_by(&self, ctx: &Context<'_>) -> Result<User> {
        person(ctx, self.model.recorded_by, self.tz).await
    }
    /// LOINC 8480-6, mm[Hg].
    async fn systolic_mm_hg(&self) -> Option<i32> {
        self.model.systolic_mm_hg
    }
    /// LOINC 8462-4, mm[Hg].
    async fn diastolic_mm_hg(&self) -> Option<i32> {
        self.model.diastolic_mm_hg
    }
    /// LOINC 8867-4, /min.
    async fn pulse_per_min(&self) -> Option<i32> {
        self.model.pulse_per_min
    }
    /// LOINC 8310-5, Cel.
    async fn temperature_celsius(&self) -> Option<f64> {
        self.model.temperature_celsius
    }
    /// LOINC 2708-6, %.
    async fn spo2_percent(&self) -> Option<i32> {
        self.model.spo2_percent
    }
    /// LOINC 9279-1, /min.
    async fn respiratory_rate_per_min(&self) -> Option<i32> {
        self.model.respiratory_rate_per_min
    }
    /// LOINC 29463-7, kg.
    async fn weight_kg(&self) -> Option<f64> {
        self.model.weight_kg
    }
    /// LOINC 2339-0, mg/dL.
    async fn blood_glucose_mg_dl(&self) -> Option<i32> {
        self.model.blood_glucose_mg_dl
    }
    async fn note(&self) -> Option<&str> {
        self.model.note.as_deref()
    }
}

#[derive(SimpleObject)]
pub struct VitalRecordEdge {
    pub cursor: String,
    pub node: VitalRecord,
}

#[derive(SimpleObject)]
pub struct VitalRecordConnection {
    pub edges: Vec<VitalRecordEdge>,
    pub page_info: PageInfo,
    pub total_count: i32,
}

#[derive(InputObject)]
pub struct VitalInput {
    pub room_id: ID,
    pub measured_at: DateTime<FixedOffset>,
    pub systolic_mm_hg: Option<i32>,
    pub diastolic_mm_hg: Option<i32>,
    pub pulse_per_min: Option<i32>,
    pub temperature_celsius: Option<f64>,
    pub spo2_percent: Option<i32>,
    pub respiratory_rate_per_min: Option<i32>,
    pub weight_kg: Option<f64>,
    pub blood_glucose_mg_dl: Option<i32>,
    pub note: Option<String>,
}

impl From<&VitalInput> for crate::service::vitals::VitalsForm {
    fn from(v: &VitalInput) -> Self {
        crate::service::vitals::VitalsForm {
            measured_at: v.measured_at.to_utc(),
            systolic: v.systolic_mm_hg,
            diastolic: v.diastolic_mm_hg,
            pulse: v.pulse_per_min,
            temperature: v.temperature_celsius,
            spo2: v.spo2_percent,
            respiratory_rate: v.respiratory_rate_per_min,
            weight: v.weight_kg,
            glucose: v.blood_glucose_mg_dl,
            note: v.note.clone(),
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::kinds::CareInfoKind")]
pub enum CareInfoKind {
    MedicalHistory,
    Medications,
    Allergies,
    Adl,
    CarePlan,
    Services,
    EmergencyPlan,
    Other,
}

pub struct CareInfoSection {
    pub model: care_info_version::Model,
    pub tz: Tz,
}

#[Object]
impl CareInfoSection {
    async fn kind(&self) -> CareInfoKind {
        self.model.kind.into()
    }
    async fn content(&self) -> &str {
        &self.model.content
    }
    async fn updated_at(&self) -> DateTime<FixedOffset> {
        local(self.model.updated_at, self.tz)
    }
    async fn updated_by(&self, ctx: &Context<'_>) -> Result<User> {
        person(ctx, self.model.updated_by, self.tz).await
    }
    /// Pass it back as `expectedVersion` to change the section.
    async fn version(&self) -> i32 {
        self.model.version
    }
}
