//! The GraphQL schema: root types merged from one module per domain.

pub mod applications;
pub mod content;
pub mod context;
mod denials;
pub mod input;
pub mod limits;
pub mod live;
pub mod loaders;
pub mod mutation;
pub mod query;
pub mod rooms;
pub mod subscription;
pub mod types;

use async_graphql::Schema;

use crate::config::Config;
use crate::state::AppState;

pub type RenkeiSchema = Schema<query::Query, mutation::Mutation, subscription::Subscription>;

/// Builds the schema with the configured limits; `state` is absent only when printing SDL.
pub fn build_schema(config: &Config, state: Option<AppState>) -> RenkeiSchema {
    let mut builder = Schema::build(
        query::Query::default(),
        mutation::Mutation::default(),
        subscription::Subscription,
    )
    .limit_depth(config.graphql_max_depth)
    .limit_recursive_depth(32)
    // Before the others: its codes are on every error they see.
    .extension(limits::RequestLimits {
        max_cost: config.graphql_max_complexity,
    });
    if config.is_production() {
        builder = builder.disable_introspection().disable_suggestions();
    }
    if let Some(state) = state {
        builder = builder.data(state).extension(denials::AuditDenials);
    }
    builder.finish()
}

/// The SDL that `renkei schema` prints and `schema.graphql` holds.
pub fn sdl() -> String {
    Schema::build(
        query::Query::default(),
        mutation::Mutation::default(),
        subscription::Subscription,
    )
    .finish()
    .sdl()
}
