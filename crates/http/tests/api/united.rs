//! Agent United's API around seed 002's bootstrap, on both backends:
//! register on a fresh instance, the workspace's agents and their keys,
//! channels and members, the roles that bound them, and the credential
//! that tells seed 002's `/api/v1/agents` from seed 004's.

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::Method;
use actix_web::test;
use agentry_auth::{ApiKey, ApiKeyKind};
use agentry_domain::{AgentId, ApiKeyRole};
use agentry_store::now;
use agentry_testkit::on_both_backends;
use serde_json::{Value, json};

use crate::{app, call, get, send, state_for, state_with, tenant, tenant_key};

const PRIMARY_EMAIL: &str = "admin@localhost";
const PRIMARY_PASSWORD: &str = "secure-generated-password";
const HUMAN_PASSWORD: &str = "a-long-and-unguessable-passphrase";

fn setup_request() -> Value {
    json!({
        "primary_agent": {
            "email": PRIMARY_EMAIL,
            "password": PRIMARY_PASSWORD,
            "agent_profile": { "name": "coordinator", "display_name": "Coordination Agent" }
        },
        "agents": [{ "name": "worker-1", "display_name": "Worker Agent 1" }],
        "humans": [{ "email": "human@example.com", "display_name": "Human Observer", "role": "observer" }],
        "default_channel": { "name": "team-chat" }
    })
}

/// Seed 002's agent body for `POST /api/v1/agents`.
fn agent_body(name: &str) -> Value {
    json!({
        "name": name,
        "display_name": "Data Collector",
        "description": "Scrapes and aggregates data sources",
        "avatar_url": "https://example.com/collector.png",
        "metadata": { "team": "research" }
    })
}

/// `method path` with a bearer credential, an optional body and an
/// optional `X-Bulwark-Tenant`.
async fn request<S>(
    app: &S,
    method: Method,
    path: &str,
    credential: &str,
    body: Option<Value>,
    tenant_header: Option<&str>,
) -> (u16, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let mut request = test::TestRequest::default().method(method).uri(path);
    if let Some(tenant) = tenant_header {
        request = request.insert_header(("x-bulwark-tenant", tenant));
    }
    if let Some(body) = body {
        request = request.set_json(body);
    }
    send(app, request, path, Some(credential)).await
}

/// The workspace's first-run setup with `setup_request`; its answer.
async fn set_up<S>(app: &S) -> Value
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let (status, bootstrap) = call(
        app,
        Method::POST,
        "/api/v1/bootstrap",
        None,
        setup_request(),
    )
    .await;
    assert_eq!(status, 201, "{bootstrap}");
    bootstrap
}

struct Workspace {
    bootstrap: Value,
    /// The primary agent's account's session.
    admin_session: String,
    primary_key: String,
    worker_key: String,
    /// The invited observer's session, after accepting the invite.
    observer_session: String,
    observer_id: String,
    channel_id: String,
}

