//! The room's collaboration note (多職種連携ノート): posting (idempotent by `clientMutationId`),
//! replies, mentions and attachments, editing with revisions, soft deletion, the timeline, and
//! 既読 (read markers). Every write re-checks the membership and the room's state inside its
//! transaction (`rooms::writable_in`) and is audited there; live events go out after commit.

use std::collections::{BTreeSet, HashMap};

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, Select, Set,
};
use uuid::Uuid;

use entity::kinds::{AuditOutcome, NoteCategory};
use entity::{attachment, note, note_mention, note_revision, read_marker, room, room_member};

use crate::authz::rooms::RoomAccess;
use crate::error::{AppError, AppResult};
use crate::events::LiveEvent;
use crate::service::audit::{self, Event, Origin};
use crate::service::page::{self, Page};
use crate::service::{enum_name, forms, now, rooms};
use crate::state::AppState;

/// Longest note body, in characters.
pub const BODY_MAX_CHARS: usize = 10_000;
pub const MAX_MENTIONS: usize = 50;
pub const MAX_ATTACHMENTS: usize = 10;
const CLIENT_MUTATION_ID_MAX: usize = 100;

/// A note body: trimmed, 1..=10,000 characters, line breaks kept.
pub fn body(field: &str, value: &str) -> AppResult<String> {
    forms::multiline(field, value, BODY_MAX_CHARS)
}

/// Inserts a note in the caller's (writing) transaction and records `note.create`.
pub async fn insert_in(
    db: &impl ConnectionTrait,
    room: &room::Model,
    author: Uuid,
    category: NoteCategory,
    body: &str,
    origin: &Origin,
) -> AppResult<note::Model> {
    let created = new_note(room, author, category, body, None, None, false)
        .insert(db)
        .await?;
    record_create(db, &created, origin).await?;
    Ok(created)
}

fn new_note(
    room: &room::Model,
    author: Uuid,
    category: NoteCategory,
    body: &str,
    reply_to: Option<Uuid>,
    client_mutation_id: Option<String>,
    urgent: bool,
) -> note::ActiveModel {
    note::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(room.tenant_id),
        room_id: Set(room.id),
        author_id: Set(author),
        category: Set(category),
        body: Set(body.to_string()),
        reply_to_id: Set(reply_to),
        client_mutation_id: Set(client_mutation_id),
        created_at: Set(now()),
        edited_at: Set(None),
        deleted_at: Set(None),
        deletion_reason: Set(None),
        urgent: Set(urgent),
    }
}

async fn record_create(
    db: &impl ConnectionTrait,
    created: &note::Model,
    origin: &Origin,
) -> AppResult<()> {
    let event = Event::new(created.tenant_id, "note.create", AuditOutcome::Allowed)
        .by(origin)
        .room(created.room_id)
        .target("note", created.id)
        .detail("category", enum_name(&created.category))
        .detail("urgent", created.urgent);
    audit::record(db, event).await?;
    Ok(())
}

/// What `postNote` asks for, before validation.
#[derive(Debug, Clone)]
pub struct NewNote {
    pub category: NoteCategory,
    pub body: String,
    pub reply_to: Option<Uuid>,
    pub mentions: Vec<Uuid>,
    pub attachments: Vec<Uuid>,
    pub client_mutation_id: Option<String>,
    pub urgent: bool,
}

impl NewNote {
    fn validated(mut self) -> AppResult<NewNote> {
        self.body = body("body", &self.body)?;
        self.mentions = dedup(self.mentions);
        self.attachments = dedup(self.attachments);
        if self.mentions.len() > MAX_MENTIONS {
            return Err(AppError::bad_input(
                "mentionUserIds",
                format!("at most {MAX_MENTIONS} people"),
            ));
        }
        if self.attachments.len() > MAX_ATTACHMENTS {
            return Err(AppError::bad_input(
                "attachmentIds",
                format!("at most {MAX_ATTACHMENTS} attachments"),
            ));
        }
        if let Some(key) = &self.client_mutation_id {
            let key = key.trim();
            if key.is_empty() || key.chars().count() > CLIENT_MUTATION_ID_MAX {
                return Err(AppError::bad_input(
                    "clientMutationId",
                    format!("1 to {CLIENT_MUTATION_ID_MAX} characters"),
                ));
            }
            self.client_mutation_id = Some(key.to_string());
        }
        Ok(self)
    }
}

fn dedup(ids: Vec<Uuid>) -> Vec<Uuid> {
    let mut seen = BTreeSet::new();
    ids.into_iter().filter(|id| seen.insert(*id)).collect()
}

