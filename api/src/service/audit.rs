//! The audit trail (MHLW guideline 6.0, system operation §17), and the only way events are
//! written: [`record`] inside the transaction of the change it describes, [`AuditLog::read`] for
//! read events (buffered, written in batches, never dropped).
//!
//! Each tenant's events form two hash chains, each in `seq` order: [`Chain::Changes`] (events
//! written with the change they describe, and every other synchronous event) and
//! [`Chain::Reads`] (the buffered read events). In each,
//! `hash = SHA-256(previous hash ‖ canonical encoding)`, where the previous hash is the 64 hex
//! characters of the event before (64 zeros for the first, or a purge checkpoint's hash).
//! Appending locks the chain's `audit_chain` row, so concurrent writers, on any instance,
//! append one after another and never fork a chain; and because reads have a chain of their
//! own, a change never waits behind a batch of read events.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use rustls_pki_types::pem::PemObject as _;
use sea_orm::sea_query::{Alias, Expr, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DatabaseConnection, DbBackend,
    EntityTrait as _, ExprTrait as _, PaginatorTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _,
};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use entity::kinds::AuditOutcome;
use entity::{audit_chain, audit_checkpoint, audit_event, tenant_ca};

use crate::auth::pki::{self, MasterKey};
use crate::authz::AuditReader;
use crate::error::{AppError, AppResult};
use crate::service::{certificates, now};

/// The previous hash of a tenant's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Version tag inside every canonical encoding, so the format can change without ambiguity.
/// Version 1 is the changes chain (the only chain before reads had their own); version 2
/// adds the chain number, and is used by the reads chain.
const CANONICAL_VERSION: &str = "renkei-audit/1";
const CANONICAL_VERSION_CHAINED: &str = "renkei-audit/2";

/// Read events written per transaction. Each transaction holds the reads chain's head, which
/// only other read batches (of other instances) wait for.
const BATCH: usize = 200;

/// One of a tenant's two audit chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Chain {
    /// Changes, written in the transaction of the change, and every other event written
    /// synchronously (logins, refusals, logouts).
    Changes,
    /// Read events, buffered and written in batches by [`AuditLog`].
    Reads,
}

impl Chain {
    pub const ALL: [Chain; 2] = [Chain::Changes, Chain::Reads];

    /// The number stored in `audit_event.chain`, `audit_chain.chain`, `audit_checkpoint.chain`.
    pub fn id(self) -> i16 {
        match self {
            Chain::Changes => 0,
            Chain::Reads => 1,
        }
    }

    pub fn from_id(id: i16) -> Option<Chain> {
        Chain::ALL.into_iter().find(|chain| chain.id() == id)
    }

    pub fn name(self) -> &'static str {
        match self {
            Chain::Changes => "changes",
            Chain::Reads => "reads",
        }
    }
}

/// Actions that end a session: with `login.success`, they give how long an access lasted.
pub const SESSION_END_ACTIONS: [&str; 3] = ["logout", "session.revoke", "session.expire"];

/// One event before it is written. Build with [`Event::new`] and the setters.
#[derive(Clone, Debug)]
pub struct Event {
    pub tenant_id: Uuid,
    pub action: &'static str,
    pub outcome: AuditOutcome,
    pub actor_id: Option<Uuid>,
    pub session_hash: Option<String>,
    pub target_type: Option<&'static str>,
    pub target_id: Option<String>,
    pub room_id: Option<Uuid>,
    pub ip: Option<String>,
    pub certificate_serial: Option<String>,
    /// Never secrets, never clinical text: ids, reasons, counts.
    pub detail: Map<String, Value>,
}

/// Who did it and over what: the request side of every event.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub actor_id: Option<Uuid>,
    pub session_hash: Option<String>,
    pub ip: Option<String>,
    pub certificate_serial: Option<String>,
}

impl Event {
    pub fn new(tenant_id: Uuid, action: &'static str, outcome: AuditOutcome) -> Self {
        Event {
            tenant_id,
            action,
            outcome,
            actor_id: None,
            session_hash: None,
            target_type: None,
            target_id: None,
            room_id: None,
            ip: None,
            certificate_serial: None,
            detail: Map::new(),
        }
    }

    /// Actor, session, client IP and certificate serial of the request.
    pub fn by(mut self, origin: &Origin) -> Self {
        self.actor_id = origin.actor_id;
        self.session_hash.clone_from(&origin.session_hash);
        self.ip.clone_from(&origin.ip);
        self.certificate_serial
            .clone_from(&origin.certificate_serial);
        self
    }

    pub fn actor(mut self, actor_id: Option<Uuid>) -> Self {
        self.actor_id = actor_id;
        self
    }

    pub fn session(mut self, session_hash: impl Into<String>) -> Self {
        self.session_hash = Some(session_hash.into());
        self
    }

    pub fn target(mut self, kind: &'static str, id: impl ToString) -> Self {
        self.target_type = Some(kind);
        self.target_id = Some(id.to_string());
        self
    }

