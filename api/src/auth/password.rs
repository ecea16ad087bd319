//! Password rules and Argon2id hashing for the ID + password factor of the two-factor login.
//!
//! The rules follow MHLW guideline 6.0 for a system that also requires a client certificate:
//! at least 8 characters mixing character kinds, and no guessable or re-used passwords.
//!
//! Character classes (the "mix of kinds" rule) are counted after folding full-width ASCII
//! (`Ａ`, `１`, `！`, U+3000 space) to its half-width form, and are: `A-Z`, `a-z`, `0-9`, and
//! "symbol", which is every other character: ASCII punctuation and space, and also every other
//! non-ASCII character (kana, kanji, accented letters). Those widen the search space the way a
//! symbol does, and a fixed four-way split keeps the rule explainable on the password form.
//!
//! Hashing runs on a small pool of its own threads behind a semaphore: Argon2id is deliberately
//! slow and memory-hard, so an unbounded burst of logins would otherwise take every blocking
//! thread and tens of MiB each. The pool's threads run at the lowest CPU priority (Linux
//! `SCHED_IDLE`), so a login storm only uses the CPU that serving logged-in users leaves free.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{
    Error as PhcError, PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OnceCell, Semaphore};

/// Longest password accepted, in characters. Long enough for any passphrase, short enough that
/// nobody pastes a document into the field.
pub const MAX_LENGTH: usize = 128;

/// OWASP's Argon2id recommendation: 19 MiB of memory, 2 passes, 1 lane.
const M_COST_KIB: u32 = 19_456;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// Stripping digits and symbols off "Love2024!" leaves "love"; shorter remains ("ab" of
/// "Ab12345678!") are not evidence of a dictionary word, so they are not looked up.
const MIN_STRIPPED_LEN: usize = 4;

/// Login ids and name parts shorter than this match too many passwords by accident.
const MIN_IDENTITY_LEN: usize = 3;

static COMMON_PASSWORDS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    include_str!("common-passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_lowercase)
        .collect()
});

/// Why a password was refused, or why hashing failed. Messages are shown to the user as they
/// are, so they never contain the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be at least {min} characters long")]
    TooShort { min: usize },
    #[error("the password must be at most {} characters long", MAX_LENGTH)]
    TooLong,
    #[error(
        "the password must mix at least three of: upper-case letters, lower-case letters, digits, symbols"
    )]
    TooFewClasses,
    #[error("the password must not contain your login ID")]
    ContainsLoginId,
    #[error("the password must not contain your name")]
    ContainsName,
    #[error("the password is too common and easy to guess")]
    TooCommon,
    #[error("the password must differ from your recent passwords")]
    Reused,
    /// The detail is for the log (via `Debug`), not for the user.
    #[error("the password could not be processed, please try again later")]
    Internal(String),
}

/// The rules a new password must meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Minimum length in characters (not bytes).
    pub min_length: usize,
    /// How many of the four classes (upper, lower, digit, symbol) must appear.
    pub min_classes: usize,
    /// How many previous passwords may not be reused; the caller loads that many hashes and
    /// passes them to [`PasswordHasher::matches_any`].
    pub history: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 8,
            min_classes: 3,
            history: 5,
        }
    }
}

