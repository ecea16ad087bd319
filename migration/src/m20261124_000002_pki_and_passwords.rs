//! Each tenant's certificate authority, the client certificates it issued, and password history.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("tenant_cas")
                    .col(uuid("tenant_id").primary_key())
                    .col(text("cert_pem"))
                    // AES-256-GCM under the master key, bound to the tenant id; never plaintext.
                    .col(text("key_sealed"))
                    .col(big_integer("crl_number").default(1))
                    .col(blob("crl_der"))
                    .col(timestamp_with_time_zone("crl_updated_at"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_tenant_cas_tenant")
                            .from("tenant_cas", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("certificates")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("user_id"))
                    .col(string_len("serial_hex", 64))
                    .col(string_len_uniq("fingerprint_sha256", 64))
                    .col(string("device_label"))
                    .col(timestamp_with_time_zone("not_before"))
                    .col(timestamp_with_time_zone("not_after"))
                    .col(string_len("status", 16).default("ACTIVE"))
                    .col(timestamp_with_time_zone_null("revoked_at"))
                    .col(string_null("revocation_reason"))
                    .col(uuid_null("issued_by"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_certificates_tenant")
                            .from("certificates", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_certificates_user")
                            .from("certificates", "user_id")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_certificates_tenant_serial")
                    .table("certificates")
                    .col("tenant_id")
                    .col("serial_hex")
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_certificates_user")
                    .table("certificates")
                    .col("user_id")
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_certificates_status_not_after")
                    .table("certificates")
                    .col("status")
                    .col("not_after")
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("password_history")
                    .col(pk_uuid("id"))
                    .col(uuid("user_id"))
                    .col(text("password_hash"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_password_history_user")
                            .from("password_history", "user_id")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_password_history_user")
                    .table("password_history")
                    .col("user_id")
                    .col("created_at")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["password_history", "certificates", "tenant_cas"] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
