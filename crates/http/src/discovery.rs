//! What an agent finds before it has a credential: `/.well-known/agents.json`
//! (seed 000's capability record) and the plain-text playbook the bootstrap
//! answer's `next_steps.playbook` points at.
//!
//! Each capability's endpoints and auth methods are read from the OpenAPI
//! document, so the record names exactly the routes this build serves and
//! the credentials they take.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use actix_web::{HttpResponse, web};
use serde::Serialize;
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

use crate::state::AppState;

/// Where the playbook is served (the route below names it again, as every
/// route is written out where it is mounted).
pub(crate) const PLAYBOOK_PATH: &str = "/llms-agent-playbook.txt";

#[derive(OpenApi)]
#[openapi(paths(agents_json, playbook))]
pub(crate) struct Api;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/.well-known/agents.json", web::get().to(agents_json))
        .route("/llms-agent-playbook.txt", web::get().to(playbook));
}

/// Which operations make up a capability: by `operationId`, by tag, or by
/// path prefix.
enum Select {
    Operations(&'static [&'static str]),
    Tags(&'static [&'static str]),
    PathPrefix(&'static str),
}

struct Capability {
    name: &'static str,
    description: &'static str,
    select: Select,
}

const CAPABILITIES: &[Capability] = &[
    Capability {
        name: "agent_bootstrap",
        description: "From first contact to a governed agent in one call: profile, enforced \
            limits and a signed token, with a provisioner or admin API key.",
        select: Select::Operations(&["agent_bootstrap"]),
    },
    Capability {
        name: "agent_self_awareness",
        description: "An agent reads its own profile, limits, anomalies and governance state.",
        select: Select::Operations(&[
            "agent_status",
            "agent_limits_me",
            "agent_anomaly_me",
            "agent_profile_me",
        ]),
    },
    Capability {
        name: "budgets",
        description: "Spend, hold, capture and release against the agent's enforced budget; \
            a refusal is a 402 before any money moves.",
        select: Select::Tags(&["spend"]),
    },
    Capability {
        name: "delegation",
        description: "A parent creates sub-agents with slices of its budget, lists them and \
            terminates them, taking back what they did not spend.",
        select: Select::Tags(&["delegation"]),
    },
    Capability {
        name: "cert_exchange",
        description: "An agent trades a CSR for a short-lived client certificate that \
            authenticates it on the mTLS listener.",
        select: Select::PathPrefix("/v1/agent/auth/"),
    },
    Capability {
        name: "governance",
        description: "Operators manage agent profiles, lifecycles and the tenant's agent limits.",
        select: Select::Tags(&["profiles", "limits"]),
    },
    Capability {
        name: "registry",
        description: "The agent registry: register, list, inspect, revoke and rotate keys.",
        select: Select::Tags(&["registry"]),
    },
    Capability {
        name: "workspace",
        description: "An agent's workspace: first-run setup, invites for humans, login and channels.",
        select: Select::Tags(&["instance"]),
    },
    Capability {
        name: "provisioning",
        description: "Machines for agents: a bootstrap token and a CSR become an mTLS certificate, \
            secrets, artifacts and a callback sequence.",
        select: Select::Tags(&["provisioning", "machine"]),
    },
    Capability {
        name: "mcp",
        description: "The agent routes as MCP tools over Streamable HTTP.",
        select: Select::Tags(&["mcp"]),
    },
];

/// What each security scheme of the OpenAPI document is, for an agent
/// choosing how to authenticate.
const AUTH_METHODS: &[(&str, &str)] = &[
    (
        "api_key",
        "An Agentry API key as 'Authorization: Bearer agy_...' (or 'X-API-Key'): a tenant \
         key (admin, operator, auditor, provisioner) or an agent's own key.",
    ),
    (
        "agent_jwt",
        "An agent token as 'Authorization: Bearer <jwt>', from POST /v1/agent/bootstrap or \
         POST /v1/agent/delegate; EdDSA, verifiable with the JWKS.",
    ),
    (
        "mtls",
        "A client certificate from this server's CA, presented on its TLS listener: an \
         agent's from POST /v1/agent/auth/cert, a provisioning machine's from \
         POST /internal/bootstrap/cert.",
    ),
    (
        "session_jwt",
        "A workspace human's session token, from POST /api/v1/auth/login.",
    ),
    (
        "callback_jwt",
        "A provisioning machine's callback token, from POST /internal/bootstrap/secrets.",
    ),
];

