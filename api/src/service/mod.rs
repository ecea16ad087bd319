//! Business rules, one module per domain. Functions take `&impl ConnectionTrait` so the same
//! code runs inside or outside a transaction, and they know nothing of GraphQL.

pub mod accounts;
pub mod applications;
pub mod attachments;
pub mod audit;
pub mod care;
pub mod certificates;
pub mod consents;
pub mod counters;
pub mod facilities;
pub mod forms;
pub mod invitations;
pub mod login;
pub mod memberships;
pub mod notes;
pub mod oidc;
pub mod page;
pub mod register;
pub mod rooms;
pub mod tenants;
pub mod users;
pub mod vitals;

use chrono::{DateTime, Utc};

/// The contract's (and the database's) name of a stored enum value, e.g. `FACILITY_ADMIN`.
pub fn enum_name<E: sea_orm::ActiveEnum<Value = String>>(value: &E) -> String {
    value.to_value()
}

/// The server clock, the only source of "now" for stored times.
pub fn now() -> DateTime<Utc> {
    // Microsecond precision: what both PostgreSQL and our SQLite encoding keep, so a value read
    // back equals the value written.
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}