    pub fn room(mut self, room_id: Uuid) -> Self {
        self.room_id = Some(room_id);
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.detail.insert(key.to_owned(), value.into());
        self
    }
}

/// The bytes an event's hash covers: every stored column but the hash, in a fixed order.
/// The changes chain keeps the encoding it had before there were two chains, so its stored
/// hashes still verify; the reads chain's encoding also covers the chain number.
fn canonical(model: &audit_event::Model) -> Vec<u8> {
    let fields = json!([
        model.id,
        model.tenant_id,
        model.seq,
        format_at(model.at),
        model.actor_id,
        model.session_hash,
        model.action,
        model.target_type,
        model.target_id,
        model.room_id,
        outcome_str(model.outcome),
        model.ip,
        model.certificate_serial,
        model.detail,
    ]);
    versioned(
        CANONICAL_VERSION,
        CANONICAL_VERSION_CHAINED,
        model.chain,
        fields,
    )
}

/// `[v1, fields…]` for the changes chain, `[v2, chain, fields…]` for the others, as compact
/// JSON.
fn versioned(v1: &str, v2: &str, chain: i16, fields: Value) -> Vec<u8> {
    let head = if chain == Chain::Changes.id() {
        vec![json!(v1)]
    } else {
        vec![json!(v2), json!(chain)]
    };
    let fields = match fields {
        Value::Array(fields) => fields,
        other => vec![other],
    };
    Value::Array(head.into_iter().chain(fields).collect())
        .to_string()
        .into_bytes()
}

fn format_at(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub fn outcome_str(outcome: AuditOutcome) -> &'static str {
    match outcome {
        AuditOutcome::Allowed => "ALLOWED",
        AuditOutcome::Denied => "DENIED",
        AuditOutcome::Failed => "FAILED",
    }
}

/// `SHA-256(previous hash ‖ canonical encoding)`, as hex.
pub fn chain_hash(previous: &str, model: &audit_event::Model) -> String {
    let mut hasher = Sha256::new();
    hasher.update(previous.as_bytes());
    hasher.update(canonical(model));
    hex::encode(hasher.finalize())
}

/// Writes `event` as part of the caller's transaction: it commits or rolls back with the change
/// it describes. Open the transaction with [`crate::db::begin_write`].
pub async fn record(db: &impl ConnectionTrait, event: Event) -> AppResult<Uuid> {
    record_in(db, Chain::Changes, event).await
}

async fn record_in(db: &impl ConnectionTrait, chain: Chain, event: Event) -> AppResult<Uuid> {
    let tenant_id = event.tenant_id;
    let ids = append(db, tenant_id, chain, vec![event]).await?;
    ids.into_iter()
        .next()
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("audit append returned no id")))
}

/// Writes several events of one change (e.g. every session a revocation ended), in order.
pub async fn record_all(db: &impl ConnectionTrait, events: Vec<Event>) -> AppResult<()> {
    append_all(db, Chain::Changes, events).await
}

/// Appends to `chain` of each event's tenant, tenants in id order (so two writers holding
/// several heads cannot deadlock), each tenant's events in the given order.
async fn append_all(db: &impl ConnectionTrait, chain: Chain, events: Vec<Event>) -> AppResult<()> {
    let mut by_tenant: BTreeMap<Uuid, Vec<Event>> = BTreeMap::new();
    for event in events {
        by_tenant.entry(event.tenant_id).or_default().push(event);
    }
    for (tenant_id, events) in by_tenant {
        append(db, tenant_id, chain, events).await?;
    }
    Ok(())
}

/// Writes `event` in a transaction of its own: for events without a database change (logout,
/// a failed login that changed nothing).
pub async fn record_now(db: &DatabaseConnection, event: Event) -> AppResult<Uuid> {
    record_now_in(db, Chain::Changes, event).await
}

async fn record_now_in(db: &DatabaseConnection, chain: Chain, event: Event) -> AppResult<Uuid> {
    let txn = crate::db::begin_write(db).await?;
    let id = record_in(&txn, chain, event).await?;
    txn.commit().await?;
    Ok(id)
}

/// Records a session's end unless one is already recorded (the expiry sweep of several
/// instances, or a logout racing it): at most one end per session.
pub async fn record_session_end_once(db: &DatabaseConnection, event: Event) -> AppResult<bool> {
    let Some(session_hash) = event.session_hash.clone() else {
        return Err(AppError::internal(anyhow::anyhow!(
            "session end without a session"
        )));
    };
    let txn = crate::db::begin_write(db).await?;
    let head = lock_head(&txn, event.tenant_id, Chain::Changes).await?;
    if session_ended(&txn, &session_hash).await? {
        txn.rollback().await?;
        return Ok(false);
    }
    append_locked(&txn, head, vec![event]).await?;
    txn.commit().await?;
    Ok(true)
}

async fn session_ended(db: &impl ConnectionTrait, session_hash: &str) -> AppResult<bool> {
    let found = audit_event::Entity::find()
        .filter(audit_event::Column::SessionHash.eq(session_hash))
        .filter(audit_event::Column::Action.is_in(SESSION_END_ACTIONS))
        .count(db)
        .await?;
    Ok(found > 0)
}

