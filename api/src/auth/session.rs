//! Login sessions: a 256-bit random token the client gets once, of which the server keeps only
//! the SHA-256, with a sliding idle timeout, an absolute lifetime and a per-user index.
//!
//! Two stores with the same behaviour: Redis (shared by every instance) and an in-process map
//! for the embedded default. Redis failures surface as [`StoreError::Unavailable`] so callers
//! fail closed; the connection manager reconnects by itself once Redis is back.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::redis_store::RedisHandle;

/// What the server remembers about a session. Holds no secret: the token itself is never stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    /// Fingerprint of the client certificate the session was opened with; a request must
    /// present the same certificate for the token to count.
    pub cert_fingerprint: String,
    pub created_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub absolute_expires_at: DateTime<Utc>,
    /// Opened by federated login (the identity provider stood in for the password), so the
    /// Renkei password's "change it first" rule does not hold this session up.
    pub federated: bool,
}

/// A session just opened: the only moment the token exists on the server side.
pub struct NewSession {
    /// base64url without padding of 32 random bytes (43 characters); goes to the client only.
    pub token: SecretString,
    /// Hex SHA-256 of `token`: the session's identifier in the store and in audit logs.
    pub token_hash: String,
    pub record: SessionRecord,
}

// By hand so that no future change to `SecretString` or a careless `{:?}` can print the token.
impl fmt::Debug for NewSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSession")
            .field("token", &"[redacted]")
            .field("token_hash", &self.token_hash)
            .field("record", &self.record)
            .finish()
    }
}

/// Hex SHA-256 of a presented token: how a token is looked up without being stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session not touched for this long ends (sliding).
    pub idle: Duration,
    /// A session ends this long after login whatever its activity.
    pub absolute: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing store could not answer (Redis down, timed out, or returned garbage). Callers
    /// treat this as "no session": fail closed, answer `UNAVAILABLE`, log the source.
    #[error("session store unavailable")]
    Unavailable(#[source] anyhow::Error),
}

#[derive(Clone)]
pub struct SessionStore {
    limits: SessionLimits,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Memory(Arc<Mutex<MemoryState>>),
    Redis(RedisHandle),
}

impl fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        };
        f.debug_struct("SessionStore")
            .field("backend", &backend)
            .field("limits", &self.limits)
            .finish()
    }
}

impl SessionStore {
    /// The in-process store of the embedded default (one instance only).
    pub fn memory(limits: SessionLimits) -> Self {
        SessionStore {
            limits,
            backend: Backend::Memory(Arc::default()),
        }
    }

    pub fn redis(handle: RedisHandle, limits: SessionLimits) -> Self {
        SessionStore {
            limits,
            backend: Backend::Redis(handle),
        }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Keeps `value` under `key` for `ttl`, to be taken once with [`SessionStore::take_once`]
    /// (a pending federated login: started on one instance, finished on any).
    pub async fn put_once(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Memory(state) => {
                let now = now();
                let mut state = lock(state);
                state.once.retain(|_, (_, expires)| *expires > now);
                state
                    .once
                    .insert(key.to_owned(), (value.to_owned(), add(now, ttl)));
                Ok(())
            }
            Backend::Redis(handle) => {
                let mut conn = handle.connection();
                redis::cmd("SET")
                    .arg(handle.key(&format!("once:{key}")))
                    .arg(value)
                    .arg("PX")
                    .arg(millis(ttl))
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(unavailable("redis: put once"))
            }
        }
    }

    /// The value under `key`, removed: a second take of the same key finds nothing.
    pub async fn take_once(&self, key: &str) -> Result<Option<String>, StoreError> {
        match &self.backend {
            Backend::Memory(state) => {
                let now = now();
                Ok(lock(state)
                    .once
                    .remove(key)
                    .filter(|(_, expires)| *expires > now)
                    .map(|(value, _)| value))
            }
            Backend::Redis(handle) => {
                let mut conn = handle.connection();
                redis::cmd("GETDEL")
                    .arg(handle.key(&format!("once:{key}")))
                    .query_async::<Option<String>>(&mut conn)
                    .await
                    .map_err(unavailable("redis: take once"))
            }
        }
    }

    /// Opens a session with a fresh random token.
    pub async fn create(
        &self,
        user_id: Uuid,
        tenant_id: Uuid,
        cert_fingerprint: &str,
    ) -> Result<NewSession, StoreError> {
        self.create_with(user_id, tenant_id, cert_fingerprint, false)
            .await
    }

    /// [`SessionStore::create`], saying whether a federated login opened it.
    pub async fn create_with(
        &self,
        user_id: Uuid,
        tenant_id: Uuid,
        cert_fingerprint: &str,
        federated: bool,
    ) -> Result<NewSession, StoreError> {
        let token = new_token();
        let hash = token_hash(&token);
        let now = now();
        let record = SessionRecord {
            user_id,
            tenant_id,
            cert_fingerprint: cert_fingerprint.to_owned(),
            created_at: now,
            last_seen: now,
            absolute_expires_at: add(now, self.limits.absolute),
            federated,
        };
        match &self.backend {
            Backend::Memory(state) => {
                let mut state = lock(state);
                state.creates_since_sweep += 1;
                // The embedded store has no expiry of its own; sweeping now and then on create
                // keeps abandoned sessions from piling up even if nobody calls `sweep`.
                if state.creates_since_sweep >= SWEEP_EVERY {
                    state.sweep(self.limits.idle, now);
                }
                state.insert(hash.clone(), record.clone());
            }
            Backend::Redis(handle) => redis_create(handle, self.limits, &hash, &record).await?,
        }
        Ok(NewSession {
            token: SecretString::from(token),
            token_hash: hash,
            record,
        })
    }

