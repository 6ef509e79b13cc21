//! Password work, the strength policy, and the throttles in front of them.
//!
//! Argon2 is built to be slow (about 20 ms and 19 MiB a hash here), so it
//! never runs on an actix worker: a flood of logins would stall every other
//! route on that worker. It runs on threads of its own, one per core, each
//! with its hashing memory allocated once and reused (see
//! `agentry_auth::HashingMemory`), with a bounded queue behind: past it a
//! caller hears 503 at once instead of holding memory while it waits.
//!
//! Before any of that, login and invite acceptance pass two GCRA limiters
//! (`governor`), one keyed by the account (the e-mail address, or the
//! invite token's hash) and one by the client address, so guesses at one
//! account are capped however many addresses they come from, and one
//! address cannot spray guesses over many accounts.
//!
//! The strength check is here rather than in `agentry-auth` because zxcvbn
//! reads the clock (it times itself, and dates count against the current
//! year), and the rule crates never do.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use agentry_auth::{
    HashingMemory, hash_password, verify_password, verify_password_for_unknown_account,
};
use agentry_domain::Password;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Callers that may wait for a hashing slot, per slot.
const QUEUE_PER_SLOT: usize = 16;

/// Argon2 off the async workers, a few at a time.
#[derive(Debug)]
pub struct PasswordWork {
    /// One per hash running now.
    running: Arc<Semaphore>,
    /// One per caller running or waiting; when none is left, callers are
    /// turned away rather than queued.
    admitted: Arc<Semaphore>,
    /// To the hashing threads, one per slot; they end when this is dropped.
    jobs: std::sync::mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce(&mut HashingMemory) + Send>;

/// Starts `count` threads, each with its own hashing memory, that run the
/// jobs sent on the returned channel until it is dropped.
fn hashing_threads(count: usize) -> std::sync::mpsc::Sender<Job> {
    let (jobs, queue) = std::sync::mpsc::channel::<Job>();
    let queue = Arc::new(std::sync::Mutex::new(queue));
    for index in 0..count {
        let queue = Arc::clone(&queue);
        let started = std::thread::Builder::new()
            .name(format!("agentry-argon2-{index}"))
            .spawn(move || {
                let mut memory = HashingMemory::default();
                loop {
                    // The lock is held only while waiting for a job.
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    // A job that panics loses its own answer (its caller
                    // hears 500), not the thread; the memory it left is
                    // scratch that the next hash overwrites.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        job(&mut memory);
                    }));
                }
            });
        if let Err(error) = started {
            tracing::error!(%error, "cannot start a password hashing thread");
        }
    }
    jobs
}

impl Default for PasswordWork {
    fn default() -> Self {
        let slots = std::thread::available_parallelism().map_or(1, usize::from);
        Self::with_slots(slots)
    }
}

fn busy() -> ApiError {
    let mut error = ApiError::unavailable("too many password checks at once; retry shortly");
    error.retry_after_seconds = Some(1);
    error
}

impl PasswordWork {
    pub fn with_slots(slots: usize) -> Self {
        let slots = slots.max(1);
        Self::with_queue(slots, slots * QUEUE_PER_SLOT)
    }

    /// `slots` hashes at once, `admitted` callers running or waiting.
    pub fn with_queue(slots: usize, admitted: usize) -> Self {
        let slots = slots.max(1);
        Self {
            running: Arc::new(Semaphore::new(slots)),
            admitted: Arc::new(Semaphore::new(admitted)),
            jobs: hashing_threads(slots),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut HashingMemory) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let admitted = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| busy())?;
        let running = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_| busy())?;
        let (answer, answered) = tokio::sync::oneshot::channel();
        // The permits go with the job, not with its caller: a caller that
        // hangs up frees nothing until the hash it started is done, so
        // connect-and-drop cannot queue more work than the bounds allow.
        let job: Job = Box::new(move |memory| {
            let _permits = (admitted, running);
            let _ = answer.send(work(memory));
        });
        self.jobs
            .send(job)
            .map_err(|_| ApiError::internal(&"the password hashing threads are gone"))?;
        answered
            .await
            .map_err(|_| ApiError::internal(&"a password hash failed"))
    }

    /// The PHC string to store for `password`.
    pub async fn hash(&self, password: Password) -> Result<String, ApiError> {
        self.run(move |memory| hash_password(&password, memory))
            .await
    }

    /// Whether `candidate` matches `stored`; with no stored hash (no such
    /// account, or no password set yet) the same work is done and the
    /// answer is no, so timing tells nothing.
    pub async fn verify(
        &self,
        stored: Option<String>,
        candidate: String,
    ) -> Result<bool, ApiError> {
        self.run(move |memory| match stored {
            Some(stored) => verify_password(&stored, &candidate, memory),
            None => {
                verify_password_for_unknown_account(&candidate, memory);
                false
            }
        })
        .await
    }
}

