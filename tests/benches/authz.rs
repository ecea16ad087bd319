//! Authorization decision time, enforcer memory and start-up load time at 1k, 10k and 100k
//! rooms with 5 members each (issue 6 targets: decisions under 10 µs and flat within 1.5x,
//! under 300 MB and 5 s at 100k rooms).
//!
//! `cargo bench -p renkei-tests --bench authz` — each size runs in a child process of its own so
//! the resident-memory growth it reports is that size's alone. A last child fills an SQLite
//! database with 100k rooms (500k memberships, 100k users) and times what a start-up does:
//! reading the snapshot from the tables and building the enforcer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use renkei::authz::enforcer::{Authorizer, Snapshot};
use uuid::Uuid;

const MEMBERS_PER_ROOM: usize = 5;
const DECISIONS: usize = 200_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A deterministic pseudo-random sequence (xorshift), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

async fn run(rooms: usize) {
    // One user per room on average sits in five rooms: 100k rooms ~ 100k users.
    let users: Vec<Uuid> = (0..rooms).map(|_| Uuid::now_v7()).collect();
    let room_ids: Vec<Uuid> = (0..rooms).map(|_| Uuid::now_v7()).collect();
    let tenant = Uuid::now_v7();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut memberships = Vec::with_capacity(rooms * MEMBERS_PER_ROOM);
    let mut members_of: Vec<Vec<Uuid>> = Vec::with_capacity(rooms);
    for room in &room_ids {
        let mut members = Vec::with_capacity(MEMBERS_PER_ROOM);
        while members.len() < MEMBERS_PER_ROOM {
            let u = users[rng.below(users.len())];
            if !members.contains(&u) {
                members.push(u);
            }
        }
        memberships.extend(members.iter().map(|u| (*u, *room)));
        members_of.push(members);
    }
    let tenant_roles = users
        .iter()
        .map(|u| (*u, tenant, entity::kinds::Role::Staff))
        .collect();

    let snapshot = Snapshot {
        tenant_roles,
        memberships,
    };
    // The enforcer gets a copy and the original stays alive until memory is read, so the
    // growth counts the enforcer plus at most the copy (conservative: never less than it holds).
    let copy = snapshot.clone();
    let before = rss_bytes();
    let started = Instant::now();
    let authz = Authorizer::new(copy).await.expect("enforcer loads");
    let load = started.elapsed();
    let memory = rss_bytes().saturating_sub(before);
    assert_eq!(
        authz.groupings(),
        snapshot.tenant_roles.len() + snapshot.memberships.len()
    );
    drop(snapshot);

    // Half the questions about members, half about random users (mostly not members).
    let mut timings = Vec::with_capacity(DECISIONS);
    let mut allowed = 0usize;
    for i in 0..DECISIONS {
        let r = rng.below(rooms);
        let user = if i % 2 == 0 {
            members_of[r][rng.below(MEMBERS_PER_ROOM)]
        } else {
            users[rng.below(users.len())]
        };
        let t = Instant::now();
        let ok = authz.is_room_member(user, room_ids[r]);
        timings.push(t.elapsed());
        allowed += usize::from(ok);
    }
    assert!(
        allowed >= DECISIONS / 2,
        "every member question must be allowed"
    );
    timings.sort();
    let mean = timings.iter().sum::<std::time::Duration>() / DECISIONS as u32;
    let p50 = timings[DECISIONS / 2];
    let p99 = timings[DECISIONS * 99 / 100];
    println!(
        "| {rooms:>7} | {:>9} | {:>8.2} µs | {:>8.2} µs | {:>8.2} µs | {:>7.1} MB | {:>6.2} s |",
        rooms * MEMBERS_PER_ROOM,
        mean.as_secs_f64() * 1e6,
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        memory as f64 / 1e6,
        load.as_secs_f64()
    );
}

