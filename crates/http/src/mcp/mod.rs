//! Seed 000's MCP tools, served at `POST /mcp` over the Streamable HTTP
//! transport of the Model Context Protocol.
//!
//! Stateless by design: every POST carries one JSON-RPC message and its
//! credential, and is answered with one `application/json` body (never a
//! stream). No session lives in a replica's memory, so any replica answers
//! any request, as with the HTTP routes. `GET /mcp` (a server-to-client
//! stream) is answered 405, which the transport allows.
//!
//! The credential is judged before the message is even read: a missing or
//! bad one is a 401 with `WWW-Authenticate`, so no tool runs and nothing is
//! parsed for a stranger. Everything a tool refuses (400, 402, 403, 409,
//! 429) is a tool result with `isError`, never a protocol error.

mod http;
mod rpc;
mod tools;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use self::http::{check_accept, check_content_type, check_origin, read_limited, unauthorized};
use self::rpc::{
    HEADER_MISMATCH, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, RpcError,
    UNSUPPORTED_PROTOCOL_VERSION, check_envelope, header, respond,
};
use crate::error::{ApiError, Problem};
use crate::guard::{Principal, RequestTime};
use crate::state::AppState;

pub(crate) use tools::TOOLS;

#[derive(OpenApi)]
#[openapi(paths(post))]
pub(crate) struct Api;

pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config.route("/mcp", web::post().to(post));
}

/// Protocol revisions of the stateless per-request envelope
/// (`server/discover`), newest first.
const MODERN_VERSIONS: &[&str] = &["2026-07-28"];

/// Protocol revisions answered through the `initialize` handshake, newest
/// first. 2025-03-26 is not among them: it allowed batches, and a batch of
/// tool calls would pass the rate limit as one request.
const HANDSHAKE_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18"];

/// Every protocol revision this server speaks, newest first.
pub(crate) const PROTOCOL_VERSIONS: &[&str] = &["2026-07-28", "2025-11-25", "2025-06-18"];

/// Largest JSON-RPC message accepted; tool arguments are route bodies.
const MESSAGE_LIMIT: usize = crate::JSON_LIMIT;

/// One JSON-RPC message to the MCP server (Streamable HTTP).
///
/// The body is one JSON-RPC 2.0 message: `initialize`, `ping`,
/// `tools/list` and `tools/call` are answered with a JSON-RPC response in an
/// `application/json` body; a notification or a response is acknowledged
/// with 202 and no body. The credential is that of the tool's HTTP route
/// (a provisioner or admin API key for `br_bootstrap_agent`; an agent's
/// token, its API key or, on the mTLS listener, its certificate for the
/// others), sent on every request. docs/agents.md shows a client's
/// configuration.
#[utoipa::path(
    post,
    operation_id = "mcp",
    path = "/mcp",
    tag = "mcp",
    security(("agent_jwt" = []), ("api_key" = []), ("mtls" = [])),
    request_body(content = Object, content_type = "application/json",
        description = "One JSON-RPC 2.0 message."),
    responses(
        (status = 200, description = "The JSON-RPC response to a request (a tool's refusal is a result \
            with `isError: true` and the problem as `structuredContent`).",
            content_type = "application/json", body = Object),
        (status = 202, description = "A notification or a response was received."),
        (status = 400, description = "Not one JSON-RPC message (`-32700`, `-32600`), an unsupported \
            `MCP-Protocol-Version` (`-32022`, with the revisions this server speaks), or a 2026-07-28 \
            request whose envelope is missing (`-32602`) or disagrees with its headers (`-32020`): \
            a JSON-RPC error response.",
            content_type = "application/json", body = Object),
        (status = 404, description = "A method the 2026-07-28 revision does not have (`initialize` \
            among them): a JSON-RPC error `-32601`.", content_type = "application/json", body = Object),
        (status = 401, description = "`missing_credentials`, `invalid_token`, `invalid_api_key`, \
            `invalid_client_certificate`: nothing was read or run.",
            body = Problem, content_type = "application/problem+json",
            headers(("www-authenticate" = String, description = "`Bearer realm=\"agentry\"`"))),
        (status = 403, description = "`origin_not_allowed`: a browser page of another origin.",
            body = Problem, content_type = "application/problem+json"),
        (status = 406, description = "`not_acceptable`: the client accepts no `application/json`.",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`payload_too_large`: past 64 KiB.",
            body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: not `application/json`.",
            body = Problem, content_type = "application/problem+json"),
    ),
)]
async fn post(
    request: HttpRequest,
    now: RequestTime,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    if let Err(refused) = check_origin(&request, &state.settings.public_url) {
        return refused.error_response();
    }
    let caller = Principal::from_request(&request, &mut Payload::None).await;
    if let Err(error) = &caller
        && error.status == StatusCode::UNAUTHORIZED
    {
        return unauthorized(error);
    }
    if let Err(refused) = check_accept(&request).and_then(|()| check_content_type(&request)) {
        return refused.error_response();
    }
    let body = match read_limited(payload, MESSAGE_LIMIT).await {
        Ok(body) => body,
        Err(refused) => return refused.error_response(),
    };
    let message: Value = match serde_json::from_slice(&body) {
        Ok(message) => message,
        Err(error) => {
            return respond(
                Value::Null,
                Err(RpcError::bad(PARSE_ERROR, format!("not JSON: {error}"))),
            );
        }
    };
    let Some(fields) = message.as_object() else {
        let what = if message.is_array() {
            "batches are not accepted; send one message per request"
        } else {
            "a JSON-RPC message is an object"
        };
        return respond(Value::Null, Err(RpcError::bad(INVALID_REQUEST, what)));
    };
    // Before the era is read from the first copy of its header: a proxy
    // reading another copy would route the request differently.
    let era = match check_routing_headers(&request).and_then(|()| era(&request)) {
        Ok(era) => era,
        Err(error) => {
            return respond(fields.get("id").cloned().unwrap_or(Value::Null), Err(error));
        }
    };
    let id = match classify(fields, era) {
        Message::Request(id) => id,
        Message::Acknowledged => return HttpResponse::Accepted().finish(),
        Message::Invalid(id, why) => {
            return respond(id, Err(RpcError::bad(INVALID_REQUEST, why).in_era(era)));
        }
    };
    let method = fields["method"].as_str().unwrap_or_default();
    let params = fields.get("params").cloned().unwrap_or(Value::Null);
    let outcome = match era {
        Era::Handshake => {
            handshake(
                method,
                &params,
                Dispatch {
                    request: &request,
                    state,
                    now,
                    caller,
                },
            )
            .await
        }
        Era::Modern => match check_envelope(&request, method, &params) {
            Ok(()) => {
                modern(
                    method,
                    &params,
                    Dispatch {
                        request: &request,
                        state,
                        now,
                        caller,
                    },
                )
                .await
            }
            Err(error) => Err(error),
        },
    };
    respond(id, outcome.map_err(|error| error.in_era(era)))
}

