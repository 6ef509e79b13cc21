//! Seed 002's first-run workspace setup, `POST /api/v1/bootstrap`: the
//! workspace's tenant, its primary agent, more agents, invited humans and
//! the default channel in one atomic call, and whether it has run yet.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use agentry_auth::{ApiKey, Audience, hash_secret, mint_invite_token};
use agentry_domain::{Email, Password};
use agentry_store::{BootstrapAgent, BootstrapHuman, InstanceBootstrap, NewAgent, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::spec::{
    AgentProfileSpec, agent_key, bootstrap_agent_spec, channel_name_ok, require_setup_token,
};
use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::RequestTime;
use crate::passwords::check_password_strength;
use crate::redact::debug_redacting;
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::{TimestampSchema, timestamp};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PrimaryAgentSpec {
    #[schema(format = Email)]
    email: String,
    #[schema(min_length = 12, format = Password)]
    password: String,
    agent_profile: AgentProfileSpec,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct HumanSpec {
    /// Unique in the request.
    #[schema(format = Email)]
    email: String,
    /// The e-mail address when absent.
    #[schema(min_length = 1, max_length = 255)]
    display_name: Option<String>,
    /// `observer` or `member`; `member` when absent.
    role: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ChannelSpec {
    /// Letters, digits, hyphens and spaces; `general` when absent.
    #[schema(min_length = 1, max_length = 100, pattern = "^[A-Za-z0-9 -]+$")]
    name: Option<String>,
    #[schema(max_length = 1000)]
    topic: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = InstanceBootstrapRequest)]
pub(super) struct BootstrapRequest {
    primary_agent: PrimaryAgentSpec,
    /// At most 100.
    #[serde(default)]
    agents: Vec<AgentProfileSpec>,
    /// At most 100.
    #[serde(default)]
    humans: Vec<HumanSpec>,
    default_channel: Option<ChannelSpec>,
}

/// Seed 002's bootstrap answer: every credential, shown this once.
#[derive(Debug, Serialize, ToSchema)]
struct InstanceBootstrapResponse {
    primary_agent: PrimaryAgentCreated,
    agents: Vec<AgentCreated>,
    humans: Vec<HumanInvited>,
    channel: ChannelCreated,
    instance_id: Uuid,
}

#[derive(Serialize, ToSchema)]
struct PrimaryAgentCreated {
    user_id: Uuid,
    /// The agent's id, a UUID (seed 004's `agentId` is the same id as
    /// `agent_` and 26 base32 characters).
    #[schema(format = Uuid)]
    agent_id: String,
    /// Lowercased.
    email: String,
    /// An agent token (works on `/v1/agent/*`) with the session lifetime.
    jwt_token: String,
    /// The agent's own key (`agy_agent_...`); never shown again.
    api_key: String,
    api_key_id: Uuid,
}

#[derive(Serialize, ToSchema)]
struct AgentCreated {
    /// The agent's id, a UUID (seed 004's `agentId` is the same id as
    /// `agent_` and 26 base32 characters).
    #[schema(format = Uuid)]
    agent_id: String,
    /// As the request wrote it.
    name: String,
    display_name: Option<String>,
    /// The agent's own key (`agy_agent_...`); never shown again.
    api_key: String,
    api_key_id: Uuid,
}

#[derive(Serialize, ToSchema)]
struct HumanInvited {
    user_id: Uuid,
    email: String,
    /// `inv_` and 64 hex digits; single use.
    invite_token: String,
    /// The `/invite` page with the token.
    #[schema(format = "uri")]
    invite_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct ChannelCreated {
    channel_id: Uuid,
    name: String,
    topic: Option<String>,
    /// User ids: the primary agent's account and the humans.
    members: Vec<Uuid>,
}

debug_redacting!(PrimaryAgentSpec { email, agent_profile; secret: password });
debug_redacting!(PrimaryAgentCreated { user_id, agent_id, email, api_key_id; secret: jwt_token, api_key });
debug_redacting!(AgentCreated { agent_id, name, display_name, api_key_id; secret: api_key });
debug_redacting!(HumanInvited { user_id, email; secret: invite_token, invite_url });

/// Bounds a single call: a bootstrap is a team, not a bulk import.
const MAX_AGENTS: usize = 100;
const MAX_HUMANS: usize = 100;

/// Provisions a fresh instance in one atomic call.
///
/// Creates the workspace: a tenant of its own with the primary agent's
/// account, its agent and key (the workspace's admin key), more agents with
/// keys, invited humans and the default channel, or nothing. Works once:
/// only while the instance has no users.
#[utoipa::path(
    post,
    operation_id = "instance_bootstrap",
    path = "/api/v1/bootstrap",
    tag = "instance",
    request_body = BootstrapRequest,
    responses(
        (status = 201, description = "The instance is provisioned.", body = InstanceBootstrapResponse),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (every problem at once: a password too short or too easy to guess, an invalid e-mail, duplicate \
            names...).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`setup_token_required`: the server was started with a setup token \
            (`--setup-token`) and the call did not carry it as its bearer credential.",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`already_bootstrapped`: the instance has users (also for the losers of \
            concurrent first calls).", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database or the signing key is unavailable; \
            nothing was created.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn set_up_workspace(
    RequestTime(now): RequestTime,
    state: web::Data<AppState>,
    request: HttpRequest,
    body: Deferred<web::Json<BootstrapRequest>>,
) -> Result<HttpResponse, ApiError> {
    require_setup_token(&state, &request)?;
    let body = body.read().await?.into_inner();
    // An instance that is bootstrapped says so before judging the request,
    // and before any password is hashed.
    if state
        .store
        .detached(async |store| store.instance().await)
        .await?
        .is_some()
    {
        return Err(already_bootstrapped());
    }
    // Every problem at once, before any write.
    let mut problems = Problems::default();
    let mut names = BTreeSet::new();
    let primary_email = problems.check(
        Email::parse(&body.primary_agent.email),
        "primary_agent.email",
    );
    let password = problems
        .check(
            Password::new(body.primary_agent.password.clone()),
            "primary_agent.password",
        )
        .filter(|password| {
            let strong = check_password_strength(password, &[&body.primary_agent.email]);
            problems.check(strong, "primary_agent.password").is_some()
        });
    let primary_agent = bootstrap_agent_spec(
        &mut problems,
        "primary_agent.agent_profile",
        &body.primary_agent.agent_profile,
        &mut names,
    );
    if body.agents.len() > MAX_AGENTS || body.humans.len() > MAX_HUMANS {
        problems.push(format!(
            "at most {MAX_AGENTS} agents and {MAX_HUMANS} humans per bootstrap"
        ));
    }
    let agents: Vec<Option<NewAgent>> = body
        .agents
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            bootstrap_agent_spec(&mut problems, &format!("agents[{index}]"), spec, &mut names)
        })
        .collect();
    let mut emails: BTreeSet<String> = primary_email
        .iter()
        .map(|email| email.to_string())
        .collect();
    let mut humans = Vec::new();
    for (index, human) in body.humans.iter().enumerate() {
        let field = format!("humans[{index}]");
        let email = problems.check(Email::parse(&human.email), &format!("{field}.email"));
        if let Some(email) = &email
            && !emails.insert(email.to_string())
        {
            problems.push(format!("{field}.email: {email} appears more than once"));
        }
        let role = human.role.clone().unwrap_or_else(|| "member".into());
        if role != "observer" && role != "member" {
            problems.push(format!("{field}.role: must be observer or member"));
        }
        problems.length(
            &format!("{field}.display_name"),
            human.display_name.as_deref(),
            1,
            255,
        );
        if let Some(email) = email {
            let display_name = human
                .display_name
                .clone()
                .unwrap_or_else(|| email.to_string());
            humans.push((email, display_name, role));
        }
    }
    let channel = body.default_channel.unwrap_or_default();
    let channel_name = channel.name.unwrap_or_else(|| "general".into());
    if !channel_name_ok(&channel_name) {
        problems.push(
            "default_channel.name: letters, digits, hyphens and spaces, 1 to 100 characters".into(),
        );
    }
    problems.length("default_channel.topic", channel.topic.as_deref(), 0, 1000);
    problems.finish()?;
    let (Some(primary_email), Some(password), Some(primary_agent)) =
        (primary_email, password, primary_agent)
    else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "invalid bootstrap request",
        ));
    };
    let agents: Vec<NewAgent> = agents.into_iter().flatten().collect();
    let channel_name_out = channel_name.clone();

    // Secrets are minted and hashed before the transaction, so it holds no
    // lock while argon2 works.
    let primary_password_hash = state.passwords.hash(password).await?;
    let (primary_key, primary_hash) = agent_key();
    let agent_keys: Vec<(ApiKey, [u8; 32])> = agents.iter().map(|_| agent_key()).collect();
    let invites: Vec<String> = humans.iter().map(|_| mint_invite_token()).collect();
    let spec = InstanceBootstrap {
        primary_email,
        primary_password_hash,
        primary_agent: BootstrapAgent {
            agent: primary_agent,
            key_hash: primary_hash,
        },
        agents: agents
            .into_iter()
            .zip(&agent_keys)
            .map(|(agent, (_, hash))| BootstrapAgent {
                agent,
                key_hash: *hash,
            })
            .collect(),
        humans: humans
            .into_iter()
            .zip(&invites)
            .map(|((email, display_name, role), token)| BootstrapHuman {
                email,
                display_name,
                role,
                invite_hash: hash_secret(token).0,
                invite_expires_at: now + state.settings.invite_ttl,
            })
            .collect(),
        channel_name,
        channel_topic: channel.topic.clone(),
    };
    let created = state
        .store
        .detached(async move |store| store.bootstrap_instance(spec, now).await)
        .await
        .map_err(|error| match error {
            StoreError::Conflict("instance") => already_bootstrapped(),
            StoreError::Conflict(what) => {
                ApiError::bad_request("invalid_request", format!("{what} is already taken"))
            }
            other => other.into(),
        })?;
    let (primary_record, primary_key_id) = &created.primary_agent;
    let (jwt, _) = state
        .mint(
            Audience::Agent,
            primary_record.id.as_uuid(),
            created.tenant_id,
            primary_record.credential_epoch,
            now,
            state.settings.session_token_ttl,
        )
        .ok_or_else(|| ApiError::unavailable("no signing key is loaded"))?;
    let base = state.settings.public_url.trim_end_matches('/');
    state.audit(
        created.tenant_id,
        agentry_store::NewAuditEvent {
            actor: format!("agent:{}", primary_record.slug),
            action: "instance.bootstrap".into(),
            target: Some(format!("instance:{}", created.instance_id)),
            outcome: "success".into(),
            detail: json!({ "agents": created.agents.len() + 1, "humans": created.humans.len() }),
        },
    );
    Ok(HttpResponse::Created().json(InstanceBootstrapResponse {
        primary_agent: PrimaryAgentCreated {
            user_id: created.primary_user_id,
            agent_id: primary_record.id.to_string(),
            email: body.primary_agent.email.to_lowercase(),
            jwt_token: jwt,
            api_key: primary_key.expose().to_owned(),
            api_key_id: *primary_key_id,
        },
        agents: created
            .agents
            .iter()
            .zip(&agent_keys)
            .map(|((agent, key_id), (key, _))| AgentCreated {
                agent_id: agent.id.to_string(),
                name: agent.name.to_string(),
                display_name: agent.display_name.clone(),
                api_key: key.expose().to_owned(),
                api_key_id: *key_id,
            })
            .collect(),
        humans: created
            .humans
            .iter()
            .zip(&invites)
            .map(|((user_id, email), token)| HumanInvited {
                user_id: *user_id,
                email: email.as_str().to_owned(),
                invite_token: token.clone(),
                invite_url: format!("{base}/invite?token={token}"),
            })
            .collect(),
        channel: ChannelCreated {
            channel_id: created.channel_id,
            name: channel_name_out,
            topic: channel.topic,
            members: created.members,
        },
        instance_id: created.instance_id,
    }))
}

pub(crate) fn already_bootstrapped() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "already_bootstrapped",
        "this instance is already bootstrapped (it has users)",
    )
}

#[derive(Debug, Serialize, ToSchema)]
struct BootstrapStatus {
    bootstrapped: bool,
    /// Present once bootstrapped.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Uuid)]
    instance_id: Option<Uuid>,
    /// Present once bootstrapped.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = TimestampSchema)]
    bootstrapped_at: Option<String>,
}

/// Whether the instance is bootstrapped yet, to check before trying.
#[utoipa::path(
    get,
    operation_id = "instance_bootstrap_status",
    path = "/api/v1/bootstrap/status",
    tag = "instance",
    responses(
        (status = 200, description = "`bootstrapped`, and when it was.", body = BootstrapStatus),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn setup_status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let instance = state
        .store
        .detached(async |store| store.instance().await)
        .await?;
    Ok(HttpResponse::Ok().json(match instance {
        Some((instance_id, _, at)) => BootstrapStatus {
            bootstrapped: true,
            instance_id: Some(instance_id),
            bootstrapped_at: Some(timestamp(at)),
        },
        None => BootstrapStatus {
            bootstrapped: false,
            instance_id: None,
            bootstrapped_at: None,
        },
    }))
}
