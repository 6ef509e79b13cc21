//! The OpenAPI document: the committed copy is current, it names every
//! route the app mounts and nothing else, and what it says about each route
//! agrees with what the real app answers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use actix_web::http::Method;
use actix_web::test::{TestRequest, call_service, read_body};
use serde_json::Value;

use crate::{app, send, state_for};

fn document() -> Value {
    serde_json::from_str(&agentry_http::openapi_json()).unwrap()
}

/// Every operation of the document: method (upper case), path, operation.
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations.push((method.to_uppercase(), path.clone(), operation.clone()));
        }
    }
    operations
}

#[test]
fn the_committed_document_is_current() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let committed = std::fs::read_to_string(&committed).unwrap_or_default();
    assert!(
        committed == agentry_http::openapi_json(),
        "docs/openapi.json is missing or out of date with the handlers' annotations: \
         run `cargo xtask openapi` and commit the result"
    );
}

#[test]
fn the_document_is_openapi_3_1_with_unique_operations() {
    let document = document();
    assert_eq!(document["openapi"], "3.1.0");
    let schemes = document["components"]["securitySchemes"]
        .as_object()
        .unwrap();
    for name in ["api_key", "agent_jwt", "session_jwt", "callback_jwt"] {
        assert_eq!(schemes[name]["scheme"], "bearer", "{name}");
    }
    assert_eq!(schemes["mtls"]["type"], "mutualTLS");
    let mut ids = BTreeSet::new();
    for (method, path, operation) in operations(&document) {
        let id = operation["operationId"].as_str().unwrap().to_owned();
        assert!(
            ids.insert(id.clone()),
            "{method} {path}: operationId {id} twice"
        );
        assert_eq!(
            operation["tags"].as_array().map(Vec::len),
            Some(1),
            "{method} {path}: one tag"
        );
        for requirement in operation["security"].as_array().into_iter().flatten() {
            for scheme in requirement.as_object().unwrap().keys() {
                assert!(schemes.contains_key(scheme), "{method} {path}: {scheme}");
            }
        }
        for (status, response) in operation["responses"].as_object().unwrap() {
            // The MCP transport answers a bad message with a JSON-RPC
            // error, as its specification says; its HTTP refusals are
            // problems like every other route's.
            let json_rpc = path == "/mcp"
                && response["content"]["application/json"].is_object()
                && status.as_str() != "401";
            if status.as_str() >= "400" && !json_rpc {
                assert_eq!(
                    response["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path} {status}"
                );
            }
        }
    }
}

/// The routes `configure` mounts, read from the source: actix cannot list
/// the routes of an app, and this keeps the check independent of the
/// document it checks.
fn mounted_routes() -> BTreeSet<(String, String)> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut routes = BTreeSet::new();
    for file in source_files(&source) {
        let text = std::fs::read_to_string(&file).unwrap();
        for other in [".service(", "web::resource(", "web::scope("] {
            assert!(
                !text.contains(other),
                "{}: routes mounted with {other} are not seen by this test; teach it",
                file.display()
            );
        }
        for (at, _) in text.match_indices(".route(") {
            let rest = text[at + ".route(".len()..].trim_start();
            let parsed = rest.strip_prefix('"').and_then(|rest| {
                let (path, rest) = rest.split_once('"')?;
                let rest = rest.trim_start().strip_prefix(',')?.trim_start();
                let (method, _) = rest.strip_prefix("web::")?.split_once("()")?;
                Some((method.to_uppercase(), path.to_owned()))
            });
            let route = parsed.unwrap_or_else(|| {
                panic!(
                    "{}: cannot read the route at {:?}",
                    file.display(),
                    &rest[..rest.len().min(60)]
                )
            });
            routes.insert(route);
        }
    }
    routes
}

/// Every `.rs` file under `dir`, in folders too: a family split into a
/// module folder must not hide its routes from the check.
fn source_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// Agent United's routes that are also served under `/v1`; the document
/// describes their `/api/v1` paths only (docs/api.md says so).
const AGENT_UNITED_ALIASES: [&str; 2] = ["/v1/agents", "/v1/channels"];

#[test]
fn every_mounted_route_is_documented_and_nothing_else() {
    let mut mounted = mounted_routes();
    assert!(mounted.len() > 20, "the source scan found only {mounted:?}");
    let aliases: Vec<(String, String)> = mounted
        .iter()
        .filter(|(_, path)| {
            AGENT_UNITED_ALIASES
                .iter()
                .any(|alias| path == alias || path.starts_with(&format!("{alias}/")))
        })
        .cloned()
        .collect();
    assert!(aliases.len() >= 16, "the aliases went missing: {aliases:?}");
    for (method, path) in aliases {
        let original = (method.clone(), format!("/api{path}"));
        assert!(
            mounted.contains(&original),
            "{method} {path} is an alias of nothing mounted"
        );
        mounted.remove(&(method, path));
    }
    let documented: BTreeSet<(String, String)> = operations(&document())
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let undocumented: Vec<_> = mounted.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "mounted but not in the OpenAPI document (add #[utoipa::path] and list the \
         handler in its module's Api): {undocumented:?}"
    );
    let unmounted: Vec<_> = documented.difference(&mounted).collect();
    assert!(
        unmounted.is_empty(),
        "documented but not mounted: {unmounted:?}"
    );
}

