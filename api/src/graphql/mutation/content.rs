//! Room content (members of an OPEN room with a valid consent): the note, 既読, attachments,
//! vitals, the patient and the care information. Thin: each resolver finds the room in the
//! caller's tenant, takes the member capability, and hands it to the service.

use async_graphql::{Context, ID, Object, Result, Upload};
use uuid::Uuid;

use crate::authz::rooms::{self as room_authz, RoomAccess};
use crate::graphql::content::{
    Attachment, CareInfoKind, CareInfoSection, Note, PostNoteInput, VitalInput, VitalRecord,
};
use crate::graphql::context::{Caller, ContextExt as _};
use crate::graphql::rooms::{NoteCategory, Patient, PatientInput, member_of};
use crate::service::notes::NewNote;
use crate::service::rooms::{self, PatientForm};
use crate::service::{attachments, care, notes, users, vitals};

/// A note as the member who just wrote it sees it (the room is the one just checked: its
/// standing needs no second read).
async fn note_view(
    ctx: &Context<'_>,
    caller: &Caller,
    access: RoomAccess,
    model: entity::note::Model,
) -> Result<Note> {
    let state = ctx.state()?;
    let viewer = room_authz::viewer(&state.db, &state.authz, &caller.user, access.room).await?;
    Ok(Note {
        model,
        tz: caller.tz(),
        room: viewer,
    })
}

/// Ids of the input list `field`: an id that is not one is refused naming the field.
fn ids_of(field: &str, list: Option<Vec<ID>>) -> Result<Vec<Uuid>> {
    Ok(list
        .unwrap_or_default()
        .iter()
        .map(|id| {
            Uuid::parse_str(id).map_err(|_| {
                crate::error::AppError::bad_input(field, format!("'{}' is not an id", id.as_str()))
            })
        })
        .collect::<Result<Vec<_>, _>>()?)
}

#[derive(Default)]
pub struct ContentMutation;

#[Object]
impl ContentMutation {
    /// Posts to the room's note. A retry with the same `clientMutationId` returns the same note.
    async fn post_note(&self, ctx: &Context<'_>, input: PostNoteInput) -> Result<Note> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let access = member_of(ctx, caller, users::parse_id(&input.room_id)?).await?;
        let reply_to = match &input.reply_to_id {
            Some(id) => Some(Uuid::parse_str(id).map_err(|_| {
                crate::error::AppError::bad_input("replyToId", "not a note of this room")
            })?),
            None => None,
        };
        let new = NewNote {
            category: input.category.unwrap_or(NoteCategory::Contact).into(),
            body: input.body,
            reply_to,
            mentions: ids_of("mentionUserIds", input.mention_user_ids)?,
            attachments: ids_of("attachmentIds", input.attachment_ids)?,
            client_mutation_id: input.client_mutation_id,
            urgent: input.urgent,
        };
        let model = notes::post(state, &access, new, &caller.origin(ctx.request()?)).await?;
        note_view(ctx, caller, access, model).await
    }

    /// Changes the body of one's own note; the earlier body is kept in `revisions`.
    async fn edit_note(&self, ctx: &Context<'_>, id: ID, body: String) -> Result<Note> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let note = notes::in_tenant(&state.db, caller.tenant.id, users::parse_id(&id)?).await?;
        let access = member_of(ctx, caller, note.room_id).await?;
        let model =
            notes::edit(state, &access, &note, &body, &caller.origin(ctx.request()?)).await?;
        note_view(ctx, caller, access, model).await
    }

    /// Deletes one's own note (soft): the body is emptied, the reason shown.
    async fn delete_note(&self, ctx: &Context<'_>, id: ID, reason: String) -> Result<Note> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let note = notes::in_tenant(&state.db, caller.tenant.id, users::parse_id(&id)?).await?;
        let access = member_of(ctx, caller, note.room_id).await?;
        let model = notes::delete(
            state,
            &access,
            &note,
            &reason,
            &caller.origin(ctx.request()?),
        )
        .await?;
        note_view(ctx, caller, access, model).await
    }

    /// 既読: moves the caller's read marker up to this note (never back); the unread count after.
    async fn mark_read(&self, ctx: &Context<'_>, room_id: ID, up_to_note_id: ID) -> Result<i32> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let access = member_of(ctx, caller, users::parse_id(&room_id)?).await?;
        let up_to = Uuid::parse_str(&up_to_note_id).map_err(|_| {
            crate::error::AppError::bad_input("upToNoteId", "not a note of this room")
        })?;
        let unread =
            notes::mark_read(state, &access, up_to, &caller.origin(ctx.request()?)).await?;
        Ok(crate::graphql::types::total(unread))
    }

    /// Uploads a file (GraphQL multipart request): JPEG, PNG, HEIC, PDF or MP4, sniffed from the
    /// bytes. Reference it from `postNote.attachmentIds`.
    async fn upload_attachment(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        file: Upload,
    ) -> Result<Attachment> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let access = member_of(ctx, caller, users::parse_id(&room_id)?).await?;
        let upload = file.value(ctx).map_err(|_| {
            crate::error::AppError::bad_input("file", "the file part of the request is missing")
        })?;
        let model = attachments::upload(
            state,
            &access,
            &upload.filename,
            upload.content,
            &caller.origin(ctx.request()?),
        )
        .await?;
        Ok(Attachment(model))
    }

    /// Records one measurement session of vital signs.
    async fn record_vitals(&self, ctx: &Context<'_>, input: VitalInput) -> Result<VitalRecord> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let access = member_of(ctx, caller, users::parse_id(&input.room_id)?).await?;
        let model = vitals::record(
            state,
            &access,
            (&input).into(),
            &caller.origin(ctx.request()?),
        )
        .await?;
        Ok(VitalRecord {
            model,
            tz: caller.tz(),
        })
    }

    /// Changes the patient's data; the previous version is kept.
    async fn update_patient(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        patient: PatientInput,
    ) -> Result<Patient> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let access = member_of(ctx, caller, users::parse_id(&room_id)?).await?;
        let form = PatientForm::from(patient).validated("patient", rooms::today(&caller.tenant))?;
        let room =
            care::update_patient(state, &access, &form, &caller.origin(ctx.request()?)).await?;
        Ok(Patient(room))
    }

    /// Writes a care information section. `expectedVersion` is the version last read (absent
    /// for a new section); a stale one is CONFLICT, so nobody overwrites a change unseen.
    async fn update_care_info(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        kind: CareInfoKind,
        content: String,
        expected_version: Option<i32>,
    ) -> Result<CareInfoSection> {
        let caller = ctx.caller().await?;
        let state = ctx.state()?;
        let access = member_of(ctx, caller, users::parse_id(&room_id)?).await?;
        let model = care::update_section(
            state,
            &access,
            kind.into(),
            &content,
            expected_version,
            &caller.origin(ctx.request()?),
        )
        .await?;
        Ok(CareInfoSection {
            model,
            tz: caller.tz(),
        })
    }
}
