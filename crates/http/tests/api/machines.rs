//! Seed 003 end to end in process, on both backends: the operator creates
//! and fills an instance, the machine walks `/internal/bootstrap/*`. The
//! client certificate a TLS handshake would carry is put on the request by
//! the test app (from the `x-test-peer-certificate` header, base64 DER):
//! everything after the handshake runs as in production. The real listener
//! is driven with curl and openssl in `bins/agentryd/tests/machine.rs`.

use actix_web::HttpMessage;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::test;
use agentry_auth::{Audience, CertificateAuthority};
use agentry_domain::{ApiKeyRole, LifecycleState};
use agentry_http::tls::PeerCertificates;
use agentry_store::{NewMachineInstance, NewToken, TokenPurpose, now};
use agentry_testkit::on_both_backends;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::Duration;

use crate::test_app::TestApp;
use crate::{agent, call, get, send, tenant_key};

const TEST_CERTIFICATE_HEADER: &str = "x-test-peer-certificate";

/// What the TLS layer would have done with a presented certificate.
pub(crate) fn present_test_certificate(request: &ServiceRequest) {
    let der = request
        .headers()
        .get(TEST_CERTIFICATE_HEADER)
        .and_then(|value| STANDARD.decode(value.as_bytes()).ok());
    if let Some(der) = der {
        let certificates: Vec<CertificateDer<'static>> = vec![der.into()];
        request
            .extensions_mut()
            .insert(PeerCertificates(certificates.into()));
    }
}

/// A machine: its key and, once issued, its certificate.
struct Machine {
    key: rcgen::KeyPair,
    certificate: Option<Vec<u8>>,
}

impl Machine {
    fn new() -> Self {
        Self {
            key: rcgen::KeyPair::generate().unwrap(),
            certificate: None,
        }
    }

    fn csr(&self) -> String {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "machine-1");
        params.serialize_request(&self.key).unwrap().pem().unwrap()
    }

    fn take_certificate(&mut self, pem: &str) {
        use rustls_pki_types::pem::PemObject;
        self.certificate = Some(
            CertificateDer::from_pem_slice(pem.as_bytes())
                .unwrap()
                .to_vec(),
        );
    }
}

fn sha256_label(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256:{hex}")
}

const BUNDLE: &[u8] = b"pretend this is an encrypted tarball \x00\x01\x02";
const WEBSITE: &[u8] = b"<html>static site</html>";
const DECRYPTION_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// Sends `request` presenting `certificate` (DER), if any.
async fn with_certificate<S>(
    app: &S,
    request: test::TestRequest,
    path: &str,
    certificate: Option<&[u8]>,
    credential: Option<&str>,
) -> (u16, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let request = match certificate {
        Some(der) => request.insert_header((TEST_CERTIFICATE_HEADER, STANDARD.encode(der))),
        None => request,
    };
    send(app, request, path, credential).await
}

/// GETs a download; status and raw bytes.
async fn download<S>(
    app: &S,
    path: &str,
    certificate: Option<&[u8]>,
    token: Option<&str>,
) -> (u16, Vec<u8>)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let mut request = test::TestRequest::get().uri(path);
    if let Some(der) = certificate {
        request = request.insert_header((TEST_CERTIFICATE_HEADER, STANDARD.encode(der)));
    }
    if let Some(token) = token {
        request = request.insert_header(("x-download-token", token));
    }
    let response = test::call_service(app, request.to_request()).await;
    let status = response.status().as_u16();
    if status >= 400 {
        assert_eq!(
            response.headers().get("content-type").unwrap(),
            "application/problem+json"
        );
    }
    (status, test::read_body(response).await.to_vec())
}

async fn upload<S>(
    app: &S,
    key: &str,
    path: &str,
    body: impl Into<actix_web::web::Bytes>,
    plain: Option<&str>,
) -> (u16, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let mut request = test::TestRequest::put()
        .uri(path)
        .insert_header(("content-type", "application/octet-stream"))
        .set_payload(body);
    if let Some(plain) = plain {
        request = request.insert_header(("x-bundle-plain-hash", plain));
    }
    send(app, request, path, Some(key)).await
}