    /// The live session for this hash, its idle timer slid forward (last_seen = now). None when
    /// unknown, idle-expired or past its absolute expiry (then it is also deleted).
    pub async fn touch(&self, token_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let now = now();
        match &self.backend {
            Backend::Memory(state) => {
                let mut state = lock(state);
                let live = match state.sessions.get_mut(token_hash) {
                    None => return Ok(None),
                    Some(record) if is_live(record, self.limits.idle, now) => {
                        record.last_seen = now;
                        Some(record.clone())
                    }
                    Some(_) => None,
                };
                if live.is_none() {
                    state.remove(token_hash);
                }
                Ok(live)
            }
            Backend::Redis(handle) => redis_touch(handle, self.limits, token_hash, now).await,
        }
    }

    /// Ends one session (logout); returns what was ended, None when nothing live was there.
    pub async fn revoke(&self, token_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let now = now();
        let ended = match &self.backend {
            Backend::Memory(state) => lock(state).remove(token_hash),
            Backend::Redis(handle) => redis_revoke(handle, token_hash).await?,
        };
        Ok(ended.filter(|r| is_live(r, self.limits.idle, now)))
    }

    /// Ends every session of the user; returns the ended hashes (for the audit log).
    pub async fn revoke_user(&self, user_id: Uuid) -> Result<Vec<String>, StoreError> {
        self.revoke_user_where(user_id, None).await
    }

    /// Ends the user's sessions bound to one certificate (certificate revoked).
    pub async fn revoke_user_certificate(
        &self,
        user_id: Uuid,
        cert_fingerprint: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.revoke_user_where(user_id, Some(cert_fingerprint))
            .await
    }

    async fn revoke_user_where(
        &self,
        user_id: Uuid,
        cert_fingerprint: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let now = now();
        match &self.backend {
            Backend::Memory(state) => {
                let mut state = lock(state);
                let hashes: Vec<String> = state
                    .by_user
                    .get(&user_id)
                    .map(|set| set.iter().cloned().collect())
                    .unwrap_or_default();
                let mut ended = Vec::new();
                for hash in hashes {
                    let Some(record) = state.sessions.get(&hash) else {
                        continue;
                    };
                    if cert_fingerprint.is_some_and(|fp| record.cert_fingerprint != fp) {
                        continue;
                    }
                    let live = is_live(record, self.limits.idle, now);
                    state.remove(&hash);
                    if live {
                        ended.push(hash);
                    }
                }
                ended.sort();
                Ok(ended)
            }
            Backend::Redis(handle) => redis_revoke_user(handle, user_id, cert_fingerprint).await,
        }
    }

    /// The user's live sessions, oldest first, without sliding their idle timers.
    pub async fn list_user(
        &self,
        user_id: Uuid,
    ) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        let now = now();
        let mut sessions = match &self.backend {
            Backend::Memory(state) => {
                let mut state = lock(state);
                let hashes: Vec<String> = state
                    .by_user
                    .get(&user_id)
                    .map(|set| set.iter().cloned().collect())
                    .unwrap_or_default();
                let mut live = Vec::new();
                for hash in hashes {
                    match state.sessions.get(&hash) {
                        Some(r) if is_live(r, self.limits.idle, now) => {
                            live.push((hash, r.clone()));
                        }
                        _ => {
                            state.remove(&hash);
                        }
                    }
                }
                live
            }
            Backend::Redis(handle) => redis_list_user(handle, user_id).await?,
        };
        sessions.retain(|(_, r)| is_live(r, self.limits.idle, now));
        sessions.sort_by(|a, b| (a.1.created_at, &a.0).cmp(&(b.1.created_at, &b.0)));
        Ok(sessions)
    }

    /// Which of these sessions are still live, without sliding their idle timers (for the
    /// audit sweep that records expiries).
    pub async fn alive(&self, token_hashes: &[String]) -> Result<Vec<bool>, StoreError> {
        let now = now();
        match &self.backend {
            Backend::Memory(state) => {
                let state = lock(state);
                Ok(token_hashes
                    .iter()
                    .map(|h| {
                        state
                            .sessions
                            .get(h)
                            .is_some_and(|r| is_live(r, self.limits.idle, now))
                    })
                    .collect())
            }
            Backend::Redis(handle) => {
                if token_hashes.is_empty() {
                    return Ok(Vec::new());
                }
                // Keys expire with the session (their TTL is the nearer of both timeouts).
                let mut pipe = redis::pipe();
                for hash in token_hashes {
                    pipe.cmd("EXISTS").arg(session_key(handle, hash));
                }
                let mut conn = handle.connection();
                let found: Vec<i64> = pipe
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable("redis: check sessions"))?;
                Ok(found.into_iter().map(|n| n > 0).collect())
            }
        }
    }

    /// Drops expired sessions from the in-process store and returns how many went. Redis
    /// expires its keys by itself, so there this does nothing and returns 0.
    pub fn sweep(&self) -> usize {
        match &self.backend {
            Backend::Memory(state) => lock(state).sweep(self.limits.idle, now()),
            Backend::Redis(_) => 0,
        }
    }
}

/// How many creates between two automatic sweeps of the in-process store.
const SWEEP_EVERY: u32 = 256;

fn new_token() -> String {
    // `rand::random` draws from the thread-local CSPRNG (ChaCha, seeded from the OS).
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Now, to the millisecond: Redis keeps milliseconds, and both stores must return equal records.
fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

/// A duration in whole milliseconds, at least 1: a zero TTL would delete the key at once.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::try_milliseconds(millis(d))
        .and_then(|delta| t.checked_add_signed(delta))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn is_live(record: &SessionRecord, idle: Duration, now: DateTime<Utc>) -> bool {
    now < record.absolute_expires_at && now < add(record.last_seen, idle)
}

// ---------------------------------------------------------------------------------------------
// In-process store

#[derive(Default)]
struct MemoryState {
    sessions: HashMap<String, SessionRecord>,
    by_user: HashMap<Uuid, HashSet<String>>,
    creates_since_sweep: u32,
    /// One-time values (pending federated logins) with their expiry.
    once: HashMap<String, (String, DateTime<Utc>)>,
}

/// The lock is never held across an await and no code under it panics halfway through an
/// update, so a poisoned mutex still guards consistent maps: keep serving instead of failing.
fn lock(state: &Mutex<MemoryState>) -> MutexGuard<'_, MemoryState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryState {
    fn insert(&mut self, hash: String, record: SessionRecord) {
        self.by_user
            .entry(record.user_id)
            .or_default()
            .insert(hash.clone());
        self.sessions.insert(hash, record);
    }

    fn remove(&mut self, hash: &str) -> Option<SessionRecord> {
        let record = self.sessions.remove(hash)?;
        if let Some(set) = self.by_user.get_mut(&record.user_id) {
            set.remove(hash);
            if set.is_empty() {
                self.by_user.remove(&record.user_id);
            }
        }
        Some(record)
    }

    fn sweep(&mut self, idle: Duration, now: DateTime<Utc>) -> usize {
        self.creates_since_sweep = 0;
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, r)| !is_live(r, idle, now))
            .map(|(h, _)| h.clone())
            .collect();
        for hash in &expired {
            self.remove(hash);
        }
        expired.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Redis store
