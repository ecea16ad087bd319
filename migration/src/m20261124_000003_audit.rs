//! The audit trail: an append-only, per-tenant hash chain of events (MHLW guideline 6.0 §17).
//!
//! `audit_chain_head` holds each tenant's chain tip; writers lock that row, so concurrent
//! writers (also on other instances) append one after another and never fork the chain.
//! `audit_checkpoint` records where a purge cut the chain, signed with the tenant CA key.
//! On PostgreSQL triggers refuse UPDATE, DELETE and TRUNCATE of events, except the deletion of
//! events already covered by a checkpoint (a purge writes its signed checkpoint first), refuse
//! any change to checkpoints, and let a chain tip only move forward.

use sea_orm_migration::sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

const PG_TRIGGER: &str = r#"
CREATE FUNCTION audit_event_append_only() RETURNS trigger AS $$
BEGIN
    -- A purge first writes a signed checkpoint, then deletes the events it covers; nothing
    -- else may remove an event, and nothing may change one.
    IF TG_OP = 'DELETE' AND OLD.seq <= COALESCE(
        (SELECT max(seq) FROM audit_checkpoint WHERE tenant_id = OLD.tenant_id), 0) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_event_append_only
    BEFORE UPDATE OR DELETE ON audit_event
    FOR EACH ROW EXECUTE FUNCTION audit_event_append_only();

CREATE TRIGGER audit_event_no_truncate
    BEFORE TRUNCATE ON audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only();

CREATE FUNCTION audit_append_only_aux() RETURNS trigger AS $$
BEGIN
    -- Checkpoints are never changed or removed; a chain tip only moves forward.
    IF TG_TABLE_NAME = 'audit_chain_head' AND TG_OP = 'UPDATE' AND NEW.seq >= OLD.seq
        AND NEW.tenant_id = OLD.tenant_id THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% on % refused: the audit trail is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_checkpoint_append_only
    BEFORE UPDATE OR DELETE ON audit_checkpoint
    FOR EACH ROW EXECUTE FUNCTION audit_append_only_aux();

CREATE TRIGGER audit_chain_head_forward_only
    BEFORE UPDATE OR DELETE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION audit_append_only_aux();
"#;

const PG_DROP_TRIGGER: &str = r#"
DROP TRIGGER IF EXISTS audit_chain_head_forward_only ON audit_chain_head;
DROP TRIGGER IF EXISTS audit_checkpoint_append_only ON audit_checkpoint;
DROP FUNCTION IF EXISTS audit_append_only_aux();
DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_event;
DROP TRIGGER IF EXISTS audit_event_append_only ON audit_event;
DROP FUNCTION IF EXISTS audit_event_append_only();
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("audit_event")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    .col(big_integer("seq"))
                    .col(timestamp_with_time_zone("at"))
                    .col(uuid_null("actor_id"))
                    .col(string_len_null("session_hash", 64))
                    .col(string_len("action", 64))
                    .col(string_len_null("target_type", 32))
                    .col(string_len_null("target_id", 128))
                    .col(uuid_null("room_id"))
                    .col(string_len("outcome", 16))
                    .col(string_len_null("ip", 64))
                    .col(string_len_null("certificate_serial", 64))
                    .col(text("detail"))
                    .col(string_len("hash", 64))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_audit_event_tenant")
                            .from("audit_event", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            ("ux_audit_event_tenant_seq", &["tenant_id", "seq"][..]),
            (
                "ix_audit_event_tenant_actor",
                &["tenant_id", "actor_id", "seq"],
            ),
            (
                "ix_audit_event_tenant_room",
                &["tenant_id", "room_id", "seq"],
            ),
            (
                "ix_audit_event_tenant_action",
                &["tenant_id", "action", "seq"],
            ),
            ("ix_audit_event_session", &["session_hash"]),
        ] {
            let mut index = Index::create();
            index.name(name).table("audit_event");
            for col in cols {
                index.col(*col);
            }
            if name.starts_with("ux_") {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table("audit_chain_head")
                    .col(uuid("tenant_id").primary_key())
                    .col(big_integer("seq"))
                    .col(string_len("hash", 64))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_audit_chain_head_tenant")
                            .from("audit_chain_head", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("audit_checkpoint")
                    .col(pk_uuid("id"))
                    .col(uuid("tenant_id"))
                    // The last purged event: the chain resumes from its seq and hash.
                    .col(big_integer("seq"))
                    .col(string_len("hash", 64))
                    .col(timestamp_with_time_zone("purged_before"))
                    .col(big_integer("purged_events"))
                    .col(timestamp_with_time_zone("created_at"))
                    // Base64 DER ECDSA P-256 / SHA-256 signature by the tenant CA key.
                    .col(text("signature"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_audit_checkpoint_tenant")
                            .from("audit_checkpoint", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_audit_checkpoint_tenant_seq")
                    .table("audit_checkpoint")
                    .col("tenant_id")
                    .col("seq")
                    .unique()
                    .to_owned(),
            )
            .await?;

        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(PG_TRIGGER)
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(PG_DROP_TRIGGER)
                .await?;
        }
        for table in ["audit_checkpoint", "audit_chain_head", "audit_event"] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
