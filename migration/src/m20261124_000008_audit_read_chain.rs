//! Read events get a hash chain of their own, beside the chain of changes.
//!
//! Every tenant had one chain, and appending to it locked the tenant's chain head row. Read
//! events (hundreds a second when a post reaches every subscriber of a room) are written in
//! batches, and while a batch held the head a change — a posted note, whose audit event commits
//! with it — waited. Now each tenant has two chains, `chain` 0 for changes and 1 for reads, each
//! with its own head row in `audit_chain`, its own `seq` and its own purge checkpoints: a change
//! never waits for reads.
//!
//! Existing events, heads and checkpoints become chain 0, unchanged, so every stored hash and
//! checkpoint signature still verifies. On PostgreSQL the append-only triggers now compare a
//! deletion with the checkpoints of the event's own chain, and guard `audit_chain` the way they
//! guarded `audit_chain_head`.

use sea_orm_migration::sea_orm::{DbBackend, Statement};
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

const PG_TRIGGER: &str = r#"
CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger AS $$
BEGIN
    -- A purge first writes a signed checkpoint, then deletes the events it covers; nothing
    -- else may remove an event, and nothing may change one.
    IF TG_OP = 'DELETE' AND OLD.seq <= COALESCE(
        (SELECT max(seq) FROM audit_checkpoint
          WHERE tenant_id = OLD.tenant_id AND chain = OLD.chain), 0) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION audit_append_only_aux() RETURNS trigger AS $$
BEGIN
    -- Checkpoints are never changed or removed; a chain tip only moves forward.
    IF TG_TABLE_NAME = 'audit_chain' AND TG_OP = 'UPDATE' AND NEW.seq >= OLD.seq
        AND NEW.tenant_id = OLD.tenant_id AND NEW.chain = OLD.chain THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% on % refused: the audit trail is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_chain_forward_only
    BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_append_only_aux();
"#;

/// The functions as migration 3 left them, for `down`.
const PG_TRIGGER_DOWN: &str = r#"
DROP TRIGGER IF EXISTS audit_chain_forward_only ON audit_chain;

CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.seq <= COALESCE(
        (SELECT max(seq) FROM audit_checkpoint WHERE tenant_id = OLD.tenant_id), 0) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION audit_append_only_aux() RETURNS trigger AS $$
BEGIN
    IF TG_TABLE_NAME = 'audit_chain_head' AND TG_OP = 'UPDATE' AND NEW.seq >= OLD.seq
        AND NEW.tenant_id = OLD.tenant_id THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% on % refused: the audit trail is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_chain_head_forward_only
    BEFORE UPDATE OR DELETE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION audit_append_only_aux();
"#;

fn chain_column() -> ColumnDef {
    small_integer("chain").default(0).to_owned()
}

async fn swap_unique(
    manager: &SchemaManager<'_>,
    table: &'static str,
    drop: &'static str,
    create: &'static str,
    cols: &[&'static str],
) -> Result<(), DbErr> {
    manager
        .drop_index(Index::drop().name(drop).table(table).to_owned())
        .await?;
    let mut index = Index::create();
    index.name(create).table(table).unique();
    for col in cols {
        index.col(*col);
    }
    manager.create_index(index.to_owned()).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["audit_event", "audit_checkpoint"] {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(chain_column())
                        .to_owned(),
                )
                .await?;
        }
        swap_unique(
            manager,
            "audit_event",
            "ux_audit_event_tenant_seq",
            "ux_audit_event_tenant_chain_seq",
            &["tenant_id", "chain", "seq"],
        )
        .await?;
        swap_unique(
            manager,
            "audit_checkpoint",
            "ux_audit_checkpoint_tenant_seq",
            "ux_audit_checkpoint_tenant_chain_seq",
            &["tenant_id", "chain", "seq"],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table("audit_chain")
                    .col(uuid("tenant_id"))
                    .col(small_integer("chain"))
                    .col(big_integer("seq"))
                    .col(string_len("hash", 64))
                    .primary_key(Index::create().col("tenant_id").col("chain"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_audit_chain_tenant")
                            .from("audit_chain", "tenant_id")
                            .to("tenants", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        db.execute_unprepared(
            "INSERT INTO audit_chain (tenant_id, chain, seq, hash) \
             SELECT tenant_id, 0, seq, hash FROM audit_chain_head",
        )
        .await?;
        // On PostgreSQL its forward-only trigger goes with the table.
        manager
            .drop_table(Table::drop().table("audit_chain_head").to_owned())
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared(PG_TRIGGER).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = manager.get_database_backend();
        // One chain cannot hold two: refuse rather than drop audit events.
        let reads = db
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT count(*) AS n FROM audit_event WHERE chain <> 0",
            ))
            .await?
            .map(|row| row.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0);
        if reads > 0 {
            return Err(DbErr::Migration(format!(
                "cannot undo the read chain: {reads} audit event(s) are in it, and audit events are never removed"
            )));
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
        db.execute_unprepared(
            "INSERT INTO audit_chain_head (tenant_id, seq, hash) \
             SELECT tenant_id, seq, hash FROM audit_chain WHERE chain = 0",
        )
        .await?;
        if backend == DbBackend::Postgres {
            db.execute_unprepared(PG_TRIGGER_DOWN).await?;
        }
        manager
            .drop_table(Table::drop().table("audit_chain").to_owned())
            .await?;
        swap_unique(
            manager,
            "audit_checkpoint",
            "ux_audit_checkpoint_tenant_chain_seq",
            "ux_audit_checkpoint_tenant_seq",
            &["tenant_id", "seq"],
        )
        .await?;
        swap_unique(
            manager,
            "audit_event",
            "ux_audit_event_tenant_chain_seq",
            "ux_audit_event_tenant_seq",
            &["tenant_id", "seq"],
        )
        .await?;
        for table in ["audit_event", "audit_checkpoint"] {
            manager
                .alter_table(Table::alter().table(table).drop_column("chain").to_owned())
                .await?;
        }
        Ok(())
    }
}