/// Takes the head of the tenant's `chain` for this transaction, creating it on first use. On
/// PostgreSQL `FOR UPDATE` holds other appenders of that chain until commit; SQLite has one
/// writer at a time anyway (our write transactions begin IMMEDIATE).
async fn lock_head(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    chain: Chain,
) -> AppResult<audit_chain::Model> {
    audit_chain::Entity::insert(audit_chain::ActiveModel {
        tenant_id: Set(tenant_id),
        chain: Set(chain.id()),
        seq: Set(0),
        hash: Set(GENESIS.to_owned()),
    })
    .on_conflict(
        OnConflict::columns([audit_chain::Column::TenantId, audit_chain::Column::Chain])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    let mut find = audit_chain::Entity::find_by_id((tenant_id, chain.id()));
    if db.get_database_backend() == DbBackend::Postgres {
        find = find.lock_exclusive();
    }
    find.one(db)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("audit chain head vanished")))
}

async fn append(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    chain: Chain,
    events: Vec<Event>,
) -> AppResult<Vec<Uuid>> {
    let head = lock_head(db, tenant_id, chain).await?;
    append_locked(db, head, events).await
}

async fn append_locked(
    db: &impl ConnectionTrait,
    head: audit_chain::Model,
    events: Vec<Event>,
) -> AppResult<Vec<Uuid>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut previous = head.hash;
    let mut seq = head.seq;
    let mut rows = Vec::with_capacity(events.len());
    let mut ids = Vec::with_capacity(events.len());
    let at = now();
    for event in events {
        seq += 1;
        let mut model = audit_event::Model {
            id: Uuid::now_v7(),
            tenant_id: head.tenant_id,
            chain: head.chain,
            seq,
            at,
            actor_id: event.actor_id,
            session_hash: event.session_hash,
            action: event.action.to_owned(),
            target_type: event.target_type.map(str::to_owned),
            target_id: event.target_id,
            room_id: event.room_id,
            outcome: event.outcome,
            ip: event.ip,
            certificate_serial: event.certificate_serial,
            detail: Value::Object(event.detail).to_string(),
            hash: String::new(),
        };
        model.hash = chain_hash(&previous, &model);
        previous.clone_from(&model.hash);
        ids.push(model.id);
        rows.push(audit_event::ActiveModel::from(model));
    }
    audit_event::Entity::insert_many(rows)
        .exec_without_returning(db)
        .await?;
    audit_chain::Entity::update_many()
        .col_expr(audit_chain::Column::Seq, Expr::value(seq))
        .col_expr(audit_chain::Column::Hash, Expr::value(previous))
        .filter(audit_chain::Column::TenantId.eq(head.tenant_id))
        .filter(audit_chain::Column::Chain.eq(head.chain))
        .exec(db)
        .await?;
    Ok(ids)
}

// ---------------------------------------------------------------------------------------------
// Read events: a bounded buffer and one writer task per instance.

enum Message {
    Event(Box<Event>),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// Where read events go. Cloned into every request; one writer task drains it.
#[derive(Clone)]
pub struct AuditLog {
    sender: mpsc::Sender<Message>,
    db: DatabaseConnection,
    /// False only in benchmarks that measure what auditing reads costs.
    reads_enabled: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("free_slots", &self.sender.capacity())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Starts the writer. `capacity` events may wait; beyond that, `read` waits for room.
    pub fn start(
        db: DatabaseConnection,
        capacity: usize,
        reads_enabled: bool,
    ) -> (AuditLog, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(writer(db.clone(), receiver));
        (
            AuditLog {
                sender,
                db,
                reads_enabled,
            },
            task,
        )
    }

    /// Queues a read event. Waits while the buffer is full (back-pressure), and after
    /// shutdown of the writer writes the event directly: nothing is dropped.
    pub async fn read(&self, event: Event) -> AppResult<()> {
        if !self.reads_enabled {
            return Ok(());
        }
        match self.sender.send(Message::Event(Box::new(event))).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(Message::Event(event))) => {
                record_now_in(&self.db, Chain::Reads, *event)
                    .await
                    .map(|_| ())
            }
            Err(_) => Ok(()),
        }
    }

    /// Returns once every read event queued before this call is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Writes what is queued and stops the writer (shutdown). Later events are written directly.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Message::Close(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// How long the writer waits for more read events before writing a batch: batching turns
/// many small transactions into one, and nobody waits on a read event (`flush` cuts it short).
const LINGER: Duration = Duration::from_millis(20);

