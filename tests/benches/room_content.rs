//! Room content under load (issue 7): reading the timeline, and live delivery of new notes.
//!
//! - **timeline**: one room with 200 notes by 10 members of 3 facilities, some members with
//!   read markers (既読); 32 concurrent clients, each a distinct logged-in member on its own TLS
//!   connection with its own certificate, read the newest 20 notes with authors, their
//!   facilities and `readBy` in a loop for `RENKEI_BENCH_SECONDS` after a warm-up. Reports
//!   requests/s, p50, p99, max and SQL statements per request.
//! - **delivery**: `RENKEI_BENCH_SUBSCRIBERS` members, each with its own certificate, session and
//!   WebSocket connection, subscribe to `roomEvents` of `RENKEI_BENCH_ROOMS` rooms (split evenly);
//!   on PostgreSQL (with Redis) they are spread evenly over two instances sharing the database
//!   and Redis, on SQLite there is one instance (events cross instances only through Redis). A
//!   poster posts `RENKEI_BENCH_POSTS` notes through instance 1, one every
//!   `RENKEI_BENCH_POST_INTERVAL_MS`, round robin over the rooms. Latency of a delivery = when the
//!   subscriber has the `NotePosted` message minus the instant just before that `postNote`
//!   request was sent. Every subscriber of a room must receive every note of that room exactly
//!   once (else the bench panics with the numbers).
//!
//! Errors (GraphQL errors, closed sockets, missing or duplicate deliveries) fail the bench;
//! timing is printed, never asserted. Each server instance runs on a Tokio runtime of its own
//! (threads `renkei-srv1`, `renkei-srv2`) and the benchmark's clients on another
//! (`bench-client`), as separate processes would; all share the machine, so the CPU use of each
//! during the measured phase is printed from `/proc` with the figures.
//!
//! Run: `cargo bench -p renkei-tests --bench room_content` (`RENKEI_TEST_DB=postgres` for
//! PostgreSQL and Redis). Knobs: `RENKEI_BENCH_PART=timeline|delivery|all` (default all),
//! `RENKEI_BENCH_SECONDS` (10), `RENKEI_BENCH_SUBSCRIBERS` (500), `RENKEI_BENCH_ROOMS` (1),
//! `RENKEI_BENCH_POSTS` (100), `RENKEI_BENCH_POST_INTERVAL_MS` (100); for diagnosis,
//! `RENKEI_BENCH_AUDIT_READS=false` runs the instances without auditing reads and deliveries
//! (`RENKEI_AUDIT_READ_EVENTS=false`, refused in production).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use uuid::Uuid;

use entity::kinds::Role;
use renkei_tests::stats::{ms, summarize};
use renkei_tests::ws::{self, Frame, Ws};
use renkei_tests::{Backend, Person, TestApp, TestClient, TestOptions, spawn_app_with};

const TIMELINE: &str = "query($r:ID!){ room(id:$r){ notes(first:20){ edges{ node{ id body createdAt author{ id displayName facility{ name } } readBy{ user{ id } readAt } } } } } }";
const ROOM_EVENTS: &str = "subscription($r:ID!){ roomEvents(roomId:$r){ __typename ... on NotePosted { note { id body createdAt author { id displayName } } } } }";
const POST_NOTE: &str = "mutation($i:PostNoteInput!){ postNote(input:$i){ id } }";
const MARK_READ: &str = "mutation($r:ID!,$n:ID!){ markRead(roomId:$r, upToNoteId:$n) }";
const OPEN_ROOM: &str = "mutation($p:PatientInput!,$c:ConsentInput!,$i:[ID!]!){ openRoom(patient:$p, consent:$c, inviteUserIds:$i){ id invitations { id invitee { id } } } }";
const INVITE: &str =
    "mutation($r:ID!,$u:[ID!]!){ inviteToRoom(roomId:$r, userIds:$u){ id invitee { id } } }";
const ACCEPT: &str = "mutation($id:ID!){ acceptInvitation(id:$id){ id } }";

/// The timeline room.
const TIMELINE_NOTES: usize = 200;
const TIMELINE_AUTHORS: usize = 10;
const TIMELINE_CLIENTS: usize = 32;
/// Members (not authors) who marked part or all of the timeline read.
const TIMELINE_READERS: usize = 12;
const TIMELINE_WARMUP: Duration = Duration::from_secs(1);

/// At most this many invitees per `openRoom` / `inviteToRoom` (the server's limit).
const INVITE_BATCH: usize = 200;
/// Set-up work in flight at once (user creation, invitations, WebSocket connections).
const SETUP_CONCURRENCY: usize = 8;

const WARMUP_PREFIX: &str = "bench warm-up ";
const NOTE_PREFIX: &str = "bench note ";
/// Attempts at a warm-up note every subscriber receives before the measured posts.
const WARMUP_ATTEMPTS: usize = 10;
const WARMUP_WAIT: Duration = Duration::from_secs(3);
/// How long after the last post the subscribers may still be receiving.
const DRAIN: Duration = Duration::from_secs(60);

