use time::{Duration, OffsetDateTime};

/// A fixed requests-per-minute window: the UTC minute it counts and how many
/// requests it has admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWindow {
    /// Unix minute (seconds since the epoch divided by 60).
    pub minute: i64,
    pub count: u32,
}

/// Refusal past the enforced rpm; `retry_after` is what `Retry-After` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit of {limit} requests per minute reached; retry in {} s", retry_after.whole_seconds())]
pub struct RateLimited {
    pub limit: u32,
    pub retry_after: Duration,
}

fn unix_minute(now: OffsetDateTime) -> i64 {
    now.unix_timestamp().div_euclid(60)
}

impl RateWindow {
    pub fn empty(now: OffsetDateTime) -> Self {
        Self {
            minute: unix_minute(now),
            count: 0,
        }
    }

    /// Requests counted in the minute containing `now` (0 once it has passed).
    pub fn requests_this_minute(&self, now: OffsetDateTime) -> u32 {
        if self.minute == unix_minute(now) {
            self.count
        } else {
            0
        }
    }

    /// Counts one more request at `now`, or refuses it when the minute is full.
    pub fn admit(&self, now: OffsetDateTime, limit: u32) -> Result<RateWindow, RateLimited> {
        let minute = unix_minute(now);
        let count = self.requests_this_minute(now);
        if count >= limit {
            return Err(refusal(minute, limit, now));
        }
        Ok(RateWindow {
            minute,
            count: count + 1,
        })
    }
}

/// The refusal of a request at `now` in the full `minute`.
fn refusal(minute: i64, limit: u32, now: OffsetDateTime) -> RateLimited {
    let next_minute =
        OffsetDateTime::from_unix_timestamp((minute + 1) * 60).unwrap_or(now + Duration::MINUTE);
    // Round up: a client that waits the whole number of seconds given must
    // land in the next minute.
    let wait = next_minute - now;
    let seconds = wait.whole_seconds() + i64::from(wait.subsec_nanoseconds() > 0);
    RateLimited {
        limit,
        retry_after: Duration::seconds(seconds.max(1)),
    }
}

/// How many of a minute's requests one lease asks for: a sixteenth of the
/// limit, at least one. A replica then leases at most about sixteen times a
/// minute per agent, however busy the agent, and the requests other
/// replicas leased but did not use (at most one lease each) refuse at most
/// `(replicas - 1) * lease_size(limit)` requests early; the limit itself is
/// never passed.
pub const fn lease_size(limit: u32) -> u32 {
    let size = limit.div_ceil(16);
    if size == 0 { 1 } else { size }
}

/// One replica's share of an agent's requests-per-minute window when
/// several replicas enforce one limit: the requests it leased from the
/// count they share (for the UTC minute it counts), how many of those it
/// used, and whether the shared count is spent. Admitting costs nothing
/// while leased requests remain; only then does the caller lease more
/// ([`RateDecision::Lease`]) and hand the answer to [`LeasedWindow::leased`].
///
/// Exact on one replica: it holds every lease, so it admits the limit and
/// no more. On several, the shared count never grants more than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasedWindow {
    minute: i64,
    leased: u32,
    used: u32,
    spent: bool,
}

/// What [`LeasedWindow::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Admitted: the `count`th request this replica admitted this minute.
    Admitted {
        count: u32,
    },
    /// Nothing leased is left: lease `ask` more requests of `minute` from
    /// the shared count, then ask again.
    Lease {
        minute: i64,
        ask: u32,
    },
    Refused(RateLimited),
}

impl LeasedWindow {
    pub fn empty(now: OffsetDateTime) -> Self {
        Self {
            minute: unix_minute(now),
            leased: 0,
            used: 0,
            spent: false,
        }
    }

    /// This window as it is at `now`: empty once its minute has passed.
    fn current(&self, now: OffsetDateTime) -> Self {
        if self.minute == unix_minute(now) {
            *self
        } else {
            Self::empty(now)
        }
    }

    /// Requests this replica leased in the minute containing `now`.
    pub fn leased_this_minute(&self, now: OffsetDateTime) -> u32 {
        self.current(now).leased
    }