async fn writer(db: DatabaseConnection, mut receiver: mpsc::Receiver<Message>) {
    let mut batch: Vec<Event> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut closing: Option<oneshot::Sender<()>> = None;
    while closing.is_none() {
        let Some(first) = receiver.recv().await else {
            break;
        };
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Event(event) => batch.push(*event),
                Message::Flush(done) => waiting.push(done),
                Message::Close(done) => {
                    // Nothing can be queued once closed; what is already queued still counts.
                    receiver.close();
                    closing = Some(done);
                }
            }
            if batch.len() >= BATCH {
                write_batch(&db, &mut batch, closing.is_some()).await;
            }
            next = match receiver.try_recv() {
                Ok(message) => Some(message),
                // Someone waits for this batch: write it now.
                Err(_) if !waiting.is_empty() || closing.is_some() => None,
                Err(_) => tokio::time::timeout_at(deadline, receiver.recv())
                    .await
                    .ok()
                    .flatten(),
            };
        }
        write_batch(&db, &mut batch, closing.is_some()).await;
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Writes the batch, retrying while the database is unreachable: read events wait, they are
/// not dropped. At shutdown retries stop after a while, and what is lost is logged loudly.
async fn write_batch(db: &DatabaseConnection, batch: &mut Vec<Event>, shutting_down: bool) {
    if batch.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    loop {
        match write_grouped(db, batch).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(e) => {
                if shutting_down && waited >= Duration::from_secs(10) {
                    tracing::error!(
                        lost = batch.len(),
                        error = ?e,
                        "audit: read events could not be written before shutdown"
                    );
                    batch.clear();
                    return;
                }
                tracing::warn!(queued = batch.len(), error = ?e, "audit: writing read events failed; retrying");
                tokio::time::sleep(delay).await;
                waited += delay;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn write_grouped(db: &DatabaseConnection, batch: &[Event]) -> AppResult<()> {
    let txn = crate::db::begin_write(db).await?;
    append_all(&txn, Chain::Reads, batch.to_vec()).await?;
    txn.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Review.

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub actor_id: Option<Uuid>,
    pub room_id: Option<Uuid>,
    /// Exact action, or a prefix when it ends in `*` (`login.*`).
    pub action: Option<String>,
    /// Inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: Option<DateTime<Utc>>,
}

pub struct Page {
    /// Each event with its Relay cursor.
    pub events: Vec<(String, audit_event::Model)>,
    pub has_next: bool,
    pub total: u64,
}

pub const MAX_PAGE: u64 = 500;

/// How far a walk over a tenant's log has come in each chain: the seq of the last event taken
/// from the changes chain and from the reads chain. Walking newest first starts at
/// [`Position::NEWEST`], oldest first at [`Position::OLDEST`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub changes: i64,
    pub reads: i64,
}

impl Position {
    pub const NEWEST: Position = Position {
        changes: i64::MAX,
        reads: i64::MAX,
    };
    pub const OLDEST: Position = Position {
        changes: 0,
        reads: 0,
    };

    fn of(self, chain: Chain) -> i64 {
        match chain {
            Chain::Changes => self.changes,
            Chain::Reads => self.reads,
        }
    }

    fn taken(&mut self, event: &audit_event::Model) {
        if event.chain == Chain::Reads.id() {
            self.reads = event.seq;
        } else {
            self.changes = event.seq;
        }
    }

    /// Opaque Relay cursor: the position after an event.
    fn cursor(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("audit:{}:{}", self.changes, self.reads))
    }

    fn parse_cursor(cursor: &str) -> AppResult<Position> {
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                let (changes, reads) = s.strip_prefix("audit:")?.split_once(':')?;
                Some(Position {
                    changes: changes.parse().ok()?,
                    reads: reads.parse().ok()?,
                })
            })
            .ok_or_else(|| AppError::bad_input("after", "not a cursor of this list"))
    }
}

/// Up to `limit` events after `from`, both chains merged by time (each chain in its own seq
/// order, so no event is skipped or repeated however the chains interleave), each with the
/// position after it; and whether more follow.
async fn merged(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    filter: &Filter,
    newest_first: bool,
    from: Position,
    limit: u64,
) -> AppResult<(Vec<(Position, audit_event::Model)>, bool)> {
    let mut lists = Vec::with_capacity(Chain::ALL.len());
    for chain in Chain::ALL {
        let select = filtered(tenant_id, filter).filter(audit_event::Column::Chain.eq(chain.id()));
        let select = if newest_first {
            select
                .filter(audit_event::Column::Seq.lt(from.of(chain)))
                .order_by_desc(audit_event::Column::Seq)
        } else {
            select
                .filter(audit_event::Column::Seq.gt(from.of(chain)))
                .order_by_asc(audit_event::Column::Seq)
        };
        lists.push(VecDeque::from(select.limit(limit + 1).all(db).await?));
    }
    let key = |e: &audit_event::Model| (e.at, e.chain, e.seq);
    let mut position = from;
    let mut taken = Vec::new();
    while (taken.len() as u64) < limit {
        let pick = lists
            .iter()
            .enumerate()
            .filter_map(|(i, list)| list.front().map(|e| (i, key(e))))
            .reduce(|a, b| if (b.1 > a.1) == newest_first { b } else { a })
            .map(|(i, _)| i);
        let Some(event) = pick.and_then(|i| lists.get_mut(i)?.pop_front()) else {
            break;
        };
        position.taken(&event);
        taken.push((position, event));
    }
    let more = lists.iter().any(|list| !list.is_empty());
    Ok((taken, more))
}

