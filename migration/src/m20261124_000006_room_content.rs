//! Room content: note revisions, mentions and read markers (既読), attachments, vital signs,
//! earlier versions of the patient, and the care information sections with their versions.

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
        // Timeline paging is by id (UUIDv7) within a room; retries are found by author + key.
        index(
            manager,
            "ix_notes_room_id",
            "notes",
            &["room_id", "id"],
            false,
        )
        .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX ux_notes_client_mutation ON notes (author_id, client_mutation_id) \
                 WHERE client_mutation_id IS NOT NULL",
            )
            .await?;

        // Every earlier body of a note: written on each edit, and on deletion (the body shown
        // is emptied; the record keeps it for the audit).
        manager
            .create_table(
                Table::create()
                    .table("note_revisions")
                    .col(pk_uuid("id"))
                    .col(uuid("note_id"))
                    .col(text("body"))
                    .col(timestamp_with_time_zone("written_at"))
                    .col(timestamp_with_time_zone("replaced_at"))
                    .foreign_key(&mut fk(
                        "fk_note_revisions_note",
                        "note_revisions",
                        "note_id",
                        "notes",
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ix_note_revisions_note",
            "note_revisions",
            &["note_id", "replaced_at"],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table("note_mentions")
                    .col(uuid("note_id"))
                    .col(uuid("user_id"))
                    .col(uuid("room_id"))
                    .primary_key(Index::create().col("note_id").col("user_id"))
                    .foreign_key(&mut fk(
                        "fk_note_mentions_note",
                        "note_mentions",
                        "note_id",
                        "notes",
                    ))
                    .foreign_key(&mut fk(
                        "fk_note_mentions_user",
                        "note_mentions",
                        "user_id",
                        "users",
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ix_note_mentions_user",
            "note_mentions",
            &["user_id"],
            false,
        )
        .await?;

        // 既読: each forward move of a user's read marker in a room. The current marker is the
        // greatest `up_to_note_id`; who read a note when is the first row that covered it.
        manager
            .create_table(
                Table::create()
                    .table("read_markers")
                    .col(pk_uuid("id"))
                    .col(uuid("room_id"))
                    .col(uuid("user_id"))
                    .col(uuid("up_to_note_id"))
                    .col(timestamp_with_time_zone("read_at"))
                    .foreign_key(&mut fk(
                        "fk_read_markers_room",
                        "read_markers",
                        "room_id",
                        "rooms",
                    ))
                    .foreign_key(&mut fk(
                        "fk_read_markers_user",
                        "read_markers",
                        "user_id",
                        "users",
                    ))
                    .foreign_key(&mut fk(
                        "fk_read_markers_note",
                        "read_markers",
                        "up_to_note_id",
                        "notes",
                    ))
                    .to_owned(),
            )
            .await?;
        // One row per (user, note) at most: two concurrent marks to the same note keep one.
        index(
            manager,
            "ux_read_markers_user_note",
            "read_markers",
            &["room_id", "user_id", "up_to_note_id"],
            true,
        )
        .await?;
        index(
            manager,
            "ix_read_markers_room_note",
            "read_markers",
            &["room_id", "up_to_note_id"],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table("attachments")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("room_id"))
                    .col(uuid("uploaded_by"))
                    .col(string_len("file_name", 255))
                    .col(string_len("content_type", 64))
                    .col(big_integer("size_bytes"))
                    .col(string_len("sha256", 64))
                    .col(uuid_null("note_id"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(&mut fk(
                        "fk_attachments_room",
                        "attachments",
                        "room_id",
                        "rooms",
                    ))
                    .foreign_key(&mut fk(
                        "fk_attachments_uploaded_by",
                        "attachments",
                        "uploaded_by",
                        "users",
                    ))
                    .foreign_key(&mut fk(
                        "fk_attachments_note",
                        "attachments",
                        "note_id",
                        "notes",
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ix_attachments_note",
            "attachments",
            &["note_id"],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table("vital_records")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("room_id"))
                    .col(uuid("recorded_by"))
                    .col(timestamp_with_time_zone("measured_at"))
                    .col(integer_null("systolic_mm_hg"))
                    .col(integer_null("diastolic_mm_hg"))
                    .col(integer_null("pulse_per_min"))
                    .col(double_null("temperature_celsius"))
                    .col(integer_null("spo2_percent"))
                    .col(integer_null("respiratory_rate_per_min"))
                    .col(double_null("weight_kg"))
                    .col(integer_null("blood_glucose_mg_dl"))
                    .col(text_null("note"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(&mut fk(
                        "fk_vital_records_room",
                        "vital_records",
                        "room_id",
                        "rooms",
                    ))
                    .foreign_key(&mut fk(
                        "fk_vital_records_recorded_by",
                        "vital_records",
                        "recorded_by",
                        "users",
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ix_vital_records_room_measured",
            "vital_records",
            &["room_id", "measured_at", "id"],
            false,
        )
        .await?;

        // The patient as it was before each `updatePatient` (JSON of the patient columns).
        manager
            .create_table(
                Table::create()
                    .table("patient_versions")
                    .col(pk_uuid("id"))
                    .col(uuid("room_id"))
                    .col(json("patient"))
                    .col(timestamp_with_time_zone("replaced_at"))
                    .col(uuid("replaced_by"))
                    .foreign_key(&mut fk(
                        "fk_patient_versions_room",
                        "patient_versions",
                        "room_id",
                        "rooms",
                    ))
                    .foreign_key(&mut fk(
                        "fk_patient_versions_replaced_by",
                        "patient_versions",
                        "replaced_by",
                        "users",
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ix_patient_versions_room",
            "patient_versions",
            &["room_id", "replaced_at"],
            false,
        )
        .await?;

        // Every version of every care information section; the unique key makes two writers
        // of the same next version collide instead of overwriting each other.
        manager
            .create_table(
                Table::create()
                    .table("care_info_versions")
                    .col(pk_uuid("id"))
                    .col(uuid("room_id"))
                    .col(string_len("kind", 32))
                    .col(integer("version"))
                    .col(text("content"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(uuid("updated_by"))
                    .foreign_key(&mut fk(
                        "fk_care_info_versions_room",
                        "care_info_versions",
                        "room_id",
                        "rooms",
                    ))
                    .foreign_key(&mut fk(
                        "fk_care_info_versions_updated_by",
                        "care_info_versions",
                        "updated_by",
                        "users",
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ux_care_info_versions",
            "care_info_versions",
            &["room_id", "kind", "version"],
            true,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "care_info_versions",
            "patient_versions",
            "vital_records",
            "attachments",
            "read_markers",
            "note_mentions",
            "note_revisions",
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        for name in ["ux_notes_client_mutation", "ix_notes_room_id"] {
            manager
                .drop_index(Index::drop().name(name).table("notes").to_owned())
                .await?;
        }
        Ok(())
    }
}
