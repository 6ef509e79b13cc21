//! The JSON shapes of seed 001, converted by hand from domain types, and
//! the OpenAPI schemas of the domain types the routes carry.

use std::borrow::Cow;

use agentry_domain::{AgentSlug, LifecycleState, Money, Role};
use agentry_lifecycle::CallbackStage;
use agentry_store::{AgentRecord, ArtifactKind};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

// The domain crates stay free of HTTP and OpenAPI, so the schemas of their
// types are written here, from the domain's own limits and value lists: a
// new lifecycle state or a new money limit reaches the document by itself.

/// Schema of [`Money`]: a JSON number of US dollars.
pub(crate) enum MoneySchema {}

impl PartialSchema for MoneySchema {
    fn schema() -> RefOr<Schema> {
        money().minimum(Some(0)).into()
    }
}

impl ToSchema for MoneySchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Money")
    }
}

/// Schema of a [`Money`] that must be above zero: what is spent, held or
/// delegated (zero is refused with `invalid_amount`).
pub(crate) enum PositiveMoneySchema {}

impl PartialSchema for PositiveMoneySchema {
    fn schema() -> RefOr<Schema> {
        money().exclusive_minimum(Some(0)).into()
    }
}

impl ToSchema for PositiveMoneySchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("PositiveMoney")
    }
}

fn money() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .maximum(Some(Money::MAX.to_f64_usd()))
        // What "at most 6 decimals" means to a schema validator.
        .multiple_of(Some(0.000_001))
        .description(Some(
            "US dollars as a JSON number with at most 6 decimals; an amount with more \
             decimals is refused, not rounded.",
        ))
        .examples([serde_json::json!(5.0)])
}

/// Schema of an [`AgentId`](agentry_domain::AgentId) in its TypeID form:
/// seed 004's `agentId`.
pub(crate) enum AgentTypeIdSchema {}

impl PartialSchema for AgentTypeIdSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(32))
            .max_length(Some(32))
            .pattern(Some("^agent_[0-7][0-9a-hjkmnp-tv-z]{25}$"))
            .description(Some(
                "An agent's id as a TypeID: `agent_` and 26 base32 characters. The same id \
                 is the UUID `id` of the agent's seed 001 profile and the `agent_id` of \
                 seed 002's answer; seeds 000/001 name the agent by its slug instead.",
            ))
            .examples([serde_json::json!("agent_01jq3v6f0ze8r2kd5mxw9ty4bc")])
            .into()
    }
}

impl ToSchema for AgentTypeIdSchema {
    fn name() -> Cow<'static, str> {
        "AgentTypeId".into()
    }
}

/// Schema of [`AgentSlug`]: the `agent_id` of the seeds.
pub(crate) enum AgentSlugSchema {}

impl PartialSchema for AgentSlugSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(AgentSlug::MIN_LEN))
            .max_length(Some(AgentSlug::MAX_LEN))
            .pattern(Some("^[a-z0-9-]+$"))
            .description(Some(
                "The tenant-unique name of an agent: lowercase letters, digits and hyphens.",
            ))
            .examples([serde_json::json!("my-agent-01")])
            .into()
    }
}

impl ToSchema for AgentSlugSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AgentSlug")
    }
}

/// Schema of [`LifecycleState`] as text.
pub(crate) enum LifecycleStateSchema {}

impl PartialSchema for LifecycleStateSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(LifecycleState::ALL.map(LifecycleState::as_str)))
            .into()
    }
}

impl ToSchema for LifecycleStateSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("LifecycleState")
    }
}

/// Schema of an agent's [`Role`] as text.
pub(crate) enum RoleSchema {}

impl PartialSchema for RoleSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Role::ALL.map(Role::as_str)))
            .description(Some("Ordered agent < operator < admin; a parent may only grant its own role or a lower one."))
            .into()
    }
}

impl ToSchema for RoleSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Role")
    }
}

/// Schema of a provisioning [`CallbackStage`] as text (seed 003).
pub(crate) enum CallbackStageSchema {}

impl PartialSchema for CallbackStageSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(CallbackStage::ALL.map(CallbackStage::as_str)))
            .into()
    }
}

impl ToSchema for CallbackStageSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("CallbackStage")
    }
}

/// Schema of an [`ArtifactKind`] as text (seed 003).
pub(crate) enum ArtifactKindSchema {}

impl PartialSchema for ArtifactKindSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(
                [ArtifactKind::Bundle, ArtifactKind::Website].map(ArtifactKind::as_str),
            ))
            .into()
    }
}

