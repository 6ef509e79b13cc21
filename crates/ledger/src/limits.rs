use std::collections::BTreeMap;

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

/// One entry of a tenant's agent-limits map (seed 001), under a key such
/// as `agent:my-agent-01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitEntry {
    /// Caps the agent's daily budget.
    pub max_budget: Option<Money>,
    pub max_requests_per_minute: Option<u32>,
}

impl LimitEntry {
    /// The entry a bootstrap writes for its agent when the map has none:
    /// the agent's daily budget and the default rate (seed 001's
    /// `enforced_rpm: 30`). An operator's entry, written first, wins.
    pub const fn for_bootstrap(budget_daily: Option<Money>) -> Self {
        Self {
            max_budget: budget_daily,
            max_requests_per_minute: Some(DEFAULT_RPM),
        }
    }
}

/// The most requests per minute an entry may allow; a guard against typos
/// that would switch rate limiting off in practice.
pub const MAX_RPM: u32 = 1_000_000;
/// The longest key of the map.
pub const MAX_LIMIT_KEY_LEN: usize = 200;

/// A change to a tenant's agent-limits map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitsEdit {
    /// The map becomes exactly these entries (`PUT`).
    Replace(BTreeMap<String, LimitEntry>),
    /// Each entry merges into the one under its key, field by field: a
    /// field left `None` keeps its value. `None` for an entry deletes it
    /// (`PATCH`).
    Merge(BTreeMap<String, Option<LimitEntry>>),
}

/// Every problem of a refused edit, in key order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct LimitsEditError(pub Vec<String>);

impl LimitsEdit {
    /// Refuses an edit with a key out of bounds or a rate of 0 or more than
    /// [`MAX_RPM`], listing every problem at once.
    pub fn check(&self) -> Result<(), LimitsEditError> {
        let entries: Vec<(&String, Option<&LimitEntry>)> = match self {
            LimitsEdit::Replace(entries) => entries.iter().map(|(k, e)| (k, Some(e))).collect(),
            LimitsEdit::Merge(entries) => entries.iter().map(|(k, e)| (k, e.as_ref())).collect(),
        };
        let mut problems = Vec::new();
        for (key, entry) in entries {
            if key.is_empty() || key.len() > MAX_LIMIT_KEY_LEN {
                problems.push(format!(
                    "{key:?}: keys must be 1 to {MAX_LIMIT_KEY_LEN} characters"
                ));
            }
            if let Some(rpm) = entry.and_then(|entry| entry.max_requests_per_minute)
                && !(1..=MAX_RPM).contains(&rpm)
            {
                problems.push(format!(
                    "{key}: maxRequestsPerMinute must be 1 to {MAX_RPM}"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LimitsEditError(problems))
        }
    }

    /// The map `entries` becomes under this edit.
    pub fn apply(&self, entries: &BTreeMap<String, LimitEntry>) -> BTreeMap<String, LimitEntry> {
        match self {
            LimitsEdit::Replace(replacement) => replacement.clone(),
            LimitsEdit::Merge(patch) => {
                let mut merged = entries.clone();
                for (key, entry) in patch {
                    match entry {
                        Some(entry) => {
                            let into = merged.entry(key.clone()).or_default();
                            if entry.max_budget.is_some() {
                                into.max_budget = entry.max_budget;
                            }
                            if entry.max_requests_per_minute.is_some() {
                                into.max_requests_per_minute = entry.max_requests_per_minute;
                            }
                        }
                        None => {
                            merged.remove(key);
                        }
                    }
                }
                merged
            }
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

    fn entry(usd: Option<u32>, rpm: Option<u32>) -> LimitEntry {
        LimitEntry {
            max_budget: usd.map(Money::from_usd),
            max_requests_per_minute: rpm,
        }
    }

    #[test]
    fn a_merge_changes_only_the_fields_it_names_and_null_deletes() {
        let current = BTreeMap::from([
            ("agent:a".to_owned(), entry(Some(5), Some(30))),
            ("agent:b".to_owned(), entry(Some(1), None)),
        ]);
        let merge = LimitsEdit::Merge(BTreeMap::from([
            ("agent:a".to_owned(), Some(entry(None, Some(60)))),
            ("agent:b".to_owned(), None),
            ("agent:c".to_owned(), Some(entry(Some(2), None))),
        ]));
        assert_eq!(merge.check(), Ok(()));
        assert_eq!(
            merge.apply(&current),
            BTreeMap::from([
                ("agent:a".to_owned(), entry(Some(5), Some(60))),
                ("agent:c".to_owned(), entry(Some(2), None)),
            ])
        );
        let replace = LimitsEdit::Replace(BTreeMap::new());
        assert!(replace.apply(&current).is_empty());
    }

    #[test]
    fn every_bad_key_and_rate_is_listed_at_once() {
        let edit = LimitsEdit::Replace(BTreeMap::from([
            (String::new(), entry(None, None)),
            ("agent:fast".to_owned(), entry(None, Some(MAX_RPM + 1))),
            ("agent:off".to_owned(), entry(None, Some(0))),
            ("agent:ok".to_owned(), entry(None, Some(MAX_RPM))),
        ]));
        let LimitsEditError(problems) = edit.check().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].contains("keys must be 1 to 200"),
            "{problems:?}"
        );
    }

    proptest::proptest! {
        /// Merging an entry twice is merging it once, and a merge never
        /// touches keys it does not name.
        #[test]
        fn merges_are_idempotent_and_local(
            usd in proptest::option::of(1_u32..100),
            rpm in proptest::option::of(1_u32..1000),
            other in 1_u32..100,
        ) {
            let current = BTreeMap::from([("agent:other".to_owned(), entry(Some(other), None))]);
            let merge = LimitsEdit::Merge(BTreeMap::from([("agent:x".to_owned(), Some(entry(usd, rpm)))]));
            let once = merge.apply(&current);
            proptest::prop_assert_eq!(merge.apply(&once), once.clone());
            proptest::prop_assert_eq!(once.get("agent:other"), current.get("agent:other"));
        }
    }

    #[test]
    fn rpm_defaults_to_thirty_and_monthly_comes_from_the_profile() {
        let limits = EnforcedLimits::enforce(None, Some(Money::from_usd(100)), None, None);
        assert_eq!(limits.rpm, DEFAULT_RPM);
        assert_eq!(limits.monthly, Some(Money::from_usd(100)));
        assert_eq!(EnforcedLimits::enforce(None, None, None, Some(60)).rpm, 60);
    }
}