/// An instance with everything attached; returns its id and bootstrap token.
async fn ready_instance<S>(app: &S, key: &str, agent_id: Option<&str>) -> (String, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let (status, created) = call(
        app,
        Method::POST,
        "/v1/provisioning/instances",
        Some(key),
        json!({
            "name": "build-box-1",
            "agent_id": agent_id,
            "agent_config": { "model": "small", "region": "eu" },
            "agent_secrets": { "OPENAI_API_KEY": "sk-test-secret" },
            "skill_lockfile": { "skills": { "search": "1.2.0" } },
            "decryption_key_hex": DECRYPTION_KEY,
        }),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["instance_id"].as_str().unwrap().to_owned();
    let token = created["bootstrap_token"].as_str().unwrap().to_owned();
    assert!(token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(created.get("agent_secrets").is_none(), "{created}");
    let (status, body) = upload(
        app,
        key,
        &format!("/v1/provisioning/instances/{id}/artifact"),
        BUNDLE,
        Some(&sha256_label(b"the plaintext")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["artifact_cipher_hash"], sha256_label(BUNDLE));
    (id, token)
}

async fn issue<S>(app: &S, token: &str, machine: &mut Machine) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let (status, body) = call(
        app,
        Method::POST,
        "/internal/bootstrap/cert",
        None,
        json!({ "bootstrap_token": token, "csr_pem": machine.csr() }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    machine.take_certificate(body["cert_pem"].as_str().unwrap());
    body["session_id"].as_str().unwrap().to_owned()
}

async fn fetch_secrets<S>(app: &S, machine: &Machine, session: &str) -> (u16, Value)
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    let path = "/internal/bootstrap/secrets";
    with_certificate(
        app,
        test::TestRequest::post()
            .uri(path)
            .set_json(json!({ "session_id": session })),
        path,
        machine.certificate.as_deref(),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_machine_walks_the_whole_script() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (app, tenant) = (&t.app, t.tenant);
        let key = tenant_key(&db.store, tenant, ApiKeyRole::Operator).await;
        let key = key.expose();
        let (id, token) = ready_instance(app, key, None).await;
        let (status, _) = upload(
            app,
            key,
            &format!("/v1/provisioning/instances/{id}/website"),
            WEBSITE,
            None,
        )
        .await;
        assert_eq!(status, 200);

        // Before any certificate, the machine can already leave traces.
        let (status, body) = call(
            app,
            Method::POST,
            "/internal/bootstrap/early-diagnostic",
            None,
            json!({ "bootstrap_token": token, "instance_id": id, "label": "phase-0", "message": "booted" }),
        )
        .await;
        assert_eq!(status, 200, "{body}");

        let mut machine = Machine::new();
        let session = issue(app, &token, &mut machine).await;
        let (status, secrets) = fetch_secrets(app, &machine, &session).await;
        assert_eq!(status, 200, "{secrets}");
        assert_eq!(secrets["decryption_key_hex"], DECRYPTION_KEY);
        assert_eq!(secrets["artifact_cipher_hash"], sha256_label(BUNDLE));
        assert_eq!(secrets["bundle_plain_hash"], sha256_label(b"the plaintext"));
        assert_eq!(secrets["agent_config"]["model"], "small");
        assert_eq!(secrets["agent_secrets"]["OPENAI_API_KEY"], "sk-test-secret");
        assert_eq!(secrets["skill_lockfile"]["skills"]["search"], "1.2.0");
        let download_token = secrets["artifact_download_token"].as_str().unwrap();
        assert_eq!(download_token.len(), 64);
        let callback = secrets["callback_jwt"].as_str().unwrap();

        let certificate = machine.certificate.as_deref();
        let (status, bytes) = download(
            app,
            &format!("/internal/bootstrap/artifacts/{id}"),
            certificate,
            Some(download_token),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(sha256_label(&bytes), secrets["artifact_cipher_hash"]);
        let (status, bytes) = download(
            app,
            &format!("/internal/bootstrap/artifacts/{id}/website"),
            certificate,
            Some(download_token),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(bytes, WEBSITE);

        for (seq, stage) in [(1, "installing"), (2, "configuring"), (3, "securing"), (4, "ready")] {
            let (status, body) = call(
                app,
                Method::POST,
                "/internal/bootstrap/callback",
                Some(callback),
                json!({ "seq": seq, "stage": stage, "message": format!("{stage} done") }),
            )
            .await;
            assert_eq!(status, 200, "{stage}: {body}");
            assert_eq!(body["status"], "ok");
        }
        let (status, _) = call(
            app,
            Method::POST,
            "/internal/bootstrap/diagnostic",
            Some(callback),
            json!({ "label": "after-ready", "level": "warn", "message": "disk 80% full" }),
        )
        .await;
        assert_eq!(status, 200);

        let (status, view) = get(app, &format!("/v1/provisioning/instances/{id}"), Some(key)).await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(view["callback"]["seq"], 4);
        assert_eq!(view["callback"]["stage"], "ready");
        assert!(view["bootstrap_token"]["consumed_at"].is_string(), "{view}");
        assert!(view.get("agent_secrets").is_none());
        let (_, logs) = get(app, &format!("/v1/provisioning/instances/{id}/logs"), Some(key)).await;
        let stages: Vec<&str> = logs["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|log| log["stage"].as_str().unwrap())
            .collect();
        assert_eq!(
            stages,
            ["phase-0", "installing", "configuring", "securing", "ready", "after-ready"]
        );
        assert_eq!(logs["logs"][5]["level"], "warn");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_error_of_the_seed_is_answered_as_documented() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, tenant) = (&t.state, &t.app, t.tenant);
        let key = tenant_key(&db.store, tenant, ApiKeyRole::Operator).await;
        let key = key.expose();
        let (id, token) = ready_instance(app, key, None).await;
        let cert = |body: Value| call(app, Method::POST, "/internal/bootstrap/cert", None, body);

        // /cert: a malformed token or CSR is 400, an unknown token 401.
        let machine = Machine::new();
        let (status, _) = cert(json!({ "bootstrap_token": "short", "csr_pem": machine.csr() })).await;
        assert_eq!(status, 400);
        let (status, _) = cert(json!({ "bootstrap_token": "a".repeat(64), "csr_pem": machine.csr() })).await;
        assert_eq!(status, 401);
        let garbage = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            "QUJD".repeat(40)
        );
        let (status, body) = cert(json!({ "bootstrap_token": token, "csr_pem": garbage })).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("invalid_csr")));
        let (status, _) = cert(json!({ "bootstrap_token": token, "csr_pem": "too short" })).await;
        assert_eq!(status, 400);

        // /secrets: no certificate, a stranger's, an expired one: 401.
        let mut machine = Machine::new();
        let session = issue(app, &token, &mut machine).await;
        let (status, _) = fetch_secrets(app, &Machine::new(), &session).await;
        assert_eq!(status, 401);
        let (stranger, _) = CertificateAuthority::generate(now()).unwrap();
        let foreign = stranger
            .sign_machine_csr(&machine.csr(), uuid::Uuid::parse_str(&id).unwrap(), uuid::Uuid::parse_str(&session).unwrap(), now(), Duration::hours(1))
            .unwrap();
        let impostor = Machine { key: rcgen::KeyPair::generate().unwrap(), certificate: Some(foreign.der.to_vec()) };
        let (status, body) = fetch_secrets(app, &impostor, &session).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("invalid_client_certificate")));
        let expired = state
            .keys
            .ca()
            .authority()
            .sign_machine_csr(&machine.csr(), uuid::Uuid::parse_str(&id).unwrap(), uuid::Uuid::parse_str(&session).unwrap(), now() - Duration::hours(3), Duration::hours(1))
            .unwrap();
        let late = Machine { key: rcgen::KeyPair::generate().unwrap(), certificate: Some(expired.der.to_vec()) };
        assert_eq!(fetch_secrets(app, &late, &session).await.0, 401);

        // Unknown session 404; another session's certificate 401.
        let (status, _) = fetch_secrets(app, &machine, &uuid::Uuid::now_v7().to_string()).await;
        assert_eq!(status, 404);
        let mut other = Machine::new();
        let other_session = issue(app, &token, &mut other).await;
        assert_eq!(fetch_secrets(app, &other, &session).await.0, 401);

        // The first /secrets wins; again, or through another session: 410.
        assert_eq!(fetch_secrets(app, &machine, &session).await.0, 200);
        let (status, body) = fetch_secrets(app, &machine, &session).await;
        assert_eq!((status, body["code"].as_str()), (410, Some("session_complete")));
        assert_eq!(fetch_secrets(app, &other, &other_session).await.0, 410);
        // The token is now used: /cert refuses it.
        let (status, _) = cert(json!({ "bootstrap_token": token, "csr_pem": Machine::new().csr() })).await;
        assert_eq!(status, 401);

        // Downloads: certificate of another instance 401, no token 401.
        let (other_id, other_token) = ready_instance(app, key, None).await;
        let mut neighbour = Machine::new();
        let neighbour_session = issue(app, &other_token, &mut neighbour).await;
        let (_, neighbour_secrets) = fetch_secrets(app, &neighbour, &neighbour_session).await;
        let neighbour_token = neighbour_secrets["artifact_download_token"].as_str().unwrap();
        let bundle_path = format!("/internal/bootstrap/artifacts/{other_id}");
        let (status, _) = download(app, &bundle_path, machine.certificate.as_deref(), Some(neighbour_token)).await;
        assert_eq!(status, 401);
        let (status, _) = download(app, &bundle_path, neighbour.certificate.as_deref(), None).await;
        assert_eq!(status, 401);
        let (status, _) = download(app, &bundle_path, None, Some(neighbour_token)).await;
        assert_eq!(status, 401);
        // No website was provisioned: 404, each try counted; then 429.
        let website_path = format!("/internal/bootstrap/artifacts/{other_id}/website");
        for _ in 0..3 {
            let (status, _) = download(app, &website_path, neighbour.certificate.as_deref(), Some(neighbour_token)).await;
            assert_eq!(status, 404);
        }
        let (status, _) = download(app, &website_path, neighbour.certificate.as_deref(), Some(neighbour_token)).await;
        assert_eq!(status, 429);
        // A completed transfer uses the token up.
        let (status, bytes) = download(app, &bundle_path, neighbour.certificate.as_deref(), Some(neighbour_token)).await;
        assert_eq!((status, bytes.as_slice()), (200, BUNDLE));
        let mut used = 0;
        for _ in 0..50 {
            used = download(app, &bundle_path, neighbour.certificate.as_deref(), Some(neighbour_token)).await.0;
            if used == 401 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(used, 401, "the token must be used up after a completed transfer");

        // /callback: no or bad token 401, sequence and stage violations 400,
        // an instance that does not exist 404.
        let callback = neighbour_secrets["callback_jwt"].as_str().unwrap();
        let path = "/internal/bootstrap/callback";
        let step = |seq: i64, stage: &str| json!({ "seq": seq, "stage": stage });
        assert_eq!(post(app, path, None, step(1, "installing")).await, 401);
        assert_eq!(post(app, path, Some("not.a.jwt"), step(1, "installing")).await, 401);
        assert_eq!(post(app, path, Some(callback), step(2, "installing")).await, 400);
        assert_eq!(post(app, path, Some(callback), step(5, "ready")).await, 400);
        assert_eq!(post(app, path, Some(callback), step(1, "booting")).await, 400);
        assert_eq!(post(app, path, Some(callback), step(1, "error")).await, 400);
        assert_eq!(post(app, path, Some(callback), step(1, "installing")).await, 200);
        assert_eq!(post(app, path, Some(callback), step(1, "installing")).await, 400);
        let failed = json!({ "seq": 2, "stage": "error", "message": "apt failed" });
        assert_eq!(post(app, path, Some(callback), failed).await, 200);
        assert_eq!(post(app, path, Some(callback), step(3, "securing")).await, 400);
        let stray = state
            .mint(Audience::Callback, uuid::Uuid::now_v7(), tenant, 0, now(), Duration::hours(1))
            .unwrap()
            .0;
        assert_eq!(post(app, path, Some(&stray), step(1, "installing")).await, 404);
        // An agent token is not a callback token.
        let bound = agent(&db.store, tenant, "worker-1", LifecycleState::Active).await;
        let agent_token = state.mint_agent_token(&bound, now()).unwrap().0;
        assert_eq!(post(app, path, Some(&agent_token), step(1, "installing")).await, 401);

        // /diagnostic: the label, level and message are checked.
        let path = "/internal/bootstrap/diagnostic";
        let note = |label: String, level: &str, message: String| {
            json!({ "label": label, "level": level, "message": message })
        };
        let cases = [
            (note(String::new(), "info", "x".into()), 400),
            (note("x".repeat(81), "info", "x".into()), 400),
            (note("x".into(), "debug", "x".into()), 400),
            (note("x".into(), "info", "y".repeat(2001)), 400),
            (note("x".into(), "error", "y".repeat(2000)), 200),
        ];
        for (body, expected) in cases {
            assert_eq!(post(app, path, Some(callback), body).await, expected);
        }

        // /early-diagnostic: the wrong token for the instance is 401.
        let (third_id, third_token) = ready_instance(app, key, None).await;
        let path = "/internal/bootstrap/early-diagnostic";
        let early = |token: &str, instance: &str| {
            json!({ "bootstrap_token": token, "instance_id": instance, "label": "boot", "message": "" })
        };
        let unknown = uuid::Uuid::now_v7().to_string();
        assert_eq!(post(app, path, None, early(&other_token, &third_id)).await, 401);
        assert_eq!(post(app, path, None, early(&third_token, &unknown)).await, 401);
        assert_eq!(post(app, path, None, early(&third_token, &third_id)).await, 200);
        // ...and a used one too.
        assert_eq!(post(app, path, None, early(&other_token, &other_id)).await, 401);
    })
    .await;
}

