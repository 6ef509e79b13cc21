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

mod tools;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

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
/// first.
const HANDSHAKE_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];

/// Every protocol revision this server speaks, newest first.
pub(crate) const PROTOCOL_VERSIONS: &[&str] =
    &["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"];

/// Largest JSON-RPC message accepted; tool arguments are route bodies.
const MESSAGE_LIMIT: usize = crate::JSON_LIMIT;

// JSON-RPC 2.0 error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
// MCP's own: a header that disagrees with the envelope, and a revision
// this server does not speak.
const HEADER_MISMATCH: i64 = -32020;
const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

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
    let id = fields.get("id").cloned().unwrap_or(Value::Null);
    if fields.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return respond(
            id,
            Err(RpcError::bad(INVALID_REQUEST, "jsonrpc must be \"2.0\"")),
        );
    }
    let era = match era(&request) {
        Ok(era) => era,
        Err(error) => return respond(id, Err(error)),
    };
    let Some(method) = fields.get("method").and_then(Value::as_str) else {
        // A response to a request we never sent, or an error for one:
        // nothing to do, as for any notification.
        return HttpResponse::Accepted().finish();
    };
    if !fields.contains_key("id") {
        return HttpResponse::Accepted().finish();
    }
    if !matches!(id, Value::String(_) | Value::Number(_)) {
        return respond(
            Value::Null,
            Err(RpcError::bad(
                INVALID_REQUEST,
                "id must be a string or a number",
            )),
        );
    }
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
    respond(id, outcome)
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
            match tools::find(name) {
                Some(tool) => dispatch.run(tool, arguments).await,
                // This era reports an unknown tool as the tool's failure.
                None => tools::refusal(&ApiError::not_found(&format!("tool {name}"))),
            }
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

/// The envelope keys every modern request carries in `params._meta`.
const ENVELOPE_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const ENVELOPE_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// A modern request names its revision, method and tool twice, in the
/// envelope and in headers (so that proxies can route on headers alone);
/// the two must agree.
fn check_envelope(request: &HttpRequest, method: &str, params: &Value) -> Result<(), RpcError> {
    let meta = params
        .get("_meta")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            RpcError::bad(
                INVALID_PARAMS,
                format!(
                    "params._meta must be an object carrying {ENVELOPE_VERSION} and \
                     {ENVELOPE_CAPABILITIES}"
                ),
            )
        })?;
    let missing: Vec<&str> = [ENVELOPE_VERSION, ENVELOPE_CAPABILITIES]
        .into_iter()
        .filter(|key| !meta.contains_key(*key))
        .collect();
    if !missing.is_empty() {
        return Err(RpcError::bad(
            INVALID_PARAMS,
            format!("params._meta lacks {}", missing.join(" and ")),
        ));
    }
    let mismatch = |what: &str| {
        RpcError::bad(
            HEADER_MISMATCH,
            format!("the {what} header does not match the request"),
        )
    };
    if meta[ENVELOPE_VERSION].as_str() != header(request, "mcp-protocol-version") {
        return Err(mismatch("MCP-Protocol-Version"));
    }
    if header(request, "mcp-method") != Some(method) {
        return Err(mismatch("Mcp-Method"));
    }
    if method == "tools/call" {
        let named = header(request, "mcp-name").and_then(decode_name);
        if named.as_deref() != params["name"].as_str() {
            return Err(mismatch("Mcp-Name"));
        }
    }
    Ok(())
}

/// An `Mcp-Name` value: as sent, or `=?base64?...?=` for a name that is
/// not plain printable ASCII.
fn decode_name(value: &str) -> Option<String> {
    use base64::Engine;
    match value
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(value.to_owned()),
    }
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

/// A JSON-RPC error, with the HTTP status the transport answers it with.
#[derive(Debug)]
struct RpcError {
    status: StatusCode,
    code: i64,
    message: String,
    data: Option<Value>,
}

impl RpcError {
    fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Refused by the transport: 400.
    fn bad(code: i64, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// An error answer to a well-formed exchange: 200.
    fn ok(code: i64, message: impl Into<String>) -> Self {
        Self::new(StatusCode::OK, code, message)
    }

    fn with_data(self, data: Value) -> Self {
        Self {
            data: Some(data),
            ..self
        }
    }
}

/// The JSON-RPC response to request `id`.
fn respond(id: Value, outcome: Result<Value, RpcError>) -> HttpResponse {
    let (status, body) = match outcome {
        Ok(result) => (
            StatusCode::OK,
            json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        ),
        Err(error) => {
            let mut body = json!({ "code": error.code, "message": error.message });
            if let Some(data) = error.data {
                body["data"] = data;
            }
            (
                error.status,
                json!({ "jsonrpc": "2.0", "id": id, "error": body }),
            )
        }
    };
    HttpResponse::build(status)
        .content_type("application/json")
        .json(body)
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

/// The 401 of a missing or bad credential, with the challenge RFC 6750
/// asks for (and MCP clients look for).
fn unauthorized(error: &ApiError) -> HttpResponse {
    let mut response = error.error_response();
    let challenge = if error.code == "missing_credentials" {
        "Bearer realm=\"agentry\"".to_owned()
    } else {
        format!(
            "Bearer realm=\"agentry\", error=\"invalid_token\", error_description=\"{}\"",
            error.code
        )
    };
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Browsers send `Origin`; a page of another origin must not drive an
/// agent's tools with credentials it found (DNS rebinding). Clients that
/// are not browsers send none.
fn check_origin(request: &HttpRequest, public_url: &str) -> Result<(), ApiError> {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let authority = |url: &str| {
        url.split_once("://").map(|(_, rest)| {
            rest.split('/')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase()
        })
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .map(str::to_ascii_lowercase);
    let from = authority(origin);
    if from.is_some() && (from == host || from == authority(public_url)) {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "origin_not_allowed",
        "this origin may not call the MCP endpoint",
    ))
}

fn check_accept(request: &HttpRequest) -> Result<(), ApiError> {
    let Some(accept) = request.headers().get(header::ACCEPT) else {
        return Ok(());
    };
    let accept = accept.to_str().unwrap_or_default().to_ascii_lowercase();
    let takes_json = accept.split(',').any(|range| {
        let range = range.split(';').next().unwrap_or_default().trim();
        matches!(range, "application/json" | "application/*" | "*/*")
    });
    if takes_json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "this server answers application/json; accept it",
        ))
    }
}

fn check_content_type(request: &HttpRequest) -> Result<(), ApiError> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the message as 'content-type: application/json'",
        ))
    }
}

/// The body, refused once it passes `limit` bytes.
async fn read_limited(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|error| ApiError::bad_request("invalid_body", error.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("a message may be at most {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

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

    #[test]
    fn a_name_header_may_be_base64() {
        assert_eq!(decode_name("br_spend").as_deref(), Some("br_spend"));
        assert_eq!(
            decode_name("=?base64?YnJfc3BlbmQ=?=").as_deref(),
            Some("br_spend")
        );
        assert_eq!(decode_name("=?base64?%%%?="), None);
    }
}