/// The note `author` already posted with this idempotency key, if any.
async fn by_client_mutation_id(
    db: &impl ConnectionTrait,
    author: Uuid,
    key: &str,
) -> AppResult<Option<note::Model>> {
    Ok(note::Entity::find()
        .filter(note::Column::AuthorId.eq(author))
        .filter(note::Column::ClientMutationId.eq(key))
        .one(db)
        .await?)
}

/// A retried key returns the note it made, if that note is in this room.
fn retried(existing: note::Model, room_id: Uuid) -> AppResult<note::Model> {
    if existing.room_id == room_id {
        Ok(existing)
    } else {
        Err(AppError::bad_input(
            "clientMutationId",
            "this key was already used for a note in another room",
        ))
    }
}

/// `postNote`: one note, however often the same `clientMutationId` is sent (also at once).
pub async fn post(
    state: &AppState,
    access: &RoomAccess,
    input: NewNote,
    origin: &Origin,
) -> AppResult<note::Model> {
    let input = input.validated()?;
    if let Some(key) = &input.client_mutation_id
        && let Some(existing) = by_client_mutation_id(&state.db, access.user_id, key).await?
    {
        return retried(existing, access.room.id);
    }
    let created = match post_once(state, access, &input, origin).await {
        Ok(created) => created,
        // A concurrent request with the same key committed first: the unique index refused
        // this one, and its note is the answer.
        Err(AppError::Conflict(e)) => match &input.client_mutation_id {
            Some(key) => match by_client_mutation_id(&state.db, access.user_id, key).await? {
                Some(existing) => return retried(existing, access.room.id),
                None => return Err(AppError::Conflict(e)),
            },
            None => return Err(AppError::Conflict(e)),
        },
        Err(e) => return Err(e),
    };
    let mut events = vec![LiveEvent::NotePosted {
        room_id: created.room_id,
        note_id: created.id,
    }];
    events.extend(
        input
            .mentions
            .iter()
            .filter(|u| **u != access.user_id)
            .map(|user_id| LiveEvent::Mention {
                user_id: *user_id,
                room_id: created.room_id,
                note_id: created.id,
            }),
    );
    state.notify.wake();
    state.events.publish(events).await;
    Ok(created)
}

async fn post_once(
    state: &AppState,
    access: &RoomAccess,
    input: &NewNote,
    origin: &Origin,
) -> AppResult<note::Model> {
    let txn = crate::db::begin_write(&state.db).await?;
    let room = rooms::writable_in(&txn, access.room.id, access.user_id).await?;
    if let Some(reply_to) = input.reply_to {
        let parent = note::Entity::find_by_id(reply_to).one(&txn).await?;
        if parent.is_none_or(|p| p.room_id != room.id) {
            return Err(AppError::bad_input("replyToId", "not a note of this room"));
        }
    }
    if !input.mentions.is_empty() {
        let members = room_member::Entity::find()
            .filter(room_member::Column::RoomId.eq(room.id))
            .filter(room_member::Column::UserId.is_in(input.mentions.iter().copied()))
            .filter(room_member::Column::LeftAt.is_null())
            .count(&txn)
            .await?;
        if members != input.mentions.len() as u64 {
            return Err(AppError::bad_input(
                "mentionUserIds",
                "only current members of the room can be mentioned",
            ));
        }
    }
    let created = new_note(
        &room,
        access.user_id,
        input.category,
        &input.body,
        input.reply_to,
        input.client_mutation_id.clone(),
        input.urgent,
    )
    .insert(&txn)
    .await?;
    if !input.mentions.is_empty() {
        note_mention::Entity::insert_many(input.mentions.iter().map(|user_id| {
            note_mention::ActiveModel {
                note_id: Set(created.id),
                user_id: Set(*user_id),
                room_id: Set(room.id),
            }
        }))
        .exec(&txn)
        .await?;
    }
    if !input.attachments.is_empty() {
        // Claims the uploads in one conditional update: each must be the author's own, in this
        // room, and not yet on a note; a concurrent post claiming the same one loses here.
        let claimed = attachment::Entity::update_many()
            .col_expr(attachment::Column::NoteId, Expr::value(created.id))
            .filter(attachment::Column::Id.is_in(input.attachments.iter().copied()))
            .filter(attachment::Column::RoomId.eq(room.id))
            .filter(attachment::Column::UploadedBy.eq(access.user_id))
            .filter(attachment::Column::NoteId.is_null())
            .exec(&txn)
            .await?;
        if claimed.rows_affected != input.attachments.len() as u64 {
            return Err(AppError::bad_input(
                "attachmentIds",
                "attachments must be your own uploads to this room, not yet on a note",
            ));
        }
    }
    record_create(&txn, &created, origin).await?;
    crate::notify::note_posted_in(&txn, &state.config, &created, &input.mentions).await?;
    txn.commit().await?;
    Ok(created)
}

