//! The MCP tools: each one is an HTTP route's handler, called with the
//! caller the transport already judged and the tool's arguments as the
//! route's body, so a tool answers exactly what its route answers.
//!
//! A tool's input schema is its route's request body schema from the
//! OpenAPI document (with its `$ref`s inlined), plus its path parameters:
//! one wire type describes both, so they cannot drift apart.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::deferred::Deferred;
use crate::error::ApiError;
use crate::guard::{AgentPrincipal, ApiKeyPrincipal, Principal, RequestTime, presents_tenant_key};
use crate::state::AppState;
use crate::{agent_self, bootstrap, delegation, spend};

/// What a tool runs with.
pub(super) struct Call {
    pub request: HttpRequest,
    pub state: web::Data<AppState>,
    /// The transport's judgement of the request's credential.
    pub caller: Result<Principal, ApiError>,
    pub now: RequestTime,
    pub arguments: Map<String, Value>,
}

impl Call {
    /// The caller as an agent route sees it. The transport judged an
    /// agent's credential already (and counted it against the rate
    /// limit): its admission or its refusal stands. Only a tenant key,
    /// judged as one, is judged again by the route's own extractor, so the
    /// refusal reads as the route's would (and nothing is counted twice).
    async fn agent(&self) -> Result<AgentPrincipal, ApiError> {
        match &self.caller {
            Ok(Principal::Agent(agent)) => Ok(agent.clone()),
            Err(refused) if !presents_tenant_key(&self.request) => Err(refused.clone()),
            _ => AgentPrincipal::from_request(&self.request, &mut Payload::None).await,
        }
    }

    /// The caller as a tenant-key route sees it; the mirror of
    /// [`Call::agent`].
    async fn api_key(&self) -> Result<ApiKeyPrincipal, ApiError> {
        match &self.caller {
            Ok(Principal::ApiKey(key)) => Ok(key.clone()),
            Err(refused) if presents_tenant_key(&self.request) => Err(refused.clone()),
            _ => ApiKeyPrincipal::from_request(&self.request, &mut Payload::None).await,
        }
    }

    fn principal(&self) -> Result<Principal, ApiError> {
        self.caller.clone()
    }

    /// A path parameter, taken out of the arguments.
    fn path_parameter(&mut self, name: &str) -> Result<String, ApiError> {
        match self.arguments.remove(name) {
            Some(Value::String(value)) if !value.is_empty() => Ok(value),
            _ => Err(ApiError::bad_request(
                "invalid_request",
                format!("the argument {name} (a string) is required"),
            )),
        }
    }

    /// The rest of the arguments as the route's JSON body.
    fn body<T: DeserializeOwned>(&mut self) -> Result<Deferred<web::Json<T>>, ApiError> {
        let arguments = Value::Object(std::mem::take(&mut self.arguments));
        serde_json::from_value(arguments)
            .map(|body| Deferred::ready(web::Json(body)))
            .map_err(|error| {
                ApiError::bad_request("invalid_json", format!("Json deserialize error: {error}"))
            })
    }

