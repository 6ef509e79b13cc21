//! The certificate exchange (`POST /v1/agent/auth/cert`) and the agent
//! certificate as a credential, on both backends. The certificate a TLS
//! handshake would carry is put on the request by the test app, as in
//! `machines.rs`; the real listener is driven in
//! `bins/agentryd/tests/agent_cert.rs`.

use actix_web::http::Method;
use actix_web::test;
use agentry_auth::ca::{AGENT_CERT_LIFETIME, agent_identity};
use agentry_auth::{AgentIdentity, ApiKey, ApiKeyKind, BoughtWith, CertificateAuthority};
use agentry_domain::{ApiKeyRole, LifecycleState, Money};
use agentry_ledger::LimitsEdit;
use agentry_lifecycle::{LifecycleCommand, TerminationReason};
use agentry_store::{AgentLimitEntry, AgentRecord, KidDigest, SigningKeyRevocation, now};
use agentry_testkit::on_both_backends;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::test_app::TestApp;
use crate::{api_key, call, get, send};

const CERT: &str = "/v1/agent/auth/cert";
const STATUS: &str = "/v1/agent/status";
const TEST_CERTIFICATE_HEADER: &str = "x-test-peer-certificate";

/// A CSR for a fresh key that asks for a name of its own, which the
/// certificate must not carry.
fn csr() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "root-of-everything");
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "urn:agentry:agent:00000000-0000-0000-0000-000000000001"
            .try_into()
            .unwrap(),
    )];
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// What a certificate `agent` bought with `bought_with` names.
fn identity_of(agent: &AgentRecord, bought_with: BoughtWith) -> AgentIdentity {
    AgentIdentity {
        tenant_id: agent.tenant_id,
        agent_id: agent.id,
        epoch: agent.credential_epoch,
        bought_with,
    }
}

/// What a certificate bought with `token` names as its purchase.
fn with_token(token: &str) -> BoughtWith {
    let kid = agentry_auth::header_kid(token).unwrap();
    BoughtWith::Token {
        signing_key: KidDigest::of(&kid).to_bytes(),
    }
}

/// `method path` presenting `certificate` (DER) as the TLS layer would,
/// with no other credential.
async fn with_certificate<S>(
    app: &S,
    method: Method,
    path: &str,
    certificate: &[u8],
) -> (u16, Value)
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
        >,
{
    let request = test::TestRequest::default()
        .method(method)
        .uri(path)
        .insert_header((TEST_CERTIFICATE_HEADER, STANDARD.encode(certificate)))
        .set_json(json!({ "csr": csr() }));
    send(app, request, path, None).await
}