    /// Requests this replica admitted in the minute containing `now`.
    pub fn requests_this_minute(&self, now: OffsetDateTime) -> u32 {
        self.current(now).used
    }

    /// Admits one request at `now` from what is leased, or says to lease
    /// more, or refuses once the shared count is spent (without asking the
    /// database again this minute).
    pub fn admit(&self, now: OffsetDateTime, limit: u32) -> (LeasedWindow, RateDecision) {
        let window = self.current(now);
        if window.used < window.leased && window.used < limit {
            let used = window.used + 1;
            return (
                Self { used, ..window },
                RateDecision::Admitted { count: used },
            );
        }
        if window.spent || limit == 0 {
            return (
                window,
                RateDecision::Refused(refusal(window.minute, limit, now)),
            );
        }
        let decision = RateDecision::Lease {
            minute: window.minute,
            ask: lease_size(limit),
        };
        (window, decision)
    }

    /// Adds what a lease of `minute` got: `granted` requests (fewer than
    /// asked, or none, when the shared count reached the limit, which
    /// `spent` says). A lease of a minute that has passed adds nothing.
    pub fn leased(&self, minute: i64, granted: u32, spent: bool, now: OffsetDateTime) -> Self {
        let window = self.current(now);
        if window.minute != minute {
            return window;
        }
        Self {
            leased: window.leased.saturating_add(granted),
            spent: window.spent || spent,
            ..window
        }
    }
}