    /// Arguments to a tool that takes none.
    fn no_arguments(&self) -> Result<(), ApiError> {
        match self.arguments.keys().next() {
            None => Ok(()),
            Some(name) => Err(ApiError::bad_request(
                "invalid_request",
                format!("unknown argument {name}: this tool takes none"),
            )),
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<HttpResponse, ApiError>>>>;

/// One tool: its MCP description and the route it runs.
pub(crate) struct Tool {
    pub(crate) name: &'static str,
    title: &'static str,
    /// The route's `operationId` in the OpenAPI document.
    pub(crate) operation: &'static str,
    read_only: bool,
    destructive: bool,
    idempotent: bool,
    run: fn(Call) -> Answer,
}

/// Every tool, in the order `tools/list` names them: the seed's four first.
pub(crate) static TOOLS: &[Tool] = &[
    Tool {
        name: "br_bootstrap_agent",
        title: "Bootstrap an agent",
        operation: "agent_bootstrap",
        read_only: false,
        destructive: false,
        idempotent: true,
        run: |mut call| {
            Box::pin(async move {
                let caller = call.api_key().await?;
                let body = call.body()?;
                bootstrap::bootstrap(call.now, call.state, caller, body).await
            })
        },
    },
    Tool {
        name: "br_agent_status",
        title: "The calling agent's status",
        operation: "agent_status",
        read_only: true,
        destructive: false,
        idempotent: true,
        run: |call| {
            Box::pin(async move {
                let caller = call.agent().await?;
                call.no_arguments()?;
                agent_self::status(call.now, call.state, caller).await
            })
        },
    },
    Tool {
        name: "br_agent_limits",
        title: "The calling agent's limits",
        operation: "agent_limits_me",
        read_only: true,
        destructive: false,
        idempotent: true,
        run: |call| {
            Box::pin(async move {
                let caller = call.agent().await?;
                call.no_arguments()?;
                agent_self::limits_me(call.now, call.state, caller).await
            })
        },
    },
    Tool {
        name: "br_agent_anomaly",
        title: "The calling agent's recent anomalies",
        operation: "agent_anomaly_me",
        read_only: true,
        destructive: false,
        idempotent: true,
        run: |call| {
            Box::pin(async move {
                let caller = call.agent().await?;
                call.no_arguments()?;
                agent_self::anomaly_me(call.state, caller).await
            })
        },
    },
    Tool {
        name: "br_spend",
        title: "Record a spend",
        operation: "spend",
        read_only: false,
        destructive: false,
        idempotent: false,
        run: |mut call| {
            Box::pin(async move {
                let caller = call.principal()?;
                let body = call.body()?;
                spend::spend(call.now, call.state, caller, body).await
            })
        },
    },
    Tool {
        name: "br_hold",
        title: "Hold budget for a call whose cost is not known yet",
        operation: "create_hold",
        read_only: false,
        destructive: false,
        idempotent: false,
        run: |mut call| {
            Box::pin(async move {
                let caller = call.principal()?;
                let body = call.body()?;
                spend::hold(call.now, call.state, caller, body).await
            })
        },
    },
    Tool {
        name: "br_capture",
        title: "Capture a hold",
        operation: "capture_hold",
        read_only: false,
        destructive: false,
        idempotent: false,
        run: |mut call| {
            Box::pin(async move {
                let caller = call.principal()?;
                let hold = call.path_parameter("hold_id")?;
                let body = call.body()?;
                spend::capture_hold(call.now, call.state, caller, hold, body).await
            })
        },
    },
    Tool {
        name: "br_release",
        title: "Release a hold unused",
        operation: "release_hold",
        read_only: false,
        destructive: false,
        idempotent: false,
        run: |mut call| {
            Box::pin(async move {
                let caller = call.principal()?;
                let hold = call.path_parameter("hold_id")?;
                call.no_arguments()?;
                spend::release_hold(call.now, call.state, caller, hold).await
            })
        },
    },
    Tool {
        name: "br_delegate",
        title: "Create a sub-agent with a slice of the budget",
        operation: "delegate",
        read_only: false,
        destructive: false,
        idempotent: false,
        run: |mut call| {
            Box::pin(async move {
                let caller = call.agent().await?;
                let body = call.body()?;
                delegation::delegate(call.now, call.state, caller, body).await
            })
        },
    },
    Tool {
        name: "br_list_sub_agents",
        title: "List the calling agent's sub-agents",
        operation: "list_sub_agents",
        read_only: true,
        destructive: false,
        idempotent: true,
        run: |call| {
            Box::pin(async move {
                let caller = call.agent().await?;
                call.no_arguments()?;
                delegation::list(call.state, caller).await
            })
        },
    },
    Tool {
        name: "br_terminate_sub_agent",
        title: "Terminate a sub-agent and take back its budget",
        operation: "reclaim_sub_agent",
        read_only: false,
        destructive: true,
        idempotent: true,
        run: |mut call| {
            Box::pin(async move {
                let caller = call.agent().await?;
                let child = call.path_parameter("child_agent_id")?;
                call.no_arguments()?;
                delegation::reclaim_child(call.now, call.state, caller, child).await
            })
        },
    },
];

pub(super) fn find(name: &str) -> Option<&'static Tool> {
    TOOLS.iter().find(|tool| tool.name == name)
}

impl Tool {
    /// Runs the tool and turns the route's answer into a tool result.
    pub(super) async fn call(&self, call: Call) -> Value {
        match (self.run)(call).await {
            Ok(response) => from_response(response).await,
            Err(error) => refusal(&error),
        }
    }
}

/// A route's answer as a tool result: its JSON body, as text and as
/// structured content; an error status is a refusal.
async fn from_response(response: HttpResponse) -> Value {
    let status = response.status();
    let body = actix_web::body::to_bytes(response.into_body())
        .await
        .unwrap_or_default();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !status.is_success() {
        let code = json["code"].as_str().unwrap_or("error");
        let detail = json["detail"].as_str().unwrap_or_default();
        return tool_result(format!("{} {code}: {detail}", status.as_u16()), json, true);
    }
    tool_result(String::from_utf8_lossy(&body).into_owned(), json, false)
}

/// A refusal as a tool result: the problem's status, code and detail.
pub(super) fn refusal(error: &ApiError) -> Value {
    let mut problem = error.problem_json();
    if let Some(seconds) = error.retry_after_seconds {
        problem["retry_after"] = json!(seconds);
    }
    tool_result(error.to_string(), problem, true)
}

fn tool_result(text: String, structured: Value, is_error: bool) -> Value {
    let mut result = json!({
        "content": [{ "type": "text", "text": text }],
        "isError": is_error,
    });
    if structured.is_object() {
        result["structuredContent"] = structured;
    }
    result
}

/// The `tools/list` entries, built once from the OpenAPI document.
pub(super) static LISTING: LazyLock<Vec<Value>> = LazyLock::new(|| {
    let document: Value =
        serde_json::from_str(&crate::openapi::openapi_json()).unwrap_or(Value::Null);
    TOOLS.iter().map(|tool| tool.describe(&document)).collect()
});

impl Tool {
    fn describe(&self, document: &Value) -> Value {
        let operation = operation(document, self.operation).unwrap_or(&Value::Null);
        let mut description = operation["summary"].as_str().unwrap_or_default().to_owned();
        if let Some(more) = operation["description"].as_str() {
            description.push_str("\n\n");
            description.push_str(more);
        }
        json!({
            "name": self.name,
            "title": self.title,
            "description": description.trim(),
            "inputSchema": input_schema(document, operation),
            "annotations": {
                "title": self.title,
                "readOnlyHint": self.read_only,
                "destructiveHint": self.destructive,
                "idempotentHint": self.idempotent,
                "openWorldHint": false,
            },
        })
    }
}

/// The operation with `id` in the OpenAPI document.
fn operation<'a>(document: &'a Value, id: &str) -> Option<&'a Value> {
    document["paths"]
        .as_object()?
        .values()
        .filter_map(Value::as_object)
        .flat_map(|item| item.values())
        .find(|operation| operation["operationId"] == id)
}