/// A note of the caller's tenant (NOT_FOUND otherwise).
pub async fn in_tenant(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    id: Uuid,
) -> AppResult<note::Model> {
    note::Entity::find_by_id(id)
        .filter(note::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound)
}

/// The author's own note, for editing and deleting.
fn own(access: &RoomAccess, note: &note::Model) -> AppResult<()> {
    if note.room_id != access.room.id {
        return Err(AppError::NotFound);
    }
    if note.author_id != access.user_id {
        return Err(AppError::Forbidden);
    }
    Ok(())
}

/// Replaces the note's body with `body` (or empties it for a deletion), keeping the old body
/// as a revision. The update is conditional on the body and edit time read, so of two
/// concurrent edits one wins and the other gets CONFLICT instead of losing a revision.
async fn replace_body(
    db: &impl ConnectionTrait,
    current: &note::Model,
    update: note::ActiveModel,
) -> AppResult<note::Model> {
    let at = now();
    note_revision::ActiveModel {
        id: Set(Uuid::now_v7()),
        note_id: Set(current.id),
        body: Set(current.body.clone()),
        written_at: Set(current.edited_at.unwrap_or(current.created_at)),
        replaced_at: Set(at),
    }
    .insert(db)
    .await?;
    let mut update = update;
    update.id = sea_orm::ActiveValue::Unchanged(current.id);
    let mut condition = note::Entity::update_many()
        .set(update)
        .filter(note::Column::Id.eq(current.id))
        .filter(note::Column::DeletedAt.is_null())
        .filter(note::Column::Body.eq(current.body.clone()));
    condition = match current.edited_at {
        Some(t) => condition.filter(note::Column::EditedAt.eq(t)),
        None => condition.filter(note::Column::EditedAt.is_null()),
    };
    let done = condition.exec(db).await?;
    if done.rows_affected != 1 {
        return Err(AppError::Conflict(
            "the note was changed meanwhile; reload it and try again".into(),
        ));
    }
    note::Entity::find_by_id(current.id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound)
}

/// What happens to a note's body.
enum Change {
    Edit(String),
    Delete(String),
}

/// `editNote` (the author): the earlier body is kept in the revisions.
pub async fn edit(
    state: &AppState,
    access: &RoomAccess,
    note: &note::Model,
    new_body: &str,
    origin: &Origin,
) -> AppResult<note::Model> {
    let new_body = body("body", new_body)?;
    change(state, access, note, Change::Edit(new_body), origin).await
}

/// `deleteNote` (the author): soft. The body shown is emptied; the record keeps the last body
/// as a revision, for the audit, and nobody reads the revisions of a deleted note.
pub async fn delete(
    state: &AppState,
    access: &RoomAccess,
    note: &note::Model,
    reason: &str,
    origin: &Origin,
) -> AppResult<note::Model> {
    let reason = forms::text("reason", reason, 1000)?;
    change(state, access, note, Change::Delete(reason), origin).await
}