/// USER_HZ of `/proc` tick counts (100 on every Linux ABI the bench runs on).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Clone, Copy, Debug)]
struct Settings {
    timeline: bool,
    delivery: bool,
    seconds: u64,
    subscribers: usize,
    rooms: usize,
    posts: usize,
    interval: Duration,
    /// `RENKEI_BENCH_AUDIT_READS=false`: the instances run with `RENKEI_AUDIT_READ_EVENTS=false`
    /// (refused in production), to see what auditing reads and deliveries costs.
    audit_reads: bool,
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: expected a whole number")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let part = std::env::var("RENKEI_BENCH_PART").unwrap_or_else(|_| "all".into());
        let (timeline, delivery) = match part.as_str() {
            "all" => (true, true),
            "timeline" => (true, false),
            "delivery" => (false, true),
            other => panic!("RENKEI_BENCH_PART={other}: expected timeline, delivery or all"),
        };
        let settings = Settings {
            timeline,
            delivery,
            seconds: env_number("RENKEI_BENCH_SECONDS", 10),
            subscribers: env_number("RENKEI_BENCH_SUBSCRIBERS", 500) as usize,
            rooms: env_number("RENKEI_BENCH_ROOMS", 1) as usize,
            posts: env_number("RENKEI_BENCH_POSTS", 100) as usize,
            interval: Duration::from_millis(env_number("RENKEI_BENCH_POST_INTERVAL_MS", 100)),
            audit_reads: match std::env::var("RENKEI_BENCH_AUDIT_READS").as_deref() {
                Ok("false") => false,
                Ok("true") | Err(_) => true,
                Ok(other) => panic!("RENKEI_BENCH_AUDIT_READS={other}: expected true or false"),
            },
        };
        assert!(
            settings.seconds > 0,
            "RENKEI_BENCH_SECONDS must be positive"
        );
        assert!(settings.rooms > 0, "RENKEI_BENCH_ROOMS must be positive");
        assert!(
            settings.subscribers >= settings.rooms,
            "RENKEI_BENCH_SUBSCRIBERS must be at least RENKEI_BENCH_ROOMS"
        );
        assert!(settings.posts > 0, "RENKEI_BENCH_POSTS must be positive");
        settings
    }
}

fn main() {
    let settings = Settings::from_env();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let backend = match renkei_tests::backend() {
        Backend::Sqlite => "SQLite, in-process stores",
        Backend::Postgres => "PostgreSQL + Redis",
    };
    println!();
    println!(
        "Machine: {cpus} CPUs (nproc), load average at start {}; {backend}; release build; pool of 5 database connections per instance (test harness)",
        load_average()
    );
    if !settings.audit_reads {
        println!();
        println!(
            "**Reads and live deliveries NOT audited** (RENKEI_BENCH_AUDIT_READS=false, a diagnostic: production refuses it)"
        );
    }
    if settings.timeline {
        timeline(settings);
    }
    if settings.delivery {
        delivery(settings);
    }
}

/// How the instances are configured beyond the test harness's defaults.
fn server_options(settings: Settings) -> TestOptions {
    let mut env = Vec::new();
    if !settings.audit_reads {
        env.push(("RENKEI_AUDIT_READ_EVENTS".to_string(), "false".to_string()));
    }
    TestOptions {
        env,
        ..Default::default()
    }
}

/// A Tokio runtime whose threads carry `name` (for the CPU breakdown).
fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .expect("tokio runtime")
}

// ---------------------------------------------------------------------------------------------
// figures
// ---------------------------------------------------------------------------------------------

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

// ---------------------------------------------------------------------------------------------
// CPU use from /proc
// ---------------------------------------------------------------------------------------------

/// CPU time so far: the machine's (from `/proc/stat`), this process's threads grouped by name
/// and in all (exited threads included), and every other process by pid.
struct Cpu {
    at: Instant,
    busy: u64,
    idle: u64,
    steal: u64,
    /// Interrupt and softirq time (loopback TCP is processed there), part of `busy`.
    interrupts: u64,
    /// Idle time with IO outstanding, part of `idle`.
    iowait: u64,
    /// `/proc/pressure/io`: microseconds in which some task / all tasks waited for IO.
    io_some: u64,
    io_full: u64,
    /// PostgreSQL's cluster-wide counters (None on SQLite); filled in by [`with_pg`].
    pg: Option<PgStats>,
    /// Per thread id: its group and CPU time so far.
    threads: HashMap<u32, (&'static str, u64)>,
    own: u64,
    others: HashMap<u32, (String, u64)>,
}

const THREAD_GROUPS: [&str; 5] = [
    "instance 1 (its runtime's threads)",
    "instance 2 (its runtime's threads)",
    "bench clients (their runtime's threads)",
    "SQLite worker threads (both pools)",
    "other threads of the bench process",
];

fn group_of_thread(comm: &str) -> &'static str {
    if comm.starts_with("renkei-srv1") {
        THREAD_GROUPS[0]
    } else if comm.starts_with("renkei-srv2") {
        THREAD_GROUPS[1]
    } else if comm.starts_with("bench-client") {
        THREAD_GROUPS[2]
    } else if comm.starts_with("sqlx-sqlite") {
        THREAD_GROUPS[3]
    } else {
        THREAD_GROUPS[4]
    }
}

/// (comm, utime + stime) of a `/proc/.../stat` line.
fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // After the comm: state is field 3 of the line, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// The entries of `dir` named by a number (processes in `/proc`, threads in a `task` folder).
fn numbered_entries(dir: &str) -> Vec<(u32, std::path::PathBuf)> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
                .collect()
        })
        .unwrap_or_default()
}

fn read_stat(path: std::path::PathBuf) -> Option<(String, u64)> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| parse_stat(&s))
}

/// What else the PostgreSQL server did: checkpoints (every `DROP DATABASE` of a test run asks
/// for one) and transactions of other databases (other users of the server).
#[derive(Clone, Copy)]
struct PgStats {
    checkpoints: i64,
    checkpoint_ms: f64,
    other_commits: i64,
}

