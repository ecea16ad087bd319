//! The room's collaboration note (多職種連携ノート). This part holds what the rooms need (the
//! END_OF_SERVICE post and reading the note); posting and editing come with room content.

use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, Select, Set,
};
use uuid::Uuid;

use entity::kinds::{AuditOutcome, NoteCategory};
use entity::{note, room};

use crate::authz::rooms::RoomAccess;
use crate::error::AppResult;
use crate::service::audit::{self, Event, Origin};
use crate::service::page::{self, Page};
use crate::service::{enum_name, now};

/// Inserts a note in the caller's (writing) transaction and records `note.create`.
pub async fn insert_in(
    db: &impl ConnectionTrait,
    room: &room::Model,
    author: Uuid,
    category: NoteCategory,
    body: &str,
    origin: &Origin,
) -> AppResult<note::Model> {
    let created = note::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(room.tenant_id),
        room_id: Set(room.id),
        author_id: Set(author),
        category: Set(category),
        body: Set(body.to_string()),
        reply_to_id: Set(None),
        client_mutation_id: Set(None),
        created_at: Set(now()),
        edited_at: Set(None),
        deleted_at: Set(None),
        deletion_reason: Set(None),
    }
    .insert(db)
    .await?;
    let event = Event::new(room.tenant_id, "note.create", AuditOutcome::Allowed)
        .by(origin)
        .room(room.id)
        .target("note", created.id)
        .detail("category", enum_name(&category));
    audit::record(db, event).await?;
    Ok(created)
}

fn in_room(room_id: Uuid, category: Option<NoteCategory>) -> Select<note::Entity> {
    let mut select = note::Entity::find().filter(note::Column::RoomId.eq(room_id));
    if let Some(category) = category {
        select = select.filter(note::Column::Category.eq(category));
    }
    select
}

/// The room's notes, newest first (members only: takes a [`RoomAccess`]).
pub async fn list(
    db: &impl ConnectionTrait,
    access: &RoomAccess,
    category: Option<NoteCategory>,
    first: u64,
    after: Option<Uuid>,
) -> AppResult<Page<note::Model>> {
    let total = in_room(access.room.id, category).count(db).await?;
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
