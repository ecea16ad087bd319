//! End-to-end suite: each test spawns a real server over TLS (see `renkei_tests::spawn_app`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod account_permissions;
mod applications;
mod audit;
mod auth;
mod graphql_http;
mod hardening;
mod health;
mod login;
mod multi_instance;
mod oidc;
mod room_content;
mod room_instances;
mod room_live;
mod room_permissions;
mod room_timeline;
mod rooms;
mod schema_file;
mod shutdown;
mod websocket;
