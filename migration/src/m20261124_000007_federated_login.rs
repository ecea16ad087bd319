//! Federated login of city staff: each tenant's identity provider, and the links from users to
//! subjects at that provider.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("tenant_idps")
                    .col(uuid("tenant_id").primary_key())
                    .col(string_len("issuer", 512))
                    .col(string_len("client_id", 255))
                    .col(text("client_secret_sealed"))
                    .col(string_len("allowed_roles", 128))
                    .col(boolean("link_by_email"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_tenant_idps_tenant")
                            .from("tenant_idps", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("external_identities")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(uuid("user_id"))
                    .col(string_len("issuer", 512))
                    .col(string_len("subject", 255))
                    .col(string_len("method", 16))
                    .col(uuid_null("linked_by"))
                    .col(timestamp_with_time_zone("linked_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_external_identities_tenant")
                            .from("external_identities", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_external_identities_user")
                            .from("external_identities", "user_id")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        // One user per subject of a provider within a tenant, one subject per user and provider.
        manager
            .create_index(
                Index::create()
                    .name("ux_external_identities_subject")
                    .table("external_identities")
                    .col("tenant_id")
                    .col("issuer")
                    .col("subject")
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_external_identities_user")
                    .table("external_identities")
                    .col("user_id")
                    .col("issuer")
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("external_identities").to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table("tenant_idps").to_owned())
            .await
    }
}
