use agentry_domain::Money;

/// Requests per minute when the tenant's agent-limits map says nothing
/// (seed 001: `enforced_rpm: 30`).
pub const DEFAULT_RPM: u32 = 30;

/// The limits that actually apply to an agent at a moment: DESIGN.md §2,
/// "the lower of the profile budget and the tenant agent-limits entry".
/// `None` means no cap in that window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnforcedLimits {
    pub daily: Option<Money>,
    pub monthly: Option<Money>,
    pub rpm: u32,
}

impl EnforcedLimits {
    /// Combines the profile's budgets with the tenant's entry for the agent
    /// (`maxBudgetUsd` caps the daily budget, `maxRequestsPerMinute` the rate).
    pub fn enforce(
        profile_daily: Option<Money>,
        profile_monthly: Option<Money>,
        tenant_max_budget: Option<Money>,
        tenant_rpm: Option<u32>,
    ) -> Self {
        Self {
            daily: lower(profile_daily, tenant_max_budget),
            monthly: profile_monthly,
            rpm: tenant_rpm.unwrap_or(DEFAULT_RPM),
        }
    }
}

/// The lower of two optional caps, where `None` is "no cap".
fn lower(a: Option<Money>, b: Option<Money>) -> Option<Money> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_cap_wins_and_absence_is_no_cap() {
        let five = Some(Money::from_usd(5));
        let ten = Some(Money::from_usd(10));
        assert_eq!(EnforcedLimits::enforce(five, None, ten, None).daily, five);
        assert_eq!(EnforcedLimits::enforce(ten, None, five, None).daily, five);
        assert_eq!(EnforcedLimits::enforce(None, None, five, None).daily, five);
        assert_eq!(EnforcedLimits::enforce(ten, None, None, None).daily, ten);
        assert_eq!(EnforcedLimits::enforce(None, None, None, None).daily, None);
    }

    #[test]
    fn rpm_defaults_to_thirty_and_monthly_comes_from_the_profile() {
        let limits = EnforcedLimits::enforce(None, Some(Money::from_usd(100)), None, None);
        assert_eq!(limits.rpm, DEFAULT_RPM);
        assert_eq!(limits.monthly, Some(Money::from_usd(100)));
        assert_eq!(EnforcedLimits::enforce(None, None, None, Some(60)).rpm, 60);
    }
}