impl ToSchema for ArtifactKindSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ArtifactKind")
    }
}

/// Schema of the text [`timestamp`] writes.
pub(crate) enum TimestampSchema {}

impl PartialSchema for TimestampSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .description(Some("RFC 3339 in UTC with milliseconds."))
            .examples([serde_json::json!("2026-03-10T00:00:00.000Z")])
            .into()
    }
}

impl ToSchema for TimestampSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Timestamp")
    }
}

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

/// What `/.well-known/jwks.json` serves: [`agentry_auth::Jwks`], copied
/// field by field so that a field added there fails to compile here instead
/// of going undocumented.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Jwks {
    keys: Vec<Jwk>,
}

/// An Ed25519 public key as an RFC 8037 JWK.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Jwk {
    #[schema(examples("OKP"))]
    kty: String,
    #[schema(examples("Ed25519"))]
    crv: String,
    /// The public key, base64url without padding.
    x: String,
    /// The `kid` of the tokens this key verifies.
    kid: String,
    #[schema(examples("EdDSA"))]
    alg: String,
    #[serde(rename = "use")]
    #[schema(examples("sig"))]
    r#use: String,
}

impl From<agentry_auth::Jwks> for Jwks {
    fn from(jwks: agentry_auth::Jwks) -> Self {
        let keys = jwks
            .keys
            .into_iter()
            .map(|jwk| {
                let agentry_auth::Jwk {
                    kty,
                    crv,
                    x,
                    kid,
                    alg,
                    r#use,
                } = jwk;
                Jwk {
                    kty,
                    crv,
                    x,
                    kid,
                    alg,
                    r#use,
                }
            })
            .collect();
        Jwks { keys }
    }
}

/// Seed 001's `AgentProfile`, camelCase.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AgentProfile {
    /// The agent's internal id, a UUID (seed 004's `agentId` is the same id
    /// as `agent_` and its 26-character base32 TypeID form).
    #[schema(format = Uuid)]
    pub(crate) id: String,
    /// The tenant's id, a UUID.
    #[schema(format = Uuid)]
    pub(crate) tenant_id: String,
    /// The agent's slug, which every `/v1/agent/*` path names it by.
    #[schema(value_type = AgentSlugSchema)]
    pub(crate) agent_id: String,
    pub(crate) display_name: Option<String>,
    pub(crate) owner_id: Option<String>,
    pub(crate) cost_center: Option<String>,
    #[schema(value_type = Option<MoneySchema>)]
    pub(crate) budget_daily_usd: Option<Money>,
    #[schema(value_type = Option<MoneySchema>)]
    pub(crate) budget_monthly_usd: Option<Money>,
    #[schema(value_type = RoleSchema)]
    pub(crate) role: &'static str,
    #[schema(value_type = LifecycleStateSchema)]
    pub(crate) lifecycle_state: &'static str,
    pub(crate) manifest_id: Option<String>,
    /// The parent's `agent_id` (its slug), for an agent created by
    /// delegation: the value the child's metadata holds as `parentAgentId`.
    #[schema(value_type = Option<AgentSlugSchema>)]
    pub(crate) parent_agent_id: Option<String>,
    /// When a delegated agent's TTL runs out.
    #[schema(value_type = Option<TimestampSchema>)]
    pub(crate) expires_at: Option<String>,
    #[schema(value_type = Object)]
    pub(crate) metadata: serde_json::Value,
    #[schema(value_type = TimestampSchema)]
    pub(crate) created_at: String,
    #[schema(value_type = TimestampSchema)]
    pub(crate) updated_at: String,
}

/// `{ "profile": ... }`, the answer of every route that reads or writes one
/// profile.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProfileResponse {
    pub(crate) profile: AgentProfile,
}

impl From<&AgentRecord> for ProfileResponse {
    fn from(agent: &AgentRecord) -> Self {
        ProfileResponse {
            profile: AgentProfile::from(agent),
        }
    }
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
            parent_agent_id: agent.parent_slug.as_ref().map(|slug| slug.to_string()),
            expires_at: agent.expires_at.map(timestamp),
            metadata: agent.metadata.clone(),
            created_at: timestamp(agent.created_at),
            updated_at: timestamp(agent.updated_at),
        }
    }
}