/// A certificate bought with `credential` (a token or an agent's own
/// key), as DER.
async fn issue<S>(app: &S, credential: String) -> Vec<u8>
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
        >,
{
    let (status, body) = call(
        app,
        Method::POST,
        CERT,
        Some(&credential),
        json!({ "csr": csr() }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    der(body["cert_pem"].as_str().unwrap())
}

/// The answer to a certificate that speaks for nobody.
fn refused((status, body): (u16, Value)) {
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_client_certificate")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_exchanges_its_token_or_key_for_a_certificate_that_names_it() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_agent("worker", LifecycleState::Active)
            .start()
            .await;
        let (state, app, acme) = (&t.state, &t.app, t.tenant);
        let worker = t.agent("worker");
        let before = now();
        let token = t.token("worker");
        let (status, issued) = call(
            app,
            Method::POST,
            CERT,
            Some(&token),
            json!({ "csr": csr() }),
        )
        .await;
        assert_eq!(status, 201, "{issued}");
        let pem = issued["cert_pem"].as_str().unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        assert_eq!(
            issued["ca_pem"].as_str(),
            Some(state.keys.ca().authority().cert_pem())
        );
        let certificate = der(pem);
        assert_eq!(
            issued["fingerprint"].as_str(),
            Some(agentry_auth::ca::fingerprint(&certificate).as_str())
        );
        assert_eq!(
            agent_identity(&certificate).unwrap(),
            Some(identity_of(worker, with_token(&token)))
        );
        let (_, parsed) = x509_parser::parse_x509_certificate(&certificate).unwrap();
        let names: Vec<&str> = parsed
            .subject()
            .iter_common_name()
            .map(|name| name.as_str().unwrap())
            .collect();
        assert_eq!(names, ["worker"], "the agent's slug, not the CSR's subject");
        let expires_at = OffsetDateTime::parse(
            issued["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(
            expires_at > before + AGENT_CERT_LIFETIME - Duration::seconds(5)
                && expires_at <= now() + AGENT_CERT_LIFETIME,
            "{expires_at}"
        );
        assert_eq!(
            parsed.validity().not_after.timestamp(),
            expires_at.unix_timestamp()
        );
        state
            .keys
            .ca()
            .verify(&[CertificateDer::from(certificate.clone())], now())
            .unwrap();

        // The agent's own key works too, and so does seed 003's field name.
        let (own_key, _) = api_key(&db.store, acme, ApiKeyKind::Agent, Some(worker)).await;
        let (status, body) = call(
            app,
            Method::POST,
            CERT,
            Some(own_key.expose()),
            json!({ "csr_pem": csr() }),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_ne!(body["fingerprint"], issued["fingerprint"]);

        // Each issuance is in the audit trail, by fingerprint and expiry,
        // and nothing of the certificate itself.
        state.flush_audit().await;
        let events = db
            .store
            .audit_events_for(acme, "agent:worker", 20)
            .await
            .unwrap();
        let issuances: Vec<_> = events
            .iter()
            .filter(|event| event.action == "agent.cert.issued")
            .collect();
        assert_eq!(issuances.len(), 2, "{events:?}");
        assert!(issuances.iter().any(|event| {
            event.detail["fingerprint"] == issued["fingerprint"]
                && event.detail["expires_at"] == issued["expires_at"]
                && event.outcome == "success"
        }));
        for event in &issuances {
            assert!(
                !event.detail.to_string().contains("BEGIN"),
                "{:?}",
                event.detail
            );
        }

        // The certificate alone now speaks for the agent.
        let (status, body) = with_certificate(app, Method::GET, STATUS, &certificate).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["profile"]["agentId"], "worker");
        assert_eq!(body["profile"]["tenantId"], acme.to_string());
        let (status, body) =
            with_certificate(app, Method::GET, "/v1/agent/limits/me", &certificate).await;
        assert_eq!(status, 200, "{body}");
        // But it issues no credential that would outlive it: not another
        // certificate, not a sub-agent with a token, nothing of the
        // workspace (its keys and invites).
        for (method, path) in [
            (Method::POST, CERT),
            (Method::POST, "/v1/agent/delegate"),
            (Method::GET, "/api/v1/channels"),
            (Method::POST, "/api/v1/channels"),
        ] {
            let (status, body) = with_certificate(app, method.clone(), path, &certificate).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (403, Some("certificate_not_accepted")),
                "{method} {path}: {body}"
            );
        }
        let (status, body) = call(
            app,
            Method::GET,
            "/api/v1/channels",
            Some(&t.token("worker")),
            json!({}),
        )
        .await;
        assert_ne!(
            body["code"].as_str(),
            Some("certificate_not_accepted"),
            "{status}: the token is refused for its own reasons, not the certificate's"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_csrs_and_the_wrong_callers_are_refused() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_key(ApiKeyRole::Admin)
            .with_agent("worker", LifecycleState::Active)
            .with_agent("held", LifecycleState::Quarantined)
            .with_agent("unpaid", LifecycleState::Suspended)
            .with_agent("dead", LifecycleState::Terminated)
            .with_agent("unborn", LifecycleState::Provisioned)
            .start()
            .await;
        let app = &t.app;
        let token = t.token("worker");
        let post = |credential: Option<String>, body: Value| async move {
            call(app, Method::POST, CERT, credential.as_deref(), body).await
        };
        let code =
            |(status, body): (u16, Value)| (status, body["code"].as_str().map(str::to_owned));

        let garbage = "x".repeat(300);
        let mut tampered = csr().into_bytes();
        // Inside the base64 of the signature, just before the PEM footer.
        let at = tampered.len() - "\n-----END CERTIFICATE REQUEST-----\n".len() - 3;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let certificate_pem = t.state.keys.ca().authority().cert_pem().to_owned();
        for bad in [garbage, tampered, certificate_pem] {
            assert_eq!(
                code(post(Some(token.clone()), json!({ "csr": bad })).await),
                (400, Some("invalid_csr".into())),
                "{bad}"
            );
        }
        assert_eq!(
            code(post(Some(token.clone()), json!({ "csr": "short" })).await),
            (400, Some("invalid_request".into()))
        );
        assert_eq!(
            code(post(Some(token.clone()), json!({ "pem": csr() })).await),
            (400, Some("invalid_json".into()))
        );

        // The caller is judged before the body is read.
        assert_eq!(
            code(post(None, json!({ "csr": "short" })).await),
            (401, Some("missing_credentials".into()))
        );
        assert_eq!(
            code(post(Some("not.a.token".into()), json!({ "csr": csr() })).await),
            (401, Some("invalid_token".into()))
        );
        assert_eq!(
            code(
                post(
                    Some(t.key(ApiKeyRole::Admin).to_owned()),
                    json!({ "csr": csr() })
                )
                .await
            ),
            (403, Some("agent_credentials_required".into()))
        );
        for (slug, expected) in [
            ("held", (403, "agent_quarantined")),
            ("unpaid", (402, "agent_suspended")),
            ("dead", (403, "agent_terminated")),
            ("unborn", (403, "agent_not_activated")),
        ] {
            let (status, body) = post(Some(t.token(slug)), json!({ "csr": "short" })).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (expected.0, Some(expected.1)),
                "{slug}: {body}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn suspension_termination_and_rotation_stop_the_certificate_at_once() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_key(ApiKeyRole::Operator)
            .with_agent("worker", LifecycleState::Active)
            .start()
            .await;
        let (app, acme) = (&t.app, t.tenant);
        let worker = t.agent("worker").clone();
        let operator = Some(t.key(ApiKeyRole::Operator));
        let lifecycle = "/v1/agent/profiles/lifecycle/worker";
        let certificate = issue(app, t.token("worker")).await;
        assert_eq!(
            with_certificate(app, Method::GET, STATUS, &certificate)
                .await
                .0,
            200
        );

        let (status, body) = call(
            app,
            Method::PATCH,
            lifecycle,
            operator,
            json!({ "state": "suspended" }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = with_certificate(app, Method::GET, STATUS, &certificate).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (402, Some("agent_suspended")),
            "{body}"
        );
        let (status, body) = call(
            app,
            Method::PATCH,
            lifecycle,
            operator,
            json!({ "state": "active" }),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            with_certificate(app, Method::GET, STATUS, &certificate)
                .await
                .0,
            200,
            "suspension does not retire credentials"
        );

        // A key rotation moves the credential epoch: the certificate of the
        // old epoch stops with the old tokens.
        db.store
            .rotate_agent_key(
                acme,
                worker.id,
                ApiKey::mint(ApiKeyKind::Agent).hash().0,
                now(),
            )
            .await
            .unwrap();
        let (status, body) = with_certificate(app, Method::GET, STATUS, &certificate).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_client_certificate")),
            "{body}"
        );
        let rotated = db.store.find_agent(acme, worker.id).await.unwrap().unwrap();
        assert_eq!(rotated.credential_epoch, worker.credential_epoch + 1);
        let token = t.state.mint_agent_token(&rotated, now()).unwrap().0;
        let renewed = issue(app, token.clone()).await;
        assert_eq!(
            agent_identity(&renewed).unwrap(),
            Some(identity_of(&rotated, with_token(&token)))
        );
        assert_eq!(
            with_certificate(app, Method::GET, STATUS, &renewed).await.0,
            200
        );

        db.store
            .transition(
                acme,
                worker.id,
                LifecycleCommand::Terminate(TerminationReason::Revoked),
                now(),
            )
            .await
            .unwrap()
            .unwrap();
        let (status, body) = with_certificate(app, Method::GET, STATUS, &renewed).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("agent_terminated")),
            "{body}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_goes_with_the_key_or_the_signing_key_it_was_bought_with() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_agent("worker", LifecycleState::Active)
            .with_agent("other", LifecycleState::Active)
            .start()
            .await;
        let (app, acme) = (&t.app, t.tenant);

        // Bought with one of the agent's API keys: deleting that key
        // retires the certificate; the agent's token and its other key
        // stay, and the other key buys a new certificate.
        let worker = t.agent("worker");
        let (doomed, doomed_id) = api_key(&db.store, acme, ApiKeyKind::Agent, Some(worker)).await;
        let (spare, _) = api_key(&db.store, acme, ApiKeyKind::Agent, Some(worker)).await;
        let bought = issue(app, doomed.expose().to_owned()).await;
        assert_eq!(
            agent_identity(&bought).unwrap(),
            Some(identity_of(worker, BoughtWith::ApiKey(doomed_id)))
        );
        assert_eq!(
            with_certificate(app, Method::GET, STATUS, &bought).await.0,
            200
        );
        db.store
            .revoke_api_key(acme, doomed_id, now())
            .await
            .unwrap();
        refused(with_certificate(app, Method::GET, STATUS, &bought).await);
        assert_eq!(get(app, STATUS, Some(&t.token("worker"))).await.0, 200);
        assert_eq!(get(app, STATUS, Some(spare.expose())).await.0, 200);
        let again = issue(app, spare.expose().to_owned()).await;
        assert_eq!(
            with_certificate(app, Method::GET, STATUS, &again).await.0,
            200
        );

        // A certificate naming a key that is not the agent's, or no key at
        // all, speaks for nobody (only our CA could have signed one).
        let other = t.agent("other");
        let (others_key, others_key_id) =
            api_key(&db.store, acme, ApiKeyKind::Agent, Some(other)).await;
        let ours = t.state.keys.ca().authority();
        for bought_with in [
            BoughtWith::ApiKey(others_key_id),
            BoughtWith::ApiKey(uuid::Uuid::now_v7()),
        ] {
            let odd = ours
                .sign_agent_csr(
                    &csr(),
                    &identity_of(worker, bought_with),
                    "worker",
                    now(),
                    AGENT_CERT_LIFETIME,
                )
                .unwrap();
            refused(with_certificate(app, Method::GET, STATUS, &odd.der).await);
        }
        assert_eq!(get(app, STATUS, Some(others_key.expose())).await.0, 200);

        // Bought with a token: revoking the key that signed the token
        // retires the certificate with it, though the epoch did not move.
        let token = t.token("other");
        let kid = agentry_auth::header_kid(&token).unwrap();
        let bought = issue(app, token.clone()).await;
        assert_eq!(
            agent_identity(&bought).unwrap(),
            Some(identity_of(other, with_token(&token)))
        );
        assert_eq!(
            with_certificate(app, Method::GET, STATUS, &bought).await.0,
            200
        );
        let revoked = db
            .store
            .revoke_signing_key(
                &kid,
                agentry_http::new_signing_key(t.state.keys.master(), now()),
                now(),
            )
            .await
            .unwrap();
        assert!(
            matches!(revoked, SigningKeyRevocation::Revoked { .. }),
            "{revoked:?}"
        );
        refused(with_certificate(app, Method::GET, STATUS, &bought).await);
        // A process that loads its keys after the revocation knows it too.
        let fresh = agentry_http::Keys::load(
            &db.store,
            t.state.keys.master().clone(),
            Duration::hours(1),
            now(),
        )
        .await
        .unwrap();
        assert!(fresh.is_revoked(KidDigest::of(&kid)));
        assert_eq!(
            db.store
                .find_agent(acme, other.id)
                .await
                .unwrap()
                .unwrap()
                .credential_epoch,
            other.credential_epoch,
            "the signing key, not the epoch, retired it"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rewritten_token_header_buys_nothing_and_no_certificate_outlives_its_key() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_agent("worker", LifecycleState::Active)
            .start()
            .await;
        let (app, acme) = (&t.app, t.tenant);
        let token = t.token("worker");
        // The token is verified, and so cached by its signature.
        assert_eq!(get(app, STATUS, Some(&token)).await.0, 200);
        // The same payload and signature under a header naming another
        // key: the certificate would name that key, and outlive the
        // revocation of the real one.
        let (_, rest) = token.split_once('.').unwrap();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"alg":"EdDSA","typ":"JWT","kid":"made-up"}"#);
        let forged = format!("{header}.{rest}");
        let (status, body) = call(
            app,
            Method::POST,
            CERT,
            Some(&forged),
            json!({ "csr": csr() }),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("invalid_token")),
            "{body}"
        );

        // Bought with a key that expires in ten minutes: the certificate
        // ends with it, not an hour on.
        let worker = t.agent("worker");
        let key = ApiKey::mint(ApiKeyKind::Agent);
        let key_ends = now() + Duration::minutes(10);
        db.store
            .insert_agent_key(
                acme,
                worker.id,
                key.hash().0,
                "short".into(),
                Some(key_ends),
                now(),
            )
            .await
            .unwrap();
        let (status, issued) = call(
            app,
            Method::POST,
            CERT,
            Some(key.expose()),
            json!({ "csr": csr() }),
        )
        .await;
        assert_eq!(status, 201, "{issued}");
        let ends = OffsetDateTime::parse(
            issued["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(ends <= key_ends, "{ends} after {key_ends}");
        assert!(ends > key_ends - Duration::minutes(1), "{ends}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_of_another_ca_expired_or_naming_another_tenant_are_refused() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_agent("worker", LifecycleState::Active)
            .start()
            .await;
        let app = &t.app;
        let worker = t.agent("worker");
        let identity = identity_of(worker, with_token(&t.token("worker")));

        // The same names, signed by a CA that is not ours.
        let (other, _) = CertificateAuthority::generate(now()).unwrap();
        let foreign = other
            .sign_agent_csr(&csr(), &identity, "worker", now(), AGENT_CERT_LIFETIME)
            .unwrap();
        refused(with_certificate(app, Method::GET, STATUS, &foreign.der).await);

        // Ours, but past its hour.
        let ours = t.state.keys.ca().authority();
        let expired = ours
            .sign_agent_csr(
                &csr(),
                &identity,
                "worker",
                now() - Duration::hours(2),
                AGENT_CERT_LIFETIME,
            )
            .unwrap();
        refused(with_certificate(app, Method::GET, STATUS, &expired.der).await);

        // Ours and current, naming the agent under another tenant.
        let elsewhere = AgentIdentity {
            tenant_id: agentry_domain::TenantId::from_uuid(uuid::Uuid::now_v7()),
            ..identity
        };
        let misplaced = ours
            .sign_agent_csr(&csr(), &elsewhere, "worker", now(), AGENT_CERT_LIFETIME)
            .unwrap();
        refused(with_certificate(app, Method::GET, STATUS, &misplaced.der).await);

        // Not a certificate at all.
        refused(with_certificate(app, Method::GET, STATUS, b"not DER").await);

        // A good one, for contrast.
        let good = ours
            .sign_agent_csr(&csr(), &identity, "worker", now(), AGENT_CERT_LIFETIME)
            .unwrap();
        assert_eq!(
            with_certificate(app, Method::GET, STATUS, &good.der)
                .await
                .0,
            200
        );
        let (status, _) = get(app, STATUS, None).await;
        assert_eq!(status, 401);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_counts_against_the_agents_requests_per_minute() {
    on_both_backends(|db| async move {
        let t = TestApp::on(&db)
            .with_agent("chatty", LifecycleState::Active)
            .start()
            .await;
        let (app, acme) = (&t.app, t.tenant);
        db.store
            .edit_agent_limits(
                acme,
                &LimitsEdit::Merge(std::collections::BTreeMap::from([(
                    "agent:chatty".to_owned(),
                    Some(AgentLimitEntry {
                        max_budget: Some(Money::from_usd(3)),
                        max_requests_per_minute: Some(2),
                    }),
                )])),
                now(),
            )
            .await
            .unwrap()
            .unwrap();
        let token = t.token("chatty");
        let (status, issued) = call(
            app,
            Method::POST,
            CERT,
            Some(&token),
            json!({ "csr": csr() }),
        )
        .await;
        assert_eq!(status, 201, "{issued}");
        let certificate = der(issued["cert_pem"].as_str().unwrap());
        assert_eq!(
            with_certificate(app, Method::GET, STATUS, &certificate)
                .await
                .0,
            200
        );
        let (status, body) = with_certificate(app, Method::GET, STATUS, &certificate).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (429, Some("rate_limited")),
            "{body}"
        );
        let (status, body) = call(
            app,
            Method::POST,
            CERT,
            Some(&token),
            json!({ "csr": csr() }),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (429, Some("rate_limited")),
            "{body}"
        );
    })
    .await;
}
