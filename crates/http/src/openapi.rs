//! The OpenAPI 3.1 description of every route `configure` mounts, derived
//! from the handlers' own annotations and wire types so that it cannot
//! drift from them. Each route module lists its operations in its own `Api`;
//! this module adds the service routes, the security schemes and the tags,
//! and serves the result at `GET /openapi.json`.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{
    agent_self, bootstrap, delegation, discovery, machines, mcp, profiles, registry, spend,
    workspace,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agentry",
        description = "Identity, lifecycle and budgets for AI agents. Every error is an RFC 9457 \
            problem (`application/problem+json`) with a stable `code`; every response carries \
            `x-request-id`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(crate::healthz, crate::readyz, crate::metrics_text, crate::jwks, openapi_document),
    modifiers(&SecuritySchemes),
    tags(
        (name = "agent", description = "An agent's bootstrap and its view of itself (seeds 000, 001)."),
        (name = "profiles", description = "Operators manage agent profiles and lifecycles (seed 001)."),
        (name = "limits", description = "The tenant's agent-limits map (seed 001)."),
        (name = "spend", description = "Spending and holds against an agent's enforced budget."),
        (name = "delegation", description = "Parents create, list and reclaim sub-agents (seed 001)."),
        (name = "instance", description = "First-run instance bootstrap, invites, login and channels (seed 002)."),
        (name = "provisioning", description = "Operators create machine instances, attach their artifacts and \
            watch them provision (seed 003)."),
        (name = "machine", description = "A provisioning machine's bootstrap: certificate, secrets, artifact \
            downloads, callbacks and diagnostics (seed 003)."),
        (name = "registry", description = "The agent registry: register, list, inspect, revoke, rotate keys (seed 004)."),
        (name = "mcp", description = "The agent routes as MCP tools (Streamable HTTP; docs/agents.md)."),
        (name = "service", description = "Health, readiness, signing keys and this document."),
    ),
)]
struct ApiDoc;

/// Names every scheme a route may list in its `security`.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let bearer = |format: &str, description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format(format)
                    .description(Some(description))
                    .build(),
            )
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            bearer(
                "agy_...",
                "Agentry API key `agy_...`: a tenant key (`agy_admin_...`, `agy_operator_...`, \
                 `agy_auditor_...`, `agy_provisioner_...`) or an agent's own key \
                 (`agy_agent_...`). Also accepted as `X-API-Key`.",
            ),
        );
        components.add_security_scheme(
            "agent_jwt",
            bearer(
                "JWT",
                "Agent token: a JWT signed with EdDSA (Ed25519), audience `agentry:agent`, \
                 from `POST /v1/agent/bootstrap` or `POST /v1/agent/delegate`; verify it \
                 offline with `/.well-known/jwks.json`.",
            ),
        );
        components.add_security_scheme(
            "session_jwt",
            bearer(
                "JWT",
                "Session token of seed 002: a JWT signed with EdDSA, audience \
                 `agentry:session`, from `POST /api/v1/auth/login` or \
                 `POST /api/v1/invite/accept`.",
            ),
        );
        components.add_security_scheme(
            "callback_jwt",
            bearer(
                "JWT",
                "Callback token of seed 003: a JWT signed with EdDSA, audience \
                 `agentry:callback`, the `callback_jwt` from \
                 `POST /internal/bootstrap/secrets`, valid two hours.",
            ),
        );
        components.add_security_scheme(
            "mtls",
            SecurityScheme::MutualTls {
                description: Some(
                    "Client certificate from this server's CA, presented on the TLS \
                     listener. An agent's, from `POST /v1/agent/auth/cert`, speaks for the \
                     agent wherever its token does, except where a credential is issued \
                     (delegation, the workspace API, another certificate). A provisioning machine's, from \
                     `POST /internal/bootstrap/cert`, is for `/internal/bootstrap/secrets` and \
                     the artifact downloads, and, for an instance bound to an agent, the \
                     read-only `/v1/agent/status`, `/v1/agent/limits/me`, \
                     `/v1/agent/anomaly/me` and `/v1/agent/profiles/me` of that agent."
                        .into(),
                ),
                extensions: None,
            },
        );
    }
}

/// Every JSON body is read through one extractor configuration, so every
/// operation that takes one can answer 413 (past 64 KiB) and 415 (not
/// labelled JSON); added here once rather than on each handler.
struct BodyLimits;

impl Modify for BodyLimits {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let problem = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/problem+json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build(),
            )
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let takes_json = operation
                    .request_body
                    .as_ref()
                    .is_some_and(|body| body.content.contains_key("application/json"));
                if takes_json {
                    let responses = &mut operation.responses.responses;
                    responses.entry("413".into()).or_insert_with(|| {
                        problem("`payload_too_large`: the JSON body is over 64 KiB.")
                    });
                    responses.entry("415".into()).or_insert_with(|| {
                        problem(
                            "`unsupported_media_type`: the body is not sent as `application/json`.",
                        )
                    });
                }
            }
        }
    }
}