/// [`cpu_now`] with PostgreSQL's counters when `db` is PostgreSQL.
async fn with_pg(mut cpu: Cpu, db: &sea_orm::DatabaseConnection) -> Cpu {
    use sea_orm::ConnectionTrait as _;
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return cpu;
    }
    let sql = "SELECT (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)::bigint AS checkpoints, \
               (SELECT checkpoint_write_time + checkpoint_sync_time FROM pg_stat_bgwriter)::float8 AS checkpoint_ms, \
               (SELECT coalesce(sum(xact_commit), 0) FROM pg_stat_database WHERE datname IS DISTINCT FROM current_database())::bigint AS other_commits";
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            sql,
        ))
        .await;
    cpu.pg = match row {
        Ok(Some(row)) => Some(PgStats {
            checkpoints: row.try_get("", "checkpoints").unwrap_or(0),
            checkpoint_ms: row.try_get("", "checkpoint_ms").unwrap_or(0.0),
            other_commits: row.try_get("", "other_commits").unwrap_or(0),
        }),
        _ => None,
    };
    cpu
}

/// `total=` of the `some` or `full` line of `/proc/pressure/io` (0 without PSI).
fn io_pressure(kind: &str) -> u64 {
    std::fs::read_to_string("/proc/pressure/io")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(kind))
        .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("total=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_now() -> Cpu {
    let at = Instant::now();
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let numbers: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let n = |i: usize| numbers.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let mut threads = HashMap::new();
    for (tid, path) in numbered_entries("/proc/self/task") {
        if let Some((comm, ticks)) = read_stat(path.join("stat")) {
            threads.insert(tid, (group_of_thread(&comm), ticks));
        }
    }
    let own = read_stat("/proc/self/stat".into()).map_or(0, |(_, t)| t);
    let me = std::process::id();
    let mut others = HashMap::new();
    for (pid, path) in numbered_entries("/proc") {
        if pid == me {
            continue;
        }
        if let Some(stat) = read_stat(path.join("stat")) {
            others.insert(pid, stat);
        }
    }
    Cpu {
        at,
        busy: n(0) + n(1) + n(2) + n(5) + n(6),
        idle: n(3) + n(4),
        steal: n(7),
        interrupts: n(5) + n(6),
        iowait: n(4),
        io_some: io_pressure("some"),
        io_full: io_pressure("full"),
        pg: None,
        threads,
        own,
        others,
    }
}

/// CPU seconds of a measured phase.
struct CpuUse {
    machine: f64,
    instances: f64,
    clients: f64,
}

/// Prints where the CPU went between `before` and `after`, in cores (1.00 = one core busy).
fn print_cpu(before: &Cpu, after: &Cpu) -> CpuUse {
    let wall = (after.at - before.at).as_secs_f64().max(1e-6);
    let cores = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / wall;
    let busy = after.busy.saturating_sub(before.busy);
    let idle = after.idle.saturating_sub(before.idle);
    let steal = after.steal.saturating_sub(before.steal);
    let total = (busy + idle + steal).max(1);
    println!();
    println!(
        "CPU during the measured {:.1} s: machine {:.2} cores busy, {:.2} idle, {:.2} stolen by the hypervisor ({:.0} % busy, {:.0} % steal)",
        wall,
        cores(busy),
        cores(idle),
        cores(steal),
        100.0 * busy as f64 / total as f64,
        100.0 * steal as f64 / total as f64,
    );
    println!(
        "IO: {:.2} cores idle waiting for IO; some task stalled on IO {:.0} % of the time, all tasks {:.0} % (/proc/pressure/io)",
        cores(after.iowait.saturating_sub(before.iowait)),
        after.io_some.saturating_sub(before.io_some) as f64 / 1e4 / wall,
        after.io_full.saturating_sub(before.io_full) as f64 / 1e4 / wall,
    );
    if let (Some(a), Some(b)) = (before.pg, after.pg) {
        println!(
            "PostgreSQL server meanwhile: {} checkpoint(s) ({:.0} ms writing and syncing), {} transactions committed in other databases",
            b.checkpoints - a.checkpoints,
            b.checkpoint_ms - a.checkpoint_ms,
            b.other_commits - a.other_commits
        );
    }
    println!();
    println!("| where | cores |");
    println!("|---|---:|");
    // Threads alive at the end, by group; what ended threads used is the process's total
    // minus that.
    let mut by_group: HashMap<&str, u64> = HashMap::new();
    for (tid, (group, ticks)) in &after.threads {
        let was = before.threads.get(tid).map_or(0, |(_, t)| *t);
        *by_group.entry(group).or_default() += ticks.saturating_sub(was);
    }
    let mut threads_used = 0;
    for group in THREAD_GROUPS {
        let used = by_group.get(group).copied().unwrap_or(0);
        threads_used += used;
        if used > 0 {
            println!("| {group} | {:.2} |", cores(used));
        }
    }
    let own = after.own.saturating_sub(before.own);
    if own > threads_used {
        println!(
            "| threads of the bench process that ended meanwhile | {:.2} |",
            cores(own - threads_used)
        );
    }
    // Other processes, by name (PostgreSQL's backends add up under `postgres`).
    let mut by_name: HashMap<&str, u64> = HashMap::new();
    for (pid, (comm, ticks)) in &after.others {
        let was = before.others.get(pid).map_or(0, |(_, t)| *t);
        *by_name.entry(comm.as_str()).or_default() += ticks.saturating_sub(was);
    }
    let mut by_name: Vec<(&str, u64)> = by_name.into_iter().filter(|(_, t)| *t > 0).collect();
    by_name.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
    let others_used: u64 = by_name.iter().map(|(_, t)| t).sum();
    for (name, used) in by_name.iter().take(5) {
        println!("| process `{name}` | {:.2} |", cores(*used));
    }
    let interrupts = after.interrupts.saturating_sub(before.interrupts);
    println!(
        "| interrupts and softirqs (loopback TCP among them) | {:.2} |",
        cores(interrupts)
    );
    println!(
        "| not accounted above (smaller or ended processes) | {:.2} |",
        cores(busy.saturating_sub(own.max(threads_used) + others_used + interrupts))
    );
    let seconds = |ticks: u64| ticks as f64 / TICKS_PER_SECOND;
    let group = |g: &str| by_group.get(g).copied().unwrap_or(0);
    CpuUse {
        machine: seconds(busy),
        instances: seconds(group(THREAD_GROUPS[0]) + group(THREAD_GROUPS[1])),
        clients: seconds(group(THREAD_GROUPS[2])),
    }
}

