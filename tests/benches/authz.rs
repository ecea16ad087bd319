//! Authorization decision time, enforcer memory and start-up load time at 1k, 10k and 100k
//! rooms with 5 members each (issue 6 targets: decisions under 10 µs and flat within 1.5x,
//! under 300 MB and 5 s at 100k rooms).
//!
//! `cargo bench -p renkei-tests --bench authz` — each size runs in a child process of its own so
//! the resident-memory growth it reports is that size's alone.

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
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
}