/// Every tenant API key has a request budget (`--api-key-rpm`), so every
/// operation that takes the `api_key` scheme can answer 429; added here
/// once, like the body limits, where an operation does not document one
/// already (an agent's rpm answers the same code).
struct ApiKeyRateLimit;

impl Modify for ApiKeyRateLimit {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        for (path, item) in openapi.paths.paths.iter_mut() {
            // `/mcp` answers a limited key's tool call with a refusal
            // result, not a status.
            if path == "/mcp" {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let takes_api_key = operation.security.iter().flatten().any(|requirement| {
                    serde_json::to_value(requirement)
                        .is_ok_and(|value| value.get("api_key").is_some())
                });
                if takes_api_key {
                    operation
                        .responses
                        .responses
                        .entry("429".into())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(
                                        "`rate_limited`: this API key has used its requests \
                                         per minute (`--api-key-rpm`); `Retry-After` says when \
                                         to try again.",
                                    )
                                    .content(
                                        "application/problem+json",
                                        ContentBuilder::new()
                                            .schema(Some(Ref::from_schema_name("Problem")))
                                            .build(),
                                    )
                                    .build(),
                            )
                        });
                }
            }
        }
    }
}

/// The whole document, assembled from the service routes and each route
/// module's `Api`.
fn document() -> utoipa::openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    for part in [
        agent_self::Api::openapi(),
        crate::agent_cert::Api::openapi(),
        bootstrap::Api::openapi(),
        profiles::Api::openapi(),
        spend::Api::openapi(),
        delegation::Api::openapi(),
        workspace::InstanceApi::openapi(),
        workspace::ChannelsApi::openapi(),
        machines::Api::openapi(),
        registry::Api::openapi(),
        workspace::AgentsApi::openapi(),
        mcp::Api::openapi(),
        discovery::Api::openapi(),
    ] {
        document.merge(part);
    }
    // After the merge: the modules' operations are the ones with bodies.
    BodyLimits.modify(&mut document);
    ApiKeyRateLimit.modify(&mut document);
    document
}

/// Built on first use and kept: the document is the same for the life of
/// the process.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    // Plain data with string keys always serializes, and the tests build
    // it, so a failure here cannot reach a running server.
    let mut json = document()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    json.push('\n');
    json
});

/// Each documented path as segments (`None` for a `{parameter}`) with its
/// methods as an `Allow` header value.
static PATH_METHODS: LazyLock<Vec<(Vec<Option<String>>, String)>> = LazyLock::new(|| {
    document()
        .paths
        .paths
        .iter()
        .map(|(path, item)| {
            let segments = path
                .split('/')
                .map(|segment| (!segment.starts_with('{')).then(|| segment.to_owned()))
                .collect();
            let methods = [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("PATCH", item.patch.is_some()),
                ("DELETE", item.delete.is_some()),
            ];
            let allow: Vec<&str> = methods
                .iter()
                .filter(|(_, present)| *present)
                .map(|(method, _)| *method)
                .collect();
            (segments, allow.join(", "))
        })
        .collect()
});

/// The `Allow` value for a request path that names a documented route, or
/// `None` when no route has that path. Consulted only for requests that
/// matched no route, so the linear scan costs nothing on the hot path.
pub(crate) fn allowed_methods(path: &str) -> Option<String> {
    let requested: Vec<&str> = path.split('/').collect();
    // A path may match several templates (`/profiles/me` and
    // `/profiles/{agent_id}`): every method any of them takes is allowed.
    let mut allowed: Vec<&str> = Vec::new();
    for (segments, allow) in PATH_METHODS.iter() {
        let matches = segments.len() == requested.len()
            && segments
                .iter()
                .zip(&requested)
                .all(|(segment, part)| match segment {
                    Some(fixed) => fixed == part,
                    None => !part.is_empty(),
                });
        if matches {
            for method in allow.split(", ") {
                if !allowed.contains(&method) {
                    allowed.push(method);
                }
            }
        }
    }
    (!allowed.is_empty()).then(|| allowed.join(", "))
}

/// The OpenAPI document as pretty JSON ending in a newline, exactly as
/// `GET /openapi.json` serves it and `docs/openapi.json` holds it.
pub fn openapi_json() -> String {
    DOCUMENT.clone()
}

/// This OpenAPI 3.1 document.
#[utoipa::path(
    get,
    operation_id = "openapi",
    path = "/openapi.json",
    tag = "service",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document.", content_type = "application/json", body = Object),
    ),
)]
pub(crate) async fn openapi_document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.as_str())
}
