use time::{Date, OffsetDateTime, Time, UtcOffset};

/// A budget window. Windows are UTC calendar days and months, so every
/// replica and every client agrees on when a new one starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Day,
    Month,
    /// A delegated agent's allocation: not a calendar window but the money
    /// its parent sliced to it, over its whole life.
    Allocation,
}

impl Window {
    /// The instant the window containing `now` began, or `None` for a window
    /// that spans the account's whole life.
    pub fn start(self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let today = now.to_offset(UtcOffset::UTC).date();
        let first = match self {
            Window::Day => today,
            Window::Month => {
                Date::from_calendar_date(today.year(), today.month(), 1).unwrap_or(today)
            }
            Window::Allocation => return None,
        };
        Some(first.with_time(Time::MIDNIGHT).assume_utc())
    }

    /// Whether something recorded `at` counts in the window containing `now`.
    pub fn contains(self, at: OffsetDateTime, now: OffsetDateTime) -> bool {
        self.start(now).is_none_or(|start| at >= start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn windows_start_at_utc_midnight_and_the_first_of_the_month() {
        let now = datetime!(2026-03-10 23:59:59 UTC);
        assert_eq!(
            Window::Day.start(now),
            Some(datetime!(2026-03-10 00:00 UTC))
        );
        assert_eq!(
            Window::Month.start(now),
            Some(datetime!(2026-03-01 00:00 UTC))
        );
        assert_eq!(Window::Allocation.start(now), None);
    }

    #[test]
    fn a_non_utc_now_is_judged_in_utc() {
        // 01:00 on the 11th in UTC+2 is still the 10th in UTC.
        let now = datetime!(2026-03-11 01:00 +2);
        assert_eq!(
            Window::Day.start(now),
            Some(datetime!(2026-03-10 00:00 UTC))
        );
    }

    #[test]
    fn membership_follows_the_boundaries() {
        let now = datetime!(2026-03-10 12:00 UTC);
        assert!(Window::Day.contains(datetime!(2026-03-10 00:00 UTC), now));
        assert!(!Window::Day.contains(datetime!(2026-03-09 23:59:59.999 UTC), now));
        assert!(Window::Month.contains(datetime!(2026-03-01 00:00 UTC), now));
        assert!(!Window::Month.contains(datetime!(2026-02-28 23:59 UTC), now));
        assert!(Window::Allocation.contains(datetime!(2000-01-01 00:00 UTC), now));
    }
}
