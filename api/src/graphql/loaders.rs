//! Per-request DataLoaders: the people, facilities and note details a page of the timeline
//! names are read in one statement per kind, however many notes the page has. They batch
//! only (no cache), so a long-lived WebSocket connection never serves stale rows.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use sea_orm::{ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _};
use uuid::Uuid;

use entity::{attachment, facility, note, note_revision, read_marker, user};

use crate::service::notes::{self, NoteKey};

fn gql(e: impl Into<crate::error::AppError>) -> async_graphql::Error {
    e.into().into_graphql()
}

/// Cheap to clone: WebSocket connections of an instance share one set (see
/// [`crate::graphql::live`]), so a live event's authors are read once for all its streams.
#[derive(Clone)]
pub struct Loaders {
    pub users: Arc<DataLoader<UserLoader>>,
    pub facilities: Arc<DataLoader<FacilityLoader>>,
    pub notes: Arc<DataLoader<NoteLoader>>,
    pub mentions: Arc<DataLoader<MentionLoader>>,
    pub attachments: Arc<DataLoader<AttachmentLoader>>,
    pub revisions: Arc<DataLoader<RevisionLoader>>,
    pub read_by: Arc<DataLoader<ReadByLoader>>,
}

impl Loaders {
    pub fn new(db: &DatabaseConnection) -> Self {
        fn loader<T: Loader<K>, K>(inner: T) -> Arc<DataLoader<T>>
        where
            K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
        {
            // A little longer than the 1 ms default, so loads of a page's fields that arrive
            // while the executor is busy still share one batch.
            Arc::new(
                DataLoader::new(inner, tokio::spawn).delay(std::time::Duration::from_millis(2)),
            )
        }
        Loaders {
            users: loader::<_, Uuid>(UserLoader(db.clone())),
            facilities: loader::<_, Uuid>(FacilityLoader(db.clone())),
            notes: loader::<_, Uuid>(NoteLoader(db.clone())),
            mentions: loader::<_, Uuid>(MentionLoader(db.clone())),
            attachments: loader::<_, Uuid>(AttachmentLoader(db.clone())),
            revisions: loader::<_, Uuid>(RevisionLoader(db.clone())),
            read_by: loader::<_, NoteKey>(ReadByLoader(db.clone())),
        }
    }
}

pub struct UserLoader(DatabaseConnection);

impl Loader<Uuid> for UserLoader {
    type Value = user::Model;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, user::Model>, Self::Error> {
        let rows = user::Entity::find()
            .filter(user::Column::Id.is_in(keys.iter().copied()))
            .all(&self.0)
            .await
            .map_err(gql)?;
        Ok(rows.into_iter().map(|u| (u.id, u)).collect())
    }
}

pub struct FacilityLoader(DatabaseConnection);

impl Loader<Uuid> for FacilityLoader {
    type Value = facility::Model;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, facility::Model>, Self::Error> {
        let rows = facility::Entity::find()
            .filter(facility::Column::Id.is_in(keys.iter().copied()))
            .all(&self.0)
            .await
            .map_err(gql)?;
        Ok(rows.into_iter().map(|f| (f.id, f)).collect())
    }
}

/// Notes by id (`Note.replyTo`).
pub struct NoteLoader(DatabaseConnection);

impl Loader<Uuid> for NoteLoader {
    type Value = note::Model;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, note::Model>, Self::Error> {
        let rows = notes::by_ids(&self.0, keys).await.map_err(gql)?;
        Ok(rows.into_iter().map(|n| (n.id, n)).collect())
    }
}

/// The people mentioned in a note.
pub struct MentionLoader(DatabaseConnection);

impl Loader<Uuid> for MentionLoader {
    type Value = Vec<Uuid>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Vec<Uuid>>, Self::Error> {
        notes::mentions_of(&self.0, keys).await.map_err(gql)
    }
}

pub struct AttachmentLoader(DatabaseConnection);

impl Loader<Uuid> for AttachmentLoader {
    type Value = Vec<attachment::Model>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[Uuid],
    ) -> Result<HashMap<Uuid, Vec<attachment::Model>>, Self::Error> {
        notes::attachments_of(&self.0, keys).await.map_err(gql)
    }
}

pub struct RevisionLoader(DatabaseConnection);

impl Loader<Uuid> for RevisionLoader {
    type Value = Vec<note_revision::Model>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[Uuid],
    ) -> Result<HashMap<Uuid, Vec<note_revision::Model>>, Self::Error> {
        notes::revisions_of(&self.0, keys).await.map_err(gql)
    }
}

/// 既読 of a page of notes: one statement per room on the page.
pub struct ReadByLoader(DatabaseConnection);

impl Loader<NoteKey> for ReadByLoader {
    type Value = Vec<read_marker::Model>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[NoteKey],
    ) -> Result<HashMap<NoteKey, Vec<read_marker::Model>>, Self::Error> {
        let mut found = notes::read_by(&self.0, keys).await.map_err(gql)?;
        Ok(keys
            .iter()
            .map(|k| (*k, found.remove(&k.id).unwrap_or_default()))
            .collect())
    }
}
