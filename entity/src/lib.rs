//! SeaORM entities: the tables, nothing else. GraphQL types and business rules live in `api`.

pub mod facility;
pub mod kinds;
pub mod tenant;
pub mod user;