// ---------------------------------------------------------------------------------------------
// fixtures
// ---------------------------------------------------------------------------------------------

/// A tenant with three facilities and the city's session.
struct Tenant {
    admin: Person,
    city: TestClient,
    facilities: [Uuid; 3],
}

async fn tenant(app: &TestApp) -> Tenant {
    let admin = app.create_tenant("bench").await;
    let mut facilities = [Uuid::nil(); 3];
    for (i, name) in ["Bench Clinic", "Bench Visiting Nurses", "Bench Pharmacy"]
        .iter()
        .enumerate()
    {
        facilities[i] = app.create_facility(admin.tenant_id, name).await;
    }
    let city = app.ready_session(&admin).await;
    Tenant {
        admin,
        city,
        facilities,
    }
}

/// A STAFF member past the password change and the pledge, with a certificate but no password
/// (no Argon2id: hundreds of them are made). Sessions come from [`session`].
async fn member(app: &TestApp, tenant: &Person, login_id: &str, facility: Uuid) -> Person {
    app.create_user_without_password(tenant, login_id, Role::Staff, Some(facility))
        .await
}

/// A session for `person` bound to its certificate, opened in the session store as a login
/// would (the password check is what the login benchmark measures).
async fn session(app: &TestApp, person: &Person) -> String {
    let new = app
        .state()
        .sessions
        .create(person.id, person.tenant_id, &person.fingerprint)
        .await
        .expect("session store");
    new.token.expose_secret().to_string()
}

fn patient(n: usize) -> Value {
    json!({
        "name": "山田 太郎",
        "nameKana": "ヤマダ タロウ",
        "birthDate": format!("1940-05-{:02}", n % 28 + 1),
        "sex": "MALE",
        "address": "北区中央2-3-4",
        "phone": "03-1234-5678",
        "careLevel": "CARE_2",
    })
}

fn consent() -> Value {
    let day = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Tokyo)
        .date_naive()
        - chrono::Duration::days(30);
    json!({ "consenter": "PATIENT", "consenterName": "山田 太郎", "consentedOn": day.to_string() })
}

