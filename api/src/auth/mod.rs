//! Authentication: TLS and client certificates, passwords, login sessions.

pub mod password;
pub mod pki;
pub mod tls;