/// The shared count of one agent's minute, as the store keeps it: a lease
/// of `ask` gets what is left of `limit`, at most `ask`; returns the new
/// total granted and the grant. Written here so the store's single SQL
/// statement has a model to be tested against.
pub const fn lease_from(granted_before: u32, ask: u32, limit: u32) -> (u32, u32) {
    let total = if granted_before >= limit {
        granted_before
    } else if granted_before.saturating_add(ask) > limit {
        limit
    } else {
        granted_before + ask
    };
    (total, total - granted_before)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    #[test]
    fn admits_up_to_the_limit_then_refuses_until_the_next_minute() {
        let start = datetime!(2026-03-10 12:00:10 UTC);
        let mut window = RateWindow::empty(start);
        for _ in 0..3 {
            window = window.admit(start, 3).unwrap();
        }
        assert_eq!(window.requests_this_minute(start), 3);
        let refused = window
            .admit(datetime!(2026-03-10 12:00:59.5 UTC), 3)
            .unwrap_err();
        assert_eq!(refused.retry_after, Duration::seconds(1));
        let refused = window.admit(start, 3).unwrap_err();
        assert_eq!(refused.retry_after, Duration::seconds(50));
        let next = datetime!(2026-03-10 12:01:00 UTC);
        assert_eq!(window.requests_this_minute(next), 0);
        assert_eq!(window.admit(next, 3).unwrap().count, 1);
    }

    #[test]
    fn a_zero_limit_refuses_everything() {
        let now = datetime!(2026-03-10 12:00 UTC);
        assert!(RateWindow::empty(now).admit(now, 0).is_err());
    }

    #[test]
    fn lease_sizes_are_a_sixteenth_of_the_limit_and_never_zero() {
        assert_eq!(lease_size(0), 1);
        assert_eq!(lease_size(1), 1);
        assert_eq!(lease_size(30), 2);
        assert_eq!(lease_size(1_000), 63);
    }

    #[test]
    fn a_leased_window_asks_once_per_lease_and_stops_asking_once_spent() {
        let now = datetime!(2026-03-10 12:00:10 UTC);
        let window = LeasedWindow::empty(now);
        let (window, decision) = window.admit(now, 3);
        let RateDecision::Lease { minute, ask } = decision else {
            panic!("an empty window leases first: {decision:?}");
        };
        assert_eq!(ask, 1);
        let window = window.leased(minute, 1, false, now);
        let (window, decision) = window.admit(now, 3);
        assert_eq!(decision, RateDecision::Admitted { count: 1 });
        let window = window.leased(minute, 0, true, now);
        let (window, decision) = window.admit(now, 3);
        let RateDecision::Refused(refused) = decision else {
            panic!("a spent count refuses: {decision:?}");
        };
        assert_eq!(refused.retry_after, Duration::seconds(50));
        assert_eq!(window.requests_this_minute(now), 1);
        // A lease answered after its minute passed adds nothing.
        let next = datetime!(2026-03-10 12:01:00 UTC);
        assert_eq!(
            window.leased(minute, 5, false, next),
            LeasedWindow::empty(next)
        );
        assert!(matches!(
            window.admit(next, 3).1,
            RateDecision::Lease { .. }
        ));
    }

    #[test]
    fn the_shared_count_grants_what_is_left_and_never_takes_back() {
        assert_eq!(lease_from(0, 2, 30), (2, 2));
        assert_eq!(lease_from(29, 2, 30), (30, 1));
        assert_eq!(lease_from(30, 2, 30), (30, 0));
        // A limit lowered below what was granted grants nothing more.
        assert_eq!(lease_from(40, 2, 30), (40, 0));
    }

    /// Replicas sharing one count, each with its own leased window, taking
    /// requests in the order given (`replica` picks which one).
    fn shared_run(limit: u32, replicas: usize, requests: &[usize]) -> (u32, Vec<u32>) {
        let now = datetime!(2026-03-10 12:00:10 UTC);
        let mut shared = 0;
        let mut windows = vec![LeasedWindow::empty(now); replicas];
        let mut admitted = vec![0; replicas];
        for &replica in requests {
            let replica = replica % replicas;
            let mut window = windows[replica];
            loop {
                let (next, decision) = window.admit(now, limit);
                window = next;
                match decision {
                    RateDecision::Admitted { count } => {
                        admitted[replica] += 1;
                        assert_eq!(count, admitted[replica]);
                        break;
                    }
                    RateDecision::Refused(_) => break,
                    RateDecision::Lease { minute, ask } => {
                        let (total, granted) = lease_from(shared, ask, limit);
                        shared = total;
                        window = window.leased(minute, granted, total >= limit, now);
                    }
                }
            }
            windows[replica] = window;
        }
        (shared, admitted)
    }

    proptest! {
        #[test]
        fn one_replica_admits_exactly_the_limit(limit in 0u32..200, requests in 0usize..400) {
            let (_, admitted) = shared_run(limit, 1, &vec![0; requests]);
            prop_assert_eq!(admitted[0], limit.min(u32::try_from(requests).unwrap()));
        }

        #[test]
        fn replicas_never_pass_the_limit_and_refuse_early_by_at_most_their_leases(
            limit in 0u32..200,
            replicas in 1usize..6,
            requests in proptest::collection::vec(0usize..6, 0..600),
        ) {
            let (shared, admitted) = shared_run(limit, replicas, &requests);
            let total: u32 = admitted.iter().sum();
            prop_assert!(shared <= limit);
            prop_assert!(total <= limit);
            // A refusal means the count is spent; what went unused then is
            // at most one lease per other replica.
            let offered = u32::try_from(requests.len()).unwrap();
            let unused_bound = u32::try_from(replicas - 1).unwrap() * lease_size(limit);
            prop_assert!(total == offered || total + unused_bound >= limit);
        }
    }

    proptest! {
        #[test]
        fn never_admits_more_than_the_limit_in_a_minute(
            limit in 0u32..50,
            offsets in proptest::collection::vec(0i64..180_000, 0..200),
        ) {
            let base = datetime!(2026-03-10 12:00 UTC);
            let mut offsets = offsets;
            offsets.sort_unstable();
            let mut window = RateWindow::empty(base);
            let mut admitted_per_minute = std::collections::HashMap::<i64, u32>::new();
            for offset in offsets {
                let now = base + Duration::milliseconds(offset);
                match window.admit(now, limit) {
                    Ok(next) => {
                        *admitted_per_minute.entry(unix_minute(now)).or_default() += 1;
                        window = next;
                    }
                    Err(refused) => {
                        prop_assert!(refused.retry_after >= Duration::SECOND);
                        prop_assert!(refused.retry_after <= Duration::MINUTE);
                    }
                }
            }
            prop_assert!(admitted_per_minute.values().all(|count| *count <= limit));
        }
    }
}
