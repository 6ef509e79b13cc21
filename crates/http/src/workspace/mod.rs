//! Seed 002, Agent United's workspace API: the first-run workspace setup
//! (`setup`), accounts and sessions (`sessions`), invites (`invites`), the
//! workspace's agents and their keys under `/api/v1/agents` (`agents`,
//! `keys`), and channels and their members (`channels`, `members`), with
//! what their requests share in `spec`.
//!
//! `/api/v1/agents` is also seed 004's registry. Which family a request
//! belongs to is told by its credential ([`is_workspace_request`]): a
//! workspace session or a workspace agent's token or key without
//! `X-Bulwark-Tenant` is seed 002's and lands here; everything else goes
//! on to `registry.rs`.

mod agents;
mod channels;
mod invites;
mod keys;
mod members;
mod sessions;
mod setup;
mod spec;

use actix_web::guard::{self, GuardContext};
use actix_web::web;
use utoipa::OpenApi;

use crate::guard::is_workspace_request;

pub(crate) use agents::{WorkspaceAgent, WorkspaceAgentList};
pub(crate) use spec::NewWorkspaceAgent;

fn workspace_family(context: &GuardContext<'_>) -> bool {
    is_workspace_request(context.head())
}

/// Mounted before `registry::configure`: each `.route` is a resource of
/// its own whose guards (method and family) must all match, so seed 002's
/// requests to `/api/v1/agents` are taken here and every other request to
/// the same paths falls through to the registry's routes. Agent United
/// serves its agents and channels under `/v1` as well, where nothing else
/// lives: there they are unguarded, so a caller outside the workspace
/// hears why (401, 403).
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    let workspace = || guard::fn_guard(workspace_family);
    config
        .route("/api/v1/bootstrap", web::post().to(setup::set_up_workspace))
        .route(
            "/api/v1/bootstrap/status",
            web::get().to(setup::setup_status),
        )
        .route("/api/v1/invite", web::get().to(invites::read_invite))
        .route(
            "/api/v1/invite/accept",
            web::post().to(invites::accept_invite),
        )
        .route("/api/v1/auth/login", web::post().to(sessions::login))
        .route("/api/v1/auth/logout", web::post().to(sessions::logout))
        .route(
            "/api/v1/auth/password",
            web::post().to(sessions::change_password),
        )
        .route("/invite", web::get().to(invites::invite_page));
    config
        .route("/api/v1/channels", web::post().to(channels::create_channel))
        .route("/api/v1/channels", web::get().to(channels::list_channels))
        .route(
            "/api/v1/channels/{channel_id}",
            web::get().to(channels::read_channel),
        )
        .route(
            "/api/v1/channels/{channel_id}",
            web::patch().to(channels::update_channel),
        )
        .route(
            "/api/v1/channels/{channel_id}",
            web::delete().to(channels::delete_channel),
        )
        .route(
            "/api/v1/channels/{channel_id}/members",
            web::get().to(members::list_members),
        )
        .route(
            "/api/v1/channels/{channel_id}/members",
            web::post().to(members::add_member),
        )
        .route(
            "/api/v1/channels/{channel_id}/members/{user_id}",
            web::delete().to(members::remove_member),
        )
        .route("/v1/channels", web::post().to(channels::create_channel))
        .route("/v1/channels", web::get().to(channels::list_channels))
        .route(
            "/v1/channels/{channel_id}",
            web::get().to(channels::read_channel),
        )
        .route(
            "/v1/channels/{channel_id}",
            web::patch().to(channels::update_channel),
        )
        .route(
            "/v1/channels/{channel_id}",
            web::delete().to(channels::delete_channel),
        )
        .route(
            "/v1/channels/{channel_id}/members",
            web::get().to(members::list_members),
        )
        .route(
            "/v1/channels/{channel_id}/members",
            web::post().to(members::add_member),
        )
        .route(
            "/v1/channels/{channel_id}/members/{user_id}",
            web::delete().to(members::remove_member),
        );
    config
        .route("/api/v1/auth/register", web::post().to(sessions::register))
        .route(
            "/api/v1/agents",
            web::post().guard(workspace()).to(agents::create_agent),
        )
        .route(
            "/api/v1/agents",
            web::get().guard(workspace()).to(agents::list_agents),
        )
        .route(
            "/api/v1/agents/{agent_id}",
            web::get().guard(workspace()).to(agents::get_agent),
        )
        .route(
            "/api/v1/agents/{agent_id}",
            web::delete().guard(workspace()).to(agents::delete_agent),
        )
        // Seed 002's alone: unguarded, so a caller outside the workspace
        // hears why (401, 403).
        .route(
            "/api/v1/agents/{agent_id}",
            web::patch().to(agents::update_agent),
        )
        .route(
            "/api/v1/agents/{agent_id}/keys",
            web::post().to(keys::create_key),
        )
        .route(
            "/api/v1/agents/{agent_id}/keys",
            web::get().to(keys::list_keys),
        )
        .route(
            "/api/v1/agents/{agent_id}/keys/{key_id}",
            web::delete().to(keys::delete_key),
        )
        .route("/v1/agents", web::post().to(agents::create_agent))
        .route("/v1/agents", web::get().to(agents::list_agents))
        .route("/v1/agents/{agent_id}", web::get().to(agents::get_agent))
        .route(
            "/v1/agents/{agent_id}",
            web::delete().to(agents::delete_agent),
        )
        .route(
            "/v1/agents/{agent_id}",
            web::patch().to(agents::update_agent),
        )
        .route(
            "/v1/agents/{agent_id}/keys",
            web::post().to(keys::create_key),
        )
        .route("/v1/agents/{agent_id}/keys", web::get().to(keys::list_keys))
        .route(
            "/v1/agents/{agent_id}/keys/{key_id}",
            web::delete().to(keys::delete_key),
        );
}

// The document lists paths in the order the parts are merged
// (`openapi.rs`), and `AgentsApi` comes after the registry's part, which
// already holds the paths both families share: hence three parts, and
// register in the last one.

/// The first-run setup, invites and sessions.
#[derive(OpenApi)]
#[openapi(paths(
    setup::set_up_workspace,
    setup::setup_status,
    invites::read_invite,
    invites::accept_invite,
    sessions::login,
    sessions::logout,
    sessions::change_password,
    invites::invite_page
))]
pub(crate) struct InstanceApi;

/// Channels and their members.
#[derive(OpenApi)]
#[openapi(paths(
    channels::create_channel,
    channels::list_channels,
    channels::read_channel,
    channels::update_channel,
    channels::delete_channel,
    members::list_members,
    members::add_member,
    members::remove_member
))]
pub(crate) struct ChannelsApi;

/// The shared routes (`POST`/`GET /api/v1/agents`, `GET`/`DELETE
/// /api/v1/agents/{agent_id}`) are documented once, by the registry's
/// operations, which describe both families; these are seed 002's own.
#[derive(OpenApi)]
#[openapi(paths(
    sessions::register,
    agents::update_agent,
    keys::create_key,
    keys::list_keys,
    keys::delete_key
))]
pub(crate) struct AgentsApi;