impl PasswordPolicy {
    /// Checks every rule except reuse, which needs the stored hashes (see
    /// [`PasswordHasher::matches_any`]). Returns the first broken rule in this order: too long,
    /// too short, too few classes, contains the login id, contains a name, too common.
    ///
    /// `names` are the person's display name and kana name; each whitespace-separated part of
    /// at least 3 characters, and each whole name with its spaces removed, is refused as a
    /// substring (case-insensitive, full-width folded, katakana and hiragana alike).
    pub fn check(
        &self,
        candidate: &str,
        login_id: &str,
        names: &[&str],
    ) -> Result<(), PasswordError> {
        let folded = fold_width(candidate);
        let length = folded.chars().count();
        if length > MAX_LENGTH {
            return Err(PasswordError::TooLong);
        }
        if length < self.min_length {
            return Err(PasswordError::TooShort {
                min: self.min_length,
            });
        }
        if count_classes(&folded) < self.min_classes {
            return Err(PasswordError::TooFewClasses);
        }

        let haystack = normalize(candidate);
        let login = normalize(login_id.trim());
        if login.chars().count() >= MIN_IDENTITY_LEN && haystack.contains(&login) {
            return Err(PasswordError::ContainsLoginId);
        }
        if names
            .iter()
            .flat_map(|name| name_fragments(name))
            .any(|fragment| haystack.contains(&fragment))
        {
            return Err(PasswordError::ContainsName);
        }

        if is_common(candidate) {
            return Err(PasswordError::TooCommon);
        }
        Ok(())
    }
}

/// True if the candidate is on the common-password list, compared case-insensitively and
/// full-width folded, as typed and also with leading/trailing symbols, or leading/trailing
/// digits and symbols, stripped: people satisfy composition rules by decorating a common word
/// ("Password123!"), which adds almost nothing to what an attacker has to try.
pub fn is_common(candidate: &str) -> bool {
    let lowered = normalize(candidate);
    let list = &*COMMON_PASSWORDS;
    if list.contains(&lowered) {
        return true;
    }
    let no_symbols = lowered.trim_matches(|c: char| !c.is_alphanumeric());
    let no_digits_or_symbols = lowered.trim_matches(|c: char| !c.is_alphabetic());
    [no_symbols, no_digits_or_symbols]
        .into_iter()
        .any(|base| base.chars().count() >= MIN_STRIPPED_LEN && list.contains(base))
}

/// Number of entries on the common-password list.
pub fn common_list_len() -> usize {
    COMMON_PASSWORDS.len()
}

/// Japanese IMEs produce full-width ASCII easily; without folding, "Ｐａｓｓｗｏｒｄ１" would dodge
/// every rule while being just as guessable.
fn fold_width(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            _ => c,
        })
        .collect()
}

/// The comparison form for substring and list checks. Katakana is folded to hiragana so a kana
/// name registered in one script is still found when written in the other.
fn normalize(s: &str) -> String {
    fold_width(s)
        .to_lowercase()
        .chars()
        .map(|c| match c {
            '\u{30A1}'..='\u{30F6}' => char::from_u32(u32::from(c) - 0x60).unwrap_or(c),
            _ => c,
        })
        .collect()
}

fn count_classes(folded: &str) -> usize {
    let (mut upper, mut lower, mut digit, mut symbol) = (false, false, false, false);
    for c in folded.chars() {
        match c {
            'A'..='Z' => upper = true,
            'a'..='z' => lower = true,
            '0'..='9' => digit = true,
            _ => symbol = true,
        }
    }
    [upper, lower, digit, symbol]
        .into_iter()
        .filter(|&present| present)
        .count()
}

/// Kanji names are often two characters per part ("山田 太郎"), below the part threshold, so the
/// whole name without spaces is checked as well.
fn name_fragments(name: &str) -> Vec<String> {
    let normalized = normalize(name);
    let mut fragments: Vec<String> = normalized
        .split_whitespace()
        .filter(|part| part.chars().count() >= MIN_IDENTITY_LEN)
        .map(str::to_owned)
        .collect();
    let joined: String = normalized.split_whitespace().collect();
    if joined.chars().count() >= MIN_IDENTITY_LEN && !fragments.contains(&joined) {
        fragments.push(joined);
    }
    fragments
}

/// Argon2id hashing and verification off the async executor, at most `max_concurrent` at once.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    permits: Arc<Semaphore>,
    pool: HashPool,
    dummy_hash: OnceCell<String>,
    /// Argon2id verifications run (real and dummy): lets tests check that an unknown login ID
    /// costs the same work as a wrong password, without timing anything.
    verifications: std::sync::atomic::AtomicU64,
    #[cfg(test)]
    probe: tests::Probe,
}