#[test]
fn spend_and_holds_are_documented_with_their_402() {
    let document = document();
    for (method, path) in [
        ("post", "/v1/agent/spend"),
        ("post", "/v1/agent/holds"),
        ("post", "/v1/agent/holds/{hold_id}/capture"),
        ("delete", "/v1/agent/holds/{hold_id}"),
    ] {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert_eq!(operation["tags"][0], "spend", "{method} {path}");
        assert!(
            operation["responses"]["402"].is_object(),
            "{method} {path} lacks its 402"
        );
        let schemes: BTreeSet<&str> = operation["security"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|requirement| requirement.as_object().unwrap().keys())
            .map(String::as_str)
            .collect();
        assert_eq!(
            schemes,
            BTreeSet::from(["agent_jwt", "api_key", "mtls"]),
            "{method} {path}"
        );
    }
}

#[test]
fn a_certificate_is_not_offered_where_credentials_are_issued() {
    let document = document();
    for (method, path) in [
        ("post", "/v1/agent/delegate"),
        ("post", "/v1/agent/auth/cert"),
    ] {
        let schemes = schemes_of(&document["paths"][path][method]);
        assert!(!schemes.is_empty(), "{method} {path} is not documented");
        assert!(!schemes.contains("mtls"), "{method} {path}: {schemes:?}");
    }
}

/// The schemes of `operation`'s security requirements.
fn schemes_of(operation: &Value) -> BTreeSet<String> {
    operation["security"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|requirement| requirement.as_object().unwrap().keys().cloned())
        .collect()
}

#[test]
fn seed_003_routes_have_their_tags_and_credentials() {
    let document = document();
    let mut seen = 0;
    for (method, path, operation) in operations(&document) {
        let (tag, schemes): (&str, &[&str]) = if path.starts_with("/v1/provisioning/") {
            ("provisioning", &["api_key"])
        } else if let Some(route) = path.strip_prefix("/internal/bootstrap/") {
            let schemes: &[&str] = match route {
                "secrets" => &["mtls"],
                _ if route.starts_with("artifacts/") => &["mtls"],
                "callback" | "diagnostic" => &["callback_jwt"],
                _ => &[],
            };
            ("machine", schemes)
        } else {
            continue;
        };
        seen += 1;
        assert_eq!(operation["tags"][0], tag, "{method} {path}");
        let expected: BTreeSet<String> = schemes.iter().map(|s| s.to_string()).collect();
        assert_eq!(schemes_of(&operation), expected, "{method} {path}");
    }
    assert_eq!(seen, 14, "seed 003 has 14 operations");
    // A machine's certificate also reads its bound agent's own state.
    for path in [
        "/v1/agent/status",
        "/v1/agent/limits/me",
        "/v1/agent/anomaly/me",
        "/v1/agent/profiles/me",
    ] {
        assert!(
            schemes_of(&document["paths"][path]["get"]).contains("mtls"),
            "{path}"
        );
    }
}

/// Asked without credentials, every documented operation reaches its
/// handler (the router answers neither `no such route` nor 405), and
/// answers a status the document lists for it.
#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_reaches_a_handler() {
    let db = agentry_testkit::sqlite_db().await;
    let state = state_for(&db).await;
    let app = app(&state).await;
    for (method, path, operation) in operations(&document()) {
        // Any value fits every path parameter far enough to be routed.
        let uri = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "00000000-0000-0000-0000-000000000000"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let mut request = TestRequest::default()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(&uri);
        if operation["requestBody"].is_object() {
            request = request.set_json(serde_json::json!({}));
        }
        let (status, body) = send(&app, request, &uri, None).await;
        let unrouted = status == 405 || (status == 404 && body["detail"] == "no such route");
        assert!(!unrouted, "{method} {path}: {status} {body}");
        assert!(
            operation["responses"][status.to_string()].is_object(),
            "{method} {path} answered {status}, which the document does not list: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_serves_the_document() {
    let db = agentry_testkit::sqlite_db().await;
    let state = state_for(&db).await;
    let app = app(&state).await;
    let response = call_service(&app, TestRequest::get().uri("/openapi.json").to_request()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/json"
    );
    let body = read_body(response).await;
    assert_eq!(body, agentry_http::openapi_json().as_bytes());
}