/// What a posted JSON-RPC object is, for the transport.
enum Message {
    /// A request, to be answered; its id.
    Request(Value),
    /// A notification, or (in the handshake era) a response to a request
    /// of ours: 202, nothing to do.
    Acknowledged,
    /// Not a message this transport takes: -32600, to this id.
    Invalid(Value, &'static str),
}

fn classify(fields: &Map<String, Value>, era: Era) -> Message {
    let id = fields.get("id").cloned().unwrap_or(Value::Null);
    if fields.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Message::Invalid(id, "jsonrpc must be \"2.0\"");
    }
    let Some(method) = fields.get("method") else {
        let is_response = fields.contains_key("id")
            && (fields.contains_key("result") || fields.contains_key("error"));
        return match (is_response, era) {
            // The handshake era lets a client post a response (to a server
            // request we never send): nothing to do.
            (true, Era::Handshake) => Message::Acknowledged,
            // 2026-07-28 clients must not post responses.
            (true, Era::Modern) => Message::Invalid(
                Value::Null,
                "a client posts requests and notifications, not responses",
            ),
            (false, _) => Message::Invalid(
                Value::Null,
                "a JSON-RPC request carries a method; a response, a result or an error",
            ),
        };
    };
    if !method.is_string() {
        return Message::Invalid(id, "method must be a string");
    }
    if !fields.contains_key("id") {
        return Message::Acknowledged;
    }
    if !matches!(id, Value::String(_) | Value::Number(_)) {
        return Message::Invalid(Value::Null, "id must be a string or a number");
    }
    Message::Request(id)
}

/// The routing headers of a 2026-07-28 request, each at most once: a proxy
/// reading the first copy and this server the last would disagree.
fn check_routing_headers(request: &HttpRequest) -> Result<(), RpcError> {
    for name in ["mcp-protocol-version", "mcp-method", "mcp-name"] {
        if request.headers().get_all(name).nth(1).is_some() {
            return Err(RpcError::bad(
                HEADER_MISMATCH,
                format!("the {name} header appears more than once"),
            ));
        }
    }
    Ok(())
}

/// The protocol era a request speaks, by its `MCP-Protocol-Version`: none
/// or a handshake revision is the `initialize` era (the SDKs send
/// `initialize` without the header); a per-request-envelope revision is the
/// modern one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Era {
    Handshake,
    Modern,
}

