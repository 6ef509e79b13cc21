//! Seed 002: the first-run instance bootstrap, invites, login, and the
//! default channel, plus the small `/invite` page humans land on.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use agentry_auth::{ApiKey, ApiKeyKind, Audience, hash_secret, mint_invite_token};
use agentry_domain::{AgentName, AgentOrigin, Email, Password};
use agentry_store::{
    BootstrapAgent, BootstrapHuman, InstanceBootstrap, NewAgent, StoreError, TokenError,
    UserRecord, now,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::deferred::Deferred;
use crate::error::{ApiError, Problem};
use crate::guard::SessionPrincipal;
use crate::passwords::check_password_strength;
use crate::redact::debug_redacting;
use crate::state::AppState;
use crate::validate::Problems;
use crate::wire::{TimestampSchema, timestamp};

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/api/v1/bootstrap", web::post().to(bootstrap))
        .route("/api/v1/bootstrap/status", web::get().to(status))
        .route("/api/v1/invite", web::get().to(read_invite))
        .route("/api/v1/invite/accept", web::post().to(accept_invite))
        .route("/api/v1/auth/login", web::post().to(login))
        .route("/api/v1/auth/logout", web::post().to(logout))
        .route("/api/v1/auth/password", web::post().to(change_password))
        .route("/invite", web::get().to(invite_page));
}

