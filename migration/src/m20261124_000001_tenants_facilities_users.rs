//! Tenants (municipalities), facilities (事業所) and users: the register the city keeps.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("tenants")
                    .col(pk_uuid("id"))
                    .col(string_len_uniq("slug", 63))
                    .col(string("name"))
                    .col(string_len("time_zone", 64).default("Asia/Tokyo"))
                    .col(string_len("pkcs12_encoding", 16).default("MODERN"))
                    .col(boolean("facility_admin_delegation").default(true))
                    .col(integer("certificate_validity_days").default(730))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("facilities")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(string_len("kind", 32))
                    .col(string("name"))
                    .col(string_null("address"))
                    .col(string_len_null("phone", 32))
                    .col(string_null("representative_name"))
                    .col(boolean("inside_municipality").default(true))
                    .col(string_len("status", 16).default("ACTIVE"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_facilities_tenant")
                            .from("facilities", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_facilities_tenant")
                    .table("facilities")
                    .col("tenant_id")
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("users")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid_null("facility_id"))
                    .col(string_len("login_id", 64))
                    .col(string("display_name"))
                    .col(string_null("display_name_kana"))
                    .col(string_null("email"))
                    .col(string_len("occupation", 32))
                    .col(string_len("role", 32))
                    .col(string_len("status", 16).default("ACTIVE"))
                    .col(text_null("password_hash"))
                    .col(boolean("must_change_password").default(true))
                    .col(timestamp_with_time_zone_null("password_changed_at"))
                    .col(timestamp_with_time_zone_null("pledge_accepted_at"))
                    .col(string_len_null("pledge_version", 16))
                    .col(integer("failed_login_count").default(0))
                    .col(timestamp_with_time_zone_null("locked_until"))
                    .col(string_null("suspension_reason"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_users_tenant")
                            .from("users", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_users_facility")
                            .from("users", "facility_id")
                            .to("facilities", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_users_tenant_login")
                    .table("users")
                    .col("tenant_id")
                    .col("login_id")
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_users_facility")
                    .table("users")
                    .col("facility_id")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["users", "facilities", "tenants"] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