async fn workspace<S>(app: &S) -> Workspace
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let bootstrap = set_up(app).await;
    let (status, login) = call(
        app,
        Method::POST,
        "/api/v1/auth/login",
        None,
        json!({ "email": PRIMARY_EMAIL, "password": PRIMARY_PASSWORD }),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    // Agent United's clients read `token`; ours `jwt_token`: the same.
    assert_eq!(login["token"], login["jwt_token"], "{login}");
    let (status, accepted) = call(
        app,
        Method::POST,
        "/api/v1/invite/accept",
        None,
        json!({
            "token": bootstrap["humans"][0]["invite_token"],
            "password": HUMAN_PASSWORD
        }),
    )
    .await;
    assert_eq!(status, 200, "{accepted}");
    Workspace {
        admin_session: login["token"].as_str().unwrap().to_owned(),
        primary_key: bootstrap["primary_agent"]["api_key"]
            .as_str()
            .unwrap()
            .to_owned(),
        worker_key: bootstrap["agents"][0]["api_key"]
            .as_str()
            .unwrap()
            .to_owned(),
        observer_session: accepted["jwt_token"].as_str().unwrap().to_owned(),
        observer_id: bootstrap["humans"][0]["user_id"]
            .as_str()
            .unwrap()
            .to_owned(),
        channel_id: bootstrap["channel"]["channel_id"]
            .as_str()
            .unwrap()
            .to_owned(),
        bootstrap,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn register_opens_a_fresh_instance_once_and_its_account_administers_it() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let operator_tenant = tenant(&db.store, "default").await;
        let body = json!({ "email": "Founder@Example.com", "password": PRIMARY_PASSWORD });
        for bad in [
            json!({ "email": "not an email", "password": PRIMARY_PASSWORD }),
            json!({ "email": "founder@example.com", "password": "short" }),
            json!({ "email": "founder@example.com", "password": PRIMARY_PASSWORD, "display_name": "" }),
        ] {
            let (status, refused) =
                call(&app, Method::POST, "/api/v1/auth/register", None, bad.clone()).await;
            assert_eq!(status, 400, "{bad}: {refused}");
        }
        assert_eq!(db.count("users").await, 0, "nothing was written");

        let (status, registered) =
            call(&app, Method::POST, "/api/v1/auth/register", None, body.clone()).await;
        assert_eq!(status, 201, "{registered}");
        assert_eq!(registered["user"]["email"], "founder@example.com");
        assert_eq!(registered["user"]["role"], "admin");
        assert_eq!(registered["user"]["display_name"], "founder");
        let token = registered["token"].as_str().unwrap().to_owned();
        assert_eq!(registered["jwt_token"], token.as_str());

        // A workspace of its own, administered by the account.
        let workspace = db.store.instance_tenant().await.unwrap().unwrap();
        assert_ne!(workspace, operator_tenant);
        let (status, listed) = get(&app, "/api/v1/agents", Some(&token)).await;
        assert_eq!((status, &listed), (200, &json!({ "agents": [] })));
        let (status, created) = call(
            &app,
            Method::POST,
            "/api/v1/agents",
            Some(&token),
            agent_body("Data-Collector"),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let (status, channel) = call(
            &app,
            Method::POST,
            "/api/v1/channels",
            Some(&token),
            json!({ "name": "general" }),
        )
        .await;
        assert_eq!(status, 201, "{channel}");
        assert_eq!(channel["members"], json!([registered["user"]["id"]]));
        assert_eq!(
            channel["channel"]["members"][0]["id"],
            registered["user"]["id"]
        );

        // The account signs in like any other.
        let (status, login) = call(
            &app,
            Method::POST,
            "/api/v1/auth/login",
            None,
            json!({ "email": "founder@example.com", "password": PRIMARY_PASSWORD }),
        )
        .await;
        assert_eq!(status, 200, "{login}");

        // Closed from now on: to register, and to the workspace setup.
        let mut again = body.clone();
        again["email"] = json!("second@example.com");
        let (status, refused) =
            call(&app, Method::POST, "/api/v1/auth/register", None, again).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (403, Some("registration_closed")),
            "{refused}"
        );
        let (status, refused) =
            call(&app, Method::POST, "/api/v1/bootstrap", None, setup_request()).await;
        assert_eq!((status, refused["code"].as_str()), (409, Some("already_bootstrapped")));
        assert_eq!(db.count("users").await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn register_honours_the_setup_token() {
    on_both_backends(|db| async move {
        let state = state_with(&db, |settings| {
            settings.setup_token = Some("operator-chosen-setup-token".into());
        })
        .await;
        let app = app(&state).await;
        let body = json!({ "email": "founder@example.com", "password": PRIMARY_PASSWORD });
        let (status, refused) = call(
            &app,
            Method::POST,
            "/api/v1/auth/register",
            None,
            body.clone(),
        )
        .await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (401, Some("setup_token_required"))
        );
        assert_eq!(db.count("users").await, 0);
        let (status, registered) = call(
            &app,
            Method::POST,
            "/api/v1/auth/register",
            Some("operator-chosen-setup-token"),
            body,
        )
        .await;
        assert_eq!(status, 201, "{registered}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_workspace_admin_manages_its_agents_with_a_session_or_the_primary_key() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let ws = workspace(&app).await;

        for (credential, name) in [
            (&ws.admin_session, "Data-Collector"),
            (&ws.primary_key, "Analyst-Agent"),
        ] {
            let (status, created) = call(
                &app,
                Method::POST,
                "/api/v1/agents",
                Some(credential),
                agent_body(name),
            )
            .await;
            assert_eq!(status, 201, "{created}");
            assert_eq!(created["name"], name);
            assert_eq!(created["display_name"], "Data Collector");
            assert_eq!(
                created["description"],
                "Scrapes and aggregates data sources"
            );
            assert_eq!(created["avatar_url"], "https://example.com/collector.png");
            assert_eq!(created["metadata"], json!({ "team": "research" }));
            assert_eq!(created["is_active"], true);
            assert!(
                created["id"].as_str().unwrap().starts_with("agent_"),
                "{created}"
            );
        }
        let (status, listed) = get(&app, "/api/v1/agents", Some(&ws.admin_session)).await;
        assert_eq!(status, 200, "{listed}");
        let names: Vec<&str> = listed["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|agent| agent["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["coordinator", "worker-1", "Data-Collector", "Analyst-Agent"]
        );
        let id = listed["agents"][2]["id"].as_str().unwrap().to_owned();

        // Names repeat in no case.
        let (status, refused) = call(
            &app,
            Method::POST,
            "/api/v1/agents",
            Some(&ws.admin_session),
            agent_body("data-collector"),
        )
        .await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (409, Some("agent_exists"))
        );
        let mut bad = agent_body("x");
        bad["display_name"] = json!("");
        let (status, refused) = call(
            &app,
            Method::POST,
            "/api/v1/agents",
            Some(&ws.admin_session),
            bad,
        )
        .await;
        assert_eq!(status, 400, "{refused}");
        let detail = refused["detail"].as_str().unwrap();
        assert!(
            detail.contains("name") && detail.contains("display_name"),
            "{detail}"
        );

        // Read by its id, or by the UUID seed 002 prints.
        let uuid = AgentId::parse_type_id(&id).unwrap().as_uuid().to_string();
        for path_id in [&id, &uuid] {
            let (status, one) = get(
                &app,
                &format!("/api/v1/agents/{path_id}"),
                Some(&ws.primary_key),
            )
            .await;
            assert_eq!(
                (status, &one["name"]),
                (200, &json!("Data-Collector")),
                "{one}"
            );
        }

        // Changes: absent fields stay, null clears, the name only in case.
        let path = format!("/api/v1/agents/{id}");
        let (status, changed) = call(
            &app,
            Method::PATCH,
            &path,
            Some(&ws.admin_session),
            json!({ "name": "DATA-COLLECTOR", "description": null, "display_name": "Collector" }),
        )
        .await;
        assert_eq!(status, 200, "{changed}");
        assert_eq!(changed["name"], "DATA-COLLECTOR");
        assert_eq!(changed["display_name"], "Collector");
        assert!(changed.get("description").is_none(), "{changed}");
        assert_eq!(changed["avatar_url"], "https://example.com/collector.png");
        assert_eq!(changed["metadata"], json!({ "team": "research" }));
        let (status, refused) = call(
            &app,
            Method::PATCH,
            &path,
            Some(&ws.admin_session),
            json!({ "name": "another-name" }),
        )
        .await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (409, Some("name_immutable"))
        );
        let (status, refused) = call(
            &app,
            Method::PATCH,
            &path,
            Some(&ws.admin_session),
            json!({ "display_name": "" }),
        )
        .await;
        assert_eq!(status, 400, "{refused}");
        // Seeds 000/001 see the same agent under its slug.
        let (status, profile) = get(
            &app,
            "/v1/agent/profiles/data-collector",
            Some(&ws.primary_key),
        )
        .await;
        assert_eq!(
            (status, &profile["profile"]["displayName"]),
            (200, &json!("Collector"))
        );

        // Deleted: gone from the workspace, terminated for everyone else.
        let (status, _) = call(
            &app,
            Method::DELETE,
            &path,
            Some(&ws.admin_session),
            json!({}),
        )
        .await;
        assert_eq!(status, 204);
        let (status, _) = get(&app, &path, Some(&ws.admin_session)).await;
        assert_eq!(status, 404);
        let (status, _) = call(
            &app,
            Method::PATCH,
            &path,
            Some(&ws.admin_session),
            json!({}),
        )
        .await;
        assert_eq!(status, 404);
        let (status, profile) = get(
            &app,
            "/v1/agent/profiles/data-collector",
            Some(&ws.primary_key),
        )
        .await;
        assert_eq!(
            (status, &profile["profile"]["lifecycleState"]),
            (200, &json!("terminated"))
        );
        // The primary agent cannot be deleted.
        let primary = ws.bootstrap["primary_agent"]["agent_id"].as_str().unwrap();
        let (status, refused) = call(
            &app,
            Method::DELETE,
            &format!("/api/v1/agents/{primary}"),
            Some(&ws.admin_session),
            json!({}),
        )
        .await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (409, Some("primary_agent"))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_credential_tells_the_two_families_apart() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let ws = workspace(&app).await;
        let workspace = db.store.instance_tenant().await.unwrap().unwrap();
        let workspace_id = workspace.to_string();
        let operator = tenant_key(&db.store, workspace, ApiKeyRole::Admin).await;

        // A tenant key: seed 004's envelope and page.
        let (status, page) = request(
            &app,
            Method::GET,
            "/api/v1/agents",
            operator.expose(),
            None,
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        assert!(
            page["data"].is_array() && page["pagination"].is_object(),
            "{page}"
        );
        // The primary agent's key: seed 002 without the header, seed 004
        // with it.
        let (_, listed) = request(
            &app,
            Method::GET,
            "/api/v1/agents",
            &ws.primary_key,
            None,
            None,
        )
        .await;
        assert!(listed["agents"].is_array(), "{listed}");
        let (status, page) = request(
            &app,
            Method::GET,
            "/api/v1/agents",
            &ws.primary_key,
            None,
            Some(&workspace_id),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        assert!(page["data"].is_array(), "{page}");
        // Seed 004's registration body with a tenant key still registers.
        let (status, registered) = request(
            &app,
            Method::POST,
            "/api/v1/agents",
            operator.expose(),
            Some(json!({ "name": "my-assistant", "scopes": ["read:customers"] })),
            Some(&workspace_id),
        )
        .await;
        assert_eq!(status, 201, "{registered}");
        assert!(registered["data"]["apiKey"].is_string(), "{registered}");
        // ...and it is one of the workspace's agents for seed 002.
        let id = registered["data"]["agentId"].as_str().unwrap();
        let (status, one) = get(
            &app,
            &format!("/api/v1/agents/{id}"),
            Some(&ws.admin_session),
        )
        .await;
        assert_eq!(
            (status, &one["name"]),
            (200, &json!("my-assistant")),
            "{one}"
        );

        // Seed 002-only routes refuse a tenant key, and agents of another
        // tenant.
        let (status, refused) = call(
            &app,
            Method::PATCH,
            &format!("/api/v1/agents/{id}"),
            Some(operator.expose()),
            json!({}),
        )
        .await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (403, Some("workspace_credentials_required"))
        );
        let elsewhere = tenant(&db.store, "elsewhere").await;
        let outsider = crate::agent(
            &db.store,
            elsewhere,
            "outsider",
            agentry_domain::LifecycleState::Active,
        )
        .await;
        let (outsider_key, _) =
            crate::api_key(&db.store, elsewhere, ApiKeyKind::Agent, Some(&outsider)).await;
        for path in ["/api/v1/agents", "/api/v1/channels"] {
            let (status, refused) = get(&app, path, Some(outsider_key.expose())).await;
            assert_eq!(
                (status, refused["code"].as_str()),
                (403, Some("workspace_credentials_required")),
                "{path}"
            );
        }
        let (status, _) = get(&app, "/api/v1/channels", None).await;
        assert_eq!(status, 401);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_keys_are_shown_once_listed_without_secrets_and_stop_when_deleted() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let ws = workspace(&app).await;
        let worker = ws.bootstrap["agents"][0]["agent_id"].as_str().unwrap();
        let keys = format!("/api/v1/agents/{worker}/keys");

        let (status, created) = call(
            &app,
            Method::POST,
            &keys,
            Some(&ws.admin_session),
            json!({ "name": "ci runner", "expires_at": "2999-01-01T00:00:00Z" }),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let secret = created["plaintext_key"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("agy_agent_"), "{created}");
        // The kind and six characters of the secret, to tell keys apart.
        assert_eq!(created["key_prefix"], format!("{}...", &secret[..16]));
        assert!(
            created["agent_id"].as_str().unwrap().starts_with("agent_"),
            "{created}"
        );
        assert_eq!(created["expires_at"], "2999-01-01T00:00:00.000Z");
        let (status, _) = get(&app, "/v1/agent/status", Some(&secret)).await;
        assert_eq!(status, 200, "the new key works");

        let (status, listed) = get(&app, &keys, Some(&ws.primary_key)).await;
        assert_eq!(status, 200, "{listed}");
        let text = listed.to_string();
        assert!(
            !text.contains(&secret[16..]),
            "no secret in a listing: {text}"
        );
        let listed = listed["keys"].as_array().unwrap();
        assert_eq!(listed.len(), 2, "the bootstrap's key and the new one");
        let new = listed
            .iter()
            .find(|key| key["id"] == created["id"])
            .unwrap();
        assert_eq!(
            (&new["name"], &new["key_prefix"], &new["agent_id"]),
            (
                &json!("ci runner"),
                &created["key_prefix"],
                &created["agent_id"]
            )
        );

        for bad in [
            json!({ "name": "" }),
            json!({ "name": "old", "expires_at": "2001-01-01T00:00:00Z" }),
            json!({ "name": "x", "expires_at": "tomorrow" }),
        ] {
            let (status, refused) = call(
                &app,
                Method::POST,
                &keys,
                Some(&ws.admin_session),
                bad.clone(),
            )
            .await;
            assert_eq!(status, 400, "{bad}: {refused}");
        }

        let key_id = created["id"].as_str().unwrap();
        let (status, _) = call(
            &app,
            Method::DELETE,
            &format!("{keys}/{key_id}"),
            Some(&ws.admin_session),
            json!({}),
        )
        .await;
        assert_eq!(status, 204);
        let (status, refused) = get(&app, "/v1/agent/status", Some(&secret)).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (401, Some("invalid_api_key"))
        );
        let (status, _) = call(
            &app,
            Method::DELETE,
            &format!("{keys}/{key_id}"),
            Some(&ws.admin_session),
            json!({}),
        )
        .await;
        assert_eq!(status, 404, "deleted once");
        let (status, _) = get(
            &app,
            "/api/v1/agents/agent_unknown/keys",
            Some(&ws.admin_session),
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/v1/agents/agent_unknown/keys",
            Some(&ws.admin_session),
            json!({ "name": "nobody's" }),
        )
        .await;
        assert_eq!(status, 404);

        // A key past its `expires_at` reads as unknown.
        let tenant = db.store.instance_tenant().await.unwrap().unwrap();
        // The bootstrap's ids are UUIDs, as seed 002 prints them.
        let agent = AgentId::from_uuid(worker.parse().unwrap());
        let expired = ApiKey::mint(ApiKeyKind::Agent);
        db.store
            .insert_agent_key(
                tenant,
                agent,
                expired.hash().0,
                "expired".into(),
                Some(now() - time::Duration::seconds(1)),
                now() - time::Duration::hours(1),
            )
            .await
            .unwrap();
        let (status, _) = get(&app, "/v1/agent/status", Some(expired.expose())).await;
        assert_eq!(status, 401);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn members_read_what_they_belong_to_and_only_the_admin_manages() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let ws = workspace(&app).await;
        let team_chat = format!("/api/v1/channels/{}", ws.channel_id);

        // The observer reads the agents and its channel, and nothing more.
        let (status, _) = get(&app, "/api/v1/agents", Some(&ws.observer_session)).await;
        assert_eq!(status, 200);
        let (status, one) = get(&app, &team_chat, Some(&ws.observer_session)).await;
        assert_eq!(status, 200, "{one}");
        assert_eq!(one["channel"]["name"], "team-chat");
        assert_eq!(one["name"], "team-chat", "the earlier flat fields stay");
        for (method, path, body) in [
            (
                Method::POST,
                "/api/v1/agents".to_owned(),
                agent_body("Sneaky-Agent"),
            ),
            (
                Method::POST,
                "/api/v1/channels".to_owned(),
                json!({ "name": "mine" }),
            ),
            (
                Method::PATCH,
                team_chat.clone(),
                json!({ "topic": "taken over" }),
            ),
            (Method::DELETE, team_chat.clone(), json!({})),
            (
                Method::POST,
                format!("{team_chat}/members"),
                json!({ "user_id": ws.observer_id }),
            ),
            (
                Method::DELETE,
                format!("{team_chat}/members/{}", ws.observer_id),
                json!({}),
            ),
            (
                Method::PATCH,
                format!(
                    "/api/v1/agents/{}",
                    ws.bootstrap["agents"][0]["agent_id"].as_str().unwrap()
                ),
                json!({ "display_name": "x" }),
            ),
            (
                Method::DELETE,
                format!(
                    "/api/v1/agents/{}",
                    ws.bootstrap["agents"][0]["agent_id"].as_str().unwrap()
                ),
                json!({}),
            ),
            (
                Method::GET,
                format!(
                    "/api/v1/agents/{}/keys",
                    ws.bootstrap["agents"][0]["agent_id"].as_str().unwrap()
                ),
                json!({}),
            ),
        ] {
            let (status, refused) = call(
                &app,
                method.clone(),
                &path,
                Some(&ws.observer_session),
                body,
            )
            .await;
            assert_eq!(
                (status, refused["code"].as_str()),
                (403, Some("insufficient_role")),
                "{method} {path}"
            );
        }
        // A worker agent without an account: a member of no channel.
        let (status, listed) = get(&app, "/api/v1/channels", Some(&ws.worker_key)).await;
        assert_eq!((status, &listed), (200, &json!({ "channels": [] })));
        let (status, _) = get(&app, &team_chat, Some(&ws.worker_key)).await;
        assert_eq!(status, 404, "not a member reads as no channel");
        let (status, refused) = call(
            &app,
            Method::POST,
            "/api/v1/agents",
            Some(&ws.worker_key),
            agent_body("Another-Agent"),
        )
        .await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (403, Some("insufficient_role"))
        );

        // A channel the observer is not in is invisible to it.
        let (status, private) = call(
            &app,
            Method::POST,
            "/api/v1/channels",
            Some(&ws.admin_session),
            json!({ "name": "admins only", "topic": "ops" }),
        )
        .await;
        assert_eq!(status, 201, "{private}");
        let private = format!(
            "/api/v1/channels/{}",
            private["channel"]["id"].as_str().unwrap()
        );
        let (status, _) = get(&app, &private, Some(&ws.observer_session)).await;
        assert_eq!(status, 404);
        let (status, _) = get(
            &app,
            &format!("{private}/members"),
            Some(&ws.observer_session),
        )
        .await;
        assert_eq!(status, 404);
        let (status, refused) = call(
            &app,
            Method::PATCH,
            &private,
            Some(&ws.observer_session),
            json!({}),
        )
        .await;
        assert_eq!(status, 404, "{refused}");
        let (_, listed) = get(&app, "/api/v1/channels", Some(&ws.observer_session)).await;
        assert_eq!(listed["channels"].as_array().unwrap().len(), 1, "{listed}");
        let (_, listed) = get(&app, "/api/v1/channels", Some(&ws.admin_session)).await;
        assert_eq!(listed["channels"].as_array().unwrap().len(), 2, "{listed}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn channels_and_their_members_round_trip() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let ws = workspace(&app).await;
        let admin = Some(ws.admin_session.as_str());

        let (status, created) = call(
            &app,
            Method::POST,
            "/api/v1/channels",
            admin,
            json!({ "name": "research", "description": "findings" }),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["channel"]["topic"], "findings");
        assert_eq!(created["channel"]["type"], "channel");
        assert_eq!(created["channel"]["member_count"], 1);
        // Under `channel` the members are objects, as Agent United's
        // clients read them; at the top level they stay user ids.
        let owner = &created["channel"]["members"][0];
        assert_eq!(
            (&owner["email"], &owner["role"]),
            (&json!(PRIMARY_EMAIL), &json!("owner")),
            "{created}"
        );
        assert_eq!(created["members"], json!([owner["id"]]), "{created}");
        let channel = format!(
            "/api/v1/channels/{}",
            created["channel"]["id"].as_str().unwrap()
        );
        for bad in [json!({ "name": "" }), json!({ "name": "no/slashes" })] {
            let (status, _) = call(&app, Method::POST, "/api/v1/channels", admin, bad).await;
            assert_eq!(status, 400);
        }
        let (status, refused) = call(
            &app,
            Method::POST,
            "/api/v1/channels",
            admin,
            json!({ "name": "research" }),
        )
        .await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (409, Some("channel_exists"))
        );

        let (status, changed) = call(
            &app,
            Method::PATCH,
            &channel,
            admin,
            json!({ "name": "research-2", "topic": null }),
        )
        .await;
        assert_eq!(status, 200, "{changed}");
        assert_eq!(
            (&changed["channel"]["name"], &changed["channel"]["topic"]),
            (&json!("research-2"), &Value::Null)
        );
        let (status, refused) = call(
            &app,
            Method::PATCH,
            &channel,
            admin,
            json!({ "name": "team-chat" }),
        )
        .await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (409, Some("channel_exists"))
        );
        let (status, _) = call(
            &app,
            Method::PATCH,
            &channel,
            admin,
            json!({ "name": "bad/name" }),
        )
        .await;
        assert_eq!(status, 400);

        // Members: add, see, refuse twice, remove.
        let members = format!("{channel}/members");
        let (status, added) = call(
            &app,
            Method::POST,
            &members,
            admin,
            json!({ "user_id": ws.observer_id, "role": "observer" }),
        )
        .await;
        assert_eq!(status, 201, "{added}");
        assert_eq!(added["message"], "Member added successfully");
        assert_eq!(added["member"]["email"], "human@example.com");
        let (status, refused) = call(
            &app,
            Method::POST,
            &members,
            admin,
            json!({ "user_id": ws.observer_id }),
        )
        .await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (409, Some("already_member"))
        );
        let (status, _) = call(
            &app,
            Method::POST,
            &members,
            admin,
            json!({ "user_id": uuid::Uuid::now_v7() }),
        )
        .await;
        assert_eq!(status, 404, "no such user in the workspace");
        let (status, _) = call(
            &app,
            Method::POST,
            &members,
            admin,
            json!({ "user_id": ws.observer_id, "role": "emperor" }),
        )
        .await;
        assert_eq!(status, 400);
        let (status, listed) = get(&app, &members, Some(&ws.observer_session)).await;
        assert_eq!(status, 200, "a member now reads it: {listed}");
        let listed = listed["members"].as_array().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            (&listed[0]["email"], &listed[0]["role"]),
            (&json!(PRIMARY_EMAIL), &json!("owner"))
        );
        assert_eq!(
            (&listed[1]["email"], &listed[1]["role"]),
            (&json!("human@example.com"), &json!("observer"))
        );

        let member = format!("{members}/{}", ws.observer_id);
        let (status, _) = call(&app, Method::DELETE, &member, admin, json!({})).await;
        assert_eq!(status, 204);
        let (status, _) = call(&app, Method::DELETE, &member, admin, json!({})).await;
        assert_eq!(status, 404);
        let (status, _) = get(&app, &channel, Some(&ws.observer_session)).await;
        assert_eq!(status, 404, "no longer a member");

        let (status, _) = call(&app, Method::DELETE, &channel, admin, json!({})).await;
        assert_eq!(status, 204);
        let (status, _) = get(&app, &channel, admin).await;
        assert_eq!(status, 404);
        let (status, _) = call(&app, Method::DELETE, &channel, admin, json!({})).await;
        assert_eq!(status, 404);
        let (status, _) = get(&app, "/api/v1/channels/not-a-uuid", admin).await;
        assert_eq!(status, 404);
    })
    .await;
}