/// Fewer estimated guesses than this and a password is refused: zxcvbn's
/// two weakest scores, which a 12-character password reaches only by being a
/// known password, a word with digits, a repeat, a sequence or a keyboard
/// walk. Anything a generator or a person choosing a phrase makes is far
/// above it.
const FEWEST_GUESSES: u64 = 1_000_000;

/// Past this length a password is no common one; zxcvbn's matching also
/// grows faster than linearly with length, so longer ones are not scored.
const LONGEST_SCORED: usize = 64;

/// Why a password that meets the length policy is still refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "password is too easy to guess (a common password, a repeat, a sequence or a keyboard pattern); choose another"
)]
pub struct WeakPassword;

/// Refuses passwords found in the lists of common passwords, or built from
/// patterns a cracker tries first, estimated with zxcvbn. `context` holds
/// strings a guesser would know of the account (its e-mail address, names),
/// which count as common too.
pub fn check_password_strength(password: &Password, context: &[&str]) -> Result<(), WeakPassword> {
    let plaintext = password.expose();
    if plaintext.chars().count() > LONGEST_SCORED {
        return Ok(());
    }
    let estimate = zxcvbn::zxcvbn(plaintext, context);
    if estimate.guesses() < FEWEST_GUESSES {
        Err(WeakPassword)
    } else {
        Ok(())
    }
}

/// Tracked keys per limiter before idle ones are dropped.
const THROTTLE_KEYS_BEFORE_PRUNE: usize = 100_000;

/// Attempts at proving a password (logins, invite acceptances), limited per
/// account and per client address.
#[derive(Debug)]
pub struct LoginThrottle {
    per_account: Option<DefaultKeyedRateLimiter<String>>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// A GCRA quota that lets through at most `per_minute` attempts in any
/// minute: half of them at once, the rest spread over the minute. (GCRA
/// lets a full burst through and then refills, so a burst of `per_minute`
/// would allow nearly twice that in any one minute.)
fn quota(per_minute: u32) -> Option<Quota> {
    let per_minute = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new(per_minute.get().div_ceil(2)).unwrap_or(NonZeroU32::MIN);
    let refills = per_minute.get() - burst.get();
    // With no refill inside the minute, the first one comes just after it.
    let period = match refills {
        0 => Duration::from_secs(61),
        refills => Duration::from_secs(60) / refills,
    };
    Quota::with_period(period).map(|quota| quota.allow_burst(burst))
}

impl LoginThrottle {
    /// `0` switches a limiter off.
    pub fn new(per_account_per_minute: u32, per_address_per_minute: u32) -> Self {
        Self {
            per_account: quota(per_account_per_minute).map(RateLimiter::keyed),
            per_address: quota(per_address_per_minute).map(RateLimiter::keyed),
        }
    }

