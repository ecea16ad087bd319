//! End-to-end suite: each test spawns a real server over TLS (see `renkei_tests::spawn_app`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod account_permissions;
mod applications;
mod audit;
mod auth;
mod channels;
mod graphql_http;
mod health;
mod login;
mod multi_instance;
mod notifications;
mod notifications_instances;
mod notifications_peers;
mod notifications_permissions;
mod notifications_worker;
mod oidc;
mod ops;
mod room_content;
mod room_instances;
mod room_live;
mod room_permissions;
mod room_timeline;
mod rooms;
mod schema_file;
mod shutdown;
mod websocket;
