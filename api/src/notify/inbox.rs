//! The in-app inbox: a user's own notifications, newest first, and their read state. Every
//! query is scoped to the caller's user id in SQL, so nobody lists another's notifications.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, PaginatorTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, Select,
};
use uuid::Uuid;

use entity::notification;

use crate::error::{AppError, AppResult};
use crate::service::now;
use crate::service::page::{self, Page};

/// Most ids one `markNotificationsRead` takes.
pub const MAX_MARK: usize = 500;

fn mine(user_id: Uuid, unread_only: bool) -> Select<notification::Entity> {
    let mut select = notification::Entity::find()
        .filter(notification::Column::UserId.eq(user_id))
        .filter(notification::Column::InApp.eq(true));
    if unread_only {
        select = select.filter(notification::Column::ReadAt.is_null());
    }
    select
}

/// One page of the caller's inbox, newest first.
pub async fn list(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    first: u64,
    after: Option<Uuid>,
    unread_only: bool,
) -> AppResult<Page<notification::Model>> {
    let total = mine(user_id, unread_only).count(db).await?;
    let mut select = mine(user_id, unread_only);
    if let Some(after) = after {
        select = select.filter(notification::Column::Id.lt(after));
    }
    let items = select
        .order_by_desc(notification::Column::Id)
        .limit(first + 1)
        .all(db)
        .await?;
    Ok(page::finish(items, first, total))
}

pub async fn unread_count(db: &impl ConnectionTrait, user_id: Uuid) -> AppResult<u64> {
    Ok(mine(user_id, true).count(db).await?)
}

/// What to mark read.
#[derive(Debug, Clone)]
pub enum Mark {
    Ids(Vec<Uuid>),
    All,
}

/// Marks the caller's notifications read (ids of others' are ignored: they are not in the
/// caller's scope); how many changed.
pub async fn mark_read(db: &impl ConnectionTrait, user_id: Uuid, mark: Mark) -> AppResult<u64> {
    let mut update = notification::Entity::update_many()
        .col_expr(notification::Column::ReadAt, Expr::value(now()))
        .filter(notification::Column::UserId.eq(user_id))
        .filter(notification::Column::ReadAt.is_null());
    match mark {
        Mark::All => {}
        Mark::Ids(ids) => {
            if ids.is_empty() {
                return Ok(0);
            }
            if ids.len() > MAX_MARK {
                return Err(AppError::bad_input(
                    "ids",
                    format!("at most {MAX_MARK} at once"),
                ));
            }
            update = update.filter(notification::Column::Id.is_in(ids));
        }
    }
    Ok(update.exec(db).await?.rows_affected)
}