fn filtered(tenant_id: Uuid, filter: &Filter) -> sea_orm::Select<audit_event::Entity> {
    let mut select =
        audit_event::Entity::find().filter(audit_event::Column::TenantId.eq(tenant_id));
    if let Some(actor) = filter.actor_id {
        select = select.filter(audit_event::Column::ActorId.eq(actor));
    }
    if let Some(room) = filter.room_id {
        select = select.filter(audit_event::Column::RoomId.eq(room));
    }
    if let Some(action) = &filter.action {
        select = match action.strip_suffix('*') {
            Some(prefix) => select.filter(audit_event::Column::Action.starts_with(prefix)),
            None => select.filter(audit_event::Column::Action.eq(action.as_str())),
        };
    }
    if let Some(from) = filter.from {
        select = select.filter(audit_event::Column::At.gte(from));
    }
    if let Some(to) = filter.to {
        select = select.filter(audit_event::Column::At.lt(to));
    }
    select
}

/// Newest first, `first` at a time after `after`.
pub async fn list(
    db: &impl ConnectionTrait,
    reader: AuditReader,
    filter: &Filter,
    first: u64,
    after: Option<&str>,
) -> AppResult<Page> {
    if first == 0 || first > MAX_PAGE {
        return Err(AppError::bad_input(
            "first",
            format!("first must be between 1 and {MAX_PAGE}"),
        ));
    }
    let total = filtered(reader.tenant_id, filter).count(db).await?;
    let from = match after {
        Some(after) => Position::parse_cursor(after)?,
        None => Position::NEWEST,
    };
    let (events, has_next) = merged(db, reader.tenant_id, filter, true, from, first).await?;
    Ok(Page {
        events: events
            .into_iter()
            .map(|(position, event)| (position.cursor(), event))
            .collect(),
        has_next,
        total,
    })
}

/// Every event about one room, oldest first (a patient's disclosure request).
pub async fn room_events(
    db: &impl ConnectionTrait,
    reader: AuditReader,
    room_id: Uuid,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> AppResult<Vec<audit_event::Model>> {
    let filter = Filter {
        room_id: Some(room_id),
        from,
        to,
        ..Filter::default()
    };
    let mut events = filtered(reader.tenant_id, &filter).all(db).await?;
    events.sort_by_key(|e| (e.at, e.chain, e.seq));
    Ok(events)
}

/// Up to `limit` events of a tenant after `after`, oldest first, and the position after the
/// last of them (export, a page at a time; start at [`Position::OLDEST`]).
pub async fn export_page(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    filter: &Filter,
    after: Position,
    limit: u64,
) -> AppResult<(Vec<audit_event::Model>, Position)> {
    let (events, _) = merged(db, tenant_id, filter, false, after, limit).await?;
    let next = events.last().map_or(after, |(position, _)| *position);
    Ok((events.into_iter().map(|(_, event)| event).collect(), next))
}

pub async fn count(db: &impl ConnectionTrait, tenant_id: Uuid, filter: &Filter) -> AppResult<u64> {
    Ok(filtered(tenant_id, filter).count(db).await?)
}

// ---------------------------------------------------------------------------------------------
// Verification.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    pub verified_events: u64,
    pub intact: bool,
    /// The first event whose hash or position does not check out.
    pub first_broken: Option<Uuid>,
    /// Why it is broken, in words (CLI and logs).
    pub problem: Option<String>,
}

/// Walks each of the tenant's chains from its start (or its latest purge checkpoint, whose
/// signature is checked against the tenant CA) and recomputes every hash. The report counts
/// the events of both chains and names the first broken event found (changes chain first).
pub async fn verify_chain(db: &impl ConnectionTrait, tenant_id: Uuid) -> AppResult<ChainReport> {
    let mut verified = 0;
    for chain in Chain::ALL {
        let mut report = verify_one(db, tenant_id, chain).await?;
        verified += report.verified_events;
        if !report.intact {
            report.verified_events = verified;
            report.problem = report
                .problem
                .map(|problem| format!("{} chain: {problem}", chain.name()));
            return Ok(report);
        }
    }
    Ok(ChainReport {
        verified_events: verified,
        intact: true,
        first_broken: None,
        problem: None,
    })
}