/// Opens a room (patient number `n`) whose members are `members`, each accepting its
/// invitation with its own session; returns the room id.
async fn room_with(city: &TestClient, n: usize, members: &[(&Person, &TestClient)]) -> String {
    let ids: Vec<String> = members.iter().map(|(p, _)| p.id.to_string()).collect();
    let mut batches = ids.chunks(INVITE_BATCH);
    let first = batches.next().unwrap_or_default();
    let opened = city
        .graphql(
            OPEN_ROOM,
            json!({ "p": patient(n), "c": consent(), "i": first }),
        )
        .await;
    let opened = opened.ok()["openRoom"].clone();
    let room = opened["id"].as_str().unwrap().to_string();
    let mut invitations: HashMap<String, String> = HashMap::new();
    let mut note = |list: &Value| {
        for i in list.as_array().unwrap() {
            invitations.insert(
                i["invitee"]["id"].as_str().unwrap().to_string(),
                i["id"].as_str().unwrap().to_string(),
            );
        }
    };
    note(&opened["invitations"]);
    for batch in batches {
        let invited = city.graphql(INVITE, json!({ "r": room, "u": batch })).await;
        note(&invited.ok()["inviteToRoom"]);
    }
    let invitations = &invitations;
    let room_ref = room.as_str();
    futures_util::stream::iter(members.iter())
        .map(|(person, client)| async move {
            let invitation = &invitations[&person.id.to_string()];
            let accepted = client.graphql(ACCEPT, json!({ "id": invitation })).await;
            assert_eq!(accepted.ok()["acceptInvitation"]["id"], room_ref);
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    room
}

/// Waits until `b` trusts the tenant CA `a` just created (pub/sub, as in the e2e tests).
async fn until_trusted(b: &TestApp, who: &Person) {
    let started = Instant::now();
    while b.client_for(who).get("/healthz").await.status() != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "instance 2 never trusted the new tenant's CA"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// timeline
// ---------------------------------------------------------------------------------------------

fn timeline(settings: Settings) {
    let srv = runtime("renkei-srv1");
    let client_rt = runtime("bench-client");
    let set_up = Instant::now();
    let app = Arc::new(srv.block_on(spawn_app_with(server_options(settings))));
    let (room, members) = srv.block_on(timeline_fixture(&app));
    let set_up = set_up.elapsed();

    let seconds = Duration::from_secs(settings.seconds);
    let app2 = app.clone();
    let room2 = room.clone();
    let (samples, took, statements, cpu) = client_rt.block_on(async move {
        tokio::spawn(async move { timeline_load(&app2, &room2, members, seconds).await })
            .await
            .expect("timeline load")
    });
    let requests = samples.len();
    let summary = summarize(samples);
    println!();
    println!(
        "## Timeline: {TIMELINE_CLIENTS} concurrent members read the newest 20 of {TIMELINE_NOTES} notes for {} s",
        settings.seconds
    );
    println!();
    println!(
        "Configuration: {}; instances: 1; one room, {TIMELINE_CLIENTS} members of 3 facilities, {TIMELINE_AUTHORS} authors, {TIMELINE_READERS} members with read markers; each client its own TLS connection with its own certificate and its own session (real login); set-up {:.1} s",
        database_name(),
        set_up.as_secs_f64()
    );
    println!();
    println!("`{TIMELINE}`");
    println!();
    println!("| requests | requests/s | p50 | p99 | max | SQL statements per request |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:.1} | {} | {} | {} | {:.1} |",
        requests,
        requests as f64 / took.as_secs_f64(),
        ms(summary.p50),
        ms(summary.p99),
        ms(summary.max),
        statements as f64 / requests as f64
    );
    print_cpu(&cpu.0, &cpu.1);
    println!();
    drop(client_rt);
    let mut app = Arc::into_inner(app).expect("the only handle left");
    srv.block_on(app.stop());
}

fn database_name() -> &'static str {
    match renkei_tests::backend() {
        Backend::Sqlite => "database SQLite (sessions, events in process)",
        Backend::Postgres => "database PostgreSQL, Redis for sessions and events",
    }
}

/// The room: 32 members (real logins) of 3 facilities; 200 notes by the first 10; 12 others
/// marked part or all of it read. Returns the room id and each member with its token.
async fn timeline_fixture(app: &TestApp) -> (String, Vec<(Person, String)>) {
    let t = tenant(app).await;
    let people: Vec<(Person, TestClient)> = futures_util::stream::iter(0..TIMELINE_CLIENTS)
        .map(|i| {
            let t = &t;
            async move {
                let person = app
                    .create_user(
                        &t.admin,
                        &format!("reader{i:02}"),
                        Role::Staff,
                        Some(t.facilities[i % 3]),
                    )
                    .await;
                let client = app.ready_session(&person).await;
                (person, client)
            }
        })
        .buffered(4)
        .collect()
        .await;
    let pairs: Vec<(&Person, &TestClient)> = people.iter().map(|(p, c)| (p, c)).collect();
    let room = room_with(&t.city, 0, &pairs).await;
    let mut ids = Vec::with_capacity(TIMELINE_NOTES);
    for i in 0..TIMELINE_NOTES {
        let author = &people[i % TIMELINE_AUTHORS].1;
        let posted = author
            .graphql(
                POST_NOTE,
                json!({ "i": { "roomId": room, "body": format!("訪問記録 {i}: 血圧 132/84、脈拍 78。食事は半量、夜間の咳が続くため明日も様子を見ます。") } }),
            )
            .await;
        ids.push(posted.ok()["postNote"]["id"].as_str().unwrap().to_string());
    }
    for r in 0..TIMELINE_READERS {
        // From a quarter of the notes up to all of them, so pages show a mix of readers.
        let upto = TIMELINE_NOTES / 4 + (TIMELINE_NOTES * 3 / 4) * r / (TIMELINE_READERS - 1);
        let reader = &people[TIMELINE_AUTHORS + r].1;
        let marked = reader
            .graphql(MARK_READ, json!({ "r": room, "n": ids[upto - 1] }))
            .await;
        marked.ok();
    }
    let members = people
        .into_iter()
        .map(|(p, c)| {
            let token = c.token.clone().expect("a session");
            (p, token)
        })
        .collect();
    (room, members)
}

type CpuSpan = (Cpu, Cpu);

async fn timeline_load(
    app: &TestApp,
    room: &str,
    members: Vec<(Person, String)>,
    seconds: Duration,
) -> (Vec<Duration>, Duration, u64, CpuSpan) {
    let variables = json!({ "r": room });
    // Fresh clients on this runtime: their connections belong to the clients' threads.
    let clients: Vec<TestClient> = members
        .iter()
        .map(|(p, token)| app.client_for(p).with_token(token.clone()))
        .collect();
    // Check one answer in full, then warm every connection (handshake with its certificate).
    let first = clients[0].graphql(TIMELINE, variables.clone()).await;
    let edges = first.ok()["room"]["notes"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 20, "{}", first.body);
    assert!(
        edges
            .iter()
            .all(|e| e["node"]["author"]["facility"]["name"].is_string()),
        "{}",
        first.body
    );
    assert!(
        edges
            .iter()
            .any(|e| !e["node"]["readBy"].as_array().unwrap().is_empty()),
        "some notes of the page have readers: {}",
        first.body
    );
    let warm_until = Instant::now() + TIMELINE_WARMUP;
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let variables = variables.clone();
            let stop = stop.clone();
            let measuring = measuring.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let counted = measuring.load(Ordering::Relaxed);
                    let started = Instant::now();
                    let resp = client.graphql(TIMELINE, variables.clone()).await;
                    let took = started.elapsed();
                    let edges = resp.ok()["room"]["notes"]["edges"].as_array().map(Vec::len);
                    assert_eq!(edges, Some(20), "{}", resp.body);
                    if counted && !stop.load(Ordering::Relaxed) {
                        samples.push(took);
                    }
                }
                samples
            })
        })
        .collect();
    tokio::time::sleep_until(warm_until.into()).await;
    app.state().audit.flush().await;
    let statements_before = app.state().statements.load(Ordering::SeqCst);
    let cpu_before = with_pg(cpu_now(), &app.db).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(seconds).await;
    stop.store(true, Ordering::Relaxed);
    let took = started.elapsed();
    let cpu_after = with_pg(cpu_now(), &app.db).await;
    let statements = app.state().statements.load(Ordering::SeqCst) - statements_before;
    let mut samples = Vec::new();
    for worker in workers {
        samples.extend(worker.await.expect("timeline client"));
    }
    (samples, took, statements, (cpu_before, cpu_after))
}

// ---------------------------------------------------------------------------------------------
// delivery
// ---------------------------------------------------------------------------------------------

struct Subscriber {
    person: Person,
    token: String,
    room: usize,
    instance: usize,
}