//
// `session:<hash>`        hash of FIELDS, TTL = min(idle, time left to the absolute expiry)
// `user-sessions:<user>`  set of hashes, TTL >= the absolute limit (so it outlives its members);
//                         members whose session is gone are removed lazily.

/// The hash fields of `session:<hash>`, in the order scripts and HMGET return them. Times are
/// milliseconds since the epoch so the touch script can compare them.
const FIELDS: [&str; 7] = [
    "user_id",
    "tenant_id",
    "cert_fingerprint",
    "created_at",
    "last_seen",
    "absolute_expires_at",
    "federated",
];

/// Atomically: refuse a missing, idle-expired or absolutely-expired session (deleting it), else
/// set last_seen and slide the TTL, capped by the absolute expiry. A check-then-write from Rust
/// could race a concurrent revoke and resurrect the key's TTL on a half-deleted session.
const TOUCH_LUA: &str = r"
local f = redis.call('HMGET', KEYS[1], 'user_id', 'tenant_id', 'cert_fingerprint', 'created_at', 'last_seen', 'absolute_expires_at', 'federated')
if not f[1] then return false end
local now = tonumber(ARGV[1])
local idle = tonumber(ARGV[2])
local last = tonumber(f[5])
local abs = tonumber(f[6])
if not last or not abs then return f end
if abs <= now or last + idle <= now then
  redis.call('DEL', KEYS[1])
  return false
end
redis.call('HSET', KEYS[1], 'last_seen', ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.min(idle, abs - now))
f[5] = ARGV[1]
return f
";

static TOUCH: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(TOUCH_LUA));

fn session_key(handle: &RedisHandle, hash: &str) -> String {
    handle.key(&format!("session:{hash}"))
}

fn user_key(handle: &RedisHandle, user_id: Uuid) -> String {
    handle.key(&format!("user-sessions:{user_id}"))
}

fn unavailable(what: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |e| StoreError::Unavailable(anyhow::Error::new(e).context(what))
}

fn malformed(field: &str) -> StoreError {
    StoreError::Unavailable(anyhow::anyhow!(
        "malformed session record in redis (field {field})"
    ))
}

/// A record from the FIELDS values; None when the key does not exist (every value missing).
fn parse_record(values: Vec<Option<String>>) -> Result<Option<SessionRecord>, StoreError> {
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut values = values.into_iter();
    let mut next = |field: &'static str| values.next().flatten().ok_or_else(|| malformed(field));
    let uuid = |field: &'static str, v: String| Uuid::parse_str(&v).map_err(|_| malformed(field));
    let time = |field: &'static str, v: String| {
        v.parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .ok_or_else(|| malformed(field))
    };
    Ok(Some(SessionRecord {
        user_id: uuid("user_id", next("user_id")?)?,
        tenant_id: uuid("tenant_id", next("tenant_id")?)?,
        cert_fingerprint: next("cert_fingerprint")?,
        created_at: time("created_at", next("created_at")?)?,
        last_seen: time("last_seen", next("last_seen")?)?,
        absolute_expires_at: time("absolute_expires_at", next("absolute_expires_at")?)?,
        // Absent in records written before the field existed: those were password logins.
        federated: values.next().flatten().as_deref() == Some("1"),
    }))
}

async fn redis_create(
    handle: &RedisHandle,
    limits: SessionLimits,
    hash: &str,
    record: &SessionRecord,
) -> Result<(), StoreError> {
    let key = session_key(handle, hash);
    let index = user_key(handle, record.user_id);
    let absolute = millis(limits.absolute);
    let values = [
        record.user_id.to_string(),
        record.tenant_id.to_string(),
        record.cert_fingerprint.clone(),
        record.created_at.timestamp_millis().to_string(),
        record.last_seen.timestamp_millis().to_string(),
        record.absolute_expires_at.timestamp_millis().to_string(),
        if record.federated { "1" } else { "0" }.to_owned(),
    ];
    let mut hset = redis::cmd("HSET");
    hset.arg(&key);
    for (field, value) in FIELDS.iter().zip(&values) {
        hset.arg(field).arg(value);
    }
    let mut conn = handle.connection();
    // One transaction: a session is never visible without its TTL or missing from the index.
    // The index TTL is set when it has none (NX) and otherwise only lengthened (GT), so a
    // shorter limit after a configuration change cannot expire it under older sessions.
    redis::pipe()
        .atomic()
        .add_command(hset)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(millis(limits.idle).min(absolute))
        .ignore()
        .cmd("SADD")
        .arg(&index)
        .arg(hash)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&index)
        .arg(absolute)
        .arg("NX")
        .ignore()
        .cmd("PEXPIRE")
        .arg(&index)
        .arg(absolute)
        .arg("GT")
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .map_err(unavailable("redis: create session"))
}