impl Default for PasswordHasher {
    /// One hash per CPU: more would only queue inside the OS scheduler while holding memory.
    fn default() -> Self {
        Self::new(
            std::thread::available_parallelism()
                .map(std::num::NonZeroUsize::get)
                .unwrap_or(1),
        )
    }
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("available_permits", &self.inner.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// `max_concurrent` of 0 is taken as 1, since no hash could ever run.
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
                pool: HashPool::new(max_concurrent.max(1)),
                dummy_hash: OnceCell::new(),
                verifications: std::sync::atomic::AtomicU64::new(0),
                #[cfg(test)]
                probe: tests::Probe::default(),
            }),
        }
    }

    /// Hashes a new password to a PHC string with a fresh random salt. Does not apply the
    /// policy: call [`PasswordPolicy::check`] first.
    pub async fn hash(&self, password: SecretString) -> Result<String, PasswordError> {
        self.run_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2()?
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| internal("hashing failed", &e))
        })
        .await
    }

    /// Checks a password against a stored PHC string, with the parameters recorded in it, so
    /// hashes made with older parameters still verify. A malformed PHC string is an error, not
    /// `false`: it means the stored data is broken.
    pub async fn verify(&self, password: SecretString, phc: &str) -> Result<bool, PasswordError> {
        let phc = phc.to_owned();
        self.inner
            .verifications
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.run_blocking(move || verify_blocking(&password, &phc))
            .await
    }

    /// How many verifications (real or dummy) this hasher has run.
    pub fn verifications(&self) -> u64 {
        self.inner
            .verifications
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// For an unknown login id: does the same work as a real [`verify`](Self::verify) against a
    /// fixed dummy hash, so that "no such ID" and "wrong password" take the same time and the
    /// response time does not tell which IDs exist.
    pub async fn verify_dummy(&self, password: SecretString) {
        let dummy = self
            .inner
            .dummy_hash
            .get_or_try_init(|| self.hash(SecretString::from("renkei-dummy-password")))
            .await;
        match dummy {
            Ok(phc) => {
                let _ = self.verify(password, phc).await;
            }
            // Still spend the time of one hash, so a broken dummy does not open a timing gap.
            Err(_) => {
                let _ = self.hash(password).await;
            }
        }
    }

    /// Reuse check: true if the password matches any of `previous` (the caller passes the
    /// last [`PasswordPolicy::history`] hashes). Each comparison takes its own permit, so a
    /// password change does not hold up logins for the length of the whole history.
    pub async fn matches_any(
        &self,
        password: SecretString,
        previous: &[String],
    ) -> Result<bool, PasswordError> {
        for phc in previous {
            if self.verify(password.clone(), phc).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Runs `work` on the hashing pool once a permit is free. The permit moves into the job, so
    /// it is released when the work ends, not when the caller stops waiting: a client that
    /// disconnects mid-login must not free a slot while its hash still burns a CPU.
    async fn run_blocking<T, F>(&self, work: F) -> Result<T, PasswordError>
    where
        F: FnOnce() -> Result<T, PasswordError> + Send + 'static,
        T: Send + 'static,
    {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| PasswordError::Internal("password semaphore closed".to_owned()))?;
        #[cfg(test)]
        let inner = Arc::clone(&self.inner);
        let (reply, result) = tokio::sync::oneshot::channel();
        self.inner.pool.submit(Box::new(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                #[cfg(test)]
                let _in_flight = inner.probe.enter();
                work()
            }));
            // The slot is free before the caller hears back, panic or not.
            drop(permit);
            let outcome = outcome.unwrap_or_else(|_| {
                Err(PasswordError::Internal("password task panicked".to_owned()))
            });
            // The caller may have gone away; the work is done either way.
            let _ = reply.send(outcome);
        }))?;
        result
            .await
            .map_err(|_| PasswordError::Internal("password task was dropped".to_owned()))?
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed set of low-priority threads that run hashing jobs. Exactly as many threads as
/// semaphore permits, so a job never waits in the queue for long. The threads end when the
/// hasher is dropped (the queue's sender goes with it).
struct HashPool {
    queue: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
}