/// One delivery as the subscriber saw it.
struct Received {
    seq: usize,
    note_id: String,
    at: Instant,
}

/// One post as the poster sent it.
struct Sent {
    at: Instant,
    took: Duration,
    note_id: String,
}

fn delivery(settings: Settings) {
    let two = renkei_tests::backend() == Backend::Postgres;
    let srv1 = runtime("renkei-srv1");
    let srv2 = two.then(|| runtime("renkei-srv2"));
    let client_rt = runtime("bench-client");

    let set_up = Instant::now();
    let app1 = Arc::new(srv1.block_on(spawn_app_with(server_options(settings))));
    let app2 = srv2.as_ref().map(|rt| {
        Arc::new(rt.block_on(spawn_app_with(TestOptions {
            share_with: Some(app1.shared_backends()),
            ..server_options(settings)
        })))
    });
    let instances = if two { 2 } else { 1 };
    let (rooms, poster, subscribers) = srv1.block_on(async {
        let t = tenant(&app1).await;
        if let Some(b) = &app2 {
            until_trusted(b, &t.admin).await;
        }
        let poster = member(&app1, &t.admin, "poster", t.facilities[0]).await;
        let poster_token = session(&app1, &poster).await;
        let people: Vec<(Person, String)> = futures_util::stream::iter(0..settings.subscribers)
            .map(|i| {
                let (app, t) = (&app1, &t);
                async move {
                    let person =
                        member(app, &t.admin, &format!("sub{i:04}"), t.facilities[i % 3]).await;
                    let token = session(app, &person).await;
                    (person, token)
                }
            })
            .buffered(SETUP_CONCURRENCY)
            .collect()
            .await;
        // Subscriber i: room i % rooms, instance (i / rooms) % 2, so every room has
        // subscribers on both instances.
        let subscribers: Vec<Subscriber> = people
            .into_iter()
            .enumerate()
            .map(|(i, (person, token))| Subscriber {
                person,
                token,
                room: i % settings.rooms,
                instance: (i / settings.rooms) % instances,
            })
            .collect();
        let poster_client = app1.client_for(&poster).with_token(poster_token.clone());
        let clients: Vec<TestClient> = subscribers
            .iter()
            .map(|s| app1.client_for(&s.person).with_token(s.token.clone()))
            .collect();
        let mut rooms = Vec::with_capacity(settings.rooms);
        for r in 0..settings.rooms {
            let mut members: Vec<(&Person, &TestClient)> = vec![(&poster, &poster_client)];
            members.extend(
                subscribers
                    .iter()
                    .zip(&clients)
                    .filter(|(s, _)| s.room == r)
                    .map(|(s, c)| (&s.person, c)),
            );
            rooms.push(room_with(&t.city, r, &members).await);
        }
        (rooms, (poster, poster_token), subscribers)
    });
    let set_up = set_up.elapsed();

    let apps: Vec<Arc<TestApp>> = std::iter::once(app1.clone())
        .chain(app2.iter().cloned())
        .collect();
    let run = {
        let apps = apps.clone();
        let rooms = rooms.clone();
        client_rt.block_on(async move {
            tokio::spawn(
                async move { delivery_load(settings, apps, rooms, poster, subscribers).await },
            )
            .await
            .expect("delivery load")
        })
    };

    report_delivery(settings, instances, set_up, &run);
    // Stop both instances (their audit flushed) before the database goes with instance 1.
    drop(apps);
    drop(client_rt);
    if let (Some(app), Some(rt)) = (app2, &srv2) {
        let mut app = Arc::into_inner(app).expect("the only handle left");
        rt.block_on(app.stop());
    }
    let mut app1 = Arc::into_inner(app1).expect("the only handle left");
    srv1.block_on(app1.stop());
}

struct DeliveryRun {
    /// Per subscriber: room, instance, what it received.
    received: Vec<(usize, usize, Vec<Received>)>,
    sent: Vec<Sent>,
    rooms: usize,
    posting: Duration,
    warmup_attempts: usize,
    connect: Duration,
    statements: Vec<u64>,
    cpu: CpuSpan,
}

