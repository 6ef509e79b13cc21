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
            let next_minute = OffsetDateTime::from_unix_timestamp((minute + 1) * 60)
                .unwrap_or(now + Duration::MINUTE);
            // Round up: a client that waits the whole number of seconds given
            // must land in the next minute.
            let wait = next_minute - now;
            let seconds = wait.whole_seconds() + i64::from(wait.subsec_nanoseconds() > 0);
            return Err(RateLimited {
                limit,
                retry_after: Duration::seconds(seconds.max(1)),
            });
        }
        Ok(RateWindow {
            minute,
            count: count + 1,
        })
    }
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
