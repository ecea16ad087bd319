//! Database migrations, applied in order by `renkei serve` and `renkei migrate`.
//! Never edit one that has been applied anywhere: add a new one.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_tenants_facilities_users;
mod m20261124_000002_pki_and_passwords;
mod m20261124_000003_audit;
mod m20261124_000004_applications;
mod m20261124_000005_rooms;
mod m20261124_000006_room_content;
mod m20261124_000007_federated_login;
mod m20261124_000008_audit_read_chain;
mod m20261201_000009_notifications;
mod m20261201_000010_push_channels;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_tenants_facilities_users::Migration),
            Box::new(m20261124_000002_pki_and_passwords::Migration),
            Box::new(m20261124_000003_audit::Migration),
            Box::new(m20261124_000004_applications::Migration),
            Box::new(m20261124_000005_rooms::Migration),
            Box::new(m20261124_000006_room_content::Migration),
            Box::new(m20261124_000007_federated_login::Migration),
            Box::new(m20261124_000008_audit_read_chain::Migration),
            Box::new(m20261201_000009_notifications::Migration),
            Box::new(m20261201_000010_push_channels::Migration),
        ]
    }
}