async fn delivery_load(
    settings: Settings,
    apps: Vec<Arc<TestApp>>,
    rooms: Vec<String>,
    poster: (Person, String),
    subscribers: Vec<Subscriber>,
) -> DeliveryRun {
    let n = subscribers.len();
    let expected_of_room: Vec<usize> = (0..settings.rooms)
        .map(|r| {
            (0..settings.posts)
                .filter(|seq| seq % settings.rooms == r)
                .count()
        })
        .collect();
    let warmed = Arc::new(AtomicUsize::new(0));
    let complete = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicBool::new(false));

    // Connect and subscribe, a few at a time.
    let connecting = Instant::now();
    let sockets: Vec<(usize, usize, Ws)> = futures_util::stream::iter(subscribers)
        .map(|s| {
            let app = apps[s.instance].clone();
            let room = rooms[s.room].clone();
            async move {
                let mut socket = ws::live(&app, &s.person, &s.token).await;
                ws::subscribe(&mut socket, "1", ROOM_EVENTS, json!({ "r": room })).await;
                (s.room, s.instance, socket)
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY * 2)
        .collect()
        .await;
    let connect = connecting.elapsed();
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|(room, instance, socket)| {
            let expected = expected_of_room[room];
            let (warmed, complete, stop, failed) = (
                warmed.clone(),
                complete.clone(),
                stop.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let got = subscriber(socket, expected, warmed, complete, stop, failed).await;
                (room, instance, got)
            })
        })
        .collect();

    let (poster, token) = poster;
    let client = apps[0].client_for(&poster).with_token(token);
    // Warm-up notes in every room until every subscriber has received one: all subscriptions
    // are then set up on their instance.
    let mut attempts = 0;
    while warmed.load(Ordering::SeqCst) < n {
        attempts += 1;
        assert!(
            attempts <= WARMUP_ATTEMPTS,
            "after {WARMUP_ATTEMPTS} warm-up notes only {} of {n} subscribers received one",
            warmed.load(Ordering::SeqCst)
        );
        assert!(!failed.load(Ordering::SeqCst), "a subscriber failed");
        for room in &rooms {
            let resp = client
                .graphql(
                    POST_NOTE,
                    json!({ "i": { "roomId": room, "body": format!("{WARMUP_PREFIX}{attempts}") } }),
                )
                .await;
            resp.ok();
        }
        let waiting = Instant::now();
        while warmed.load(Ordering::SeqCst) < n && waiting.elapsed() < WARMUP_WAIT {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Let the warm-up's deliveries and audit settle before measuring.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let statements_before: Vec<u64> = apps
        .iter()
        .map(|a| a.state().statements.load(Ordering::SeqCst))
        .collect();
    let cpu_before = with_pg(cpu_now(), &apps[0].db).await;
    let posting = Instant::now();
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = Vec::with_capacity(settings.posts);
    for seq in 0..settings.posts {
        tick.tick().await;
        assert!(!failed.load(Ordering::SeqCst), "a subscriber failed");
        let room = &rooms[seq % rooms.len()];
        let variables = json!({ "i": { "roomId": room, "body": format!("{NOTE_PREFIX}{seq} 本日訪問しました。") } });
        let at = Instant::now();
        let resp = client.graphql(POST_NOTE, variables).await;
        let took = at.elapsed();
        let note_id = resp.ok()["postNote"]["id"].as_str().unwrap().to_string();
        sent.push(Sent { at, took, note_id });
    }
    let posting = posting.elapsed();
    let drain_until = Instant::now() + DRAIN;
    while complete.load(Ordering::SeqCst) < n && Instant::now() < drain_until {
        assert!(!failed.load(Ordering::SeqCst), "a subscriber failed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_after = with_pg(cpu_now(), &apps[0].db).await;
    let statements: Vec<u64> = apps
        .iter()
        .zip(&statements_before)
        .map(|(a, before)| a.state().statements.load(Ordering::SeqCst) - before)
        .collect();
    // A moment more to catch duplicates, then everyone stops.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut received = Vec::with_capacity(n);
    for task in tasks {
        received.push(task.await.expect("a subscriber"));
    }
    DeliveryRun {
        received,
        sent,
        rooms: rooms.len(),
        posting,
        warmup_attempts: attempts,
        connect,
        statements,
        cpu: (cpu_before, cpu_after),
    }
}

/// Marks the run failed (the poster stops) and panics.
fn fail(failed: &AtomicBool, why: String) -> ! {
    failed.store(true, Ordering::SeqCst);
    panic!("{why}");
}

/// Reads one subscriber's connection until told to stop: counts its first warm-up note, keeps
/// the measured notes with the instant each arrived, and fails on anything else (errors, a
/// closed socket, an unknown or repeated note).
async fn subscriber(
    mut socket: Ws,
    expected: usize,
    warmed: Arc<AtomicUsize>,
    complete: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
) -> Vec<Received> {
    let mut got: Vec<Received> = Vec::with_capacity(expected);
    let mut seen = std::collections::HashSet::new();
    let mut warm = false;
    loop {
        let frame = ws::recv(&mut socket, Duration::from_millis(100)).await;
        let at = Instant::now();
        match frame {
            None => {
                if stop.load(Ordering::SeqCst) {
                    return got;
                }
            }
            Some(Frame::Closed(code)) => fail(
                &failed,
                format!(
                    "a subscriber's socket closed (code {code:?}) after {} notes",
                    got.len()
                ),
            ),
            Some(Frame::Json(msg)) => {
                if msg["type"] != "next" || msg["id"] != "1" || !msg["payload"]["errors"].is_null()
                {
                    fail(&failed, format!("a subscriber got {msg}"));
                }
                let event = &msg["payload"]["data"]["roomEvents"];
                if event["__typename"] != "NotePosted" {
                    fail(&failed, format!("unexpected event {event}"));
                }
                let note = &event["note"];
                let body = note["body"].as_str().unwrap_or_default();
                if body.starts_with(WARMUP_PREFIX) {
                    if !warm {
                        warm = true;
                        warmed.fetch_add(1, Ordering::SeqCst);
                    }
                    continue;
                }
                let seq = body
                    .strip_prefix(NOTE_PREFIX)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|s| s.parse::<usize>().ok())
                    .unwrap_or_else(|| {
                        fail(&failed, format!("a note the bench did not post: {note}"))
                    });
                if !seen.insert(seq) {
                    fail(
                        &failed,
                        format!("note {seq} delivered twice to one subscriber"),
                    );
                }
                got.push(Received {
                    seq,
                    note_id: note["id"].as_str().unwrap_or_default().to_string(),
                    at,
                });
                if got.len() == expected {
                    complete.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }
}

fn report_delivery(settings: Settings, instances: usize, set_up: Duration, run: &DeliveryRun) {
    let n = run.received.len();
    let mut subscribers_of_room = vec![0usize; run.rooms];
    for (room, _, _) in &run.received {
        subscribers_of_room[*room] += 1;
    }
    let expected: usize = (0..run.sent.len())
        .map(|seq| subscribers_of_room[seq % run.rooms])
        .sum();
    let mut latencies = Vec::with_capacity(expected);
    let mut by_instance: Vec<Vec<Duration>> = vec![Vec::new(); instances];
    let mut first_of_post: Vec<Option<Duration>> = vec![None; run.sent.len()];
    let mut last_of_post: Vec<Option<Duration>> = vec![None; run.sent.len()];
    let mut by_quarter: Vec<Vec<Duration>> = vec![Vec::new(); 4];
    let mut short = 0usize;
    for (room, instance, got) in &run.received {
        let want = (0..run.sent.len())
            .filter(|s| s % run.rooms == *room)
            .count();
        if got.len() < want {
            short += 1;
        }
        for r in got {
            let sent = &run.sent[r.seq];
            assert_eq!(
                r.note_id, sent.note_id,
                "note {} arrived with another id",
                r.seq
            );
            assert_eq!(r.seq % run.rooms, *room, "note {} in the wrong room", r.seq);
            let latency = r.at.saturating_duration_since(sent.at);
            latencies.push(latency);
            by_quarter[r.seq * 4 / run.sent.len()].push(latency);
            by_instance[*instance].push(latency);
            let first = first_of_post[r.seq].get_or_insert(latency);
            *first = (*first).min(latency);
            let last = last_of_post[r.seq].get_or_insert(latency);
            *last = (*last).max(latency);
        }
    }
    assert!(
        latencies.len() == expected,
        "deliveries: {} received, {} expected ({} posts x subscribers of each room; {} of {n} subscribers missed some)",
        latencies.len(),
        expected,
        run.sent.len(),
        short
    );
    let all = summarize(latencies);
    let post = summarize(run.sent.iter().map(|s| s.took).collect());
    let first = summarize(first_of_post.iter().flatten().copied().collect());
    let last = summarize(last_of_post.iter().flatten().copied().collect());

    println!();
    println!(
        "## Live delivery: {n} subscribers, {} posts every {} ms",
        settings.posts,
        settings.interval.as_millis()
    );
    println!();
    println!(
        "Configuration: {}; instances: {instances}{}; subscribers: {n}{} (each its own certificate, session and WebSocket; sessions opened in the session store, not by login); rooms: {} (subscribers per room: {}); poster on instance 1",
        database_name(),
        if instances == 1 {
            " (SQLite: events cross instances only through Redis)"
        } else {
            ""
        },
        if instances == 2 {
            ", spread evenly over both instances"
        } else {
            ""
        },
        run.rooms,
        subscribers_of_room
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("/"),
    );
    println!(
        "Set-up {:.1} s; {n} connections and subscriptions in {:.1} s; {} warm-up round(s); {} posts in {:.2} s ({:.1} posts/s)",
        set_up.as_secs_f64(),
        run.connect.as_secs_f64(),
        run.warmup_attempts,
        run.sent.len(),
        run.posting.as_secs_f64(),
        run.sent.len() as f64 / run.posting.as_secs_f64()
    );
    println!();
    println!("| measurement | count | p50 | p99 | max |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| delivery, all subscribers | {} | {} | {} | {} |",
        all.count,
        ms(all.p50),
        ms(all.p99),
        ms(all.max)
    );
    if instances > 1 {
        for (i, samples) in by_instance.into_iter().enumerate() {
            let s = summarize(samples);
            println!(
                "| delivery, subscribers on instance {} | {} | {} | {} | {} |",
                i + 1,
                s.count,
                ms(s.p50),
                ms(s.p99),
                ms(s.max)
            );
        }
    }
    println!(
        "| first delivery of each post | {} | {} | {} | {} |",
        first.count,
        ms(first.p50),
        ms(first.p99),
        ms(first.max)
    );
    println!(
        "| last delivery of each post | {} | {} | {} | {} |",
        last.count,
        ms(last.p50),
        ms(last.p99),
        ms(last.max)
    );
    println!(
        "| `postNote` (instance 1) | {} | {} | {} | {} |",
        post.count,
        ms(post.p50),
        ms(post.p99),
        ms(post.max)
    );
    println!();
    let origin = run.sent[0].at;
    let mut slowest: Vec<(usize, Duration)> = last_of_post
        .iter()
        .enumerate()
        .filter_map(|(seq, d)| d.map(|d| (seq, d)))
        .collect();
    slowest.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
    println!(
        "Slowest posts by last delivery (post number at seconds after the first post: postNote / first / last delivery): {}",
        slowest
            .iter()
            .take(5)
            .map(|(seq, last)| {
                let sent = &run.sent[*seq];
                format!(
                    "#{seq} at {:.2} s: {} / {} / {}",
                    (sent.at - origin).as_secs_f64(),
                    ms(sent.took),
                    ms(first_of_post[*seq].unwrap_or_default()),
                    ms(*last)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!(
        "Delivery p50 / p99 by quarter of the posts (a growing backlog shows as a rise): {}",
        by_quarter
            .into_iter()
            .filter(|q| !q.is_empty())
            .map(|q| {
                let s = summarize(q);
                format!("{} / {}", ms(s.p50), ms(s.p99))
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "Deliveries: {} = {} posts x subscribers of each room (checked). SQL statements through the instances' pools while posting and delivering: {} ({} per post).",
        all.count,
        run.sent.len(),
        run.statements
            .iter()
            .enumerate()
            .map(|(i, s)| format!("instance {}: {s}", i + 1))
            .collect::<Vec<_>>()
            .join(", "),
        run.statements
            .iter()
            .map(|s| format!("{:.1}", *s as f64 / run.sent.len() as f64))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    let used = print_cpu(&run.cpu.0, &run.cpu.1);
    let per = |secs: f64| secs * 1e6 / all.count as f64;
    println!();
    println!(
        "CPU per delivery (measured phase, posting included): {:.0} µs on the machine, of which {:.0} µs in the server instances and {:.0} µs in the bench's clients",
        per(used.machine),
        per(used.instances),
        per(used.clients)
    );
    println!();
}
