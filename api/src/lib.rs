//! Renkei: the GraphQL backend of a municipal information-sharing system for home medical and
//! care collaboration (在宅医療・介護連携).

/// mimalloc instead of the system allocator: the live fan-out allocates and frees many small,
/// short-lived buffers per delivery, where glibc's malloc spent a tenth of the CPU (README,
/// Benchmarks). Declared here so the server, the tests and the benchmarks all run on it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod app;
pub mod auth;
pub mod authz;
pub mod channels;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod fsutil;
pub mod graphql;
pub mod http;
pub mod http_content;
pub mod http_oidc;
pub mod notify;
pub mod ops;
pub mod ops_audit;
pub mod ops_push;
pub mod redis_store;
pub mod service;
pub mod state;
pub mod storage;
pub mod telemetry;