/// Seed 000's capability record (docs/api.md shows it).
#[derive(Debug, Serialize, ToSchema)]
struct AgentsJson {
    #[schema(value_type = String, examples("Agentry"))]
    name: &'static str,
    #[schema(value_type = String)]
    description: &'static str,
    #[schema(value_type = String)]
    version: &'static str,
    /// The public URL everything below is under.
    #[schema(format = "uri")]
    url: String,
    /// The OpenAPI 3.1 document of every route.
    #[schema(format = "uri")]
    openapi: String,
    /// The keys that verify agent tokens.
    #[schema(format = "uri")]
    jwks: String,
    /// The plain-text guide for agents.
    #[schema(format = "uri")]
    playbook: String,
    mcp: McpEntry,
    /// Each security scheme the capabilities name.
    auth_methods: BTreeMap<String, AuthMethod>,
    /// By name: `agent_bootstrap`, `agent_self_awareness`, and the others
    /// this server has.
    capabilities: BTreeMap<String, CapabilityEntry>,
}

#[derive(Debug, Serialize, ToSchema)]
struct McpEntry {
    #[schema(format = "uri")]
    endpoint: String,
    /// `streamable-http`.
    #[schema(value_type = String, examples("streamable-http"))]
    transport: &'static str,
    /// The protocol revisions spoken, newest first.
    #[schema(value_type = Vec<String>)]
    protocol_versions: &'static [&'static str],
    #[schema(value_type = Vec<String>)]
    tools: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
struct AuthMethod {
    #[schema(value_type = String)]
    description: &'static str,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
struct CapabilityEntry {
    #[schema(value_type = String)]
    description: &'static str,
    /// `METHOD /path`, as in the OpenAPI document.
    endpoints: Vec<String>,
    /// The security schemes these endpoints take, as in `auth_methods`.
    auth: Vec<String>,
    /// The MCP tools that serve this capability, if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    mcp_tools: Vec<&'static str>,
}

/// The capabilities and the auth methods they name, read from the OpenAPI
/// document once.
static CAPABILITY_TABLE: LazyLock<(
    BTreeMap<String, CapabilityEntry>,
    BTreeMap<String, AuthMethod>,
)> = LazyLock::new(|| {
    let document: Value =
        serde_json::from_str(&crate::openapi::openapi_json()).unwrap_or(Value::Null);
    let mut capabilities = BTreeMap::new();
    let mut used_schemes = BTreeSet::new();
    for capability in CAPABILITIES {
        let (endpoints, schemes) = endpoints(&document, &capability.select);
        used_schemes.extend(schemes.iter().cloned());
        let mcp_tools = crate::mcp::TOOLS
            .iter()
            .filter(|tool| {
                endpoints
                    .iter()
                    .any(|(_, operation)| operation == tool.operation)
            })
            .map(|tool| tool.name)
            .collect();
        capabilities.insert(
            capability.name.to_owned(),
            CapabilityEntry {
                description: capability.description,
                endpoints: endpoints
                    .into_iter()
                    .map(|(endpoint, _)| endpoint)
                    .collect(),
                auth: schemes,
                mcp_tools,
            },
        );
    }
    let auth_methods = AUTH_METHODS
        .iter()
        .filter(|(name, _)| used_schemes.contains(*name))
        .map(|(name, description)| ((*name).to_owned(), AuthMethod { description }))
        .collect();
    (capabilities, auth_methods)
});

impl AgentsJson {
    fn on(public_url: &str) -> Self {
        let base = public_url.trim_end_matches('/');
        let (capabilities, auth_methods) = &*CAPABILITY_TABLE;
        Self {
            name: "Agentry",
            description: "Identity, credentials, budgets and a lifecycle for autonomous AI agents.",
            version: env!("CARGO_PKG_VERSION"),
            url: base.to_owned(),
            openapi: format!("{base}/openapi.json"),
            jwks: format!("{base}/.well-known/jwks.json"),
            playbook: format!("{base}{PLAYBOOK_PATH}"),
            mcp: McpEntry {
                endpoint: format!("{base}/mcp"),
                transport: "streamable-http",
                protocol_versions: crate::mcp::PROTOCOL_VERSIONS,
                tools: crate::mcp::TOOLS.iter().map(|tool| tool.name).collect(),
            },
            auth_methods: auth_methods.clone(),
            capabilities: capabilities.clone(),
        }
    }
}

/// A capability's endpoints (`"METHOD /path"`, with each one's
/// `operationId`) and the security schemes any of them takes, in document
/// order.
fn endpoints(document: &Value, select: &Select) -> (Vec<(String, String)>, Vec<String>) {
    let mut endpoints = Vec::new();
    let mut schemes: Vec<String> = Vec::new();
    let Some(paths) = document["paths"].as_object() else {
        return (endpoints, schemes);
    };
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, operation) in item {
            let id = operation["operationId"].as_str().unwrap_or_default();
            let tagged = |tags: &[&str]| {
                operation["tags"]
                    .as_array()
                    .is_some_and(|own| own.iter().any(|tag| tags.iter().any(|t| tag == t)))
            };
            let selected = match select {
                Select::Operations(ids) => ids.contains(&id),
                Select::Tags(tags) => tagged(tags),
                Select::PathPrefix(prefix) => path.starts_with(prefix),
            };
            if !selected {
                continue;
            }
            endpoints.push((
                format!("{} {path}", method.to_ascii_uppercase()),
                id.to_owned(),
            ));
            for requirement in operation["security"].as_array().into_iter().flatten() {
                for scheme in requirement.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !schemes.contains(scheme) {
                        schemes.push(scheme.clone());
                    }
                }
            }
        }
    }
    (endpoints, schemes)
}