/// The claims of a JWT, read without verifying it, as a web client does.
fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn invites_are_read_then_accepted_with_a_display_name_as_agent_united_does() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let bootstrap = set_up(&app).await;
        let token = bootstrap["humans"][0]["invite_token"].as_str().unwrap();
        let invite = format!("/api/v1/invite?token={token}");

        let (status, read) = get(&app, &invite, None).await;
        assert_eq!(status, 200, "{read}");
        assert_eq!(
            (&read["email"], &read["status"]),
            (&json!("human@example.com"), &json!("pending"))
        );
        assert!(read["expires_at"].is_string(), "{read}");
        let (status, refused) = get(&app, "/api/v1/invite?token=inv_unknown", None).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (404, Some("invite_not_found"))
        );
        let (status, refused) = get(&app, "/api/v1/invite", None).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (400, Some("invalid_query"))
        );

        // A display name out of bounds spends nothing.
        let (status, refused) = call(
            &app,
            Method::POST,
            "/api/v1/invite/accept",
            None,
            json!({ "token": token, "password": HUMAN_PASSWORD, "display_name": "" }),
        )
        .await;
        assert_eq!(status, 400, "{refused}");
        // Agent United's body, with a field we do not know besides.
        let (status, accepted) = call(
            &app,
            Method::POST,
            "/api/v1/invite/accept",
            None,
            json!({
                "token": token,
                "password": HUMAN_PASSWORD,
                "display_name": "Ada Observer",
                "timezone": "Europe/Paris"
            }),
        )
        .await;
        assert_eq!(status, 200, "{accepted}");
        assert_eq!(accepted["display_name"], "Ada Observer");
        let (status, read) = get(&app, &invite, None).await;
        assert_eq!((status, &read["status"]), (200, &json!("accepted")));

        // The session names its user, as Agent United's web client reads it.
        let session = claims(accepted["token"].as_str().unwrap());
        assert_eq!(
            (&session["user_id"], &session["email"]),
            (&accepted["user_id"], &json!("human@example.com")),
            "{session}"
        );
        assert_eq!(session["sub"], accepted["user_id"]);
        let (status, login) = call(
            &app,
            Method::POST,
            "/api/v1/auth/login",
            None,
            json!({ "email": "human@example.com", "password": HUMAN_PASSWORD, "remember": true }),
        )
        .await;
        assert_eq!(status, 200, "{login}");
        assert_eq!(login["display_name"], "Ada Observer");
        assert_eq!(
            claims(login["token"].as_str().unwrap())["email"],
            "human@example.com"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_united_routes_answer_under_v1_too_and_take_its_bodies() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let ws = workspace(&app).await;

        // No display name, and a field we do not know: as Agent United takes it.
        let (status, created) = call(
            &app,
            Method::POST,
            "/v1/agents",
            Some(&ws.primary_key),
            json!({ "name": "Bare-Agent", "capabilities": ["search"] }),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        assert!(created.get("display_name").is_none(), "{created}");
        let agent = format!("/v1/agents/{}", created["id"].as_str().unwrap());
        let (status, read) = get(&app, &agent, Some(&ws.admin_session)).await;
        assert_eq!((status, &read["name"]), (200, &json!("Bare-Agent")));
        let (status, changed) = call(
            &app,
            Method::PATCH,
            &agent,
            Some(&ws.admin_session),
            json!({ "display_name": "Bare", "status": "ignored" }),
        )
        .await;
        assert_eq!((status, &changed["display_name"]), (200, &json!("Bare")));
        let (status, key) = call(
            &app,
            Method::POST,
            &format!("{agent}/keys"),
            Some(&ws.admin_session),
            json!({ "name": "v1" }),
        )
        .await;
        assert_eq!(status, 201, "{key}");
        let (status, listed) = get(&app, &format!("{agent}/keys"), Some(&ws.admin_session)).await;
        assert_eq!(
            (status, listed["keys"].as_array().map(Vec::len)),
            (200, Some(1))
        );
        let (status, listed) = get(&app, "/v1/agents", Some(&ws.observer_session)).await;
        assert_eq!(status, 200, "{listed}");
        assert!(listed["agents"].as_array().unwrap().len() >= 3, "{listed}");

        let (status, channels) = get(&app, "/v1/channels", Some(&ws.admin_session)).await;
        assert_eq!(status, 200, "{channels}");
        assert_eq!(channels["channels"][0]["type"], "channel");
        let (status, members) = get(
            &app,
            &format!("/v1/channels/{}/members", ws.channel_id),
            Some(&ws.observer_session),
        )
        .await;
        assert_eq!(status, 200, "{members}");

        // Outside the workspace, /v1 answers why rather than 404.
        let workspace = db.store.instance_tenant().await.unwrap().unwrap();
        let operator = tenant_key(&db.store, workspace, ApiKeyRole::Admin).await;
        let (status, refused) = get(&app, "/v1/agents", Some(operator.expose())).await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (403, Some("workspace_credentials_required")),
            "{refused}"
        );
        let (status, _) = get(&app, "/v1/agents", None).await;
        assert_eq!(status, 401);
        let (status, _) = call(
            &app,
            Method::DELETE,
            &agent,
            Some(&ws.admin_session),
            json!({}),
        )
        .await;
        assert_eq!(status, 204);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reading_an_invite_is_throttled_apart_from_accepting_it() {
    on_both_backends(|db| async move {
        let state = state_for(&db).await;
        let app = app(&state).await;
        let bootstrap = set_up(&app).await;
        let token = bootstrap["humans"][0]["invite_token"].as_str().unwrap();
        let invite = format!("/api/v1/invite?token={token}");
        let mut read = 0;
        let throttled = loop {
            let (status, body) = get(&app, &invite, None).await;
            match status {
                200 => read += 1,
                429 => break body,
                other => panic!("{other}: {body}"),
            }
            assert!(read < 50, "reads are never throttled");
        };
        assert!(read >= 1, "the first read passes");
        assert_eq!(throttled["code"], "too_many_attempts");
        // Acceptance has tries of its own left.
        let (status, accepted) = call(
            &app,
            Method::POST,
            "/api/v1/invite/accept",
            None,
            json!({ "token": token, "password": HUMAN_PASSWORD }),
        )
        .await;
        assert_eq!(status, 200, "{accepted}");
    })
    .await;
}