async fn redis_touch(
    handle: &RedisHandle,
    limits: SessionLimits,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<SessionRecord>, StoreError> {
    let mut conn = handle.connection();
    let values: Option<Vec<Option<String>>> = TOUCH
        .key(session_key(handle, hash))
        .arg(now.timestamp_millis())
        .arg(millis(limits.idle))
        .invoke_async(&mut conn)
        .await
        .map_err(unavailable("redis: touch session"))?;
    match values {
        Some(values) => parse_record(values),
        None => Ok(None),
    }
}

async fn redis_revoke(
    handle: &RedisHandle,
    hash: &str,
) -> Result<Option<SessionRecord>, StoreError> {
    let key = session_key(handle, hash);
    let mut conn = handle.connection();
    let (values,): (Vec<Option<String>>,) = redis::pipe()
        .atomic()
        .cmd("HMGET")
        .arg(&key)
        .arg(&FIELDS[..])
        .cmd("DEL")
        .arg(&key)
        .ignore()
        .query_async(&mut conn)
        .await
        .map_err(unavailable("redis: revoke session"))?;
    let Some(record) = parse_record(values)? else {
        return Ok(None);
    };
    redis::cmd("SREM")
        .arg(user_key(handle, record.user_id))
        .arg(hash)
        .exec_async(&mut conn)
        .await
        .map_err(unavailable("redis: unindex session"))?;
    Ok(Some(record))
}

async fn redis_members(handle: &RedisHandle, user_id: Uuid) -> Result<Vec<String>, StoreError> {
    let mut conn = handle.connection();
    let mut members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(user_key(handle, user_id))
        .query_async(&mut conn)
        .await
        .map_err(unavailable("redis: list user sessions"))?;
    members.sort();
    Ok(members)
}

async fn redis_unindex(
    handle: &RedisHandle,
    user_id: Uuid,
    hashes: &[String],
) -> Result<(), StoreError> {
    if hashes.is_empty() {
        return Ok(());
    }
    let mut conn = handle.connection();
    redis::cmd("SREM")
        .arg(user_key(handle, user_id))
        .arg(hashes)
        .exec_async(&mut conn)
        .await
        .map_err(unavailable("redis: unindex sessions"))
}

async fn redis_revoke_user(
    handle: &RedisHandle,
    user_id: Uuid,
    cert_fingerprint: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    let members = redis_members(handle, user_id).await?;
    if members.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = handle.connection();
    let (targets, stale) = match cert_fingerprint {
        None => (members, Vec::new()),
        Some(fingerprint) => {
            let mut pipe = redis::pipe();
            for hash in &members {
                pipe.cmd("HGET")
                    .arg(session_key(handle, hash))
                    .arg("cert_fingerprint");
            }
            let bound: Vec<Option<String>> = pipe
                .query_async(&mut conn)
                .await
                .map_err(unavailable("redis: read session certificates"))?;
            let mut targets = Vec::new();
            let mut stale = Vec::new();
            for (hash, fp) in members.into_iter().zip(bound) {
                match fp {
                    None => stale.push(hash),
                    Some(fp) if fp == fingerprint => targets.push(hash),
                    Some(_) => {}
                }
            }
            (targets, stale)
        }
    };
    if targets.is_empty() {
        redis_unindex(handle, user_id, &stale).await?;
        return Ok(Vec::new());
    }
    // Remove exactly the members read above rather than the whole set: a session created
    // meanwhile must stay indexed, or a later logout-everywhere would miss it.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for hash in &targets {
        pipe.cmd("DEL").arg(session_key(handle, hash));
    }
    pipe.cmd("SREM")
        .arg(user_key(handle, user_id))
        .arg(&targets)
        .arg(&stale)
        .ignore();
    let deleted: Vec<i64> = pipe
        .query_async(&mut conn)
        .await
        .map_err(unavailable("redis: revoke user sessions"))?;
    // Only sessions that still existed were ended; the others had already expired.
    Ok(targets
        .into_iter()
        .zip(deleted)
        .filter(|(_, n)| *n > 0)
        .map(|(hash, _)| hash)
        .collect())
}

async fn redis_list_user(
    handle: &RedisHandle,
    user_id: Uuid,
) -> Result<Vec<(String, SessionRecord)>, StoreError> {
    let members = redis_members(handle, user_id).await?;
    if members.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for hash in &members {
        pipe.cmd("HMGET")
            .arg(session_key(handle, hash))
            .arg(&FIELDS[..]);
    }
    let mut conn = handle.connection();
    let rows: Vec<Vec<Option<String>>> = pipe
        .query_async(&mut conn)
        .await
        .map_err(unavailable("redis: read user sessions"))?;
    let mut live = Vec::new();
    let mut stale = Vec::new();
    for (hash, values) in members.into_iter().zip(rows) {
        match parse_record(values)? {
            Some(record) => live.push((hash, record)),
            None => stale.push(hash),
        }
    }
    redis_unindex(handle, user_id, &stale).await?;
    Ok(live)
}