#[derive(OpenApi)]
#[openapi(paths(
    bootstrap,
    status,
    read_invite,
    accept_invite,
    login,
    logout,
    change_password,
    invite_page
))]
pub(crate) struct Api;

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
struct BootstrapRequest {
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

/// An agent of the bootstrap, whose display name seed 002 requires.
fn bootstrap_agent_spec(
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
async fn bootstrap(
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
    let now = now();
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
async fn status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
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

/// A signed-in user, as login and invite acceptance answer.
#[derive(Serialize, ToSchema)]
struct Session {
    user_id: Uuid,
    email: String,
    display_name: String,
    /// Session token for the `session_jwt` scheme.
    jwt_token: String,
    /// The same token, under the name Agent United's clients read.
    token: String,
    #[schema(value_type = TimestampSchema)]
    expires_at: String,
}

debug_redacting!(Session { user_id, email, display_name, expires_at; secret: jwt_token, token });

/// A session for `user`, as login and invite acceptance answer. The token
/// carries the user's session epoch: ending the user's sessions moves the
/// epoch on and retires it.
fn session(state: &AppState, user: &UserRecord) -> Result<HttpResponse, ApiError> {
    let (jwt, expires_at) = state
        .mint_session(user, now())
        .ok_or_else(|| ApiError::unavailable("no signing key is loaded"))?;
    Ok(HttpResponse::Ok().json(Session {
        user_id: user.id,
        email: user.email.clone(),
        display_name: user.display_name.clone(),
        token: jwt.clone(),
        jwt_token: jwt,
        expires_at: timestamp(expires_at),
    }))
}

/// The client's address, for the per-address throttle.
fn client_address(request: &HttpRequest) -> Option<std::net::IpAddr> {
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

/// Fields other clients send along are ignored, as Agent United does.
#[derive(Deserialize, ToSchema)]
struct AcceptInvite {
    /// The `inv_...` token of the invite URL.
    token: String,
    /// The new password.
    #[schema(min_length = 12, format = Password)]
    password: String,
    /// The name the human goes by; absent, the one the invite was made with.
    #[schema(min_length = 1, max_length = 255)]
    display_name: Option<String>,
}

debug_redacting!(AcceptInvite { display_name; secret: token, password });

fn invite_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Token(TokenError::Unknown) => {
            ApiError::new(StatusCode::NOT_FOUND, "invite_not_found", "no such invite")
        }
        StoreError::Token(TokenError::Expired) => ApiError::new(
            StatusCode::GONE,
            "invite_expired",
            "this invite has expired; ask for a new one",
        ),
        StoreError::Token(_) => ApiError::new(
            StatusCode::GONE,
            "invite_used",
            "this invite has already been used",
        ),
        error => error.into(),
    }
}

#[derive(Deserialize)]
struct InviteQuery {
    token: String,
}

debug_redacting!(InviteQuery { ; secret: token });

/// What an invite page shows before the human chooses a password.
#[derive(Debug, Serialize, ToSchema)]
struct InviteState {
    /// The address the invite was sent to.
    email: String,
    /// `pending` (it can be accepted), `accepted`, or `expired` (too late,
    /// or too many tries).
    #[schema(example = "pending")]
    status: &'static str,
    #[schema(value_type = TimestampSchema)]
    expires_at: String,
}

/// Reads an invite by its token, as Agent United's invite page does.
///
/// Throttled like acceptance, per token and per address.
#[utoipa::path(
    get,
    operation_id = "read_invite",
    path = "/api/v1/invite",
    tag = "instance",
    params(("token" = String, Query, description = "The `inv_...` token of the invite URL.")),
    responses(
        (status = 200, description = "The invite's address and state.", body = InviteState),
        (status = 400, description = "`invalid_query`: no `token`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`invite_not_found`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_attempts`: too many tries for this invite or from this \
            address.", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next attempt may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn read_invite(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<InviteQuery>,
) -> Result<HttpResponse, ApiError> {
    let token_hash = hash_secret(&query.token).0;
    // Reads are counted apart from acceptances: opening the page spends
    // none of the password tries.
    state.logins.admit(
        &format!("invite-read:{}", agentry_auth::hex(&token_hash)),
        client_address(&request),
    )?;
    let (user, token) = state
        .store
        .detached(async move |store| store.invite(&token_hash).await)
        .await?
        .ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "invite_not_found", "no such invite")
        })?;
    let status = match token.usable(now()) {
        Ok(()) => "pending",
        Err(TokenError::Consumed) => "accepted",
        Err(_) => "expired",
    };
    Ok(HttpResponse::Ok().json(InviteState {
        email: user.email,
        status,
        expires_at: timestamp(token.expires_at),
    }))
}

/// Sets an invited human's password and signs them in.
///
/// The token is looked up before the password is judged or hashed, and the
/// password is checked before the token is spent.
#[utoipa::path(
    post,
    operation_id = "accept_invite",
    path = "/api/v1/invite/accept",
    tag = "instance",
    request_body = AcceptInvite,
    responses(
        (status = 200, description = "The invite is spent; a session for the human.", body = Session),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_request` \
            (`display_name` empty or longer than 255), `invalid_password` (too short, or too easy to \
            guess; the invite is not spent).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`invite_not_found`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "`invite_expired`, `invite_used`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_attempts`: too many tries for this invite or from this \
            address.", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next attempt may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database or the signing key is unavailable, or \
            too many passwords are being hashed at once; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn accept_invite(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Json<AcceptInvite>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let token_hash = hash_secret(&body.token).0;
    state.logins.admit(
        &format!("invite:{}", agentry_auth::hex(&token_hash)),
        client_address(&request),
    )?;
    let invited = state
        .store
        .detached(async move |store| store.invited_user(&token_hash, now()).await)
        .await
        .map_err(invite_error)?;
    let mut problems = Problems::default();
    problems.length("display_name", body.display_name.as_deref(), 1, 255);
    problems.finish()?;
    let display_name = body.display_name;
    let password = new_password(
        body.password,
        &[
            &invited.email,
            &invited.display_name,
            display_name.as_deref().unwrap_or_default(),
        ],
    )?;
    let password_hash = state.passwords.hash(password).await?;
    let user = state
        .store
        .detached(async move |store| {
            store
                .accept_invite(&token_hash, password_hash, display_name, now())
                .await
        })
        .await
        .map_err(invite_error)?;
    session(&state, &user)
}

/// Fields other clients send along are ignored, as Agent United does.
#[derive(Deserialize, ToSchema)]
struct Login {
    email: String,
    #[schema(format = Password)]
    password: String,
}

debug_redacting!(Login { email; secret: password });

/// Signs a user in with e-mail and password.
///
/// Attempts are throttled per account and per client address before any
/// password is judged.
#[utoipa::path(
    post,
    operation_id = "login",
    path = "/api/v1/auth/login",
    tag = "instance",
    request_body = Login,
    responses(
        (status = 200, description = "A session.", body = Session),
        (status = 400, description = "`invalid_json`: not JSON, or not this shape.",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`invalid_credentials`: for every wrong e-mail or password, after the \
            same work.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_attempts`: too many tries for this account or from this \
            address; nothing was judged.", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next attempt may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database or the signing key is unavailable, or \
            too many passwords are being checked at once; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn login(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Json<Login>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let refused =
        || ApiError::unauthorized("invalid_credentials", "the e-mail or password is wrong");
    let email = Email::parse(&body.email).ok();
    // Keyed by the address as written when it is none, so a made-up
    // spelling is throttled like any other.
    let account = email
        .as_ref()
        .map_or_else(|| body.email.to_lowercase(), ToString::to_string);
    state.logins.admit(&account, client_address(&request))?;
    let user = match email {
        Some(email) => {
            state
                .store
                .detached(async move |store| match store.instance_tenant().await? {
                    Some(tenant) => store.user_by_email(tenant, &email).await,
                    None => Ok(None),
                })
                .await?
        }
        None => None,
    };
    // The same work whether or not the account exists: no enumeration by
    // timing, and one message for every failure.
    let stored = user.as_ref().and_then(|user| user.password_hash.clone());
    let matches = state.passwords.verify(stored, body.password).await?;
    match user {
        Some(user) if matches => session(&state, &user),
        _ => Err(refused()),
    }
}

/// Signs the caller out: this session and every other session of the user
/// minted before it stop working at once.
#[utoipa::path(
    post,
    operation_id = "logout",
    path = "/api/v1/auth/logout",
    tag = "instance",
    security(("session_jwt" = [])),
    responses(
        (status = 204, description = "Every session of the user so far has ended."),
        (status = 401, description = "`missing_credentials`, `invalid_token`: no session, or one that has \
            ended or expired.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn logout(
    state: web::Data<AppState>,
    caller: SessionPrincipal,
) -> Result<HttpResponse, ApiError> {
    let (tenant, user) = (caller.tenant_id, caller.user_id);
    state
        .store
        .detached(async move |store| store.end_sessions(tenant, user, None).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ChangePassword {
    #[schema(format = Password)]
    current_password: String,
    #[schema(min_length = 12, format = Password)]
    new_password: String,
}

debug_redacting!(ChangePassword { ; secret: current_password, new_password });

/// Changes the caller's password. Every session of the user, this one
/// included, ends; sign in again with the new password.
#[utoipa::path(
    post,
    operation_id = "change_password",
    path = "/api/v1/auth/password",
    tag = "instance",
    security(("session_jwt" = [])),
    request_body = ChangePassword,
    responses(
        (status = 204, description = "The password is changed and every session so far has ended."),
        (status = 400, description = "`invalid_json` (not JSON, or not this shape), `invalid_password` (the \
            new one is too short or too easy to guess).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`missing_credentials`, `invalid_token`: no live session; \
            `invalid_credentials`: the current password is wrong.",
            body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_attempts`: too many tries for this account or from this \
            address.", body = Problem, content_type = "application/problem+json",
            headers(("retry-after" = u64, description = "Seconds until the next attempt may pass."))),
        (status = 500, description = "`internal`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the database is unavailable, or too many passwords are \
            being hashed at once; retry shortly.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn change_password(
    state: web::Data<AppState>,
    request: HttpRequest,
    caller: SessionPrincipal,
    body: Deferred<web::Json<ChangePassword>>,
) -> Result<HttpResponse, ApiError> {
    let body = body.read().await?.into_inner();
    let (tenant, user_id) = (caller.tenant_id, caller.user_id);
    let user = state
        .store
        .detached(async move |store| store.user(tenant, user_id).await)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid_token", "the session's user is gone"))?;
    state.logins.admit(&user.email, client_address(&request))?;
    let matches = state
        .passwords
        .verify(user.password_hash.clone(), body.current_password)
        .await?;
    if !matches {
        return Err(ApiError::unauthorized(
            "invalid_credentials",
            "the current password is wrong",
        ));
    }
    let password = new_password(body.new_password, &[&user.email, &user.display_name])?;
    let hash = state.passwords.hash(password).await?;
    state
        .store
        .detached(async move |store| store.end_sessions(tenant, user_id, Some(hash)).await)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The page an invite URL opens.
///
/// A plain form that posts the token and the new password to
/// `/api/v1/invite/accept`.
#[utoipa::path(
    get,
    operation_id = "invite_page",
    path = "/invite",
    tag = "instance",
    params(("token" = Option<String>, Query, description = "The invite token; the page's script reads it \
        from the URL, the server does not.")),
    responses(
        (status = 200, description = "The HTML form.", body = String, content_type = "text/html; charset=utf-8",
            headers(
                ("content-security-policy" = String, description = "Only the page's own inline script and \
                    style, and requests to this origin."),
                ("referrer-policy" = String, description = "`no-referrer`, so the token does not leak."),
            )),
    ),
)]
async fn invite_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("content-security-policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'self'"))
        .insert_header(("referrer-policy", "no-referrer"))
        .body(INVITE_PAGE)
}

const INVITE_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Accept your Agentry invite</title>
<style>body{font-family:sans-serif;max-width:28rem;margin:4rem auto}label,input,button{display:block;width:100%;margin:.5rem 0}</style></head>
<body>
<h1>Set your password</h1>
<form id="accept">
<label>Password (at least 12 characters)<input type="password" name="password" minlength="12" required autocomplete="new-password"></label>
<button type="submit">Accept invite</button>
</form>
<p id="result" role="status"></p>
<script>
document.getElementById("accept").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = new URLSearchParams(location.search).get("token") || "";
  const password = event.target.password.value;
  const response = await fetch("/api/v1/invite/accept", {
    method: "POST", headers: {"content-type": "application/json"},
    body: JSON.stringify({token, password})
  });
  const body = await response.json();
  document.getElementById("result").textContent = response.ok
    ? "Welcome, " + body.email + ". You are signed in."
    : (body.detail || "The invite could not be accepted.");
});
</script>
</body>
</html>
"#;
