//! JSON-RPC framing of the MCP transport: its errors (with the HTTP status
//! each is answered with) and the 2026-07-28 envelope's agreement with the
//! request's headers.

use actix_web::HttpRequest;
use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde_json::{Value, json};

// JSON-RPC 2.0 error codes.
pub(super) const PARSE_ERROR: i64 = -32700;
pub(super) const INVALID_REQUEST: i64 = -32600;
pub(super) const METHOD_NOT_FOUND: i64 = -32601;
pub(super) const INVALID_PARAMS: i64 = -32602;
// MCP's own: a header that disagrees with the envelope, and a revision
// this server does not speak.
pub(super) const HEADER_MISMATCH: i64 = -32020;
pub(super) const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// The envelope keys every modern request carries in `params._meta`.
const ENVELOPE_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const ENVELOPE_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// A modern request names its revision, method and tool twice, in the
/// envelope and in headers (so that proxies can route on headers alone);
/// the two must agree.
pub(super) fn check_envelope(
    request: &HttpRequest,
    method: &str,
    params: &Value,
) -> Result<(), RpcError> {
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
        Some(encoded) => {
            let engine = base64::engine::general_purpose::STANDARD;
            let bytes = engine.decode(encoded).ok()?;
            // Only the canonical form (what an encoder writes): two
            // spellings of one name would read differently to a proxy.
            if engine.encode(&bytes) != encoded {
                return None;
            }
            String::from_utf8(bytes).ok()
        }
        None => Some(value.to_owned()),
    }
}

pub(super) fn header<'a>(request: &'a HttpRequest, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

/// A JSON-RPC error, with the HTTP status the transport answers it with.
#[derive(Debug)]
pub(super) struct RpcError {
    status: StatusCode,
    code: i64,
    message: String,
    data: Option<Value>,
}

impl RpcError {
    pub(super) fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Refused by the transport: 400.
    pub(super) fn bad(code: i64, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// An error answer to a well-formed exchange: 200.
    pub(super) fn ok(code: i64, message: impl Into<String>) -> Self {
        Self::new(StatusCode::OK, code, message)
    }

    /// The HTTP status of this error in `era`: the 2026-07-28 transport
    /// maps each code to one status, wherever the error arose (a
    /// malformed message 400, an unknown method 404); the handshake era
    /// answers a well-formed exchange's error with 200.
    pub(super) fn in_era(self, era: super::Era) -> Self {
        let status = match (era, self.code) {
            (super::Era::Handshake, _) => self.status,
            (
                super::Era::Modern,
                PARSE_ERROR
                | INVALID_REQUEST
                | INVALID_PARAMS
                | HEADER_MISMATCH
                | UNSUPPORTED_PROTOCOL_VERSION,
            ) => StatusCode::BAD_REQUEST,
            (super::Era::Modern, METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
            (super::Era::Modern, _) => StatusCode::OK,
        };
        Self { status, ..self }
    }

    pub(super) fn with_data(self, data: Value) -> Self {
        Self {
            data: Some(data),
            ..self
        }
    }
}

/// The JSON-RPC response to request `id`.
pub(super) fn respond(id: Value, outcome: Result<Value, RpcError>) -> HttpResponse {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_header_may_be_base64() {
        assert_eq!(decode_name("br_spend").as_deref(), Some("br_spend"));
        assert_eq!(
            decode_name("=?base64?YnJfc3BlbmQ=?=").as_deref(),
            Some("br_spend")
        );
        assert_eq!(decode_name("=?base64?%%%?="), None);
        // Non-zero trailing bits: decodes to the same name, not canonical.
        assert_eq!(decode_name("=?base64?YnJfc3BlbmR=?="), None);
    }
}