/// POSTs `body` to `path`; the status.
async fn post<S>(app: &S, path: &str, credential: Option<&str>, body: Value) -> u16
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    call(app, Method::POST, path, credential, body).await.0
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_secrets_calls_release_the_secrets_once() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (app, tenant) = (&t.app, t.tenant);
        let key = tenant_key(&db.store, tenant, ApiKeyRole::Operator).await;
        let (_, token) = ready_instance(app, key.expose(), None).await;
        let mut machine = Machine::new();
        let session = issue(app, &token, &mut machine).await;
        let calls = (0..20).map(|_| fetch_secrets(app, &machine, &session));
        let statuses: Vec<u16> = futures_util::future::join_all(calls)
            .await
            .into_iter()
            .map(|(status, _)| status)
            .collect();
        assert_eq!(
            statuses.iter().filter(|&&status| status == 200).count(),
            1,
            "{statuses:?}"
        );
        assert!(
            statuses
                .iter()
                .all(|&status| status == 200 || status == 410),
            "{statuses:?}"
        );
        assert_eq!(db.count("provisioning_sessions").await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_that_expired_and_instances_not_ready_are_refused() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (app, tenant) = (&t.app, t.tenant);
        let key = tenant_key(&db.store, tenant, ApiKeyRole::Operator).await;
        let key = key.expose();

        // Nothing attached yet: /cert says so without using the token up.
        let (status, created) = call(
            app,
            Method::POST,
            "/v1/provisioning/instances",
            Some(key),
            json!({ "name": "bare" }),
        )
        .await;
        assert_eq!(status, 201);
        let token = created["bootstrap_token"].as_str().unwrap();
        let (status, body) = call(
            app,
            Method::POST,
            "/internal/bootstrap/cert",
            None,
            json!({ "bootstrap_token": token, "csr_pem": Machine::new().csr() }),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("instance_not_ready"))
        );

        // An expired bootstrap token: 401 at /cert.
        let expired = "e".repeat(64);
        let id = uuid::Uuid::now_v7();
        db.store
            .create_machine_instance(
                tenant,
                NewMachineInstance {
                    id,
                    name: "late".into(),
                    agent_id: None,
                    agent_config: json!({}),
                    agent_secrets_sealed: None,
                    skill_lockfile: json!({}),
                    decryption_key_sealed: None,
                    bootstrap_token: NewToken {
                        purpose: TokenPurpose::Bootstrap,
                        token_hash: agentry_auth::hash_secret(&expired).0,
                        subject_id: id,
                        max_attempts: 1,
                        expires_at: now() - Duration::minutes(1),
                    },
                },
                now() - Duration::hours(1),
            )
            .await
            .unwrap();
        let (status, _) = call(
            app,
            Method::POST,
            "/internal/bootstrap/cert",
            None,
            json!({ "bootstrap_token": expired, "csr_pem": Machine::new().csr() }),
        )
        .await;
        assert_eq!(status, 401);

        // The operator side: bad input 400, another tenant's instance 404,
        // a key without the permission 403.
        let (status, _) = call(
            app,
            Method::POST,
            "/v1/provisioning/instances",
            Some(key),
            json!({ "name": "", "agent_config": [1], "decryption_key_hex": "XYZ" }),
        )
        .await;
        assert_eq!(status, 400);
        // Bound to an agent the tenant does not have: 404.
        let (status, problem) = call(
            app,
            Method::POST,
            "/v1/provisioning/instances",
            Some(key),
            json!({ "name": "edge-9", "agent_id": "nobody" }),
        )
        .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (404, Some("not_found")),
            "{problem}"
        );
        let other = crate::tenant(&db.store, "other").await;
        let other_key = tenant_key(&db.store, other, ApiKeyRole::Admin).await;
        let path = format!(
            "/v1/provisioning/instances/{}",
            created["instance_id"].as_str().unwrap()
        );
        assert_eq!(get(app, &path, Some(other_key.expose())).await.0, 404);
        let auditor = tenant_key(&db.store, tenant, ApiKeyRole::Auditor).await;
        assert_eq!(get(app, &path, Some(auditor.expose())).await.0, 403);
        let (status, _) = upload(app, key, &format!("{path}/artifact"), BUNDLE, None).await;
        assert_eq!(status, 400, "the bundle needs its plaintext hash");
        let (status, _) = upload(
            app,
            key,
            &format!("{path}/website"),
            WEBSITE,
            Some("md5:abc"),
        )
        .await;
        assert_eq!(status, 400, "a hash header is sha256:<64 hex> or absent");

        // PATCH: what is attached changes; a document that is no object is 400.
        let (status, patched) = call(
            app,
            Method::PATCH,
            &path,
            Some(key),
            json!({ "agent_config": { "model": "large" } }),
        )
        .await;
        assert_eq!(
            (status, &patched["agent_config"]["model"]),
            (200, &json!("large")),
            "{patched}"
        );
        let (status, _) = call(
            app,
            Method::PATCH,
            &path,
            Some(key),
            json!({ "agent_config": [1] }),
        )
        .await;
        assert_eq!(status, 400);
        // Another tenant's instance does not exist for any operator route.
        let other_key = other_key.expose();
        let (status, _) = call(
            app,
            Method::PATCH,
            &path,
            Some(other_key),
            json!({ "agent_config": {} }),
        )
        .await;
        assert_eq!(status, 404);
        assert_eq!(
            get(app, &format!("{path}/logs"), Some(other_key)).await.0,
            404
        );
        for (kind, plain) in [("artifact", Some(sha256_label(b"p"))), ("website", None)] {
            let (status, _) = upload(
                app,
                other_key,
                &format!("{path}/{kind}"),
                BUNDLE,
                plain.as_deref(),
            )
            .await;
            assert_eq!(status, 404, "{kind}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_machine_certificate_reads_its_agents_own_state_and_nothing_more() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (app, tenant) = (&t.app, t.tenant);
        let key = tenant_key(&db.store, tenant, ApiKeyRole::Operator).await;
        agent(&db.store, tenant, "builder", LifecycleState::Active).await;
        let (_, token) = ready_instance(app, key.expose(), Some("builder")).await;
        let mut machine = Machine::new();
        let session = issue(app, &token, &mut machine).await;
        let certificate = machine.certificate.as_deref();

        let request = |method: Method, path: &'static str| {
            with_certificate(
                app,
                test::TestRequest::default()
                    .method(method)
                    .uri(path)
                    .set_json(json!({ "agent_id": "builder", "amount_usd": 1 })),
                path,
                certificate,
                None,
            )
        };
        // Until its session has handed out the secrets, the certificate is
        // nobody's; a second /cert's certificate stays that way.
        let (status, body) = request(Method::GET, "/v1/agent/status").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("certificate_session_incomplete"))
        );
        let mut spare = Machine::new();
        issue(app, &token, &mut spare).await;
        assert_eq!(fetch_secrets(app, &machine, &session).await.0, 200);
        let spare_status = with_certificate(
            app,
            test::TestRequest::get().uri("/v1/agent/status"),
            "/v1/agent/status",
            spare.certificate.as_deref(),
            None,
        )
        .await
        .0;
        assert_eq!(spare_status, 401);
        let (status, body) = request(Method::GET, "/v1/agent/status").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["profile"]["agentId"], "builder");
        assert_eq!(request(Method::GET, "/v1/agent/limits/me").await.0, 200);
        let (status, body) = request(Method::POST, "/v1/agent/spend").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("certificate_not_enough"))
        );
        let (status, body) = request(Method::POST, "/v1/agent/bootstrap").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("api_key_required"))
        );

        // An instance bound to no agent: its certificate is no agent's.
        let (_, token) = ready_instance(app, key.expose(), None).await;
        let mut unbound = Machine::new();
        let unbound_session = issue(app, &token, &mut unbound).await;
        assert_eq!(fetch_secrets(app, &unbound, &unbound_session).await.0, 200);
        let (status, _) = with_certificate(
            app,
            test::TestRequest::get().uri("/v1/agent/status"),
            "/v1/agent/status",
            unbound.certificate.as_deref(),
            None,
        )
        .await;
        assert_eq!(status, 403);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_provision_log_refuses_more_diagnostics() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, tenant) = (&t.state, &t.app, t.tenant);
        let key = tenant_key(&db.store, tenant, ApiKeyRole::Operator).await;
        let (id, token) = ready_instance(app, key.expose(), None).await;
        let path = "/internal/bootstrap/early-diagnostic";
        let note = json!({ "bootstrap_token": token, "instance_id": id, "label": "x", "message": "" });
        assert_eq!(post(app, path, None, note.clone()).await, 200);
        // Fill the log to its 10,000 lines in one statement.
        let fill = match db.backend() {
            agentry_store::Backend::Postgres => {
                "INSERT INTO provision_logs (id, tenant_id, instance_id, stage, level, message, at) \
                 SELECT gen_random_uuid(), tenant_id, id, 'x', 'info', '', created_at \
                 FROM provisioning_instances, generate_series(1, 9999)"
            }
            agentry_store::Backend::Sqlite => {
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 9999) \
                 INSERT INTO provision_logs (id, tenant_id, instance_id, stage, level, message, at) \
                 SELECT randomblob(16), tenant_id, id, 'x', 'info', '', created_at \
                 FROM provisioning_instances, n"
            }
        };
        db.execute_raw(fill).await;
        let (status, problem) = call(app, Method::POST, path, None, note).await;
        assert_eq!((status, problem["code"].as_str()), (429, Some("provision_log_full")));
        // The machine's own diagnostics after /secrets meet the same wall.
        let instance = uuid::Uuid::parse_str(&id).unwrap();
        let callback = state.mint(Audience::Callback, instance, tenant, 0, now(), Duration::hours(1)).unwrap().0;
        let late = json!({ "label": "x", "level": "info", "message": "" });
        let (status, problem) = call(app, Method::POST, "/internal/bootstrap/diagnostic", Some(&callback), late).await;
        assert_eq!((status, problem["code"].as_str()), (429, Some("provision_log_full")));
        let (_, logs) = get(app, &format!("/v1/provisioning/instances/{id}/logs"), Some(key.expose())).await;
        assert_eq!(logs["total"], 10_000);
        assert_eq!(logs["logs"].as_array().map(Vec::len), Some(1000));
    })
    .await;
}

