//! Channels that reach staff outside the app: Web Push subscriptions of browsers, pushkeys of
//! native apps, each tenant's push gateway and its VAPID key pair.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn tenant_fk(table: &'static str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{table}_tenant"))
        .from(table, "tenant_id")
        .to("tenants", "id")
        .on_delete(ForeignKeyAction::Restrict)
        .to_owned()
}

fn user_fk(table: &'static str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{table}_user"))
        .from(table, "user_id")
        .to("users", "id")
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("push_subscriptions")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("user_id"))
                    .col(string_len("endpoint", 2048))
                    .col(string_len("p256dh", 128))
                    .col(string_len("auth", 64))
                    .col(string_len_null("device_label", 100))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("last_success_at"))
                    .foreign_key(&mut tenant_fk("push_subscriptions"))
                    .foreign_key(&mut user_fk("push_subscriptions"))
                    .to_owned(),
            )
            .await?;
        // A browser's endpoint belongs to one subscription; registering it again replaces it.
        manager
            .create_index(
                Index::create()
                    .name("ux_push_subscriptions_endpoint")
                    .table("push_subscriptions")
                    .col("endpoint")
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_push_subscriptions_user")
                    .table("push_subscriptions")
                    .col("user_id")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("push_pushkeys")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("user_id"))
                    .col(string_len("app_id", 128))
                    .col(string_len("pushkey", 512))
                    .col(string_len_null("device_label", 100))
                    .col(timestamp_with_time_zone("pushkey_ts"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(&mut tenant_fk("push_pushkeys"))
                    .foreign_key(&mut user_fk("push_pushkeys"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_push_pushkeys_key")
                    .table("push_pushkeys")
                    .col("app_id")
                    .col("pushkey")
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_push_pushkeys_user")
                    .table("push_pushkeys")
                    .col("user_id")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("tenant_push_gateways")
                    .col(uuid("tenant_id").primary_key())
                    .col(string_len("url", 2048))
                    .col(text("secret_sealed"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(&mut tenant_fk("tenant_push_gateways"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("tenant_push_vapid_keys")
                    .col(uuid("tenant_id").primary_key())
                    .col(string_len("public_key", 128))
                    .col(text("private_key_sealed"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(&mut tenant_fk("tenant_push_vapid_keys"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "tenant_push_vapid_keys",
            "tenant_push_gateways",
            "push_pushkeys",
            "push_subscriptions",
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