async fn verify_one(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    chain: Chain,
) -> AppResult<ChainReport> {
    // The tip before the walk; events appended while the walk runs come after it.
    let head = audit_chain::Entity::find_by_id((tenant_id, chain.id()))
        .one(db)
        .await?;
    let (head_seq, head_hash) = head.map_or((0, GENESIS.to_owned()), |h| (h.seq, h.hash));
    let mut previous = GENESIS.to_owned();
    let mut expected_seq = 1_i64;
    let mut verified = 0_u64;
    let broken = |verified, id, problem: String| ChainReport {
        verified_events: verified,
        intact: false,
        first_broken: id,
        problem: Some(problem),
    };
    let checkpoint = audit_checkpoint::Entity::find()
        .filter(audit_checkpoint::Column::TenantId.eq(tenant_id))
        .filter(audit_checkpoint::Column::Chain.eq(chain.id()))
        .order_by_desc(audit_checkpoint::Column::Seq)
        .one(db)
        .await?;
    if let Some(cp) = &checkpoint {
        if !checkpoint_signature_valid(db, cp).await? {
            let first = first_event_after(db, tenant_id, chain, cp.seq).await?;
            return Ok(broken(
                0,
                first,
                format!(
                    "purge checkpoint at seq {} has an invalid signature",
                    cp.seq
                ),
            ));
        }
        previous.clone_from(&cp.hash);
        expected_seq = cp.seq + 1;
    }
    // The hash the walk found at the tip's seq, and the events it found beyond the tip.
    let mut at_tip = (expected_seq - 1 == head_seq).then(|| previous.clone());
    let mut beyond_tip: Vec<(i64, Uuid)> = Vec::new();
    const PAGE: u64 = 1000;
    let mut after = expected_seq - 1;
    loop {
        let events = audit_event::Entity::find()
            .filter(audit_event::Column::TenantId.eq(tenant_id))
            .filter(audit_event::Column::Chain.eq(chain.id()))
            .filter(audit_event::Column::Seq.gt(after))
            .order_by_asc(audit_event::Column::Seq)
            .limit(PAGE)
            .all(db)
            .await?;
        let Some(last) = events.last() else { break };
        after = last.seq;
        for event in &events {
            if event.seq != expected_seq {
                return Ok(broken(
                    verified,
                    Some(event.id),
                    format!(
                        "event seq {} follows seq {}: events are missing",
                        event.seq,
                        expected_seq - 1
                    ),
                ));
            }
            if chain_hash(&previous, event) != event.hash {
                return Ok(broken(
                    verified,
                    Some(event.id),
                    format!("event seq {} does not match its hash", event.seq),
                ));
            }
            previous.clone_from(&event.hash);
            if event.seq == head_seq {
                at_tip = Some(event.hash.clone());
            } else if event.seq > head_seq {
                beyond_tip.push((event.seq, event.id));
            }
            expected_seq += 1;
            verified += 1;
        }
    }
    let end = expected_seq - 1;
    // The recorded tip must be on the chain: otherwise events at the end were removed.
    if end < head_seq || (head_seq > 0 && at_tip.as_deref() != Some(head_hash.as_str())) {
        return Ok(broken(
            verified,
            None,
            format!(
                "the chain ends at seq {end} but its recorded tip is seq {head_seq}: the latest events are missing"
            ),
        ));
    }
    // Events beyond the tip: appended during the walk (the tip has moved on since), or
    // added behind the writers' backs.
    if end > head_seq {
        let now_at = audit_chain::Entity::find_by_id((tenant_id, chain.id()))
            .one(db)
            .await?
            .map_or(0, |h| h.seq);
        if let Some((seq, id)) = beyond_tip.iter().find(|(seq, _)| *seq > now_at) {
            return Ok(broken(
                verified,
                Some(*id),
                format!("event seq {seq} lies beyond the chain's recorded tip (seq {now_at})"),
            ));
        }
    }
    Ok(ChainReport {
        verified_events: verified,
        intact: true,
        first_broken: None,
        problem: None,
    })
}

async fn first_event_after(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    chain: Chain,
    seq: i64,
) -> AppResult<Option<Uuid>> {
    Ok(audit_event::Entity::find()
        .filter(audit_event::Column::TenantId.eq(tenant_id))
        .filter(audit_event::Column::Chain.eq(chain.id()))
        .filter(audit_event::Column::Seq.gt(seq))
        .order_by_asc(audit_event::Column::Seq)
        .one(db)
        .await?
        .map(|e| e.id))
}

// ---------------------------------------------------------------------------------------------
// Retention.

/// What a checkpoint's signature covers. Checkpoints of the changes chain keep the message
/// they had before there were two chains; those of the reads chain also cover the chain.
fn checkpoint_message(cp: &audit_checkpoint::Model) -> Vec<u8> {
    let fields = json!([
        cp.id,
        cp.tenant_id,
        cp.seq,
        cp.hash,
        format_at(cp.purged_before),
        cp.purged_events,
        format_at(cp.created_at),
    ]);
    versioned(
        "renkei-audit-checkpoint/1",
        "renkei-audit-checkpoint/2",
        cp.chain,
        fields,
    )
}

async fn checkpoint_signature_valid(
    db: &impl ConnectionTrait,
    cp: &audit_checkpoint::Model,
) -> AppResult<bool> {
    let Some(ca) = tenant_ca::Entity::find_by_id(cp.tenant_id).one(db).await? else {
        return Ok(false);
    };
    let Ok(cert_der) = rustls_pki_types::CertificateDer::from_pem_slice(ca.cert_pem.as_bytes())
    else {
        return Ok(false);
    };
    let Ok(signature) = BASE64.decode(&cp.signature) else {
        return Ok(false);
    };
    Ok(pki::verify_ca_signature(
        &cert_der,
        &checkpoint_message(cp),
        &signature,
    ))
}

