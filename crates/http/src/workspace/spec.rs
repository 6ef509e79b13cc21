//! What seed 002's requests share: the agent profile a request describes,
//! with its validation, and the checks every first-run or password route
//! makes (the setup token, the password policy, the client's address).

use std::collections::BTreeSet;

use actix_web::HttpRequest;
use agentry_auth::{ApiKey, ApiKeyKind, hash_secret};
use agentry_domain::{AgentName, AgentOrigin, Password};
use agentry_store::NewAgent;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::passwords::check_password_strength;
use crate::state::AppState;
use crate::validate::Problems;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentProfileSpec {
    /// Letters, digits and hyphens, 3 to 100, mixed case allowed; unique in
    /// the workspace ignoring case. The agent's `agent_id` in seeds 000/001
    /// is this name lowercased (docs/api.md: names and slugs).
    #[schema(min_length = 3, max_length = 100, pattern = "^[A-Za-z0-9-]+$")]
    name: String,
    /// Required.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 255)]
    display_name: Option<String>,
    #[schema(max_length = 2000)]
    description: Option<String>,
    /// Kept in the agent's metadata as `avatar_url`.
    #[schema(min_length = 1, max_length = 2048)]
    avatar_url: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Seed 002's body of `POST /api/v1/agents`: the bootstrap's agent, but
/// the display name may be left out and fields other clients send along
/// are ignored, as Agent United does.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub(crate) struct NewWorkspaceAgent {
    /// Letters, digits and hyphens, 3 to 100, mixed case allowed; unique in
    /// the workspace ignoring case (docs/api.md: names and slugs).
    #[schema(min_length = 3, max_length = 100, pattern = "^[A-Za-z0-9-]+$")]
    name: String,
    #[schema(min_length = 1, max_length = 255)]
    display_name: Option<String>,
    #[schema(max_length = 2000)]
    description: Option<String>,
    /// Kept in the agent's metadata as `avatar_url`.
    #[schema(min_length = 1, max_length = 2048)]
    avatar_url: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl From<NewWorkspaceAgent> for AgentProfileSpec {
    fn from(agent: NewWorkspaceAgent) -> Self {
        AgentProfileSpec {
            name: agent.name,
            display_name: agent.display_name,
            description: agent.description,
            avatar_url: agent.avatar_url,
            metadata: agent.metadata,
        }
    }
}

/// An agent of the bootstrap, whose display name seed 002 requires.
pub(super) fn bootstrap_agent_spec(
    problems: &mut Problems,
    field: &str,
    spec: &AgentProfileSpec,
    names: &mut BTreeSet<String>,
) -> Option<NewAgent> {
    if spec.display_name.is_none() {
        problems.push(format!("{field}.display_name: is required"));
    }
    agent_spec(problems, field, spec, names)
}

/// The agent `spec` describes, its problems pushed to `problems`; `names`
/// holds the slugs taken earlier in the same request.
pub(crate) fn agent_spec(
    problems: &mut Problems,
    field: &str,
    spec: &AgentProfileSpec,
    names: &mut BTreeSet<String>,
) -> Option<NewAgent> {
    // `field` is empty for a body that is the agent itself.
    let at = |name: &str| {
        if field.is_empty() {
            name.to_owned()
        } else {
            format!("{field}.{name}")
        }
    };
    let name = problems.check(AgentName::parse_workspace(&spec.name), &at("name"));
    // Compared by slug: names that differ only in case are one agent.
    if let Some(name) = &name
        && !names.insert(name.slug().into_string())
    {
        problems.push(format!(
            "{}: {:?} appears more than once (names are compared ignoring case)",
            at("name"),
            spec.name
        ));
    }
    problems.length(&at("display_name"), spec.display_name.as_deref(), 1, 255);
    problems.length(&at("description"), spec.description.as_deref(), 0, 2000);
    problems.length(&at("avatar_url"), spec.avatar_url.as_deref(), 1, 2048);
    let mut agent = NewAgent::called(name?, AgentOrigin::Workspace);
    agent.display_name = spec.display_name.clone();
    agent.description = spec.description.clone();
    let mut metadata = spec.metadata.clone().unwrap_or_default();
    if let Some(avatar) = &spec.avatar_url {
        metadata.insert("avatar_url".into(), json!(avatar));
    }
    agent.metadata = serde_json::Value::Object(metadata);
    Some(agent)
}

pub(crate) fn channel_name_ok(name: &str) -> bool {
    let length = name.chars().count();
    (1..=100).contains(&length)
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ' ')
}

/// A fresh agent key: the plaintext for the response, the hash for the store.
pub(crate) fn agent_key() -> (ApiKey, [u8; 32]) {
    let key = ApiKey::mint(ApiKeyKind::Agent);
    let hash = key.hash().0;
    (key, hash)
}

/// With `--setup-token` set, the first-run setup must carry it as its
/// bearer credential; without, setup is open to the first caller, as seed
/// 002 has it (and the server warns at start when that caller could come
/// from the network).
pub(crate) fn require_setup_token(state: &AppState, request: &HttpRequest) -> Result<(), ApiError> {
    let Some(expected) = &state.settings.setup_token else {
        return Ok(());
    };
    let presented = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim);
    // Compared as hashes: equal-length inputs, so the comparison's timing
    // says nothing about the token.
    match presented {
        Some(token) if hash_secret(token).0 == hash_secret(expected).0 => Ok(()),
        _ => Err(ApiError::unauthorized(
            "setup_token_required",
            "this server's first-run setup takes its setup token as 'Authorization: Bearer ...'",
        )),
    }
}

/// The client's address, for the per-address throttle.
pub(super) fn client_address(request: &HttpRequest) -> Option<std::net::IpAddr> {
    request.peer_addr().map(|address| address.ip())
}

/// A new password that meets the policy: long enough and not easy to
/// guess (`context`: what a guesser knows of the account).
pub(crate) fn new_password(plaintext: String, context: &[&str]) -> Result<Password, ApiError> {
    let password = Password::new(plaintext)
        .map_err(|error| ApiError::bad_request("invalid_password", error.to_string()))?;
    check_password_strength(&password, context)
        .map_err(|error| ApiError::bad_request("invalid_password", error.to_string()))?;
    Ok(password)
}