    /// Spends one attempt of `account` from `address`, or says when the
    /// next may come: 429 `too_many_attempts` with `Retry-After`. The
    /// address is judged first, so a sprayer's refusals cost no entry per
    /// made-up account.
    pub fn admit(&self, account: &str, address: Option<IpAddr>) -> Result<(), ApiError> {
        if let (Some(limiter), Some(address)) = (&self.per_address, address) {
            check(limiter, &address, "from this address")?;
        }
        if let Some(limiter) = &self.per_account {
            check(limiter, &account.to_owned(), "for this account")?;
        }
        Ok(())
    }
}

fn check<K>(limiter: &DefaultKeyedRateLimiter<K>, key: &K, whose: &str) -> Result<(), ApiError>
where
    K: std::hash::Hash + Eq + Clone,
{
    if limiter.len() >= THROTTLE_KEYS_BEFORE_PRUNE {
        limiter.retain_recent();
    }
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError::too_many_requests(
            format!("too many password attempts {whose}; retry in {seconds} s"),
            seconds.max(1),
        )
        .with_code("too_many_attempts")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn hashes_run_on_the_same_few_threads_however_many_callers() {
        let work = Arc::new(PasswordWork::with_slots(2));
        let mut callers = Vec::new();
        for _ in 0..12 {
            let work = Arc::clone(&work);
            callers.push(tokio::spawn(async move {
                work.run(|_| std::thread::current().name().map(str::to_owned))
                    .await
                    .unwrap()
            }));
        }
        let mut threads = std::collections::BTreeSet::new();
        for caller in callers {
            threads.insert(caller.await.unwrap().unwrap_or_default());
        }
        assert!(
            !threads.is_empty()
                && threads.len() <= 2
                && threads
                    .iter()
                    .all(|name| name.starts_with("agentry-argon2-")),
            "{threads:?}"
        );
        // A job that panics answers its caller with 500, and the threads
        // go on.
        let panicked = work.run(|_| panic!("a bug in a hash")).await;
        assert_eq!(panicked.map(|_: ()| ()).unwrap_err().status.as_u16(), 500);
        assert!(work.run(|_| 7).await.is_ok_and(|seven| seven == 7));
        // A thread's memory is its own, kept from one hash to the next.
        let hash = work
            .hash(Password::new("correct horse battery staple".into()).unwrap())
            .await
            .unwrap();
        assert!(
            work.verify(Some(hash), "correct horse battery staple".into())
                .await
                .unwrap()
        );
    }

    fn strength(plaintext: &str, context: &[&str]) -> Result<(), WeakPassword> {
        check_password_strength(&Password::new(plaintext.into()).unwrap(), context)
    }

    #[test]
    fn common_and_patterned_passwords_are_refused() {
        for weak in [
            "password1234",
            "123456789012",
            "qwertyuiopasdf",
            "aaaaaaaaaaaa",
            "abcdefghijkl",
            "iloveyou1234",
            "Password123!",
        ] {
            assert_eq!(strength(weak, &[]), Err(WeakPassword), "{weak}");
        }
        // The account's own e-mail address is something a guesser knows.
        assert_eq!(
            strength("admin@localhost", &["admin@localhost"]),
            Err(WeakPassword)
        );
    }

    #[test]
    fn the_seeds_and_generated_passwords_pass() {
        for strong in [
            // Seed 002's example and its provision.py's generator.
            "secure-generated-password",
            "Yx3uJ0v9S5w0kq4G2c8eZ1bq7mVtRr6aHn2pLd4sQe8",
            "correct horse battery staple",
            "a long human password",
            &"long enough to skip scoring ".repeat(3),
        ] {
            assert_eq!(strength(strong, &["admin@localhost"]), Ok(()), "{strong}");
        }
    }

    #[test]
    fn an_account_gets_at_most_its_attempts_in_a_minute() {
        let throttle = LoginThrottle::new(10, 0);
        let admitted = (0..100)
            .filter(|_| throttle.admit("victim@example.com", None).is_ok())
            .count();
        // Half the minute's budget at once; the rest refills over the minute.
        assert_eq!(admitted, 5);
        let refused = throttle
            .admit("victim@example.com", None)
            .expect_err("the budget is spent");
        assert_eq!(refused.code, "too_many_attempts");
        assert!(
            refused
                .retry_after_seconds
                .is_some_and(|s| (1..=12).contains(&s))
        );
        // Another account is not affected.
        assert!(throttle.admit("other@example.com", None).is_ok());
    }

    #[test]
    fn an_address_is_limited_across_accounts() {
        let throttle = LoginThrottle::new(10, 4);
        let address = Some(IpAddr::from([192, 0, 2, 1]));
        let admitted = (0..20)
            .filter(|n| {
                throttle
                    .admit(&format!("user{n}@example.com"), address)
                    .is_ok()
            })
            .count();
        assert_eq!(admitted, 2);
        assert!(
            throttle
                .admit("someone@example.com", Some(IpAddr::from([192, 0, 2, 2])))
                .is_ok()
        );
    }

    #[test]
    fn zero_switches_a_limit_off() {
        let throttle = LoginThrottle::new(0, 0);
        assert!((0..1000).all(|_| throttle.admit("a@example.com", None).is_ok()));
    }

    #[test]
    fn quotas_never_pass_more_than_asked_per_minute() {
        for per_minute in [1, 2, 3, 10, 11, 60, 1000] {
            let quota = quota(per_minute).unwrap();
            let burst = quota.burst_size().get();
            let refills = 60.0 / quota.replenish_interval().as_secs_f64();
            assert!(
                f64::from(burst) + refills.floor() <= f64::from(per_minute),
                "{per_minute}: burst {burst} + {refills} refills"
            );
        }
    }
}