/// Start-up at 100k rooms from a real database: `authz::sync::snapshot` + `Authorizer::new`.
async fn load_from_database(rooms: usize) {
    use entity::kinds::{AccountStatus, Occupation, Role, RoomStatus, Sex};
    use sea_orm::{ActiveModelTrait as _, EntityTrait as _, Set, TransactionTrait as _};

    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("load.db").display());
    let db = sea_orm::Database::connect(&url).await.expect("sqlite");
    renkei::db::migrate_up(&db).await.expect("migrations");
    let now = chrono::Utc::now();
    let tenant = Uuid::now_v7();
    entity::tenant::ActiveModel {
        id: Set(tenant),
        slug: Set("bench".into()),
        name: Set("Bench".into()),
        time_zone: Set("Asia/Tokyo".into()),
        pkcs12_encoding: Set("MODERN".into()),
        facility_admin_delegation: Set(true),
        certificate_validity_days: Set(365),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&db)
    .await
    .expect("tenant");
    let users: Vec<Uuid> = (0..rooms).map(|_| Uuid::now_v7()).collect();
    let txn = db.begin().await.expect("txn");
    for (n, chunk) in users.chunks(500).enumerate() {
        let batch = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| entity::user::ActiveModel {
                id: Set(*id),
                tenant_id: Set(tenant),
                facility_id: Set(None),
                login_id: Set(format!("u{}", n * 500 + i)),
                display_name: Set("Bench".into()),
                display_name_kana: Set(None),
                email: Set(None),
                occupation: Set(Occupation::Nurse),
                role: Set(Role::Staff),
                status: Set(AccountStatus::Active),
                password_hash: Set(None),
                must_change_password: Set(false),
                password_changed_at: Set(None),
                pledge_accepted_at: Set(None),
                pledge_version: Set(None),
                failed_login_count: Set(0),
                locked_until: Set(None),
                suspension_reason: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
            });
        entity::user::Entity::insert_many(batch)
            .exec(&txn)
            .await
            .expect("users");
    }
    let room_ids: Vec<Uuid> = (0..rooms).map(|_| Uuid::now_v7()).collect();
    for chunk in room_ids.chunks(500) {
        let batch = chunk.iter().map(|id| entity::room::ActiveModel {
            id: Set(*id),
            tenant_id: Set(tenant),
            status: Set(RoomStatus::Open),
            patient_name: Set("山田 太郎".into()),
            patient_name_kana: Set("ヤマダ タロウ".into()),
            patient_birth_date: Set(chrono::NaiveDate::from_ymd_opt(1940, 1, 1).expect("date")),
            patient_sex: Set(Sex::Male),
            patient_address: Set(None),
            patient_phone: Set(None),
            patient_care_level: Set(None),
            patient_key_person: Set(None),
            patient_primary_physician: Set(None),
            patient_care_manager: Set(None),
            patient_notes: Set(None),
            patient_label: Set("山田 太. (1940)".into()),
            opened_by: Set(users[0]),
            opened_at: Set(now),
            closing_requested_at: Set(None),
            closed_by: Set(None),
            closed_at: Set(None),
            end_reason: Set(None),
            retain_until: Set(None),
            updated_at: Set(now),
        });
        entity::room::Entity::insert_many(batch)
            .exec(&txn)
            .await
            .expect("rooms");
    }
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut memberships = Vec::with_capacity(rooms * MEMBERS_PER_ROOM);
    for room in &room_ids {
        let mut members: Vec<Uuid> = Vec::with_capacity(MEMBERS_PER_ROOM);
        while members.len() < MEMBERS_PER_ROOM {
            let u = users[rng.below(users.len())];
            if !members.contains(&u) {
                members.push(u);
            }
        }
        memberships.extend(members.into_iter().map(|u| (u, *room)));
    }
    for chunk in memberships.chunks(1000) {
        let batch = chunk.iter().map(|(u, r)| entity::room_member::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant),
            room_id: Set(*r),
            user_id: Set(*u),
            invited_by: Set(None),
            invitation_id: Set(None),
            joined_at: Set(now),
            left_at: Set(None),
            removed_by: Set(None),
            leave_reason: Set(None),
        });
        entity::room_member::Entity::insert_many(batch)
            .exec(&txn)
            .await
            .expect("members");
    }
    txn.commit().await.expect("commit");

    let before = rss_bytes();
    let started = Instant::now();
    let snapshot = renkei::authz::sync::snapshot(&db).await.expect("snapshot");
    let read = started.elapsed();
    let authz = Authorizer::new(snapshot).await.expect("enforcer loads");
    let total = started.elapsed();
    let memory = rss_bytes().saturating_sub(before);
    assert_eq!(authz.groupings(), rooms + rooms * MEMBERS_PER_ROOM);
    println!(
        "start-up from SQLite at {rooms} rooms ({} memberships): read {:.2} s, enforcer built {:.2} s after, total {:.2} s, memory growth {:.1} MB",
        rooms * MEMBERS_PER_ROOM,
        read.as_secs_f64(),
        (total - read).as_secs_f64(),
        total.as_secs_f64(),
        memory as f64 / 1e6
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--from-database") {
        let rooms: usize = args[pos + 1].parse().expect("a number of rooms");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(load_from_database(rooms));
        return;
    }
    if let Some(pos) = args.iter().position(|a| a == "--rooms") {
        let rooms: usize = args[pos + 1].parse().expect("a number of rooms");
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(run(rooms));
        return;
    }
    println!(
        "| rooms   | members   | mean        | p50         | p99         | memory     | load     |"
    );
    println!(
        "|---------|-----------|-------------|-------------|-------------|------------|----------|"
    );
    let me = std::env::current_exe().expect("own path");
    for rooms in [1_000usize, 10_000, 100_000] {
        let status = std::process::Command::new(&me)
            .args(["--rooms", &rooms.to_string()])
            .status()
            .expect("child runs");
        assert!(status.success(), "{rooms} rooms failed");
    }
    let status = std::process::Command::new(&me)
        .args(["--from-database", "100000"])
        .status()
        .expect("child runs");
    assert!(status.success(), "start-up from the database failed");
}
