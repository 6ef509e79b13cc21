//! Seed 004 end to end on both backends: the seed's examples as written,
//! revocation and rotation cutting credentials off at once, keyset pages
//! that stay exact while agents come and go, and bad input as 400s.

use std::collections::BTreeMap;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::Method;
use actix_web::test;
use agentry_domain::{
    AgentId, AgentOrigin, AgentSlug, ApiKeyRole, LifecycleState, TenantId, TrustLevel,
};
use agentry_store::{NewAgent, Store, now};
use agentry_testkit::on_both_backends;
use serde_json::{Value, json};

use crate::test_app::TestApp;
use crate::{call, get, send, tenant, tenant_key};

/// `method path` with the tenant header, a bearer key and an optional body.
async fn registry<S>(
    app: &S,
    method: Method,
    path: &str,
    key: &str,
    tenant: Option<&str>,
    body: Option<Value>,
) -> (u16, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let mut request = test::TestRequest::default().method(method).uri(path);
    if let Some(tenant) = tenant {
        request = request.insert_header(("x-bulwark-tenant", tenant));
    }
    if let Some(body) = body {
        request = request.set_json(body);
    }
    send(app, request, path, Some(key)).await
}

/// Seed 004's registration example, as written.
fn seed_registration() -> Value {
    json!({
        "name": "my-assistant",
        "description": "Customer support AI agent",
        "scopes": ["read:customers", "write:tickets"],
        "trustLevel": "medium",
        "metadata": { "model": "claude-3-5-sonnet", "owner": "team-support" }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_examples_get_the_documented_answers() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (app, tenant) = (&t.app, t.tenant);
        let key = tenant_key(&db.store, tenant, ApiKeyRole::Operator).await;
        let (key, tenant_id) = (key.expose(), tenant.to_string());

        let (status, created) = registry(
            app,
            Method::POST,
            "/api/v1/agents",
            key,
            Some(&tenant_id),
            Some(seed_registration()),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let data = &created["data"];
        let agent_id = data["agentId"].as_str().unwrap().to_owned();
        assert!(
            agent_id.starts_with("agent_") && agent_id.len() == 32,
            "{agent_id}"
        );
        assert_eq!(data["name"], "my-assistant");
        assert!(data["apiKey"].as_str().unwrap().starts_with("agy_agent_"));
        assert_eq!(data["scopes"], json!(["read:customers", "write:tickets"]));
        assert_eq!(data["trustLevel"], "medium");
        assert!(data["createdAt"].as_str().unwrap().ends_with('Z'));
        // The same agent, seen through seed 001's family.
        let profile = db
            .store
            .find_agent_by_slug(tenant, &AgentSlug::parse("my-assistant").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(profile.id.to_type_id(), agent_id);
        assert_eq!(profile.lifecycle_state, LifecycleState::Active);

        let (status, page) = registry(
            app,
            Method::GET,
            "/api/v1/agents",
            key,
            Some(&tenant_id),
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["data"][0]["agentId"], agent_id.as_str());
        assert_eq!(page["data"][0]["status"], "active");
        assert!(page["data"][0]["lastSeenAt"].is_null());
        assert_eq!(page["pagination"]["hasMore"], false);

        let path = format!("/api/v1/agents/{agent_id}");
        let (status, one) = registry(app, Method::GET, &path, key, Some(&tenant_id), None).await;
        assert_eq!(status, 200, "{one}");
        assert_eq!(one["data"]["description"], "Customer support AI agent");
        assert_eq!(one["data"]["metadata"]["model"], "claude-3-5-sonnet");
        assert!(one["data"]["revokedAt"].is_null());

        let (status, rotated) = registry(
            app,
            Method::POST,
            &format!("{path}/rotate-key"),
            key,
            Some(&tenant_id),
            None,
        )
        .await;
        assert_eq!(status, 200, "{rotated}");
        assert_eq!(rotated["data"]["agentId"], agent_id.as_str());
        assert_ne!(rotated["data"]["apiKey"], data["apiKey"]);
        assert!(rotated["data"]["rotatedAt"].is_string());

        let (status, revoked) =
            registry(app, Method::DELETE, &path, key, Some(&tenant_id), None).await;
        assert_eq!(status, 200, "{revoked}");
        assert_eq!(revoked["data"]["status"], "revoked");
        let revoked_at = revoked["data"]["revokedAt"].clone();
        assert!(revoked_at.is_string());
        // Idempotent: the same answer again.
        let (status, again) =
            registry(app, Method::DELETE, &path, key, Some(&tenant_id), None).await;
        assert_eq!((status, &again["data"]["revokedAt"]), (200, &revoked_at));
        let (_, one) = registry(app, Method::GET, &path, key, None, None).await;
        assert_eq!(
            (&one["data"]["status"], &one["data"]["revokedAt"]),
            (&json!("revoked"), &revoked_at)
        );
        // A revoked agent's key cannot be rotated back to life.
        let (status, _) = registry(
            app,
            Method::POST,
            &format!("{path}/rotate-key"),
            key,
            None,
            None,
        )
        .await;
        assert_eq!(status, 409);
        let (status, body) = registry(
            app,
            Method::POST,
            &format!("/api/v1/agents/{}/rotate-key", uuid::Uuid::now_v7()),
            key,
            None,
            None,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("not_found")),
            "{body}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tenant_header_must_name_the_keys_tenant() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (app, acme) = (&t.app, t.tenant);
        let other = tenant(&db.store, "other").await;
        let key = tenant_key(&db.store, acme, ApiKeyRole::Admin).await;
        let key = key.expose();
        let body = Some(seed_registration());
        let (status, _) =
            registry(app, Method::POST, "/api/v1/agents", key, None, body.clone()).await;
        assert_eq!(status, 400, "the header is required to register");
        let (status, problem) = registry(
            app,
            Method::POST,
            "/api/v1/agents",
            key,
            Some(&other.to_string()),
            body.clone(),
        )
        .await;
        assert_eq!((status, problem["code"].as_str()), (404, Some("not_found")));
        let (status, _) = registry(
            app,
            Method::POST,
            "/api/v1/agents",
            key,
            Some("other"),
            body.clone(),
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) = registry(
            app,
            Method::POST,
            "/api/v1/agents",
            key,
            Some(&TenantId::from_uuid(uuid::Uuid::now_v7()).to_string()),
            body.clone(),
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) =
            registry(app, Method::GET, "/api/v1/agents", key, Some("other"), None).await;
        assert_eq!(status, 404);
        // By name works as well as by id; nothing was created by the refusals.
        let (status, _) = registry(
            app,
            Method::POST,
            "/api/v1/agents",
            key,
            Some("acme"),
            body.clone(),
        )
        .await;
        assert_eq!(status, 201);
        let (status, _) =
            registry(app, Method::POST, "/api/v1/agents", key, Some("acme"), body).await;
        assert_eq!(status, 409, "a name is unique in its tenant");
        // Another tenant's key does not see acme's agents.
        let other_key = tenant_key(&db.store, other, ApiKeyRole::Admin).await;
        let (_, page) = registry(
            app,
            Method::GET,
            "/api/v1/agents",
            other_key.expose(),
            None,
            None,
        )
        .await;
        assert_eq!(page["data"], json!([]));
        // An auditor may read, not register.
        let auditor = tenant_key(&db.store, acme, ApiKeyRole::Auditor).await;
        let (status, _) = registry(
            app,
            Method::POST,
            "/api/v1/agents",
            auditor.expose(),
            Some("acme"),
            Some(json!({ "name": "nope" })),
        )
        .await;
        assert_eq!(status, 403);
        let (status, page) = registry(
            app,
            Method::GET,
            "/api/v1/agents",
            auditor.expose(),
            None,
            None,
        )
        .await;
        assert_eq!(
            (status, page["data"].as_array().map(Vec::len)),
            (200, Some(1))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_and_rotate_cut_credentials_off_on_the_next_request() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, tenant) = (&t.state, &t.app, t.tenant);
        let key = tenant_key(&db.store, tenant, ApiKeyRole::Operator).await;
        let key = key.expose();
        let register = |name: &str| json!({ "name": name, "trustLevel": "high" });

        // Rotation: the old key stops, the new one works, and so do only
        // tokens issued after it.
        let (_, created) = registry(
            app,
            Method::POST,
            "/api/v1/agents",
            key,
            Some("acme"),
            Some(register("rotating")),
        )
        .await;
        let old_key = created["data"]["apiKey"].as_str().unwrap().to_owned();
        let path = format!(
            "/api/v1/agents/{}",
            created["data"]["agentId"].as_str().unwrap()
        );
        let agent = db
            .store
            .find_agent_by_slug(tenant, &AgentSlug::parse("rotating").unwrap())
            .await
            .unwrap()
            .unwrap();
        let old_token = state.mint_agent_token(&agent, now()).unwrap().0;
        assert_eq!(get(app, "/v1/agent/status", Some(&old_key)).await.0, 200);
        assert_eq!(get(app, "/v1/agent/status", Some(&old_token)).await.0, 200);
        let (_, rotated) = registry(
            app,
            Method::POST,
            &format!("{path}/rotate-key"),
            key,
            None,
            None,
        )
        .await;
        let new_key = rotated["data"]["apiKey"].as_str().unwrap();
        assert_eq!(get(app, "/v1/agent/status", Some(&old_key)).await.0, 401);
        assert_eq!(get(app, "/v1/agent/status", Some(&old_token)).await.0, 401);
        let (status, me) = get(app, "/v1/agent/status", Some(new_key)).await;
        assert_eq!(
            (status, &me["profile"]["agentId"]),
            (200, &json!("rotating"))
        );

        // Revocation: an unexpired token and the key both stop at once.
        let (_, created) = registry(
            app,
            Method::POST,
            "/api/v1/agents",
            key,
            Some("acme"),
            Some(register("revoked-one")),
        )
        .await;
        let agent_key = created["data"]["apiKey"].as_str().unwrap().to_owned();
        let path = format!(
            "/api/v1/agents/{}",
            created["data"]["agentId"].as_str().unwrap()
        );
        let agent = db
            .store
            .find_agent_by_slug(tenant, &AgentSlug::parse("revoked-one").unwrap())
            .await
            .unwrap()
            .unwrap();
        let token = state.mint_agent_token(&agent, now()).unwrap().0;
        // Both are cached by the guard now; the revocation must still count.
        assert_eq!(get(app, "/v1/agent/status", Some(&agent_key)).await.0, 200);
        assert_eq!(get(app, "/v1/agent/status", Some(&token)).await.0, 200);
        assert_eq!(
            registry(app, Method::DELETE, &path, key, None, None)
                .await
                .0,
            200
        );
        let (status, problem) = get(app, "/v1/agent/status", Some(&agent_key)).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (403, Some("agent_terminated"))
        );
        let (status, _) = get(app, "/v1/agent/status", Some(&token)).await;
        assert_eq!(status, 403);
        let (status, _) = registry(
            app,
            Method::GET,
            "/api/v1/agents?status=revoked",
            key,
            None,
            None,
        )
        .await;
        assert_eq!(status, 200);
    })
    .await;
}

/// The registry's `agentId` of a seed 001 profile (whose `id` is the UUID).
fn registry_id(profile: &Value) -> String {
    profile["id"]
        .as_str()
        .unwrap()
        .parse::<AgentId>()
        .unwrap()
        .to_type_id()
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_at_is_set_however_the_agent_was_terminated() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, tenant) = (&t.state, &t.app, t.tenant);
        let admin = tenant_key(&db.store, tenant, ApiKeyRole::Admin).await;
        let key = admin.expose();
        let record = async |id: &str| {
            let path = format!("/api/v1/agents/{id}");
            let (status, body) = registry(app, Method::GET, &path, key, None, None).await;
            assert_eq!(status, 200, "{body}");
            body["data"].clone()
        };
        let assert_revoked = async |id: &str, route: &str| -> String {
            let data = record(id).await;
            assert_eq!(data["status"], "revoked", "{route}: {data}");
            assert_eq!(data["lifecycleState"], "terminated", "{route}: {data}");
            let at = data["revokedAt"].as_str();
            assert!(at.is_some_and(|at| at.ends_with('Z')), "{route}: {data}");
            at.unwrap().to_owned()
        };
        let bootstrap = async |slug: &str| -> (String, String) {
            let body = json!({
                "agent_id": slug, "budget_daily_usd": 5.0, "metadata": { "can_delegate": true }
            });
            let (status, body) =
                call(app, Method::POST, "/v1/agent/bootstrap", Some(key), body).await;
            assert_eq!(status, 201, "{body}");
            (
                body["jwt"].as_str().unwrap().to_owned(),
                registry_id(&body["profile"]),
            )
        };
        let delegate = async |jwt: &str, child: &str, ttl: Option<i64>| -> String {
            let mut body = json!({ "agent_id": child, "budget_allocation_usd": 1.0 });
            if let Some(ttl) = ttl {
                body["ttl_seconds"] = json!(ttl);
            }
            let (status, created) =
                call(app, Method::POST, "/v1/agent/delegate", Some(jwt), body).await;
            assert_eq!(status, 201, "{created}");
            registry_id(&created["profile"])
        };

        // Seed 004's revoke.
        let (_, revoked) = bootstrap("by-registry").await;
        let path = format!("/api/v1/agents/{revoked}");
        let (status, answer) = registry(app, Method::DELETE, &path, key, None, None).await;
        assert_eq!(status, 200, "{answer}");
        let at = assert_revoked(&revoked, "registry revoke").await;
        assert_eq!(answer["data"]["revokedAt"], at.as_str());

        // Seed 001's lifecycle move to terminated, and its cascade to the
        // agent's sub-agent.
        let (jwt, stopped) = bootstrap("by-lifecycle").await;
        let kid = delegate(&jwt, "lifecycle-kid", None).await;
        assert!(record(&kid).await["revokedAt"].is_null());
        for to in ["suspended", "terminated"] {
            let (status, body) = call(
                app,
                Method::PATCH,
                "/v1/agent/profiles/lifecycle/by-lifecycle",
                Some(key),
                json!({ "state": to }),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            if to == "suspended" {
                assert!(
                    record(&stopped).await["revokedAt"].is_null(),
                    "suspended is not revoked"
                );
            }
        }
        let at = assert_revoked(&stopped, "lifecycle PATCH").await;
        assert_eq!(assert_revoked(&kid, "cascade").await, at);
        // A revoke of an agent terminated another way answers the same time.
        let path = format!("/api/v1/agents/{kid}");
        let (status, answer) = registry(app, Method::DELETE, &path, key, None, None).await;
        assert_eq!(
            (status, answer["data"]["revokedAt"].as_str()),
            (200, Some(at.as_str()))
        );

        // A parent's reclaim of its sub-agent; the parent stays unrevoked.
        let (jwt, parent) = bootstrap("by-parent").await;
        let reclaimed = delegate(&jwt, "reclaimed-kid", None).await;
        let (status, body) = call(
            app,
            Method::DELETE,
            "/v1/agent/sub-agents/reclaimed-kid",
            Some(&jwt),
            json!({}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_revoked(&reclaimed, "sub-agent reclaim").await;
        let parent_record = record(&parent).await;
        assert_eq!(
            (&parent_record["status"], &parent_record["revokedAt"]),
            (&json!("active"), &Value::Null)
        );

        // The reaper, once a delegated agent's TTL has run out.
        let short = delegate(&jwt, "short-kid", Some(1)).await;
        assert!(record(&short).await["revokedAt"].is_null());
        assert!(state.reap_expired(now() + time::Duration::seconds(5)).await >= 1);
        assert_revoked(&short, "expiry").await;
    })
    .await;
}

async fn insert_agents(store: &Store, tenant: TenantId, prefix: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..count {
        let mut new = NewAgent::named(
            AgentSlug::parse(&format!("{prefix}-{i:04}")).unwrap(),
            AgentOrigin::Api,
        )
        .starting_in(LifecycleState::Active);
        new.trust_level = TrustLevel::ALL[i % 4];
        ids.push(
            store
                .create_agent(tenant, new, now())
                .await
                .unwrap()
                .id
                .to_type_id(),
        );
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_return_every_existing_agent_once_while_others_come_and_go() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (app, tenant) = (&t.app, t.tenant);
        let key = tenant_key(&db.store, tenant, ApiKeyRole::Operator).await;
        let key = key.expose();
        let existing = insert_agents(&db.store, tenant, "old", 250).await;

        // Inserts run concurrently with the paging, and some existing agents
        // are revoked between pages: none of it may disturb the listing.
        let store = db.store.clone();
        let inserting = tokio::spawn(async move { insert_agents(&store, tenant, "new", 60).await });
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &cursor {
                Some(cursor) => format!("/api/v1/agents?limit=37&cursor={cursor}"),
                None => "/api/v1/agents?limit=37".to_owned(),
            };
            let (status, page) = registry(app, Method::GET, &path, key, None, None).await;
            assert_eq!(status, 200, "{page}");
            for agent in page["data"].as_array().unwrap() {
                *seen
                    .entry(agent["agentId"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
            pages += 1;
            if pages == 2 {
                // Certainly between two reads, whatever the spawned task does.
                insert_agents(&db.store, tenant, "between", 5).await;
            }
            if pages == 3 {
                let revoke = format!("/api/v1/agents/{}", existing[200]);
                assert_eq!(
                    registry(app, Method::DELETE, &revoke, key, None, None)
                        .await
                        .0,
                    200
                );
            }
            if page["pagination"]["hasMore"] == false {
                assert!(page["pagination"]["cursor"].is_null());
                break;
            }
            cursor = Some(page["pagination"]["cursor"].as_str().unwrap().to_owned());
        }
        let added = inserting.await.unwrap();
        for id in &existing {
            assert_eq!(seen.get(id), Some(&1), "{id} seen {:?} times", seen.get(id));
        }
        assert!(
            seen.values().all(|&times| times == 1),
            "an agent came twice"
        );
        let known = |id: &String| existing.contains(id) || added.contains(id);
        assert!(
            seen.keys().filter(|id| !known(id)).count() <= 5,
            "only the 5 inserted between pages are new"
        );

        // Filters page the same way.
        let (_, high) = registry(
            app,
            Method::GET,
            "/api/v1/agents?trustLevel=high&limit=100",
            key,
            None,
            None,
        )
        .await;
        assert!(
            high["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|agent| agent["trustLevel"] == "high")
        );
        let high_index = |i: &usize| TrustLevel::ALL[i % 4] == TrustLevel::High;
        let expected = (0..250).filter(high_index).count()
            + (0..60).filter(high_index).count()
            + (0..5).filter(high_index).count();
        assert_eq!(high["data"].as_array().unwrap().len(), expected);
        let (_, revoked) = registry(
            app,
            Method::GET,
            "/api/v1/agents?status=revoked",
            key,
            None,
            None,
        )
        .await;
        assert_eq!(revoked["data"].as_array().unwrap().len(), 1);
        assert_eq!(revoked["data"][0]["agentId"], existing[200].as_str());
        let (_, first) = registry(app, Method::GET, "/api/v1/agents", key, None, None).await;
        assert_eq!(
            first["data"].as_array().unwrap().len(),
            20,
            "the default page is 20"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_past_100_is_clamped_to_100() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (app, tenant) = (&t.app, t.tenant);
        let key = tenant_key(&db.store, tenant, ApiKeyRole::Operator).await;
        let key = key.expose();
        insert_agents(&db.store, tenant, "many", 105).await;

        let (status, page) = registry(
            app,
            Method::GET,
            "/api/v1/agents?limit=500",
            key,
            None,
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["data"].as_array().unwrap().len(), 100);
        assert_eq!(page["pagination"]["hasMore"], true);
        let cursor = page["pagination"]["cursor"].as_str().unwrap();
        let (status, rest) = registry(
            app,
            Method::GET,
            &format!("/api/v1/agents?limit=101&cursor={cursor}"),
            key,
            None,
            None,
        )
        .await;
        assert_eq!(status, 200, "{rest}");
        assert_eq!(rest["data"].as_array().unwrap().len(), 5);
        assert_eq!(rest["pagination"]["hasMore"], false);
        for query in ["limit=0", "limit=-5", "limit=many"] {
            let path = format!("/api/v1/agents?{query}");
            let (status, problem) = registry(app, Method::GET, &path, key, None, None).await;
            assert_eq!(
                (status, problem["code"].as_str()),
                (400, Some("invalid_query")),
                "{query}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_400_never_a_500() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (app, tenant) = (&t.app, t.tenant);
        let key = tenant_key(&db.store, tenant, ApiKeyRole::Admin).await;
        let key = key.expose();
        let bodies = [
            json!({ "name": "ok-name", "trustLevel": "extreme" }),
            json!({ "name": "ok-name", "trustLevel": 3 }),
            json!({ "name": "ok-name", "scopes": "read:all" }),
            json!({ "name": "ok-name", "scopes": [""] }),
            json!({ "name": "ok-name", "scopes": ["read customers"] }),
            json!({ "name": "ok-name", "scopes": ["a", "a"] }),
            json!({ "name": "ok-name", "scopes": [1, 2] }),
            json!({ "name": " padded name" }),
            json!({ "name": "ok-name", "metadata": [1] }),
            json!({ "name": "ok-name", "surprise": true }),
            json!({ "description": "no name" }),
            json!([]),
        ];
        for body in bodies {
            let (status, problem) = registry(
                app,
                Method::POST,
                "/api/v1/agents",
                key,
                Some("acme"),
                Some(body.clone()),
            )
            .await;
            assert_eq!(status, 400, "{body} -> {problem}");
        }
        for query in [
            "limit=0",
            "limit=abc",
            "limit=-1",
            "limit=1.5",
            "cursor=garbage",
            "cursor=djE6YWdlbnRfeHh4",
            "cursor=",
            "trustLevel=extreme",
            "status=deleted",
            "status=",
        ] {
            let path = format!("/api/v1/agents?{query}");
            let (status, problem) = registry(app, Method::GET, &path, key, None, None).await;
            assert_eq!(
                (status, problem["code"].as_str()),
                (400, Some("invalid_query")),
                "{query}"
            );
        }
        for path in [
            "/api/v1/agents/nope",
            "/api/v1/agents/agent_00000000000000000000000000",
        ] {
            assert_eq!(
                registry(app, Method::GET, path, key, None, None).await.0,
                404
            );
            assert_eq!(
                registry(app, Method::DELETE, path, key, None, None).await.0,
                404
            );
        }
        assert_eq!(
            db.count("agents").await,
            0,
            "nothing was created by a refusal"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn any_name_the_seed_accepts_is_one_agent_reachable_by_its_slug() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (app, tenant) = (&t.app, t.tenant);
        let key = tenant_key(&db.store, tenant, ApiKeyRole::Admin).await;
        let (key, tenant_id) = (key.expose(), tenant.to_string());
        let mut body = seed_registration();
        body["name"] = json!("Research Assistant #2");

        let (status, created) = registry(
            app,
            Method::POST,
            "/api/v1/agents",
            key,
            Some(&tenant_id),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["data"]["name"], "Research Assistant #2");
        let id = created["data"]["agentId"].as_str().unwrap().to_owned();
        let (_, fetched) = registry(
            app,
            Method::GET,
            &format!("/api/v1/agents/{id}"),
            key,
            Some(&tenant_id),
            None,
        )
        .await;
        assert_eq!(
            fetched["data"]["name"], "Research Assistant #2",
            "{fetched}"
        );

        // Seeds 000/001 know it by its slug, which docs/api.md derives.
        let slug = agentry_domain::AgentName::parse("Research Assistant #2")
            .unwrap()
            .slug();
        assert!(slug.as_str().starts_with("research-assistant-2-"), "{slug}");
        let (status, profile) = get(app, &format!("/v1/agent/profiles/{slug}"), Some(key)).await;
        assert_eq!(status, 200, "{profile}");
        assert_eq!(profile["profile"]["agentId"], slug.as_str(), "{profile}");

        // Case cannot make a second agent of the same name.
        body["name"] = json!("research assistant #2");
        let (status, refused) = registry(
            app,
            Method::POST,
            "/api/v1/agents",
            key,
            Some(&tenant_id),
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (status, refused["code"].as_str()),
            (409, Some("conflict")),
            "{refused}"
        );

        // A name that is already a slug is its own slug.
        body["name"] = json!("billing-bot");
        let (status, _) = registry(
            app,
            Method::POST,
            "/api/v1/agents",
            key,
            Some(&tenant_id),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 201);
        let (status, _) = get(app, "/v1/agent/profiles/billing-bot", Some(key)).await;
        assert_eq!(status, 200);

        // What cannot be a name is a 400.
        for bad in [
            json!(""),
            json!(" padded"),
            json!("tab\there"),
            json!("x".repeat(101)),
        ] {
            body["name"] = bad.clone();
            let (status, refused) = registry(
                app,
                Method::POST,
                "/api/v1/agents",
                key,
                Some(&tenant_id),
                Some(body.clone()),
            )
            .await;
            assert_eq!(status, 400, "{bad}: {refused}");
        }
    })
    .await;
}