#[derive(Debug)]
pub struct Purged {
    pub removed: u64,
    /// Each chain's new starting point; empty when nothing was old enough.
    pub checkpoints: Vec<(Chain, i64)>,
}

/// Removes the tenant's events older than `before`: in each chain the longest run from its
/// start that is entirely older, leaving a checkpoint signed with the tenant CA key so the
/// rest still verifies. The caller checks the retention period.
pub async fn purge(
    db: &DatabaseConnection,
    master_key: &MasterKey,
    tenant_id: Uuid,
    before: DateTime<Utc>,
) -> AppResult<Purged> {
    let txn = crate::db::begin_write(db).await?;
    let ca = certificates::load_ca(&txn, master_key, tenant_id).await?;
    let mut purged = Purged {
        removed: 0,
        checkpoints: Vec::new(),
    };
    // Heads in chain order, as nothing else ever holds both.
    for chain in Chain::ALL {
        lock_head(&txn, tenant_id, chain).await?;
    }
    for chain in Chain::ALL {
        if let Some((removed, seq)) = purge_chain(&txn, &ca, tenant_id, chain, before).await? {
            purged.removed += removed;
            purged.checkpoints.push((chain, seq));
        }
    }
    if purged.checkpoints.is_empty() {
        txn.rollback().await?;
    } else {
        txn.commit().await?;
    }
    Ok(purged)
}

/// One chain's part of [`purge`]: how many events went, and the checkpoint's seq.
async fn purge_chain(
    txn: &impl ConnectionTrait,
    ca: &pki::CaMaterial,
    tenant_id: Uuid,
    chain: Chain,
    before: DateTime<Utc>,
) -> AppResult<Option<(u64, i64)>> {
    let in_chain = || {
        audit_event::Entity::find()
            .filter(audit_event::Column::TenantId.eq(tenant_id))
            .filter(audit_event::Column::Chain.eq(chain.id()))
    };
    let first_kept = in_chain()
        .filter(audit_event::Column::At.gte(before))
        .order_by_asc(audit_event::Column::Seq)
        .one(txn)
        .await?;
    let mut last_old = in_chain().order_by_desc(audit_event::Column::Seq);
    if let Some(kept) = &first_kept {
        last_old = last_old.filter(audit_event::Column::Seq.lt(kept.seq));
    }
    let Some(last_old) = last_old.one(txn).await? else {
        return Ok(None);
    };
    // Where the stored chain starts now: 1, or after the previous checkpoint.
    let first_seq = in_chain()
        .order_by_asc(audit_event::Column::Seq)
        .one(txn)
        .await?
        .map_or(last_old.seq, |e| e.seq);
    let mut cp = audit_checkpoint::Model {
        id: Uuid::now_v7(),
        tenant_id,
        chain: chain.id(),
        seq: last_old.seq,
        hash: last_old.hash.clone(),
        purged_before: before,
        purged_events: last_old.seq - first_seq + 1,
        created_at: now(),
        signature: String::new(),
    };
    let signature = ca
        .sign(&checkpoint_message(&cp))
        .map_err(|e| AppError::internal(anyhow::anyhow!("signing the audit checkpoint: {e}")))?;
    cp.signature = BASE64.encode(signature);
    // Checkpoint first: on PostgreSQL the append-only trigger lets only events a checkpoint
    // of their chain covers be deleted.
    audit_checkpoint::Entity::insert(audit_checkpoint::ActiveModel::from(cp))
        .exec_without_returning(txn)
        .await?;
    let removed = audit_event::Entity::delete_many()
        .filter(audit_event::Column::TenantId.eq(tenant_id))
        .filter(audit_event::Column::Chain.eq(chain.id()))
        .filter(audit_event::Column::Seq.lte(last_old.seq))
        .exec(txn)
        .await?
        .rows_affected;
    Ok(Some((removed, last_old.seq)))
}

// ---------------------------------------------------------------------------------------------
// Session expiry: logins whose session is gone without a logout or revocation.