impl HashPool {
    fn new(threads: usize) -> Self {
        let (sender, receiver) = std::sync::mpsc::channel::<Job>();
        let receiver = Arc::new(std::sync::Mutex::new(receiver));
        for index in 0..threads {
            let receiver = Arc::clone(&receiver);
            let spawned = std::thread::Builder::new()
                .name(format!("renkei-argon2-{index}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // Hold the lock only to take the next job, never while running it.
                        let job = match receiver.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password hashing thread");
            }
        }
        Self {
            queue: std::sync::Mutex::new(sender),
        }
    }

    fn submit(&self, job: Job) -> Result<(), PasswordError> {
        let queue = self
            .queue
            .lock()
            .map_err(|_| PasswordError::Internal("password queue poisoned".to_owned()))?;
        queue
            .send(job)
            .map_err(|_| PasswordError::Internal("no password hashing thread".to_owned()))
    }
}

/// Moves the current thread to `SCHED_IDLE`: it runs only when no normal-priority thread of
/// the machine wants the CPU. Any unprivileged thread may lower itself; where the OS refuses,
/// hashing still works at normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        if let Err(e) = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        ) {
            tracing::warn!(error = ?e, "password hashing runs at normal CPU priority");
        }
    }
}

fn argon2() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
        .map_err(|e| internal("invalid Argon2 parameters", &e))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn verify_blocking(password: &SecretString, phc: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(phc).map_err(|e| internal("malformed password hash", &e))?;
    match argon2()?.verify_password(password.expose_secret().as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(PhcError::Password) => Ok(false),
        Err(e) => Err(internal("verification failed", &e)),
    }
}