// ---------------------------------------------------------------------------------------------
// Test support shared with the rate limiter's tests: a private Redis key space per test and a
// TCP proxy that can cut Redis off and bring it back.

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod test_support {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::watch;
    use uuid::Uuid;

    use crate::config::Config;
    use crate::redis_store::RedisHandle;

    pub(crate) const REDIS_URL: &str = "redis://127.0.0.1:6379";
    const REDIS_ADDR: &str = "127.0.0.1:6379";

    /// A Redis handle under a key prefix of its own; the prefix's keys are deleted on drop,
    /// even when the test failed.
    pub(crate) struct TestRedis {
        pub(crate) prefix: String,
        pub(crate) handle: RedisHandle,
    }

    impl TestRedis {
        pub(crate) async fn new() -> Self {
            Self::via(REDIS_URL).await
        }

        /// Connects the handle through `url` (a proxy); inspection and clean-up go direct.
        pub(crate) async fn via(url: &str) -> Self {
            let prefix = format!("renkei-test:{}:", Uuid::new_v4());
            let env = [
                ("RENKEI_REDIS_URL", url),
                ("RENKEI_REDIS_PREFIX", prefix.as_str()),
                ("RENKEI_REDIS_TIMEOUT_SECONDS", "1"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()));
            let config = Config::from_sources(None, env).expect("test config");
            let handle = RedisHandle::connect(&config)
                .await
                .expect("redis reachable")
                .expect("redis configured");
            TestRedis { prefix, handle }
        }

        pub(crate) async fn direct(&self) -> redis::aio::MultiplexedConnection {
            redis::Client::open(REDIS_URL)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap()
        }

        /// Every key under this test's prefix.
        pub(crate) async fn keys(&self) -> Vec<String> {
            let mut conn = self.direct().await;
            let mut keys = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{}*", self.prefix))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            keys.sort();
            keys
        }
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            // Synchronous on purpose: Drop cannot await, and a failed test must clean up too.
            let Ok(mut conn) = redis::Client::open(REDIS_URL).and_then(|c| c.get_connection())
            else {
                return;
            };
            let mut cursor: u64 = 0;
            loop {
                let Ok((next, batch)) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{}*", self.prefix))
                    .arg("COUNT")
                    .arg(1000)
                    .query::<(u64, Vec<String>)>(&mut conn)
                else {
                    return;
                };
                if !batch.is_empty() {
                    let _ = redis::cmd("DEL").arg(&batch).exec(&mut conn);
                }
                if next == 0 {
                    return;
                }
                cursor = next;
            }
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Mode {
        /// Pass bytes to and from Redis.
        Forward,
        /// Redis is down: open connections are closed, new ones closed at once.
        Refuse,
        /// The network swallows everything: connections stay open but nothing comes back.
        Blackhole,
    }

    /// A TCP proxy in front of the test Redis. Every mode change closes the connections opened
    /// before it, so clients see the outage (or, after a blackhole, the dead socket).
    pub(crate) struct Proxy {
        addr: SocketAddr,
        mode: watch::Sender<Mode>,
    }

    impl Proxy {
        pub(crate) async fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (mode, rx) = watch::channel(Mode::Forward);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(serve(client, rx.clone()));
                }
            });
            Proxy { addr, mode }
        }

        pub(crate) fn url(&self) -> String {
            format!("redis://{}", self.addr)
        }

        pub(crate) async fn set(&self, mode: Mode) {
            self.mode.send_replace(mode);
            // Let the connection tasks see the change before the test sends anything.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn serve(mut client: TcpStream, mut mode: watch::Receiver<Mode>) {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Refuse => {}
            Mode::Blackhole => {
                let _ = mode.changed().await;
            }
            Mode::Forward => {
                let Ok(mut upstream) = TcpStream::connect(REDIS_ADDR).await else {
                    return;
                };
                tokio::select! {
                    biased;
                    _ = mode.changed() => {
                        drop(upstream);
                        let now = *mode.borrow_and_update();
                        if now == Mode::Blackhole {
                            let _ = mode.changed().await;
                        }
                    }
                    _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                }
            }
        }
    }

    /// Retries `op` until it succeeds: a reconnecting client may fail a call or two after
    /// Redis is back.
    pub(crate) async fn eventually<T, E: std::fmt::Debug, F, Fut>(mut op: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match op().await {
                Ok(v) => return v,
                Err(e) if Instant::now() > deadline => panic!("still failing: {e:?}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use secrecy::ExposeSecret;
    use sha2::{Digest, Sha256};
    use uuid::Uuid;

    use super::test_support::{Mode, Proxy, TestRedis, eventually};
    use super::*;

    /// Builds stores of one backend; every scenario below runs once per backend.
    struct Fixture {
        redis: Option<TestRedis>,
    }

    impl Fixture {
        fn memory() -> Self {
            Fixture { redis: None }
        }

        async fn redis() -> Self {
            Fixture {
                redis: Some(TestRedis::new().await),
            }
        }

        fn store(&self, idle: Duration, absolute: Duration) -> SessionStore {
            let limits = SessionLimits { idle, absolute };
            match &self.redis {
                None => SessionStore::memory(limits),
                Some(r) => SessionStore::redis(r.handle.clone(), limits),
            }
        }

        fn default_store(&self) -> SessionStore {
            self.store(Duration::from_secs(60), Duration::from_secs(600))
        }
    }

    /// `scenario` becomes the tests `scenario::memory` and `scenario::redis`.
    macro_rules! on_both_stores {
        ($($scenario:ident),* $(,)?) => {$(
            mod $scenario {
                #[tokio::test]
                async fn memory() {
                    super::$scenario(&super::Fixture::memory()).await;
                }

                #[tokio::test]
                async fn redis() {
                    super::$scenario(&super::Fixture::redis().await).await;
                }
            }
        )*};
    }

    on_both_stores!(
        create_then_touch_returns_the_session,
        unknown_hash_is_no_session,
        idle_timeout_ends_an_untouched_session,
        touching_slides_the_idle_timeout,
        absolute_expiry_ends_even_an_active_session,
        revoke_ends_exactly_one_session,
        revoke_user_ends_every_session_of_that_user_only,
        revoke_user_certificate_ends_only_sessions_bound_to_it,
        token_is_256_bits_base64url_and_hash_is_its_sha256,
        list_user_leaves_out_ended_sessions,
        sweep_forgets_expired_sessions,
        a_value_put_once_is_taken_once_and_expires,
        a_federated_session_is_remembered_as_such,
    );

    async fn a_federated_session_is_remembered_as_such(fx: &Fixture) {
        let store = fx.default_store();
        let user = Uuid::new_v4();
        let federated = store.create_with(user, user, CERT_A, true).await.unwrap();
        let password = store.create(user, user, CERT_A).await.unwrap();
        let touched = store.touch(&federated.token_hash).await.unwrap().unwrap();
        assert!(touched.federated, "federated after a round trip");
        let touched = store.touch(&password.token_hash).await.unwrap().unwrap();
        assert!(!touched.federated, "a password login is not federated");
        let listed = store.list_user(user).await.unwrap();
        assert_eq!(listed.iter().filter(|(_, r)| r.federated).count(), 1);
        let ended = store.revoke(&federated.token_hash).await.unwrap().unwrap();
        assert!(ended.federated);
    }

    async fn a_value_put_once_is_taken_once_and_expires(fx: &Fixture) {
        let store = fx.default_store();
        let key = format!("flow-{}", Uuid::new_v4());
        store
            .put_once(&key, "pending", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            store.take_once(&key).await.unwrap().as_deref(),
            Some("pending")
        );
        assert_eq!(store.take_once(&key).await.unwrap(), None, "taken twice");
        let short = format!("flow-{}", Uuid::new_v4());
        store
            .put_once(&short, "pending", Duration::from_millis(50))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(store.take_once(&short).await.unwrap(), None, "expired");
    }

    const CERT_A: &str = "aa11";
    const CERT_B: &str = "bb22";

    async fn create_then_touch_returns_the_session(fx: &Fixture) {
        let store = fx.default_store();
        let (user, tenant) = (Uuid::new_v4(), Uuid::new_v4());
        let new = store.create(user, tenant, CERT_A).await.unwrap();
        assert_eq!(new.record.user_id, user);
        assert_eq!(new.record.tenant_id, tenant);
        assert_eq!(new.record.cert_fingerprint, CERT_A);
        assert_eq!(new.record.created_at, new.record.last_seen);
        assert_eq!(
            new.record.absolute_expires_at - new.record.created_at,
            TimeDelta::seconds(600)
        );

        tokio::time::sleep(Duration::from_millis(20)).await;
        let touched = store.touch(&new.token_hash).await.unwrap().unwrap();
        assert_eq!(touched.user_id, user);
        assert_eq!(touched.tenant_id, tenant);
        assert_eq!(touched.cert_fingerprint, CERT_A);
        assert_eq!(touched.created_at, new.record.created_at);
        assert_eq!(touched.absolute_expires_at, new.record.absolute_expires_at);
        assert!(touched.last_seen > new.record.last_seen);

        let listed = store.list_user(user).await.unwrap();
        assert_eq!(listed, vec![(new.token_hash.clone(), touched)]);
        assert_eq!(store.limits().idle, Duration::from_secs(60));
        assert_eq!(store.limits().absolute, Duration::from_secs(600));
    }

    async fn unknown_hash_is_no_session(fx: &Fixture) {
        let store = fx.default_store();
        store
            .create(Uuid::new_v4(), Uuid::new_v4(), CERT_A)
            .await
            .unwrap();
        let unknown = token_hash("not-a-token");
        assert_eq!(store.touch(&unknown).await.unwrap(), None);
        assert_eq!(store.revoke(&unknown).await.unwrap(), None);
        assert!(store.revoke_user(Uuid::new_v4()).await.unwrap().is_empty());
        assert!(store.list_user(Uuid::new_v4()).await.unwrap().is_empty());
    }

    async fn idle_timeout_ends_an_untouched_session(fx: &Fixture) {
        let store = fx.store(Duration::from_secs(1), Duration::from_secs(60));
        let user = Uuid::new_v4();
        let new = store.create(user, Uuid::new_v4(), CERT_A).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(store.touch(&new.token_hash).await.unwrap(), None);
        assert!(store.list_user(user).await.unwrap().is_empty());
        assert_eq!(store.revoke(&new.token_hash).await.unwrap(), None);
    }

    async fn touching_slides_the_idle_timeout(fx: &Fixture) {
        let store = fx.store(Duration::from_secs(1), Duration::from_secs(60));
        let new = store
            .create(Uuid::new_v4(), Uuid::new_v4(), CERT_A)
            .await
            .unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(2200) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(
                store.touch(&new.token_hash).await.unwrap().is_some(),
                "ended after {:?} despite touches",
                started.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(store.touch(&new.token_hash).await.unwrap(), None);
    }

    async fn absolute_expiry_ends_even_an_active_session(fx: &Fixture) {
        let store = fx.store(Duration::from_secs(10), Duration::from_secs(2));
        let user = Uuid::new_v4();
        let new = store.create(user, Uuid::new_v4(), CERT_A).await.unwrap();
        let started = Instant::now();
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(store.touch(&new.token_hash).await.unwrap().is_some());
        }
        assert!(started.elapsed() < Duration::from_millis(1900));
        tokio::time::sleep(Duration::from_millis(2300).saturating_sub(started.elapsed())).await;
        assert_eq!(store.touch(&new.token_hash).await.unwrap(), None);
        assert!(store.list_user(user).await.unwrap().is_empty());
        assert!(store.revoke_user(user).await.unwrap().is_empty());
    }

    async fn revoke_ends_exactly_one_session(fx: &Fixture) {
        let store = fx.default_store();
        let user = Uuid::new_v4();
        let first = store.create(user, Uuid::new_v4(), CERT_A).await.unwrap();
        let second = store.create(user, Uuid::new_v4(), CERT_A).await.unwrap();

        let ended = store.revoke(&first.token_hash).await.unwrap().unwrap();
        assert_eq!(ended, first.record);
        assert_eq!(store.touch(&first.token_hash).await.unwrap(), None);
        assert_eq!(store.revoke(&first.token_hash).await.unwrap(), None);
        assert!(store.touch(&second.token_hash).await.unwrap().is_some());
        let listed: Vec<String> = store
            .list_user(user)
            .await
            .unwrap()
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        assert_eq!(listed, vec![second.token_hash]);
    }

    async fn revoke_user_ends_every_session_of_that_user_only(fx: &Fixture) {
        let store = fx.default_store();
        let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
        let mut mine = Vec::new();
        for cert in [CERT_A, CERT_A, CERT_B] {
            mine.push(store.create(user, Uuid::new_v4(), cert).await.unwrap());
        }
        let theirs = store.create(other, Uuid::new_v4(), CERT_A).await.unwrap();

        let ended: HashSet<String> = store.revoke_user(user).await.unwrap().into_iter().collect();
        let expected: HashSet<String> = mine.iter().map(|s| s.token_hash.clone()).collect();
        assert_eq!(ended, expected);
        for s in &mine {
            assert_eq!(store.touch(&s.token_hash).await.unwrap(), None);
        }
        assert!(store.list_user(user).await.unwrap().is_empty());
        assert!(store.revoke_user(user).await.unwrap().is_empty());
        assert!(store.touch(&theirs.token_hash).await.unwrap().is_some());

        // The user can log in again afterwards.
        let again = store.create(user, Uuid::new_v4(), CERT_A).await.unwrap();
        assert!(store.touch(&again.token_hash).await.unwrap().is_some());
    }

    async fn revoke_user_certificate_ends_only_sessions_bound_to_it(fx: &Fixture) {
        let store = fx.default_store();
        let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
        let a1 = store.create(user, Uuid::new_v4(), CERT_A).await.unwrap();
        let a2 = store.create(user, Uuid::new_v4(), CERT_A).await.unwrap();
        let b = store.create(user, Uuid::new_v4(), CERT_B).await.unwrap();
        let other_a = store.create(other, Uuid::new_v4(), CERT_A).await.unwrap();

        let mut ended = store.revoke_user_certificate(user, CERT_A).await.unwrap();
        ended.sort();
        let mut expected = vec![a1.token_hash.clone(), a2.token_hash.clone()];
        expected.sort();
        assert_eq!(ended, expected);
        assert_eq!(store.touch(&a1.token_hash).await.unwrap(), None);
        assert_eq!(store.touch(&a2.token_hash).await.unwrap(), None);
        assert!(store.touch(&b.token_hash).await.unwrap().is_some());
        assert!(store.touch(&other_a.token_hash).await.unwrap().is_some());
        let listed: Vec<String> = store
            .list_user(user)
            .await
            .unwrap()
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        assert_eq!(listed, vec![b.token_hash.clone()]);
        assert!(
            store
                .revoke_user_certificate(user, CERT_A)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .revoke_user_certificate(user, "unknown")
                .await
                .unwrap()
                .is_empty()
        );
    }

    async fn token_is_256_bits_base64url_and_hash_is_its_sha256(fx: &Fixture) {
        let store = fx.default_store();
        let mut tokens = HashSet::new();
        for _ in 0..20 {
            let new = store
                .create(Uuid::new_v4(), Uuid::new_v4(), CERT_A)
                .await
                .unwrap();
            let token = new.token.expose_secret().to_owned();
            assert_eq!(token.len(), 43);
            assert!(
                token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            );
            assert_eq!(URL_SAFE_NO_PAD.decode(&token).unwrap().len(), 32);
            let expected = hex::encode(Sha256::digest(token.as_bytes()));
            assert_eq!(new.token_hash, expected);
            assert_eq!(token_hash(&token), expected);
            assert_eq!(new.token_hash.len(), 64);
            let debug = format!("{new:?}");
            assert!(!debug.contains(&token), "token leaked into Debug: {debug}");
            assert!(debug.contains("[redacted]"));
            assert!(tokens.insert(token));
        }
    }

    async fn list_user_leaves_out_ended_sessions(fx: &Fixture) {
        let store = fx.store(Duration::from_secs(1), Duration::from_secs(60));
        let user = Uuid::new_v4();
        let old = store.create(user, Uuid::new_v4(), CERT_A).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        let young = store.create(user, Uuid::new_v4(), CERT_B).await.unwrap();
        let revoked = store.create(user, Uuid::new_v4(), CERT_B).await.unwrap();
        store.revoke(&revoked.token_hash).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;

        let listed = store.list_user(user).await.unwrap();
        assert_eq!(
            listed,
            vec![(young.token_hash.clone(), young.record.clone())]
        );
        // Listing does not slide the idle timer.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(store.list_user(user).await.unwrap().is_empty());
        assert_eq!(store.touch(&old.token_hash).await.unwrap(), None);

        if let Some(redis) = &fx.redis {
            // The index lost its stale members when they were noticed.
            let mut conn = redis.direct().await;
            let members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(format!("{}user-sessions:{user}", redis.prefix))
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(members.is_empty(), "stale index members: {members:?}");
        }
    }

    async fn sweep_forgets_expired_sessions(fx: &Fixture) {
        let store = fx.store(Duration::from_secs(1), Duration::from_secs(60));
        let user = Uuid::new_v4();
        store.create(user, Uuid::new_v4(), CERT_A).await.unwrap();
        store.create(user, Uuid::new_v4(), CERT_A).await.unwrap();
        assert_eq!(store.sweep(), 0);
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let live = store.create(user, Uuid::new_v4(), CERT_A).await.unwrap();
        match &fx.redis {
            // Redis expires keys by itself; there is nothing to sweep.
            Some(_) => assert_eq!(store.sweep(), 0),
            None => {
                assert_eq!(store.sweep(), 2);
                assert_eq!(store.sweep(), 0);
                let Backend::Memory(state) = &store.backend else {
                    unreachable!()
                };
                let state = lock(state);
                assert_eq!(state.sessions.len(), 1);
                assert_eq!(state.by_user[&user].len(), 1);
                assert!(state.by_user[&user].contains(&live.token_hash));
            }
        }
        assert!(store.touch(&live.token_hash).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn redis_keeps_only_the_hash_never_the_token() {
        let fx = Fixture::redis().await;
        let redis = fx.redis.as_ref().unwrap();
        let store = fx.store(Duration::from_secs(60), Duration::from_secs(600));
        let user = Uuid::new_v4();
        let mut sessions = Vec::new();
        for _ in 0..3 {
            sessions.push(store.create(user, Uuid::new_v4(), CERT_A).await.unwrap());
        }
        store.touch(&sessions[0].token_hash).await.unwrap().unwrap();

        let keys = redis.keys().await;
        let mut expected: Vec<String> = sessions
            .iter()
            .map(|s| format!("{}session:{}", redis.prefix, s.token_hash))
            .collect();
        expected.push(format!("{}user-sessions:{user}", redis.prefix));
        expected.sort();
        assert_eq!(keys, expected);

        let mut conn = redis.direct().await;
        let mut stored = Vec::new();
        for key in &keys {
            stored.push(key.clone());
            let kind: String = redis::cmd("TYPE")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let values: Vec<String> = match kind.as_str() {
                "hash" => redis::cmd("HGETALL")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .unwrap(),
                "set" => redis::cmd("SMEMBERS")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .unwrap(),
                other => panic!("unexpected key type {other} for {key}"),
            };
            stored.extend(values);
        }
        for s in &sessions {
            let token = s.token.expose_secret();
            assert!(
                stored.iter().all(|v| !v.contains(token)),
                "raw token stored in redis"
            );
            assert!(stored.iter().any(|v| v.contains(&s.token_hash)));
        }

        // TTLs: the session by the idle limit, the index by the absolute one.
        let session_ttl: i64 = redis::cmd("PTTL")
            .arg(format!(
                "{}session:{}",
                redis.prefix, sessions[0].token_hash
            ))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((55_000..=60_000).contains(&session_ttl), "{session_ttl}");
        let index_ttl: i64 = redis::cmd("PTTL")
            .arg(format!("{}user-sessions:{user}", redis.prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((595_000..=600_000).contains(&index_ttl), "{index_ttl}");
    }

    #[tokio::test]
    async fn redis_session_ttl_is_capped_by_the_absolute_expiry() {
        let fx = Fixture::redis().await;
        let redis = fx.redis.as_ref().unwrap();
        let store = fx.store(Duration::from_secs(60), Duration::from_secs(5));
        let new = store
            .create(Uuid::new_v4(), Uuid::new_v4(), CERT_A)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        store.touch(&new.token_hash).await.unwrap().unwrap();
        let mut conn = redis.direct().await;
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("{}session:{}", redis.prefix, new.token_hash))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((3_000..=4_100).contains(&ttl), "{ttl}");
    }

    #[tokio::test]
    async fn redis_malformed_record_fails_closed() {
        let fx = Fixture::redis().await;
        let redis = fx.redis.as_ref().unwrap();
        let store = fx.default_store();
        let mut conn = redis.direct().await;
        let hash = token_hash("forged");
        redis::cmd("HSET")
            .arg(format!("{}session:{hash}", redis.prefix))
            .arg("user_id")
            .arg("not-a-uuid")
            .exec_async(&mut conn)
            .await
            .unwrap();
        assert!(matches!(
            store.touch(&hash).await,
            Err(StoreError::Unavailable(_))
        ));
    }

    async fn assert_unavailable(store: &SessionStore, hash: &str, user: Uuid) {
        let started = Instant::now();
        assert!(matches!(
            store.touch(hash).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.create(user, Uuid::new_v4(), CERT_A).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.revoke(hash).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.revoke_user(user).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.revoke_user_certificate(user, CERT_A).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.list_user(user).await,
            Err(StoreError::Unavailable(_))
        ));
        // Fail fast: bounded by the 1 s Redis timeout per call, not hanging.
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "took {:?}",
            started.elapsed()
        );
    }

    async fn redis_outage_scenario(mode: Mode) {
        let proxy = Proxy::start().await;
        let redis = TestRedis::via(&proxy.url()).await;
        let store = SessionStore::redis(
            redis.handle.clone(),
            SessionLimits {
                idle: Duration::from_secs(60),
                absolute: Duration::from_secs(600),
            },
        );
        let user = Uuid::new_v4();
        let new = store.create(user, Uuid::new_v4(), CERT_A).await.unwrap();
        assert!(store.touch(&new.token_hash).await.unwrap().is_some());

        proxy.set(mode).await;
        assert_unavailable(&store, &new.token_hash, user).await;
        // Still down a while later (the client's reconnect attempts fail too).
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_unavailable(&store, &new.token_hash, user).await;
        let err = store.touch(&new.token_hash).await.unwrap_err();
        assert_eq!(err.to_string(), "session store unavailable");

        proxy.set(Mode::Forward).await;
        let record = eventually(|| store.touch(&new.token_hash)).await;
        assert_eq!(record.unwrap().user_id, user);
        let second = store.create(user, Uuid::new_v4(), CERT_A).await.unwrap();
        assert_eq!(store.list_user(user).await.unwrap().len(), 2);
        assert_eq!(store.revoke_user(user).await.unwrap().len(), 2);
        assert_eq!(store.touch(&second.token_hash).await.unwrap(), None);
    }

    #[tokio::test]
    async fn redis_down_fails_closed_and_recovers_without_restart() {
        redis_outage_scenario(Mode::Refuse).await;
    }

    #[tokio::test]
    async fn redis_silent_network_times_out_and_recovers_without_restart() {
        redis_outage_scenario(Mode::Blackhole).await;
    }

    #[test]
    fn futures_can_cross_threads() {
        // The server runs handlers on a multi-threaded runtime: no lock may be held across
        // an await, which would make these futures !Send.
        fn send<T: Send>(_: &T) {}
        let store = SessionStore::memory(SessionLimits {
            idle: Duration::from_secs(1),
            absolute: Duration::from_secs(2),
        });
        let user = Uuid::nil();
        send(&store.create(user, user, CERT_A));
        send(&store.touch("h"));
        send(&store.revoke("h"));
        send(&store.revoke_user(user));
        send(&store.revoke_user_certificate(user, CERT_A));
        send(&store.list_user(user));
    }

    #[test]
    fn debug_output_shows_no_token() {
        let new = NewSession {
            token: SecretString::from("super-secret-token".to_string()),
            token_hash: token_hash("super-secret-token"),
            record: SessionRecord {
                user_id: Uuid::nil(),
                tenant_id: Uuid::nil(),
                cert_fingerprint: CERT_A.into(),
                created_at: now(),
                last_seen: now(),
                absolute_expires_at: now(),
                federated: false,
            },
        };
        let debug = format!("{new:?}");
        assert!(!debug.contains("super-secret-token"));
        let store = SessionStore::memory(SessionLimits {
            idle: Duration::from_secs(1),
            absolute: Duration::from_secs(2),
        });
        assert!(format!("{store:?}").contains("memory"));
    }
}
