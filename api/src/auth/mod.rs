//! Authentication: TLS and client certificates, passwords, login sessions.

pub mod password;
pub mod pki;
pub mod ratelimit;
pub mod session;
pub mod tls;
pub mod trust;