fn internal(context: &str, error: &impl std::fmt::Display) -> PasswordError {
    PasswordError::Internal(format!("{context}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Counts blocking tasks that hold a permit, to show the semaphore bound without timing.
    #[derive(Default)]
    pub(super) struct Probe {
        in_flight: AtomicUsize,
        peak: AtomicUsize,
        started: AtomicUsize,
    }

    pub(super) struct ProbeGuard<'a>(&'a Probe);

    impl Probe {
        pub(super) fn enter(&self) -> ProbeGuard<'_> {
            self.started.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            ProbeGuard(self)
        }
    }

    impl Drop for ProbeGuard<'_> {
        fn drop(&mut self) {
            self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s)
    }

    fn check(candidate: &str) -> Result<(), PasswordError> {
        PasswordPolicy::default().check(candidate, "tanaka01", &["Hanako Tanaka", "タナカ ハナコ"])
    }

    #[test]
    fn defaults_match_the_guideline() {
        let policy = PasswordPolicy::default();
        assert_eq!(policy.min_length, 8);
        assert_eq!(policy.min_classes, 3);
        assert_eq!(policy.history, 5);
    }

    #[test]
    fn length_is_counted_in_characters() {
        assert_eq!(check("Ab1!xyz"), Err(PasswordError::TooShort { min: 8 }));
        assert_eq!(check(""), Err(PasswordError::TooShort { min: 8 }));
        assert_eq!(check("Ab1!xyzq"), Ok(()));
        // 7 characters but 21 bytes: still too short.
        assert_eq!(
            check("Ab1あいうえ"),
            Err(PasswordError::TooShort { min: 8 })
        );
        assert_eq!(check("Ab1あいうえお"), Ok(()));
    }

    #[test]
    fn length_is_capped() {
        let at_limit = format!("Ab1!{}", "x".repeat(MAX_LENGTH - 4));
        assert_eq!(check(&at_limit), Ok(()));
        let over = format!("Ab1!{}", "x".repeat(MAX_LENGTH - 3));
        assert_eq!(check(&over), Err(PasswordError::TooLong));
        // The cap is in characters too: 128 kana are 384 bytes and allowed.
        let kana = format!("Ab1{}", "あ".repeat(MAX_LENGTH - 3));
        assert_eq!(check(&kana), Ok(()));
    }

    #[test]
    fn needs_three_of_four_classes() {
        assert_eq!(check("abcdefgh"), Err(PasswordError::TooFewClasses));
        assert_eq!(check("abcdefg1"), Err(PasswordError::TooFewClasses));
        assert_eq!(check("ABCDEFG!"), Err(PasswordError::TooFewClasses));
        assert_eq!(check("Zebrafin9"), Ok(()));
        assert_eq!(check("zebrafin9!"), Ok(()));
        assert_eq!(check("ZEBRAFIN9!"), Ok(()));
        assert_eq!(check("Zebrafin!"), Ok(()));
    }

    #[test]
    fn non_ascii_counts_as_symbol_and_full_width_folds() {
        // Kana is a symbol: lower + digit + kana is three classes.
        assert_eq!(check("zebrafin9あ"), Ok(()));
        // Full-width lower-case and digits fold to ASCII: only two classes.
        assert_eq!(
            check("ｚｅｂｒａｆｉｎ９"),
            Err(PasswordError::TooFewClasses)
        );
        assert_eq!(check("Ｚｅｂｒａｆｉｎ９"), Ok(()));
        assert_eq!(count_classes(&fold_width("Ｚｅ９！")), 4);
        // Odd code points must not panic anything.
        assert_eq!(
            check("\u{FF5E}\u{3000}\u{10FFFF}\u{0301}é漢字🙂Ａa1"),
            Ok(())
        );
        assert_eq!(
            check("\u{FF5E}\u{3000}é漢字🙂"),
            Err(PasswordError::TooShort { min: 8 })
        );
    }

    #[test]
    fn login_id_is_refused_case_insensitively() {
        let policy = PasswordPolicy::default();
        assert_eq!(
            policy.check("xTANAKA01!q", "tanaka01", &[]),
            Err(PasswordError::ContainsLoginId)
        );
        assert_eq!(
            policy.check("Ｔａｎａｋａ０１!q", "tanaka01", &[]),
            Err(PasswordError::ContainsLoginId)
        );
        assert_eq!(policy.check("Zebrafin9!", "tanaka01", &[]), Ok(()));
        // Login ids shorter than 3 characters would refuse too much by accident.
        assert_eq!(policy.check("Zebrafin9!", "zf", &[]), Ok(()));
        assert_eq!(
            policy.check("Zebrafin9!", "zeb", &[]),
            Err(PasswordError::ContainsLoginId)
        );
    }

    #[test]
    fn names_are_refused() {
        assert_eq!(check("Hanako#2024x"), Err(PasswordError::ContainsName));
        assert_eq!(check("x!TANAKA77q"), Err(PasswordError::ContainsName));
        // The kana name, in katakana as registered or typed in hiragana.
        assert_eq!(check("Zz9!xタナカ"), Err(PasswordError::ContainsName));
        assert_eq!(check("Zz9!xはなこ"), Err(PasswordError::ContainsName));
        assert_eq!(check("Zebrafin9!"), Ok(()));
        let policy = PasswordPolicy::default();
        // Two-character kanji parts are too short alone, but the whole name is caught.
        assert_eq!(policy.check("Zz9!xy山田", "yamada", &["山田 太郎"]), Ok(()));
        assert_eq!(
            policy.check("Zz9!山田太郎", "yamada", &["山田 太郎"]),
            Err(PasswordError::ContainsName)
        );
        // Ideographic space separates parts as well.
        assert_eq!(
            policy.check("Zz9!Taro_x", "abc99", &["Yamada\u{3000}Taro"]),
            Err(PasswordError::ContainsName)
        );
        // Short name parts are ignored.
        assert_eq!(policy.check("Zebrafin9!", "abc99", &["Li Ze"]), Ok(()));
    }

    #[test]
    fn common_passwords_are_refused() {
        assert!(is_common("qwerty"));
        assert!(is_common("Password123!"));
        assert!(is_common("QWERTY"));
        assert!(is_common("ｐａｓｓｗｏｒｄ"));
        assert!(is_common("!!Dragon2024"));
        assert!(is_common("123456789!"));
        assert!(!is_common("Zebrafin9!"));
        assert!(!is_common("Xq7#mLu2vR"));
        // A short remainder after stripping is not looked up.
        assert!(!is_common("Ab12345678!"));
        assert_eq!(check("qwerty").map_err(|_| ()), Err(()));
        assert_eq!(check("Password123!"), Err(PasswordError::TooCommon));
        assert_eq!(check("Qwerty123!"), Err(PasswordError::TooCommon));
        assert_eq!(check("Zebrafin9!"), Ok(()));
    }

    #[test]
    fn list_is_large_and_normalized() {
        assert!(common_list_len() >= 10_000, "{}", common_list_len());
        assert!(COMMON_PASSWORDS.iter().all(|p| *p == p.to_lowercase()));
        assert!(COMMON_PASSWORDS.iter().all(|p| !p.starts_with('#')));
        assert!(!COMMON_PASSWORDS.contains(""));
    }

    #[test]
    fn messages_do_not_echo_the_password() {
        let candidate = "Password123!";
        let Err(e) = check(candidate) else {
            panic!("must be refused");
        };
        assert!(!e.to_string().contains(candidate));
        assert!(!e.to_string().to_lowercase().contains("password123"));
        assert_eq!(
            PasswordError::TooShort { min: 8 }.to_string(),
            "the password must be at least 8 characters long"
        );
        assert!(PasswordError::TooLong.to_string().contains("128"));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_runs_at_idle_priority_and_survives_a_panicking_job() {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy,
        };
        let hasher = PasswordHasher::new(1);
        let policy = hasher
            .run_blocking(|| Ok(thread_schedule_policy().ok()))
            .await
            .unwrap();
        assert_eq!(
            policy,
            Some(ThreadSchedulePolicy::Normal(
                NormalThreadSchedulePolicy::Idle
            ))
        );
        let panicked: Result<(), _> = hasher.run_blocking(|| panic!("boom")).await;
        assert!(matches!(panicked, Err(PasswordError::Internal(_))));
        // The single thread caught the panic and still serves jobs.
        assert_eq!(hasher.run_blocking(|| Ok(7)).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn hash_and_verify_round_trip() -> Result<(), PasswordError> {
        let hasher = PasswordHasher::new(2);
        let phc = hasher.hash(secret("Zebrafin9!")).await?;
        assert!(
            phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "unexpected PHC string {phc}"
        );
        assert!(!phc.contains("Zebrafin9!"));
        assert!(hasher.verify(secret("Zebrafin9!"), &phc).await?);
        assert!(!hasher.verify(secret("Zebrafin9?"), &phc).await?);
        assert!(!hasher.verify(secret(""), &phc).await?);
        // Salts are random: the same password never hashes the same twice.
        let again = hasher.hash(secret("Zebrafin9!")).await?;
        assert_ne!(phc, again);
        Ok(())
    }

    #[tokio::test]
    async fn malformed_hash_is_an_error_not_a_panic() {
        let hasher = PasswordHasher::new(1);
        let result = hasher
            .verify(secret("Zebrafin9!"), "not a phc string")
            .await;
        assert!(
            matches!(result, Err(PasswordError::Internal(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn matches_any_finds_reuse() -> Result<(), PasswordError> {
        let hasher = PasswordHasher::new(2);
        let previous = vec![
            hasher.hash(secret("Old-pass1")).await?,
            hasher.hash(secret("Old-pass2")).await?,
        ];
        assert!(hasher.matches_any(secret("Old-pass2"), &previous).await?);
        assert!(hasher.matches_any(secret("Old-pass1"), &previous).await?);
        assert!(!hasher.matches_any(secret("New-pass3"), &previous).await?);
        assert!(!hasher.matches_any(secret("Old-pass1"), &[]).await?);
        Ok(())
    }

    #[tokio::test]
    async fn verify_dummy_returns_and_reuses_its_hash() {
        let hasher = PasswordHasher::new(1);
        hasher.verify_dummy(secret("whatever")).await;
        let first = hasher.inner.dummy_hash.get().cloned();
        assert!(
            first
                .as_deref()
                .is_some_and(|h| h.starts_with("$argon2id$"))
        );
        hasher.verify_dummy(secret("something else")).await;
        assert_eq!(hasher.inner.dummy_hash.get().cloned(), first);
        // One dummy hash, then one verify per call.
        assert_eq!(hasher.inner.probe.started.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_permit_runs_hashes_one_after_the_other() -> Result<(), PasswordError> {
        let hasher = PasswordHasher::new(1);
        let (a, b, c) = tokio::join!(
            hasher.hash(secret("First-pass1")),
            hasher.hash(secret("Second-pass2")),
            hasher.hash(secret("Third-pass3")),
        );
        a?;
        b?;
        c?;
        assert_eq!(hasher.inner.probe.started.load(Ordering::SeqCst), 3);
        assert_eq!(hasher.inner.probe.peak.load(Ordering::SeqCst), 1);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_permits_let_two_run_together() -> Result<(), PasswordError> {
        let hasher = PasswordHasher::new(2);
        // Each task waits for the other inside the permit: this only finishes if both hold a
        // permit at once.
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (b1, b2) = (Arc::clone(&barrier), Arc::clone(&barrier));
        let both = async {
            tokio::join!(
                hasher.run_blocking(move || {
                    b1.wait();
                    Ok(())
                }),
                hasher.run_blocking(move || {
                    b2.wait();
                    Ok(())
                }),
            )
        };
        let (r1, r2) = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .map_err(|_| PasswordError::Internal("timed out".to_owned()))?;
        r1?;
        r2?;
        assert_eq!(hasher.inner.probe.peak.load(Ordering::SeqCst), 2);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn permit_is_held_until_the_work_ends_even_if_the_caller_gives_up()
    -> Result<(), PasswordError> {
        let hasher = PasswordHasher::new(1);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let busy = hasher.clone();
        let abandoned = tokio::spawn(async move {
            busy.run_blocking(move || {
                let _ = wait.recv();
                Ok(())
            })
            .await
        });
        while hasher.inner.probe.in_flight.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        abandoned.abort();
        let _ = abandoned.await;

        // The caller is gone but its work still runs: nobody else may start.
        let second = hasher.run_blocking(|| Ok(()));
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut second)
                .await
                .is_err()
        );
        assert_eq!(hasher.inner.probe.started.load(Ordering::SeqCst), 1);

        let _ = release.send(());
        tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .map_err(|_| PasswordError::Internal("timed out".to_owned()))??;
        assert_eq!(hasher.inner.probe.peak.load(Ordering::SeqCst), 1);
        assert_eq!(hasher.inner.probe.started.load(Ordering::SeqCst), 2);
        Ok(())
    }

    #[tokio::test]
    async fn panicking_work_becomes_an_error() {
        let hasher = PasswordHasher::new(1);
        let result: Result<(), _> = hasher
            .run_blocking(|| panic!("simulated failure inside the blocking task"))
            .await;
        assert_eq!(
            result,
            Err(PasswordError::Internal("password task panicked".to_owned()))
        );
        // The permit came back despite the panic.
        assert_eq!(hasher.inner.permits.available_permits(), 1);
        assert!(hasher.hash(secret("Zebrafin9!")).await.is_ok());
    }
}