/// Seed 001's `limits` object (snake_case, as the seed shows it).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Limits {
    #[schema(value_type = Option<MoneySchema>)]
    pub(crate) profile_daily_usd: Option<Money>,
    #[schema(value_type = Option<MoneySchema>)]
    pub(crate) profile_monthly_usd: Option<Money>,
    /// The profile's daily budget capped by the tenant's agent-limits entry;
    /// `null` when neither sets one.
    #[schema(value_type = Option<MoneySchema>)]
    pub(crate) enforced_daily_usd: Option<Money>,
    #[schema(value_type = MoneySchema)]
    pub(crate) enforced_daily_spent_usd: Money,
    /// What is left today across every window that applies; `null` when
    /// nothing limits the agent.
    #[schema(value_type = Option<MoneySchema>)]
    pub(crate) enforced_daily_remaining_usd: Option<Money>,
    pub(crate) enforced_rpm: u32,
    pub(crate) requests_this_minute: u32,
}

/// One entry of `anomaly.recent_events` / `events`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AnomalyEvent {
    /// The audit event's id, a UUID.
    #[schema(format = Uuid)]
    pub(crate) id: String,
    /// What was attempted, e.g. `auth.refused` or `budget.spend`.
    pub(crate) action: String,
    /// `denied` or `failed`.
    pub(crate) outcome: String,
    /// The refusal's stable code, when it has one.
    pub(crate) reason: Option<String>,
    #[schema(value_type = TimestampSchema)]
    pub(crate) at: String,
}

/// Whole numbers as JSON Schema counts them: `30` and `30.0` alike (a
/// client that computes in floats, Python's `json` among them, sends
/// `30.0`), but not `30.5`. serde's integer types refuse `30.0`; fields of
/// type `integer` in the OpenAPI document take this instead.
pub(crate) mod whole_number {
    use std::fmt;

    use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

    /// Largest magnitude below which every whole float is exact.
    const EXACT: f64 = 9_007_199_254_740_992.0;

    struct Whole(i64);

    impl<'de> Deserialize<'de> for Whole {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(WholeVisitor)
        }
    }

    struct WholeVisitor;

    impl Visitor<'_> for WholeVisitor {
        type Value = Whole;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a whole number")
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Whole, E> {
            Ok(Whole(value))
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Whole, E> {
            i64::try_from(value)
                .map(Whole)
                .map_err(|_| E::invalid_value(Unexpected::Unsigned(value), &self))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<Whole, E> {
            if value.fract() == 0.0 && value.abs() <= EXACT {
                // Exact: a whole number within 2^53.
                #[expect(clippy::cast_possible_truncation, reason = "checked just above")]
                Ok(Whole(value as i64))
            } else {
                Err(E::invalid_value(Unexpected::Float(value), &self))
            }
        }
    }

    fn narrow<T: TryFrom<i64>, E: de::Error>(Whole(value): Whole) -> Result<T, E> {
        T::try_from(value)
            .map_err(|_| E::invalid_value(Unexpected::Signed(value), &"a whole number in range"))
    }

    pub(crate) fn deserialize<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i64>,
    {
        narrow(Whole::deserialize(deserializer)?)
    }

    /// For an `Option` field (with `#[serde(default)]`): `null` is `None`.
    pub(crate) fn optional<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i64>,
    {
        Option::<Whole>::deserialize(deserializer)?
            .map(narrow)
            .transpose()
    }
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

    #[derive(Debug, serde::Deserialize)]
    struct Counts {
        #[serde(deserialize_with = "whole_number::deserialize")]
        seq: i64,
        #[serde(default, deserialize_with = "whole_number::optional")]
        rpm: Option<u32>,
    }

    fn counts(json: &str) -> Result<(i64, Option<u32>), String> {
        serde_json::from_str::<Counts>(json)
            .map(|counts| (counts.seq, counts.rpm))
            .map_err(|error| error.to_string())
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats_but_not_be_fractions() {
        assert_eq!(counts(r#"{"seq": 3, "rpm": 60}"#), Ok((3, Some(60))));
        assert_eq!(counts(r#"{"seq": 3.0, "rpm": 60.0}"#), Ok((3, Some(60))));
        assert_eq!(counts(r#"{"seq": -2, "rpm": null}"#), Ok((-2, None)));
        assert_eq!(counts(r#"{"seq": 1e2}"#), Ok((100, None)));
        for refused in [
            r#"{"seq": 3.5}"#,
            r#"{"seq": "3"}"#,
            r#"{"seq": 1, "rpm": -1}"#,
            r#"{"seq": 1, "rpm": 4294967296}"#,
            r#"{"seq": 1e300}"#,
            r#"{"seq": 18446744073709551615}"#,
        ] {
            assert!(counts(refused).is_err(), "{refused}");
        }
    }
}