/// The request body's schema with the path parameters added as required
/// string properties; `{"type": "object"}` with no properties for a route
/// that takes neither.
fn input_schema(document: &Value, operation: &Value) -> Value {
    let body = &operation["requestBody"]["content"]["application/json"]["schema"];
    let mut schema = if body.is_null() {
        json!({ "type": "object", "properties": {}, "additionalProperties": false })
    } else {
        inline(document, body, 0)
    };
    let parameters = operation["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for parameter in parameters.iter().filter(|p| p["in"] == "path") {
        let Some(name) = parameter["name"].as_str() else {
            continue;
        };
        let mut property = inline(document, &parameter["schema"], 0);
        if let Some(description) = parameter["description"].as_str() {
            property["description"] = json!(description);
        }
        schema["properties"][name] = property;
        match schema["required"].as_array_mut() {
            Some(required) => required.insert(0, json!(name)),
            None => schema["required"] = json!([name]),
        }
    }
    schema["type"] = json!("object");
    schema
}

/// Deep enough for every wire type; a cycle stops here instead of
/// recursing for ever.
const MAX_SCHEMA_DEPTH: usize = 16;

/// `schema` with every `$ref` to `#/components/schemas/...` replaced by
/// its target, so a client needs nothing but the tool's own schema.
fn inline(document: &Value, schema: &Value, depth: usize) -> Value {
    if depth > MAX_SCHEMA_DEPTH {
        return json!({});
    }
    match schema {
        Value::Object(fields) => {
            if let Some(target) = fields.get("$ref").and_then(Value::as_str) {
                let name = target.trim_start_matches("#/components/schemas/");
                let resolved = &document["components"]["schemas"][name];
                let mut inlined = inline(document, resolved, depth + 1);
                // Siblings of a `$ref` (a description) apply on top.
                for (key, value) in fields.iter().filter(|(key, _)| *key != "$ref") {
                    inlined[key] = inline(document, value, depth + 1);
                }
                return inlined;
            }
            Value::Object(
                fields
                    .iter()
                    .map(|(key, value)| (key.clone(), inline(document, value, depth + 1)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| inline(document, item, depth + 1))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Value {
        serde_json::from_str(&crate::openapi::openapi_json()).unwrap()
    }

    #[test]
    fn every_tool_names_a_documented_operation() {
        let document = document();
        for tool in TOOLS {
            assert!(
                operation(&document, tool.operation).is_some(),
                "{} names {}, which the OpenAPI document lacks",
                tool.name,
                tool.operation
            );
        }
    }

    #[test]
    fn schemas_are_self_contained_objects() {
        for listed in LISTING.iter() {
            let schema = &listed["inputSchema"];
            assert_eq!(schema["type"], "object", "{listed}");
            assert!(
                !schema.to_string().contains("$ref"),
                "{} keeps a $ref: {schema}",
                listed["name"]
            );
        }
    }

    #[test]
    fn a_tool_schema_is_its_route_body_plus_its_path() {
        let capture = LISTING
            .iter()
            .find(|tool| tool["name"] == "br_capture")
            .unwrap();
        let schema = &capture["inputSchema"];
        assert_eq!(schema["required"][0], "hold_id");
        assert!(schema["properties"]["amount_usd"].is_object(), "{schema}");
        let spend = LISTING
            .iter()
            .find(|tool| tool["name"] == "br_spend")
            .unwrap();
        let required = spend["inputSchema"]["required"].as_array().unwrap();
        assert!(required.contains(&json!("amount_usd")), "{spend}");
        let status = LISTING
            .iter()
            .find(|tool| tool["name"] == "br_agent_status")
            .unwrap();
        assert_eq!(status["inputSchema"]["properties"], json!({}));
        assert_eq!(status["annotations"]["readOnlyHint"], true);
    }

    #[test]
    fn a_refusal_keeps_the_problem() {
        let error = ApiError::too_many_requests("slow down", 7);
        let result = refusal(&error);
        assert_eq!(result["isError"], true);
        assert_eq!(result["structuredContent"]["code"], "rate_limited");
        assert_eq!(result["structuredContent"]["status"], 429);
        assert_eq!(result["structuredContent"]["retry_after"], 7);
        assert_eq!(result["content"][0]["text"], "429 rate_limited: slow down");
    }

    #[test]
    fn inlining_stops_at_a_cycle() {
        let document = json!({ "components": { "schemas": {
            "Loop": { "type": "object", "properties": { "next": { "$ref": "#/components/schemas/Loop" } } }
        } } });
        let inlined = inline(
            &document,
            &json!({ "$ref": "#/components/schemas/Loop" }),
            0,
        );
        assert_eq!(inlined["type"], "object");
    }
}