/// The documented errors the walk above does not meet: bodies the machine
/// routes refuse, uploads too large or not what their hash header says,
/// a bundle tried too often, diagnostics for a gone instance or a full log.
#[tokio::test(flavor = "multi_thread")]
async fn the_machine_routes_refuse_bad_bodies_uploads_and_retries() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db).start().await;
        let (state, app, tenant) = (&t.state, &t.app, t.tenant);
        let key = tenant_key(&db.store, tenant, ApiKeyRole::Operator).await;
        let key = key.expose();
        let (id, token) = ready_instance(app, key, None).await;
        let mut machine = Machine::new();
        let session = issue(app, &token, &mut machine).await;
        let certificate = machine.certificate.as_deref();

        // /secrets: a body that is not the request, too large, or not JSON.
        let path = "/internal/bootstrap/secrets";
        let raw = |content_type: &str, body: Vec<u8>| {
            test::TestRequest::post()
                .uri(path)
                .insert_header(("content-type", content_type.to_owned()))
                .set_payload(body)
        };
        let oversized = format!(
            r#"{{"session_id": "{session}", "pad": "{}"}}"#,
            "x".repeat(70_000)
        );
        let cases = [
            (
                raw("application/json", br#"{"session": 1}"#.to_vec()),
                400,
                "invalid_json",
            ),
            (
                raw("application/json", oversized.into_bytes()),
                413,
                "payload_too_large",
            ),
            (
                raw("text/plain", session.clone().into_bytes()),
                415,
                "unsupported_media_type",
            ),
        ];
        for (request, expected, code) in cases {
            let (status, problem) = with_certificate(app, request, path, certificate, None).await;
            assert_eq!(
                (status, problem["code"].as_str()),
                (expected, Some(code)),
                "{problem}"
            );
        }
        // None of them used the session up.
        let (status, secrets) = fetch_secrets(app, &machine, &session).await;
        assert_eq!(status, 200, "{secrets}");
        let download_token = secrets["artifact_download_token"].as_str().unwrap();

        // The bundle: a path that is no instance id is 404; three transfers
        // that break off spend the token's tries, the fourth is 429.
        let (status, _) = download(
            app,
            "/internal/bootstrap/artifacts/build-box-1",
            certificate,
            Some(download_token),
        )
        .await;
        assert_eq!(status, 404);
        let bundle_path = format!("/internal/bootstrap/artifacts/{id}");
        for _ in 0..3 {
            let request = test::TestRequest::get()
                .uri(&bundle_path)
                .insert_header((
                    TEST_CERTIFICATE_HEADER,
                    STANDARD.encode(certificate.unwrap()),
                ))
                .insert_header(("x-download-token", download_token));
            let response = test::call_service(app, request.to_request()).await;
            assert_eq!(response.status().as_u16(), 200);
            // The connection drops before the body is read.
            drop(response);
        }
        let (status, _) = download(app, &bundle_path, certificate, Some(download_token)).await;
        assert_eq!(status, 429);

        // Uploads: past --max-artifact-bytes 413, a body that does not hash
        // to X-Artifact-Cipher-Hash 422; neither replaces what is attached.
        let artifact_path = format!("/v1/provisioning/instances/{id}/artifact");
        let too_large = vec![0_u8; (1 << 20) + 1];
        let (status, problem) = upload(
            app,
            key,
            &artifact_path,
            too_large,
            Some(&sha256_label(b"p")),
        )
        .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (413, Some("artifact_too_large"))
        );
        let website_path = format!("/v1/provisioning/instances/{id}/website");
        for (path, plain) in [
            (&artifact_path, Some(sha256_label(b"p"))),
            (&website_path, None),
        ] {
            let mut request = test::TestRequest::put()
                .uri(path)
                .insert_header(("content-type", "application/octet-stream"))
                .insert_header(("x-artifact-cipher-hash", sha256_label(b"something else")))
                .set_payload(WEBSITE);
            if let Some(plain) = plain {
                request = request.insert_header(("x-bundle-plain-hash", plain));
            }
            let (status, problem) = send(app, request, path, Some(key)).await;
            assert_eq!(
                (status, problem["code"].as_str()),
                (422, Some("hash_mismatch")),
                "{path}"
            );
        }
        let (_, view) = get(app, &format!("/v1/provisioning/instances/{id}"), Some(key)).await;
        assert_eq!(
            view["artifact"]["artifact_cipher_hash"],
            sha256_label(BUNDLE),
            "{view}"
        );
        assert!(view["website"].is_null(), "{view}");
        let leftovers = std::fs::read_dir(state.settings.artifact_dir.join(&id))
            .unwrap()
            .count();
        assert_eq!(leftovers, 1, "only the attached bundle stays on disk");

        // /diagnostic: a callback token of an instance that is gone is 404.
        let stray = state
            .mint(
                Audience::Callback,
                uuid::Uuid::now_v7(),
                tenant,
                0,
                now(),
                Duration::hours(1),
            )
            .unwrap()
            .0;
        let note = json!({ "label": "late", "level": "info", "message": "" });
        assert_eq!(
            post(app, "/internal/bootstrap/diagnostic", Some(&stray), note).await,
            404
        );
    })
    .await;
}
