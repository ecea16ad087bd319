//! Fixed-window counters that slow down password guessing per client IP and protect public
//! endpoints, in Redis (shared by every instance) or in process for the embedded default.
//!
//! A window opens with the first event for a key and lasts `window`; `limit` events fit in it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::session::StoreError;
use crate::redis_store::RedisHandle;

/// The answer for one key: whether the event (or, for `check`, one more) is within the limit,
/// how many events the current window holds, and when the window ends if it is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub count: u64,
    /// Seconds until the window ends, rounded up; 0 when allowed.
    pub retry_after_seconds: u64,
}

#[derive(Clone)]
pub struct RateLimiter {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Memory(Arc<Mutex<MemoryWindows>>),
    Redis(RedisHandle),
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        };
        f.debug_struct("RateLimiter")
            .field("backend", &backend)
            .finish()
    }
}

impl RateLimiter {
    pub fn memory() -> Self {
        RateLimiter {
            backend: Backend::Memory(Arc::default()),
        }
    }

    pub fn redis(handle: RedisHandle) -> Self {
        RateLimiter {
            backend: Backend::Redis(handle),
        }
    }

    /// Counts one event for `key` in the current window and says whether it is within `limit`
    /// (the first `limit` events of a window are allowed).
    pub async fn hit(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
    ) -> Result<Decision, StoreError> {
        let window = clamp(window);
        let (count, remaining) = match &self.backend {
            Backend::Memory(windows) => lock(windows).hit(key, window, Instant::now()),
            Backend::Redis(handle) => redis_hit(handle, key, window).await?,
        };
        // Judged as if before this event, so exactly `limit` events pass, as with `check`.
        let decision = decide(count.saturating_sub(1), limit, remaining);
        Ok(Decision { count, ..decision })
    }

    /// Whether one more event for `key` would be within `limit`, without counting it: false
    /// once the window already holds `limit` events.
    pub async fn check(
        &self,
        key: &str,
        limit: u64,
        window: Duration,
    ) -> Result<Decision, StoreError> {
        let window = clamp(window);
        let (count, remaining) = match &self.backend {
            Backend::Memory(windows) => lock(windows).current(key, Instant::now()),
            Backend::Redis(handle) => redis_current(handle, key).await?,
        };
        Ok(decide(count, limit, remaining.unwrap_or(window)))
    }

    /// Forgets the key's window (e.g. after a successful login).
    pub async fn reset(&self, key: &str) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Memory(windows) => {
                lock(windows).windows.remove(key);
                Ok(())
            }
            Backend::Redis(handle) => {
                let mut conn = handle.connection();
                redis::cmd("DEL")
                    .arg(redis_key(handle, key))
                    .exec_async(&mut conn)
                    .await
                    .map_err(unavailable("redis: reset rate limit"))
            }
        }
    }

    /// Drops ended windows from the in-process map and returns how many went. Redis expires
    /// its counters by itself, so there this does nothing and returns 0.
    pub fn sweep(&self) -> usize {
        match &self.backend {
            Backend::Memory(windows) => lock(windows).sweep(Instant::now()),
            Backend::Redis(_) => 0,
        }
    }
}

/// `prior` events already in the window: one more is allowed while `prior < limit`.
fn decide(prior: u64, limit: u64, remaining: Duration) -> Decision {
    if prior < limit {
        return Decision {
            allowed: true,
            count: prior,
            retry_after_seconds: 0,
        };
    }
    // Rounded up and at least 1: a client that waits that long finds a fresh window.
    let seconds = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
    Decision {
        allowed: false,
        count: prior,
        retry_after_seconds: seconds.max(1),
    }
}

/// At least 1 ms (Redis deletes a key given a zero TTL) and at most a year (keeps `Instant`
/// arithmetic far from overflow whatever a caller passes).
fn clamp(window: Duration) -> Duration {
    window.clamp(
        Duration::from_millis(1),
        Duration::from_secs(365 * 24 * 3600),
    )
}