/// What this server offers agents, and how to authenticate for each.
///
/// Seed 000's capability record: `agent_bootstrap`, `agent_self_awareness`
/// and the other capabilities this server has, each with its endpoints,
/// the auth methods they take and the MCP tools that serve them; links to
/// the OpenAPI document, the JWKS, the MCP endpoint and the playbook.
/// docs/api.md describes the shape.
#[utoipa::path(
    get,
    operation_id = "agents_json",
    path = "/.well-known/agents.json",
    tag = "service",
    responses(
        (status = 200, description = "The capability record.", body = AgentsJson, headers(("cache-control" = String, description = "`public, max-age=300`"))),
    ),
)]
async fn agents_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=300"))
        .json(AgentsJson::on(&state.settings.public_url))
}

/// A guide for agents, in plain text: how to bootstrap, read their own
/// state, spend, delegate and authenticate.
#[utoipa::path(
    get,
    operation_id = "agent_playbook",
    path = "/llms-agent-playbook.txt",
    tag = "service",
    responses(
        (status = 200, description = "The playbook.", content_type = "text/plain; charset=utf-8",
            body = String),
    ),
)]
async fn playbook(state: web::Data<AppState>) -> HttpResponse {
    let base = state.settings.public_url.trim_end_matches('/');
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("cache-control", "public, max-age=300"))
        .body(include_str!("playbook.txt").replace("{base}", base))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record() -> Value {
        serde_json::to_value(AgentsJson::on("https://agentry.example/")).unwrap()
    }

    #[test]
    fn the_seed_capabilities_are_there_with_their_routes() {
        let record = record();
        let bootstrap = &record["capabilities"]["agent_bootstrap"];
        assert_eq!(bootstrap["endpoints"], json!(["POST /v1/agent/bootstrap"]));
        assert_eq!(bootstrap["auth"], json!(["api_key"]));
        assert_eq!(bootstrap["mcp_tools"], json!(["br_bootstrap_agent"]));
        let awareness = &record["capabilities"]["agent_self_awareness"];
        let endpoints = awareness["endpoints"].as_array().unwrap();
        assert!(
            endpoints.contains(&json!("GET /v1/agent/status")),
            "{awareness}"
        );
        assert!(
            awareness["auth"]
                .as_array()
                .unwrap()
                .contains(&json!("mtls"))
        );
        assert_eq!(record["openapi"], "https://agentry.example/openapi.json");
        assert_eq!(record["mcp"]["endpoint"], "https://agentry.example/mcp");
    }

    #[test]
    fn every_capability_has_endpoints_and_every_auth_method_is_described() {
        let record = record();
        for (name, capability) in record["capabilities"].as_object().unwrap() {
            assert!(
                !capability["endpoints"].as_array().unwrap().is_empty(),
                "{name} has no endpoint"
            );
            for scheme in capability["auth"].as_array().unwrap() {
                assert!(
                    record["auth_methods"][scheme.as_str().unwrap()].is_object(),
                    "{name} takes {scheme}, which auth_methods does not describe"
                );
            }
        }
    }
}
