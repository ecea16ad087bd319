//! The city's register (the guide's duty ①): who is registered, in which facility, with which
//! occupation and status, and the counts the city reports. Lists are scoped in SQL by the
//! caller's `RegisterScope`, never filtered after fetching.

use chrono::Utc;
use sea_orm::sea_query::{Condition, Expr, ExprTrait as _};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, PaginatorTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, Select,
};
use uuid::Uuid;

use entity::kinds::{AccountStatus, FacilityKind, Occupation, Role};
use entity::{facility, user};

use crate::authz::RegisterScope;
use crate::error::AppResult;
use crate::service::enum_name;
use crate::service::page::{self, Page};

/// Filters of the `users` query.
#[derive(Debug, Default, Clone, Copy)]
pub struct UserFilter {
    pub facility_id: Option<Uuid>,
    /// The effective status: a lock that has run out counts as ACTIVE.
    pub status: Option<AccountStatus>,
    pub occupation: Option<Occupation>,
    pub role: Option<Role>,
}

/// SQL for "effective status is `status`" (see `graphql::types::effective_status`).
fn effective_status(status: AccountStatus) -> Condition {
    let at = Utc::now();
    let lock_over = Condition::all()
        .add(user::Column::Status.eq(AccountStatus::Locked))
        .add(user::Column::LockedUntil.lte(at));
    match status {
        AccountStatus::Active => Condition::any()
            .add(user::Column::Status.eq(AccountStatus::Active))
            .add(lock_over),
        AccountStatus::Locked => Condition::all()
            .add(user::Column::Status.eq(AccountStatus::Locked))
            .add(
                Condition::any()
                    .add(user::Column::LockedUntil.is_null())
                    .add(user::Column::LockedUntil.gt(at)),
            ),
        AccountStatus::Suspended => {
            Condition::all().add(user::Column::Status.eq(AccountStatus::Suspended))
        }
    }
}

fn users_in(scope: RegisterScope, filter: &UserFilter) -> Select<user::Entity> {
    let mut select = user::Entity::find().filter(user::Column::TenantId.eq(scope.tenant_id()));
    if let RegisterScope::Facility { facility_id, .. } = scope {
        select = select.filter(user::Column::FacilityId.eq(facility_id));
    }
    if let Some(facility_id) = filter.facility_id {
        select = select.filter(user::Column::FacilityId.eq(facility_id));
    }
    if let Some(status) = filter.status {
        select = select.filter(effective_status(status));
    }
    if let Some(occupation) = filter.occupation {
        select = select.filter(user::Column::Occupation.eq(occupation));
    }
    if let Some(role) = filter.role {
        select = select.filter(user::Column::Role.eq(role));
    }
    select
}

/// Users of the register in registration order. The caller has already narrowed
/// `filter.facility_id` through `RegisterScope::facility`.
pub async fn users(
    db: &impl ConnectionTrait,
    scope: RegisterScope,
    filter: &UserFilter,
    first: u64,
    after: Option<Uuid>,
) -> AppResult<Page<user::Model>> {
    let total = users_in(scope, filter).count(db).await?;
    let mut select = users_in(scope, filter);
    if let Some(after) = after {
        select = select.filter(user::Column::Id.gt(after));
    }
    let items = select
        .order_by_asc(user::Column::Id)
        .limit(first + 1)
        .all(db)
        .await?;
    Ok(page::finish(items, first, total))
}

/// Filters of the `facilities` query.
#[derive(Debug, Default, Clone, Copy)]
pub struct FacilityFilter {
    pub kind: Option<FacilityKind>,
    pub status: Option<AccountStatus>,
}

fn facilities_in(scope: RegisterScope, filter: &FacilityFilter) -> Select<facility::Entity> {
    let mut select =
        facility::Entity::find().filter(facility::Column::TenantId.eq(scope.tenant_id()));
    if let RegisterScope::Facility { facility_id, .. } = scope {
        select = select.filter(facility::Column::Id.eq(facility_id));
    }
    if let Some(kind) = filter.kind {
        select = select.filter(facility::Column::Kind.eq(kind));
    }
    if let Some(status) = filter.status {
        select = select.filter(facility::Column::Status.eq(status));
    }
    select
}

/// Facilities of the register in registration order.
pub async fn facilities(
    db: &impl ConnectionTrait,
    scope: RegisterScope,
    filter: &FacilityFilter,
    first: u64,
    after: Option<Uuid>,
) -> AppResult<Page<facility::Model>> {
    let total = facilities_in(scope, filter).count(db).await?;
    let mut select = facilities_in(scope, filter);
    if let Some(after) = after {
        select = select.filter(facility::Column::Id.gt(after));
    }
    let items = select
        .order_by_asc(facility::Column::Id)
        .limit(first + 1)
        .all(db)
        .await?;
    Ok(page::finish(items, first, total))
}

/// The counts of `tenantStatistics`, keys as the contract names them.
#[derive(Debug, Default)]
pub struct Statistics {
    pub users_by_facility: Vec<(String, u64)>,
    pub users_by_occupation: Vec<(String, u64)>,
    pub users_by_status: Vec<(String, u64)>,
    pub facilities_by_kind: Vec<(String, u64)>,
}

fn counts<K: ToString>(rows: Vec<(K, i64)>) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = rows
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_string(), u64::try_from(n).unwrap_or(0)))
        .collect();
    out.sort();
    out
}

/// One GROUP BY per breakdown, all in the database.
pub async fn statistics(db: &impl ConnectionTrait, tenant_id: Uuid) -> AppResult<Statistics> {
    let users = || user::Entity::find().filter(user::Column::TenantId.eq(tenant_id));
    let count = || Expr::col(user::Column::Id).count();
    let by_facility: Vec<(Uuid, i64)> = users()
        .select_only()
        .column(user::Column::FacilityId)
        .column_as(count(), "n")
        .filter(user::Column::FacilityId.is_not_null())
        .group_by(user::Column::FacilityId)
        .into_tuple()
        .all(db)
        .await?;
    let by_occupation: Vec<(Occupation, i64)> = users()
        .select_only()
        .column(user::Column::Occupation)
        .column_as(count(), "n")
        .group_by(user::Column::Occupation)
        .into_tuple()
        .all(db)
        .await?;
    let mut by_status = Vec::new();
    for status in [
        AccountStatus::Active,
        AccountStatus::Locked,
        AccountStatus::Suspended,
    ] {
        let n = users().filter(effective_status(status)).count(db).await?;
        by_status.push((enum_name(&status), i64::try_from(n).unwrap_or(i64::MAX)));
    }
    let by_kind: Vec<(FacilityKind, i64)> = facility::Entity::find()
        .filter(facility::Column::TenantId.eq(tenant_id))
        .select_only()
        .column(facility::Column::Kind)
        .column_as(Expr::col(facility::Column::Id).count(), "n")
        .group_by(facility::Column::Kind)
        .into_tuple()
        .all(db)
        .await?;
    Ok(Statistics {
        users_by_facility: counts(by_facility),
        users_by_occupation: counts(
            by_occupation
                .into_iter()
                .map(|(o, n)| (enum_name(&o), n))
                .collect(),
        ),
        users_by_status: counts(by_status),
        facilities_by_kind: counts(
            by_kind
                .into_iter()
                .map(|(k, n)| (enum_name(&k), n))
                .collect(),
        ),
    })
}
