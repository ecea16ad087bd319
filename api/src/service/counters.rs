//! Per-tenant sequences for reference numbers and login IDs. A number, once taken, is never
//! handed out again, even when the transaction that took it later fails (gaps are allowed).

use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _, Set};
use uuid::Uuid;

use entity::counter;

use crate::error::{AppError, AppResult};

/// Takes `n` consecutive numbers from the tenant's sequence `name` and returns the first.
/// The increment and the read are one `UPDATE … RETURNING`, so concurrent callers on any
/// number of instances never get the same number.
pub async fn take(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    name: &str,
    n: u32,
) -> AppResult<i64> {
    let n = i64::from(Ord::max(n, 1));
    counter::Entity::insert(counter::ActiveModel {
        tenant_id: Set(tenant_id),
        name: Set(name.to_string()),
        value: Set(0),
    })
    .on_conflict_do_nothing_on([counter::Column::TenantId, counter::Column::Name])
    .exec_without_returning(db)
    .await?;
    let rows = counter::Entity::update_many()
        .col_expr(
            counter::Column::Value,
            Expr::col(counter::Column::Value).add(n),
        )
        .filter(counter::Column::TenantId.eq(tenant_id))
        .filter(counter::Column::Name.eq(name))
        .exec_with_returning(db)
        .await?;
    let last = rows
        .first()
        .map(|row| row.value)
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("counter {name} vanished")))?;
    Ok(last - n + 1)
}