// ---------------------------------------------------------------------------------------------
// In-process counters

#[derive(Default)]
struct MemoryWindows {
    windows: HashMap<String, Window>,
    hits_since_sweep: u32,
}

struct Window {
    count: u64,
    ends: Instant,
}

/// How many hits between two automatic sweeps: keys are client addresses, so without it a scan
/// from many addresses would grow the map for good.
const SWEEP_EVERY: u32 = 1024;

/// No code under the lock panics halfway through an update, so a poisoned map is still
/// consistent: keep limiting rather than failing every request.
fn lock(windows: &Mutex<MemoryWindows>) -> MutexGuard<'_, MemoryWindows> {
    windows.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryWindows {
    fn hit(&mut self, key: &str, window: Duration, now: Instant) -> (u64, Duration) {
        self.hits_since_sweep += 1;
        if self.hits_since_sweep >= SWEEP_EVERY {
            self.sweep(now);
        }
        let entry = self.windows.entry(key.to_owned()).or_insert(Window {
            count: 0,
            ends: now + window,
        });
        if entry.ends <= now {
            *entry = Window {
                count: 0,
                ends: now + window,
            };
        }
        entry.count = entry.count.saturating_add(1);
        (entry.count, entry.ends - now)
    }

    fn current(&mut self, key: &str, now: Instant) -> (u64, Option<Duration>) {
        match self.windows.get(key) {
            Some(w) if w.ends > now => (w.count, Some(w.ends - now)),
            Some(_) => {
                self.windows.remove(key);
                (0, None)
            }
            None => (0, None),
        }
    }

    fn sweep(&mut self, now: Instant) -> usize {
        self.hits_since_sweep = 0;
        let before = self.windows.len();
        self.windows.retain(|_, w| w.ends > now);
        before - self.windows.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Redis counters: `ratelimit:<key>`, a string counter whose TTL is the rest of its window.

fn redis_key(handle: &RedisHandle, key: &str) -> String {
    handle.key(&format!("ratelimit:{key}"))
}

fn unavailable(what: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |e| StoreError::Unavailable(anyhow::Error::new(e).context(what))
}

fn window_left(pttl: i64) -> Option<Duration> {
    u64::try_from(pttl)
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

async fn redis_hit(
    handle: &RedisHandle,
    key: &str,
    window: Duration,
) -> Result<(u64, Duration), StoreError> {
    let key = redis_key(handle, key);
    let mut conn = handle.connection();
    // One transaction: the first INCR of a window and its TTL land together (NX leaves the
    // running window alone), so a crash in between cannot leave a counter that never expires.
    let (count, pttl): (u64, i64) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg(&key)
        .cmd("PEXPIRE")
        .arg(&key)
        .arg(millis(window))
        .arg("NX")
        .ignore()
        .cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .map_err(unavailable("redis: count rate limit"))?;
    Ok((count, window_left(pttl).unwrap_or(window)))
}

async fn redis_current(
    handle: &RedisHandle,
    key: &str,
) -> Result<(u64, Option<Duration>), StoreError> {
    let key = redis_key(handle, key);
    let mut conn = handle.connection();
    let (count, pttl): (Option<u64>, i64) = redis::pipe()
        .atomic()
        .cmd("GET")
        .arg(&key)
        .cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .map_err(unavailable("redis: read rate limit"))?;
    Ok((count.unwrap_or(0), window_left(pttl)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::auth::session::test_support::{Mode, Proxy, TestRedis, eventually};

    /// Builds limiters of one backend; every scenario below runs once per backend.
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

        fn limiter(&self) -> RateLimiter {
            match &self.redis {
                None => RateLimiter::memory(),
                Some(r) => RateLimiter::redis(r.handle.clone()),
            }
        }
    }

    /// `scenario` becomes the tests `scenario::memory` and `scenario::redis`.
    macro_rules! on_both_backends {
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

    on_both_backends!(
        events_beyond_the_limit_are_refused_until_the_window_ends,
        a_new_window_starts_from_zero,
        check_does_not_count,
        reset_forgets_the_window,
        keys_are_counted_separately,
        sweep_forgets_ended_windows,
    );

    const MINUTE: Duration = Duration::from_secs(60);

    async fn events_beyond_the_limit_are_refused_until_the_window_ends(fx: &Fixture) {
        let limiter = fx.limiter();
        for n in 1..=3 {
            let d = limiter.hit("ip:192.0.2.1", 3, MINUTE).await.unwrap();
            assert_eq!(
                d,
                Decision {
                    allowed: true,
                    count: n,
                    retry_after_seconds: 0
                }
            );
        }
        for n in 4..=6 {
            let d = limiter.hit("ip:192.0.2.1", 3, MINUTE).await.unwrap();
            assert!(!d.allowed);
            assert_eq!(d.count, n);
            assert!(
                (59..=60).contains(&d.retry_after_seconds),
                "{}",
                d.retry_after_seconds
            );
        }
        let d = limiter.check("ip:192.0.2.1", 3, MINUTE).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.count, 6);
        assert!((59..=60).contains(&d.retry_after_seconds));

        // A zero limit refuses everything.
        let d = limiter.hit("ip:192.0.2.9", 0, MINUTE).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.count, 1);
    }

    async fn a_new_window_starts_from_zero(fx: &Fixture) {
        let limiter = fx.limiter();
        let window = Duration::from_secs(1);
        assert!(limiter.hit("k", 1, window).await.unwrap().allowed);
        let refused = limiter.hit("k", 1, window).await.unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_seconds, 1);
        // Refused hits do not extend the window.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(
            limiter.check("k", 1, window).await.unwrap(),
            Decision {
                allowed: true,
                count: 0,
                retry_after_seconds: 0
            }
        );
        let d = limiter.hit("k", 1, window).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.count, 1);
    }

    async fn check_does_not_count(fx: &Fixture) {
        let limiter = fx.limiter();
        for _ in 0..5 {
            let d = limiter.check("k", 2, MINUTE).await.unwrap();
            assert_eq!(
                d,
                Decision {
                    allowed: true,
                    count: 0,
                    retry_after_seconds: 0
                }
            );
        }
        assert_eq!(limiter.hit("k", 2, MINUTE).await.unwrap().count, 1);
        let d = limiter.check("k", 2, MINUTE).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.count, 1);
        assert_eq!(limiter.hit("k", 2, MINUTE).await.unwrap().count, 2);
        // The window holds `limit` events: the next one would be refused.
        let d = limiter.check("k", 2, MINUTE).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.count, 2);
        assert!(d.retry_after_seconds >= 59);
        assert_eq!(limiter.check("k", 2, MINUTE).await.unwrap().count, 2);
        if let Some(redis) = &fx.redis {
            let mut conn = redis.direct().await;
            let exists: bool = redis::cmd("EXISTS")
                .arg(format!("{}ratelimit:never-hit", redis.prefix))
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(!exists);
        }
    }

    async fn reset_forgets_the_window(fx: &Fixture) {
        let limiter = fx.limiter();
        for _ in 0..4 {
            limiter.hit("k", 2, MINUTE).await.unwrap();
        }
        assert!(!limiter.check("k", 2, MINUTE).await.unwrap().allowed);
        limiter.reset("k").await.unwrap();
        assert_eq!(limiter.check("k", 2, MINUTE).await.unwrap().count, 0);
        let d = limiter.hit("k", 2, MINUTE).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.count, 1);
        limiter.reset("never-seen").await.unwrap();
    }

    async fn keys_are_counted_separately(fx: &Fixture) {
        let limiter = fx.limiter();
        limiter.hit("ip:198.51.100.1", 1, MINUTE).await.unwrap();
        assert!(
            !limiter
                .hit("ip:198.51.100.1", 1, MINUTE)
                .await
                .unwrap()
                .allowed
        );
        let other = limiter.hit("ip:198.51.100.2", 1, MINUTE).await.unwrap();
        assert!(other.allowed);
        assert_eq!(other.count, 1);
    }

    async fn sweep_forgets_ended_windows(fx: &Fixture) {
        let limiter = fx.limiter();
        limiter
            .hit("short", 5, Duration::from_millis(300))
            .await
            .unwrap();
        limiter.hit("long", 5, MINUTE).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        match &fx.redis {
            Some(_) => assert_eq!(limiter.sweep(), 0),
            None => {
                assert_eq!(limiter.sweep(), 1);
                assert_eq!(limiter.sweep(), 0);
            }
        }
        assert_eq!(limiter.check("short", 5, MINUTE).await.unwrap().count, 0);
        assert_eq!(limiter.check("long", 5, MINUTE).await.unwrap().count, 1);
    }

    #[tokio::test]
    async fn redis_counter_lives_under_the_prefix_with_the_window_as_ttl() {
        let fx = Fixture::redis().await;
        let redis = fx.redis.as_ref().unwrap();
        let limiter = fx.limiter();
        limiter
            .hit("login-ip:203.0.113.7", 5, MINUTE)
            .await
            .unwrap();
        limiter
            .hit("login-ip:203.0.113.7", 5, MINUTE)
            .await
            .unwrap();
        let key = format!("{}ratelimit:login-ip:203.0.113.7", redis.prefix);
        assert_eq!(redis.keys().await, vec![key.clone()]);
        let mut conn = redis.direct().await;
        let (count, ttl): (u64, i64) = redis::pipe()
            .cmd("GET")
            .arg(&key)
            .cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(count, 2);
        assert!((55_000..=60_000).contains(&ttl), "{ttl}");
        limiter.reset("login-ip:203.0.113.7").await.unwrap();
        assert!(redis.keys().await.is_empty());
    }

    #[tokio::test]
    async fn redis_down_fails_closed_and_recovers_without_restart() {
        for mode in [Mode::Refuse, Mode::Blackhole] {
            let proxy = Proxy::start().await;
            let redis = TestRedis::via(&proxy.url()).await;
            let limiter = RateLimiter::redis(redis.handle.clone());
            assert!(limiter.hit("k", 5, MINUTE).await.unwrap().allowed);

            proxy.set(mode).await;
            let started = Instant::now();
            assert!(matches!(
                limiter.hit("k", 5, MINUTE).await,
                Err(StoreError::Unavailable(_))
            ));
            assert!(matches!(
                limiter.check("k", 5, MINUTE).await,
                Err(StoreError::Unavailable(_))
            ));
            assert!(matches!(
                limiter.reset("k").await,
                Err(StoreError::Unavailable(_))
            ));
            assert!(started.elapsed() < Duration::from_secs(10));

            proxy.set(Mode::Forward).await;
            let d = eventually(|| limiter.check("k", 5, MINUTE)).await;
            assert_eq!(d.count, 1);
            assert_eq!(limiter.hit("k", 5, MINUTE).await.unwrap().count, 2);
        }
    }

    #[test]
    fn futures_can_cross_threads() {
        // The server runs handlers on a multi-threaded runtime: no lock may be held across
        // an await, which would make these futures !Send.
        fn send<T: Send>(_: &T) {}
        let limiter = RateLimiter::memory();
        send(&limiter.hit("k", 1, MINUTE));
        send(&limiter.check("k", 1, MINUTE));
        send(&limiter.reset("k"));
    }

    #[test]
    fn retry_after_rounds_up() {
        let d = decide(3, 3, Duration::from_millis(1));
        assert_eq!(d.retry_after_seconds, 1);
        let d = decide(3, 3, Duration::from_millis(1500));
        assert_eq!(d.retry_after_seconds, 2);
        let d = decide(3, 3, Duration::from_secs(2));
        assert_eq!(d.retry_after_seconds, 2);
        assert_eq!(decide(2, 3, Duration::from_secs(2)).retry_after_seconds, 0);
    }
}