async fn change(
    state: &AppState,
    access: &RoomAccess,
    note: &note::Model,
    change: Change,
    origin: &Origin,
) -> AppResult<note::Model> {
    own(access, note)?;
    let txn = crate::db::begin_write(&state.db).await?;
    rooms::writable_in(&txn, access.room.id, access.user_id).await?;
    let current = note::Entity::find_by_id(note.id)
        .one(&txn)
        .await?
        .ok_or(AppError::NotFound)?;
    if current.deleted_at.is_some() {
        return Err(AppError::Conflict("the note was deleted".into()));
    }
    let (update, action, reason) = match change {
        Change::Edit(new_body) => {
            if current.body == new_body {
                return Ok(current);
            }
            let update = note::ActiveModel {
                body: Set(new_body),
                edited_at: Set(Some(now())),
                ..Default::default()
            };
            (update, "note.edit", None)
        }
        Change::Delete(reason) => {
            let update = note::ActiveModel {
                body: Set(String::new()),
                deleted_at: Set(Some(now())),
                deletion_reason: Set(Some(reason.clone())),
                ..Default::default()
            };
            (update, "note.delete", Some(reason))
        }
    };
    let changed = replace_body(&txn, &current, update).await?;
    let mut event = Event::new(changed.tenant_id, action, AuditOutcome::Allowed)
        .by(origin)
        .room(changed.room_id)
        .target("note", changed.id);
    if let Some(reason) = reason {
        event = event.detail("reason", reason);
    }
    audit::record(&txn, event).await?;
    txn.commit().await?;
    state
        .events
        .publish([LiveEvent::NoteChanged {
            room_id: changed.room_id,
            note_id: changed.id,
        }])
        .await;
    Ok(changed)
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

fn in_room(room_id: Uuid, category: Option<NoteCategory>) -> Select<note::Entity> {
    let mut select = note::Entity::find().filter(note::Column::RoomId.eq(room_id));
    if let Some(category) = category {
        select = select.filter(note::Column::Category.eq(category));
    }
    select
}

/// Which way a page of the (newest-first) timeline goes.
#[derive(Debug, Clone, Copy)]
pub enum Paging {
    /// `first` notes older than `after` (or the newest `first`).
    Forward { first: u64, after: Option<Uuid> },
    /// The `last` notes newer than `before` nearest to it (or the oldest `last`).
    Backward { last: u64, before: Option<Uuid> },
}

/// One page of the timeline, newest first either way; `has_more` is hasNextPage going
/// forward and hasPreviousPage going backward. Ids are time-ordered (UUIDv7), so a cursor keeps
/// its place while notes are posted.
pub async fn list(
    db: &impl ConnectionTrait,
    access: &RoomAccess,
    category: Option<NoteCategory>,
    paging: Paging,
) -> AppResult<Page<note::Model>> {
    let total = in_room(access.room.id, category).count(db).await?;
    match paging {
        Paging::Forward { first, after } => {
            let mut select = in_room(access.room.id, category);
            if let Some(after) = after {
                select = select.filter(note::Column::Id.lt(after));
            }
            let items = select
                .order_by_desc(note::Column::Id)
                .limit(first + 1)
                .all(db)
                .await?;
            Ok(page::finish(items, first, total))
        }
        Paging::Backward { last, before } => {
            let mut select = in_room(access.room.id, category);
            if let Some(before) = before {
                select = select.filter(note::Column::Id.gt(before));
            }
            let items = select
                .order_by_asc(note::Column::Id)
                .limit(last + 1)
                .all(db)
                .await?;
            let mut found = page::finish(items, last, total);
            found.items.reverse();
            Ok(found)
        }
    }
}

/// Notes by id (any rooms; the caller has checked access), for loaders.
pub async fn by_ids(db: &impl ConnectionTrait, ids: &[Uuid]) -> AppResult<Vec<note::Model>> {
    Ok(note::Entity::find()
        .filter(note::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?)
}

/// Earlier bodies of these notes, oldest first each; none for deleted notes.
pub async fn revisions_of(
    db: &impl ConnectionTrait,
    notes: &[Uuid],
) -> AppResult<HashMap<Uuid, Vec<note_revision::Model>>> {
    let rows = note_revision::Entity::find()
        .filter(note_revision::Column::NoteId.is_in(notes.iter().copied()))
        .order_by_asc(note_revision::Column::ReplacedAt)
        .order_by_asc(note_revision::Column::Id)
        .all(db)
        .await?;
    let mut out: HashMap<Uuid, Vec<note_revision::Model>> = HashMap::new();
    for row in rows {
        out.entry(row.note_id).or_default().push(row);
    }
    Ok(out)
}

/// The people mentioned in these notes.
pub async fn mentions_of(
    db: &impl ConnectionTrait,
    notes: &[Uuid],
) -> AppResult<HashMap<Uuid, Vec<Uuid>>> {
    let rows = note_mention::Entity::find()
        .filter(note_mention::Column::NoteId.is_in(notes.iter().copied()))
        .all(db)
        .await?;
    let mut out: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for row in rows {
        out.entry(row.note_id).or_default().push(row.user_id);
    }
    Ok(out)
}

/// The attachments of these notes, in upload order.
pub async fn attachments_of(
    db: &impl ConnectionTrait,
    notes: &[Uuid],
) -> AppResult<HashMap<Uuid, Vec<attachment::Model>>> {
    let rows = attachment::Entity::find()
        .filter(attachment::Column::NoteId.is_in(notes.iter().copied()))
        .order_by_asc(attachment::Column::Id)
        .all(db)
        .await?;
    let mut out: HashMap<Uuid, Vec<attachment::Model>> = HashMap::new();
    for row in rows {
        if let Some(note_id) = row.note_id {
            out.entry(note_id).or_default().push(row);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// 既読
// ---------------------------------------------------------------------------------------------

/// The caller's read marker in the room: the newest note it has marked read.
async fn marker(
    db: &impl ConnectionTrait,
    room_id: Uuid,
    user_id: Uuid,
) -> AppResult<Option<Uuid>> {
    Ok(read_marker::Entity::find()
        .filter(read_marker::Column::RoomId.eq(room_id))
        .filter(read_marker::Column::UserId.eq(user_id))
        .order_by_desc(read_marker::Column::UpToNoteId)
        .one(db)
        .await?
        .map(|m| m.up_to_note_id))
}

/// Notes by others, not deleted, newer than the caller's marker.
pub async fn unread_count(
    db: &impl ConnectionTrait,
    room_id: Uuid,
    user_id: Uuid,
) -> AppResult<u64> {
    let mut select = note::Entity::find()
        .filter(note::Column::RoomId.eq(room_id))
        .filter(note::Column::AuthorId.ne(user_id))
        .filter(note::Column::DeletedAt.is_null());
    if let Some(up_to) = marker(db, room_id, user_id).await? {
        select = select.filter(note::Column::Id.gt(up_to));
    }
    Ok(select.count(db).await?)
}

/// `markRead`: moves the caller's marker forward to `up_to` (never back); the unread count after.
pub async fn mark_read(
    state: &AppState,
    access: &RoomAccess,
    up_to: Uuid,
    origin: &Origin,
) -> AppResult<u64> {
    let target = note::Entity::find_by_id(up_to).one(&state.db).await?;
    if target.is_none_or(|n| n.room_id != access.room.id) {
        return Err(AppError::bad_input("upToNoteId", "not a note of this room"));
    }
    let txn = crate::db::begin_write(&state.db).await?;
    // Reading is for current members, also of a closed room.
    if !crate::service::memberships::is_current_locked(&txn, access.room.id, access.user_id).await?
    {
        return Err(AppError::Forbidden);
    }
    let current = marker(&txn, access.room.id, access.user_id).await?;
    if current.is_none_or(|c| c < up_to) {
        read_marker::ActiveModel {
            id: Set(Uuid::now_v7()),
            room_id: Set(access.room.id),
            user_id: Set(access.user_id),
            up_to_note_id: Set(up_to),
            read_at: Set(now()),
        }
        .insert(&txn)
        .await?;
        let event = Event::new(
            access.room.tenant_id,
            "note.read_marker",
            AuditOutcome::Allowed,
        )
        .by(origin)
        .room(access.room.id)
        .target("note", up_to);
        audit::record(&txn, event).await?;
    }
    txn.commit().await?;
    unread_count(&state.db, access.room.id, access.user_id).await
}

/// What `readBy` needs of a note: its room and author besides its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NoteKey {
    pub id: Uuid,
    pub room_id: Uuid,
    pub author_id: Uuid,
}

impl From<&note::Model> for NoteKey {
    fn from(n: &note::Model) -> Self {
        NoteKey {
            id: n.id,
            room_id: n.room_id,
            author_id: n.author_id,
        }
    }
}

/// Who read each of these notes, and when: for each user other than the author, the time of
/// the first marker that covered the note. One statement per room.
pub async fn read_by(
    db: &impl ConnectionTrait,
    notes: &[NoteKey],
) -> AppResult<HashMap<Uuid, Vec<read_marker::Model>>> {
    let mut out: HashMap<Uuid, Vec<read_marker::Model>> = HashMap::new();
    let mut by_room: HashMap<Uuid, Vec<&NoteKey>> = HashMap::new();
    for n in notes {
        by_room.entry(n.room_id).or_default().push(n);
    }
    for (room_id, notes) in by_room {
        let Some(oldest) = notes.iter().map(|n| n.id).min() else {
            continue;
        };
        // Markers only move forward, so ordered by note the first one per user that reaches a
        // note is the earliest read of it.
        let markers = read_marker::Entity::find()
            .filter(read_marker::Column::RoomId.eq(room_id))
            .filter(read_marker::Column::UpToNoteId.gte(oldest))
            .order_by_asc(read_marker::Column::UpToNoteId)
            .order_by_asc(read_marker::Column::ReadAt)
            .all(db)
            .await?;
        for n in notes {
            let mut seen = BTreeSet::new();
            let readers: Vec<read_marker::Model> = markers
                .iter()
                .filter(|m| m.up_to_note_id >= n.id && m.user_id != n.author_id)
                .filter(|m| seen.insert(m.user_id))
                .cloned()
                .collect();
            out.insert(n.id, readers);
        }
    }
    Ok(out)
}
