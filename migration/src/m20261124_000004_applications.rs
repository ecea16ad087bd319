//! Applications (the city's numbered paper forms, made digital), per-tenant counters for
//! reference numbers and login IDs, and a readable code per facility.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // `F0012`: the facility's number in the city's register; its staff log in as `f0012-001`.
        manager
            .alter_table(
                Table::alter()
                    .table("facilities")
                    .add_column(string_len_null("code", 16))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_facilities_tenant_code")
                    .table("facilities")
                    .col("tenant_id")
                    .col("code")
                    .unique()
                    .to_owned(),
            )
            .await?;

        // Gap-tolerant sequences per tenant: `application:2026`, `facility`, `staff:<facility>`.
        manager
            .create_table(
                Table::create()
                    .table("counters")
                    .col(uuid("tenant_id"))
                    .col(string_len("name", 80))
                    .col(big_integer("value").default(0))
                    .primary_key(Index::create().col("tenant_id").col("name"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_counters_tenant")
                            .from("counters", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("applications")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(string_len("reference_number", 16))
                    .col(string_len("kind", 32))
                    .col(string_len("status", 16))
                    .col(uuid_null("facility_id"))
                    .col(uuid_null("submitted_by"))
                    .col(string_len_null("contact_email", 254))
                    .col(text("payload"))
                    .col(timestamp_with_time_zone("submitted_at"))
                    .col(uuid_null("reviewed_by"))
                    .col(timestamp_with_time_zone_null("reviewed_at"))
                    .col(text_null("review_note"))
                    .col(text_null("outcome"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_applications_tenant")
                            .from("applications", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_applications_facility")
                            .from("applications", "facility_id")
                            .to("facilities", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_applications_submitted_by")
                            .from("applications", "submitted_by")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_applications_reviewed_by")
                            .from("applications", "reviewed_by")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_applications_tenant_reference")
                    .table("applications")
                    .col("tenant_id")
                    .col("reference_number")
                    .unique()
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("ix_applications_facility", "facility_id"),
            ("ix_applications_submitted_by", "submitted_by"),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table("applications")
                        .col(col)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("ix_applications_tenant_status")
                    .table("applications")
                    .col("tenant_id")
                    .col("status")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["applications", "counters"] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("ux_facilities_tenant_code")
                    .table("facilities")
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("facilities")
                    .drop_column("code")
                    .to_owned(),
            )
            .await
    }
}