fn era(request: &HttpRequest) -> Result<Era, RpcError> {
    let Some(version) = header(request, "mcp-protocol-version") else {
        return Ok(Era::Handshake);
    };
    if HANDSHAKE_VERSIONS.contains(&version) {
        Ok(Era::Handshake)
    } else if MODERN_VERSIONS.contains(&version) {
        Ok(Era::Modern)
    } else {
        Err(RpcError::bad(
            UNSUPPORTED_PROTOCOL_VERSION,
            format!("unsupported protocol version {version}"),
        )
        .with_data(json!({ "supported": PROTOCOL_VERSIONS, "requested": version })))
    }
}

/// What a method runs with.
struct Dispatch<'a> {
    request: &'a HttpRequest,
    state: web::Data<AppState>,
    now: RequestTime,
    caller: Result<Principal, ApiError>,
}

async fn handshake(
    method: &str,
    params: &Value,
    dispatch: Dispatch<'_>,
) -> Result<Value, RpcError> {
    match method {
        "initialize" => Ok(initialize(params)),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({ "tools": *tools::LISTING })),
        "tools/call" => {
            let (tool, arguments) = tool_call(params)?;
            let tool = tools::find(tool)
                .ok_or_else(|| RpcError::ok(INVALID_PARAMS, format!("Unknown tool: {tool}")))?;
            Ok(dispatch.run(tool, arguments).await)
        }
        other => Err(RpcError::ok(METHOD_NOT_FOUND, format!("no method {other}"))),
    }
}

/// The 2026-07-28 methods. Every result says it is complete; a listing
/// may not be cached across credentials (`cacheScope: private`).
async fn modern(method: &str, params: &Value, dispatch: Dispatch<'_>) -> Result<Value, RpcError> {
    let mut result = match method {
        "server/discover" => json!({
            "supportedVersions": MODERN_VERSIONS,
            "capabilities": { "tools": { "listChanged": false } },
            "instructions": INSTRUCTIONS,
            "ttlMs": 0,
            "cacheScope": "private",
            "_meta": { "io.modelcontextprotocol/serverInfo": server_info() },
        }),
        "ping" => json!({}),
        "tools/list" => json!({ "tools": *tools::LISTING, "ttlMs": 0, "cacheScope": "private" }),
        "tools/call" => {
            let (name, arguments) = tool_call(params)?;
            let tool = tools::find(name)
                .ok_or_else(|| RpcError::ok(INVALID_PARAMS, format!("Unknown tool: {name}")))?;
            dispatch.run(tool, arguments).await
        }
        other => {
            return Err(
                RpcError::new(StatusCode::NOT_FOUND, METHOD_NOT_FOUND, "Method not found")
                    .with_data(json!(other)),
            );
        }
    };
    result["resultType"] = json!("complete");
    Ok(result)
}

impl Dispatch<'_> {
    async fn run(self, tool: &'static tools::Tool, arguments: Map<String, Value>) -> Value {
        tool.call(tools::Call {
            request: self.request.clone(),
            state: self.state,
            caller: self.caller,
            now: self.now,
            arguments,
        })
        .await
    }
}

/// A `tools/call`'s tool name and arguments.
fn tool_call(params: &Value) -> Result<(&str, Map<String, Value>), RpcError> {
    let name = params["name"]
        .as_str()
        .ok_or_else(|| RpcError::ok(INVALID_PARAMS, "params.name (a string) is required"))?;
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(arguments)) => arguments.clone(),
        Some(_) => {
            return Err(RpcError::ok(
                INVALID_PARAMS,
                "params.arguments must be an object",
            ));
        }
    };
    Ok((name, arguments))
}

/// The `initialize` answer: the client's revision when we speak it, else
/// our newest (the client then decides whether it can go on).
fn initialize(params: &Value) -> Value {
    let asked = params["protocolVersion"].as_str().unwrap_or_default();
    let version = HANDSHAKE_VERSIONS
        .iter()
        .find(|version| **version == asked)
        .unwrap_or(&HANDSHAKE_VERSIONS[0]);
    json!({
        "protocolVersion": version,
        "capabilities": { "tools": { "listChanged": false } },
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    })
}

fn server_info() -> Value {
    json!({ "name": "agentry", "title": "Agentry", "version": env!("CARGO_PKG_VERSION") })
}

const INSTRUCTIONS: &str = "Agentry governs this agent: its identity, lifecycle and budget. \
    Call br_agent_status first; record every cost with br_spend (or br_hold, then br_capture \
    or br_release); a refusal says why in its code (insufficient_budget, agent_suspended, \
    rate_limited).";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_revision_is_of_one_era() {
        let both: Vec<&str> = MODERN_VERSIONS
            .iter()
            .chain(HANDSHAKE_VERSIONS)
            .copied()
            .collect();
        assert_eq!(PROTOCOL_VERSIONS, both.as_slice());
    }
}