/// Records `session.expire` for sessions that logged in within the last `window` and are no
/// longer live, with no end recorded. Runs periodically on every instance; the end is
/// recorded once however many instances find it.
pub async fn record_session_expiries(
    db: &DatabaseConnection,
    sessions: &crate::auth::session::SessionStore,
    window: Duration,
) -> AppResult<usize> {
    let since = now() - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(2));
    let ended_alias = Alias::new("ended");
    let ended = Query::select()
        .expr(Expr::val(1))
        .from_as(audit_event::Entity, ended_alias.clone())
        .and_where(
            Expr::col((ended_alias.clone(), audit_event::Column::Action))
                .is_in(SESSION_END_ACTIONS),
        )
        .and_where(
            Expr::col((ended_alias, audit_event::Column::SessionHash))
                .equals((audit_event::Entity, audit_event::Column::SessionHash)),
        )
        .to_owned();
    let logins = audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq("login.success"))
        .filter(audit_event::Column::At.gte(since))
        .filter(audit_event::Column::SessionHash.is_not_null())
        .filter(Expr::exists(ended).not())
        .order_by_asc(audit_event::Column::At)
        .limit(1000)
        .all(db)
        .await?;
    if logins.is_empty() {
        return Ok(0);
    }
    let hashes: Vec<String> = logins
        .iter()
        .filter_map(|e| e.session_hash.clone())
        .collect();
    let alive = sessions
        .alive(&hashes)
        .await
        .map_err(AppError::unavailable)?;
    let mut recorded = 0;
    for (login, alive) in logins.iter().zip(alive) {
        if alive {
            continue;
        }
        let Some(hash) = &login.session_hash else {
            continue;
        };
        let event = Event::new(login.tenant_id, "session.expire", AuditOutcome::Allowed)
            .actor(login.actor_id)
            .session(hash.clone())
            .detail("loginAt", format_at(login.at));
        if record_session_end_once(db, event).await? {
            recorded += 1;
        }
    }
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(chain: Chain) -> audit_event::Model {
        let id = |s: &str| Uuid::parse_str(s).unwrap();
        audit_event::Model {
            id: id("018f0000-0000-7000-8000-000000000001"),
            tenant_id: id("018f0000-0000-7000-8000-0000000000aa"),
            chain: chain.id(),
            seq: 42,
            at: DateTime::parse_from_rfc3339("2026-11-24T01:02:03.456789Z")
                .unwrap()
                .with_timezone(&Utc),
            actor_id: Some(id("018f0000-0000-7000-8000-0000000000bb")),
            session_hash: Some("ab".repeat(32)),
            action: "notes.read".into(),
            target_type: Some("room".into()),
            target_id: Some("r1".into()),
            room_id: None,
            outcome: AuditOutcome::Allowed,
            ip: Some("127.0.0.1".into()),
            certificate_serial: None,
            detail: r#"{"count":2}"#.into(),
            hash: String::new(),
        }
    }

    /// The expected hashes were computed outside Rust (Python's json and hashlib) from the
    /// documented encoding: the changes chain's must never change, or stored chains would no
    /// longer verify.
    #[test]
    fn the_canonical_encodings_are_fixed() {
        let changes = event(Chain::Changes);
        assert_eq!(
            String::from_utf8(canonical(&changes)).unwrap(),
            r#"["renkei-audit/1","018f0000-0000-7000-8000-000000000001","018f0000-0000-7000-8000-0000000000aa",42,"2026-11-24T01:02:03.456789Z","018f0000-0000-7000-8000-0000000000bb","abababababababababababababababababababababababababababababababab","notes.read","room","r1",null,"ALLOWED","127.0.0.1",null,"{\"count\":2}"]"#
        );
        assert_eq!(
            chain_hash(GENESIS, &changes),
            "c3f29f3ca73b935bcd1ceafbd40b29c1a43a8290a5e21d01c16577980dc97fe3"
        );
        assert_eq!(
            chain_hash(GENESIS, &event(Chain::Reads)),
            "d8fd19f293170021a0cec0c29fe813fc6a905000c1e90d3bd2459fbfab85a0e4"
        );
    }

    #[test]
    fn checkpoint_messages_name_the_chain_only_beyond_the_first() {
        let mut cp = audit_checkpoint::Model {
            id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            chain: Chain::Changes.id(),
            seq: 7,
            hash: "0".repeat(64),
            purged_before: DateTime::UNIX_EPOCH,
            purged_events: 7,
            created_at: DateTime::UNIX_EPOCH,
            signature: String::new(),
        };
        let nil = Uuid::nil();
        let zeros = "0".repeat(64);
        let epoch = "1970-01-01T00:00:00.000000Z";
        assert_eq!(
            String::from_utf8(checkpoint_message(&cp)).unwrap(),
            format!(
                r#"["renkei-audit-checkpoint/1","{nil}","{nil}",7,"{zeros}","{epoch}",7,"{epoch}"]"#
            )
        );
        cp.chain = Chain::Reads.id();
        assert_eq!(
            String::from_utf8(checkpoint_message(&cp)).unwrap(),
            format!(
                r#"["renkei-audit-checkpoint/2",1,"{nil}","{nil}",7,"{zeros}","{epoch}",7,"{epoch}"]"#
            )
        );
    }

    #[test]
    fn cursors_round_trip_and_strangers_are_refused() {
        let position = Position {
            changes: 12,
            reads: 3400,
        };
        assert_eq!(
            Position::parse_cursor(&position.cursor()).unwrap(),
            position
        );
        let old_style = URL_SAFE_NO_PAD.encode("audit:12");
        for bad in ["", "not-a-cursor", old_style.as_str()] {
            assert!(Position::parse_cursor(bad).is_err(), "{bad}");
        }
    }
}
