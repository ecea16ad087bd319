//! Notifications (issue 20): `notes.urgent`, the per-recipient notification rows (the in-app
//! inbox and the outbox), one delivery row per external channel with its claim and retries,
//! and the preferences of users (per channel, per room, quiet hours) and tenants.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn fk(
    name: &str,
    from_table: &'static str,
    from_col: &'static str,
    to_table: &'static str,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from_table, from_col)
        .to(to_table, "id")
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

async fn index(
    manager: &SchemaManager<'_>,
    name: &str,
    table: &'static str,
    cols: &[&'static str],
    unique: bool,
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.name(name).table(table);
    for col in cols {
        index.col(*col);
    }
    if unique {
        index.unique();
    }
    manager.create_index(index.to_owned()).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("notes")
                    .add_column(boolean("urgent").default(false))
                    .to_owned(),
            )
            .await?;

        // One row per recipient and event, written in the event's transaction. `dedup_key`
        // names the event (`note:<id>`, `certificate-expiry-7:<id>` …): a second write of the
        // same event for the same person is refused by the unique index, which is what makes
        // the certificate sweep safe on several instances.
        manager
            .create_table(
                Table::create()
                    .table("notifications")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("user_id"))
                    .col(string_len("kind", 32))
                    .col(string_len("dedup_key", 100))
                    .col(uuid_null("room_id"))
                    .col(uuid_null("event_id"))
                    .col(string_len_null("note_category", 32))
                    .col(boolean("urgent").default(false))
                    .col(boolean("in_app").default(true))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("read_at"))
                    .foreign_key(&mut fk(
                        "fk_notifications_user",
                        "notifications",
                        "user_id",
                        "users",
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ux_notifications_user_key",
            "notifications",
            &["user_id", "dedup_key"],
            true,
        )
        .await?;
        index(
            manager,
            "ix_notifications_user_id",
            "notifications",
            &["user_id", "id"],
            false,
        )
        .await?;

        // One row per (notification, external channel) that is due. The worker claims rows
        // (state SENDING with a lease in `claimed_until`), and every state change is a
        // conditional update, so a notification goes out once per channel.
        manager
            .create_table(
                Table::create()
                    .table("notification_deliveries")
                    .col(pk_uuid("id"))
                    .col(uuid("notification_id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("user_id"))
                    .col(string_len("channel", 16))
                    .col(string_len("state", 16))
                    .col(boolean("digest").default(false))
                    .col(timestamp_with_time_zone("due_at"))
                    .col(integer("attempts").default(0))
                    .col(uuid_null("claimed_by"))
                    .col(timestamp_with_time_zone_null("claimed_until"))
                    .col(string_len_null("last_error", 200))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("finished_at"))
                    .foreign_key(&mut fk(
                        "fk_notification_deliveries_notification",
                        "notification_deliveries",
                        "notification_id",
                        "notifications",
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ux_notification_deliveries_channel",
            "notification_deliveries",
            &["notification_id", "channel"],
            true,
        )
        .await?;
        index(
            manager,
            "ix_notification_deliveries_due",
            "notification_deliveries",
            &["state", "due_at"],
            false,
        )
        .await?;

        // A user's choices; no row means the defaults (every channel on, quiet 22:00–07:00).
        manager
            .create_table(
                Table::create()
                    .table("notification_preferences")
                    .col(uuid("user_id").primary_key())
                    .col(uuid("tenant_id"))
                    .col(boolean("in_app").default(true))
                    .col(boolean("web_push").default(true))
                    .col(boolean("gateway").default(true))
                    .col(boolean("email").default(true))
                    .col(boolean("quiet_hours").default(true))
                    .col(integer("quiet_start_minute").default(22 * 60))
                    .col(integer("quiet_end_minute").default(7 * 60))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(&mut fk(
                        "fk_notification_preferences_user",
                        "notification_preferences",
                        "user_id",
                        "users",
                    ))
                    .to_owned(),
            )
            .await?;

        // Per room: ALL (no row), MENTIONS_AND_URGENT or MUTED.
        manager
            .create_table(
                Table::create()
                    .table("notification_room_levels")
                    .col(uuid("user_id"))
                    .col(uuid("room_id"))
                    .col(string_len("level", 32))
                    .col(timestamp_with_time_zone("updated_at"))
                    .primary_key(Index::create().col("user_id").col("room_id"))
                    .foreign_key(&mut fk(
                        "fk_notification_room_levels_user",
                        "notification_room_levels",
                        "user_id",
                        "users",
                    ))
                    .to_owned(),
            )
            .await?;

        // The tenant's switches per channel; no row means every channel on.
        manager
            .create_table(
                Table::create()
                    .table("notification_tenant_settings")
                    .col(uuid("tenant_id").primary_key())
                    .col(boolean("in_app").default(true))
                    .col(boolean("web_push").default(true))
                    .col(boolean("gateway").default(true))
                    .col(boolean("email").default(true))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(&mut fk(
                        "fk_notification_tenant_settings_tenant",
                        "notification_tenant_settings",
                        "tenant_id",
                        "tenants",
                    ))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "notification_tenant_settings",
            "notification_room_levels",
            "notification_preferences",
            "notification_deliveries",
            "notifications",
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table("notes")
                    .drop_column("urgent")
                    .to_owned(),
            )
            .await
    }
}
