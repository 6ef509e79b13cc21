//! The JSON shapes of seed 001, converted by hand from domain types.

use agentry_domain::Money;
use agentry_store::AgentRecord;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `2026-03-10T00:00:00.000Z`, the form the seeds show.
pub(crate) fn timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let millis = at.millisecond();
    let whole = at.replace_nanosecond(0).unwrap_or(at);
    let text = whole.format(&Rfc3339).unwrap_or_default();
    // RFC 3339 without fraction ends in `Z`; put the milliseconds before it.
    match text.strip_suffix('Z') {
        Some(seconds) => format!("{seconds}.{millis:03}Z"),
        None => text,
    }
}

/// Seed 001's `AgentProfile`, camelCase.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AgentProfile {
    pub(crate) id: String,
    pub(crate) tenant_id: String,
    pub(crate) agent_id: String,
    pub(crate) display_name: Option<String>,
    pub(crate) owner_id: Option<String>,
    pub(crate) cost_center: Option<String>,
    pub(crate) budget_daily_usd: Option<Money>,
    pub(crate) budget_monthly_usd: Option<Money>,
    pub(crate) role: &'static str,
    pub(crate) lifecycle_state: &'static str,
    pub(crate) manifest_id: Option<String>,
    pub(crate) parent_agent_id: Option<String>,
    pub(crate) expires_at: Option<String>,
    pub(crate) metadata: serde_json::Value,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
}

impl From<&AgentRecord> for AgentProfile {
    fn from(agent: &AgentRecord) -> Self {
        AgentProfile {
            id: agent.id.to_string(),
            tenant_id: agent.tenant_id.to_string(),
            agent_id: agent.slug.to_string(),
            display_name: agent.display_name.clone(),
            owner_id: agent.owner_id.clone(),
            cost_center: agent.cost_center.clone(),
            budget_daily_usd: agent.budget_daily,
            budget_monthly_usd: agent.budget_monthly,
            role: agent.role.as_str(),
            lifecycle_state: agent.lifecycle_state.as_str(),
            manifest_id: agent.manifest_id.clone(),
            parent_agent_id: agent.parent_id.map(|id| id.to_string()),
            expires_at: agent.expires_at.map(timestamp),
            metadata: agent.metadata.clone(),
            created_at: timestamp(agent.created_at),
            updated_at: timestamp(agent.updated_at),
        }
    }
}

/// Seed 001's `limits` object (snake_case, as the seed shows it).
#[derive(Debug, Serialize)]
pub(crate) struct Limits {
    pub(crate) profile_daily_usd: Option<Money>,
    pub(crate) profile_monthly_usd: Option<Money>,
    pub(crate) enforced_daily_usd: Option<Money>,
    pub(crate) enforced_daily_spent_usd: Money,
    pub(crate) enforced_daily_remaining_usd: Option<Money>,
    pub(crate) enforced_rpm: u32,
    pub(crate) requests_this_minute: u32,
}

/// One entry of `anomaly.recent_events` / `events`.
#[derive(Debug, Serialize)]
pub(crate) struct AnomalyEvent {
    pub(crate) id: String,
    pub(crate) action: String,
    pub(crate) outcome: String,
    pub(crate) reason: Option<String>,
    pub(crate) at: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn timestamps_have_milliseconds_and_a_z() {
        assert_eq!(
            timestamp(datetime!(2026-03-10 00:00 UTC)),
            "2026-03-10T00:00:00.000Z"
        );
        assert_eq!(
            timestamp(datetime!(2026-03-10 01:02:03.456789 +2)),
            "2026-03-09T23:02:03.456Z"
        );
    }
}
