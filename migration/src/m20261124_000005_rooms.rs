//! Patient rooms: the room (with its patient), consents (form 8), invitations, memberships with
//! their history, and the collaboration note's table (the room content issue widens it).

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
        .on_delete(ForeignKeyAction::Restrict)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("rooms")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(string_len("status", 16))
                    // The patient (利用者): the room's subject, readable by members only.
                    .col(string_len("patient_name", 100))
                    .col(string_len("patient_name_kana", 100))
                    .col(date("patient_birth_date"))
                    .col(string_len("patient_sex", 16))
                    .col(text_null("patient_address"))
                    .col(string_len_null("patient_phone", 32))
                    .col(string_len_null("patient_care_level", 16))
                    .col(text_null("patient_key_person"))
                    .col(text_null("patient_primary_physician"))
                    .col(text_null("patient_care_manager"))
                    .col(text_null("patient_notes"))
                    // What the city and invitees see: family name, initial, birth year.
                    .col(string_len("patient_label", 120))
                    .col(uuid("opened_by"))
                    .col(timestamp_with_time_zone("opened_at"))
                    .col(timestamp_with_time_zone_null("closing_requested_at"))
                    .col(uuid_null("closed_by"))
                    .col(timestamp_with_time_zone_null("closed_at"))
                    .col(text_null("end_reason"))
                    .col(date_null("retain_until"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(&mut fk("fk_rooms_tenant", "rooms", "tenant_id", "tenants"))
                    .foreign_key(&mut fk("fk_rooms_opened_by", "rooms", "opened_by", "users"))
                    .foreign_key(&mut fk("fk_rooms_closed_by", "rooms", "closed_by", "users"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_rooms_tenant_status")
                    .table("rooms")
                    .col("tenant_id")
                    .col("status")
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("consents")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("room_id"))
                    .col(string_len("consenter", 16))
                    .col(string_len("consenter_name", 100))
                    .col(string_len_null("relationship", 100))
                    .col(date("consented_on"))
                    .col(uuid("recorded_by"))
                    .col(timestamp_with_time_zone("recorded_at"))
                    .col(uuid_null("withdrawn_by"))
                    .col(timestamp_with_time_zone_null("withdrawn_at"))
                    .foreign_key(&mut fk("fk_consents_room", "consents", "room_id", "rooms"))
                    .foreign_key(&mut fk(
                        "fk_consents_recorded_by",
                        "consents",
                        "recorded_by",
                        "users",
                    ))
                    .foreign_key(&mut fk(
                        "fk_consents_withdrawn_by",
                        "consents",
                        "withdrawn_by",
                        "users",
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_consents_room")
                    .table("consents")
                    .col("room_id")
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("invitations")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("room_id"))
                    .col(uuid("invitee_id"))
                    .col(uuid("invited_by"))
                    .col(uuid_null("application_id"))
                    .col(string_len("status", 16))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .col(timestamp_with_time_zone_null("answered_at"))
                    .col(uuid_null("answered_by"))
                    .foreign_key(&mut fk(
                        "fk_invitations_room",
                        "invitations",
                        "room_id",
                        "rooms",
                    ))
                    .foreign_key(&mut fk(
                        "fk_invitations_invitee",
                        "invitations",
                        "invitee_id",
                        "users",
                    ))
                    .foreign_key(&mut fk(
                        "fk_invitations_invited_by",
                        "invitations",
                        "invited_by",
                        "users",
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_invitations_invitee")
                    .table("invitations")
                    .col("invitee_id")
                    .col("status")
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_invitations_room")
                    .table("invitations")
                    .col("room_id")
                    .to_owned(),
            )
            .await?;

        // One row per membership period: a member who leaves and is invited again gets a new
        // row, so the history (who invited, who removed, why) stays.
        manager
            .create_table(
                Table::create()
                    .table("room_members")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("room_id"))
                    .col(uuid("user_id"))
                    .col(uuid_null("invited_by"))
                    .col(uuid_null("invitation_id"))
                    .col(timestamp_with_time_zone("joined_at"))
                    .col(timestamp_with_time_zone_null("left_at"))
                    .col(uuid_null("removed_by"))
                    .col(text_null("leave_reason"))
                    .foreign_key(&mut fk(
                        "fk_room_members_room",
                        "room_members",
                        "room_id",
                        "rooms",
                    ))
                    .foreign_key(&mut fk(
                        "fk_room_members_user",
                        "room_members",
                        "user_id",
                        "users",
                    ))
                    .to_owned(),
            )
            .await?;
        // The same partial unique index on both databases: at most one current membership per
        // user and room, at most one pending invitation per invitee and room.
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE UNIQUE INDEX ux_room_members_current ON room_members (room_id, user_id) \
             WHERE left_at IS NULL",
        )
        .await?;
        db.execute_unprepared(
            "CREATE UNIQUE INDEX ux_invitations_pending ON invitations (room_id, invitee_id) \
             WHERE status = 'PENDING'",
        )
        .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_room_members_user")
                    .table("room_members")
                    .col("user_id")
                    .col("left_at")
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("notes")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("room_id"))
                    .col(uuid("author_id"))
                    .col(string_len("category", 32))
                    .col(text("body"))
                    .col(uuid_null("reply_to_id"))
                    .col(string_len_null("client_mutation_id", 100))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("edited_at"))
                    .col(timestamp_with_time_zone_null("deleted_at"))
                    .col(text_null("deletion_reason"))
                    .foreign_key(&mut fk("fk_notes_room", "notes", "room_id", "rooms"))
                    .foreign_key(&mut fk("fk_notes_author", "notes", "author_id", "users"))
                    .foreign_key(&mut fk(
                        "fk_notes_reply_to",
                        "notes",
                        "reply_to_id",
                        "notes",
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_notes_room_created")
                    .table("notes")
                    .col("room_id")
                    .col("created_at")
                    .to_owned(),
            )
            .await?;

        // Which room an application is about (ROOM_MEMBERSHIP, ROOM_CLOSURE; ROOM_CREATION once
        // approved).
        manager
            .alter_table(
                Table::alter()
                    .table("applications")
                    .add_column(uuid_null("room_id"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_applications_room")
                    .table("applications")
                    .col("room_id")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("ix_applications_room")
                    .table("applications")
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("applications")
                    .drop_column("room_id")
                    .to_owned(),
            )
            .await?;
        for table in ["notes", "room_members", "invitations", "consents", "rooms"] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
