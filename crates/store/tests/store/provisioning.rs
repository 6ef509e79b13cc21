//! Seed 003 machine provisioning: CA, instances, artifacts, sessions,
//! callbacks and logs, on both backends.

use std::sync::Arc;

use agentry_domain::{AgentOrigin, AgentSlug, LifecycleState, TenantId};
use agentry_lifecycle::{CallbackError, CallbackStage, ProvisioningPolicy};
use agentry_store::{
    ArtifactKind, ArtifactRecord, CaRecord, CallbackState, MachineInstance, MachineInstancePatch,
    NewAgent, NewIssuedCertificate, NewMachineInstance, NewMachineSession, NewToken, SessionError,
    Store, StoreError, TokenPurpose, TokenRecord, now,
};
use agentry_testkit::on_both_backends;
use serde_json::json;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::tenant;

const POLICY: ProvisioningPolicy = ProvisioningPolicy::SEED_003;

fn bootstrap_token(hash: [u8; 32]) -> NewToken {
    NewToken {
        // The store sets purpose and subject; these must not survive.
        purpose: TokenPurpose::Download,
        token_hash: hash,
        subject_id: Uuid::nil(),
        max_attempts: 5,
        expires_at: now() + Duration::hours(1),
    }
}

pub(crate) fn new_machine(name: &str, hash: [u8; 32]) -> NewMachineInstance {
    NewMachineInstance {
        id: uuid::Uuid::now_v7(),
        name: name.into(),
        agent_id: None,
        agent_config: json!({ "model": "small", "tools": ["web"] }),
        agent_secrets_sealed: Some(vec![1, 2, 3]),
        skill_lockfile: json!({ "skills": [{ "name": "fetch", "version": "1.0.0" }] }),
        decryption_key_sealed: None,
        bootstrap_token: bootstrap_token(hash),
    }
}

async fn machine(
    store: &Store,
    tenant: TenantId,
    hash: [u8; 32],
) -> (MachineInstance, TokenRecord) {
    store
        .create_machine_instance(tenant, new_machine("edge-1", hash), now())
        .await
        .unwrap()
}

fn session(
    instance: &MachineInstance,
    token: &TokenRecord,
    expires_at: OffsetDateTime,
) -> NewMachineSession {
    NewMachineSession {
        id: Uuid::now_v7(),
        instance_id: instance.id,
        tenant_id: instance.tenant_id,
        token_id: token.id,
        expires_at,
    }
}

fn certificate(fingerprint: &str) -> NewIssuedCertificate {
    NewIssuedCertificate {
        serial: format!("serial-{fingerprint}"),
        fingerprint: fingerprint.into(),
        not_before: now(),
        not_after: now() + Duration::days(30),
    }
}

fn download_token(hash: [u8; 32], subject: Uuid) -> NewToken {
    NewToken {
        purpose: TokenPurpose::Download,
        token_hash: hash,
        subject_id: subject,
        max_attempts: 3,
        expires_at: now() + Duration::hours(1),
    }
}

/// Opens `connections` pooled connections, so that concurrent calls after
/// it really overlap instead of starting one per new connection (without
/// this, a missing lock goes unnoticed).
async fn warm_up(store: &Arc<Store>, connections: usize) {
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.ping().await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn creating_a_machine_instance_stores_its_bootstrap_token_and_an_empty_callback_state() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let globex = tenant(store, "globex").await;
        let agent = store
            .create_agent(
                acme,
                NewAgent::named(AgentSlug::parse("edge-agent").unwrap(), AgentOrigin::Api)
                    .starting_in(LifecycleState::Active),
                now(),
            )
            .await
            .unwrap();
        let created_at = now();
        let mut new = new_machine("edge-1", [1; 32]);
        new.agent_id = Some(agent.id);
        let (instance, token) = store
            .create_machine_instance(acme, new, created_at)
            .await
            .unwrap();
        assert_eq!(instance.tenant_id, acme);
        assert_eq!(instance.name, "edge-1");
        assert_eq!(instance.agent_id, Some(agent.id));
        assert_eq!(instance.agent_secrets_sealed, Some(vec![1, 2, 3]));
        assert_eq!(instance.created_at, created_at);
        assert_eq!(
            store
                .machine_instance(acme, instance.id)
                .await
                .unwrap()
                .as_ref(),
            Some(&instance),
            "round trip is exact on {:?}",
            db.backend()
        );
        assert_eq!(
            store.machine_instance(acme, Uuid::now_v7()).await.unwrap(),
            None
        );
        // Another tenant sees none of it, whatever id it names.
        assert_eq!(
            store.machine_instance(globex, instance.id).await.unwrap(),
            None
        );
        assert_eq!(
            store.callback_state(globex, instance.id).await.unwrap(),
            None
        );
        assert_eq!(
            store
                .provision_logs(globex, instance.id, 10)
                .await
                .unwrap()
                .1,
            0
        );
        assert!(matches!(
            store
                .record_callback(
                    globex,
                    instance.id,
                    now(),
                    1,
                    CallbackStage::Installing,
                    None,
                    "info"
                )
                .await,
            Err(StoreError::NotFound(_))
        ));

        assert_eq!(token.subject_id, instance.id);
        assert_eq!(token.tenant_id, acme);
        assert_eq!((token.attempts, token.max_attempts), (0, 5));
        assert_eq!(token.consumed_at, None);
        let found = store
            .find_token(TokenPurpose::Bootstrap, &[1; 32])
            .await
            .unwrap();
        assert_eq!(found.as_ref(), Some(&token), "stored as a bootstrap token");
        assert_eq!(
            store.bootstrap_token_of(instance.id).await.unwrap(),
            Some((token.clone(), [1; 32]))
        );
        assert_eq!(
            store.bootstrap_token_of(Uuid::now_v7()).await.unwrap(),
            None
        );
        assert_eq!(
            store.callback_state(acme, instance.id).await.unwrap(),
            Some(CallbackState {
                last: None,
                message: None,
                updated_at: created_at,
            })
        );

        // An agent of another tenant cannot be linked, and nothing is left.
        let mut foreign = new_machine("edge-2", [2; 32]);
        foreign.agent_id = Some(agent.id);
        let refused = store.create_machine_instance(globex, foreign, now()).await;
        assert!(
            matches!(refused, Err(StoreError::NotFound("agent"))),
            "{refused:?}"
        );
        // A reused token hash writes nothing either.
        let duplicate = store
            .create_machine_instance(acme, new_machine("edge-3", [1; 32]), now())
            .await;
        assert!(
            matches!(duplicate, Err(StoreError::Conflict("token"))),
            "{duplicate:?}"
        );
        assert_eq!(db.count("provisioning_instances").await, 1);
        assert_eq!(db.count("one_time_tokens").await, 1);
        assert_eq!(db.count("callback_states").await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_patch_changes_only_its_fields_within_the_tenant() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let globex = tenant(store, "globex").await;
        let (instance, _) = machine(store, acme, [1; 32]).await;
        let patched = store
            .update_machine_instance(
                acme,
                instance.id,
                MachineInstancePatch {
                    agent_config: Some(json!({ "model": "large" })),
                    decryption_key_sealed: Some(vec![9, 9]),
                    ..MachineInstancePatch::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(patched.agent_config, json!({ "model": "large" }));
        assert_eq!(patched.decryption_key_sealed, Some(vec![9, 9]));
        assert_eq!(patched.skill_lockfile, instance.skill_lockfile);
        assert_eq!(patched.agent_secrets_sealed, Some(vec![1, 2, 3]));
        assert_eq!(
            store.machine_instance(acme, instance.id).await.unwrap(),
            Some(patched.clone())
        );
        let empty = store
            .update_machine_instance(acme, instance.id, MachineInstancePatch::default())
            .await
            .unwrap();
        assert_eq!(empty, Some(patched.clone()));
        let foreign = store
            .update_machine_instance(
                globex,
                instance.id,
                MachineInstancePatch {
                    agent_config: Some(json!({})),
                    ..MachineInstancePatch::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(foreign, None);
        assert_eq!(
            store.machine_instance(acme, instance.id).await.unwrap(),
            Some(patched),
            "another tenant's patch wrote nothing"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_certificate_authority_stays_the_only_current_one() {
    on_both_backends(|db| async move {
        let store = Arc::new(db.store.clone());
        assert_eq!(store.current_ca().await.unwrap(), None);
        let ca = |n: u8| CaRecord {
            id: Uuid::now_v7(),
            cert_pem: format!("-----BEGIN CERTIFICATE-----\n{n}\n"),
            key_sealed: vec![n; 8],
            not_after: now() + Duration::days(3650),
            created_at: now(),
        };
        warm_up(&store, 10).await;
        // Processes starting at once: every one ends up with the same CA.
        let tasks: Vec<_> = (0..10)
            .map(|n| {
                let store = Arc::clone(&store);
                let record = ca(n);
                tokio::spawn(async move { store.insert_ca_if_none(record).await })
            })
            .collect();
        let mut stored = Vec::new();
        for task in tasks {
            stored.push(task.await.unwrap().unwrap());
        }
        let first = stored[0].clone();
        assert!(
            stored.iter().all(|record| *record == first),
            "{:?}: {stored:?}",
            db.backend()
        );
        assert_eq!(db.count("certificate_authorities").await, 1);
        assert_eq!(store.current_ca().await.unwrap(), Some(first.clone()));

        let again = store.insert_ca_if_none(ca(42)).await.unwrap();
        assert_eq!(again, first, "a second insert returns the first CA");
        assert_eq!(db.count("certificate_authorities").await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replacing_an_artifact_returns_the_old_path() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let globex = tenant(store, "globex").await;
        let (instance, _) = machine(store, acme, [1; 32]).await;
        let artifact = |kind: ArtifactKind, path: &str, size: i64| ArtifactRecord {
            instance_id: instance.id,
            kind,
            storage_path: path.into(),
            size_bytes: size,
            cipher_hash: Some(format!("sha256:{path}")),
            plain_hash: None,
            created_at: now(),
        };
        assert_eq!(
            store
                .artifact(acme, instance.id, ArtifactKind::Bundle)
                .await
                .unwrap(),
            None
        );
        let first = artifact(ArtifactKind::Bundle, "bundles/a.tar.zst.enc", 100);
        assert_eq!(store.put_artifact(acme, first.clone()).await.unwrap(), None);
        assert_eq!(
            store
                .artifact(acme, instance.id, ArtifactKind::Bundle)
                .await
                .unwrap(),
            Some(first)
        );

        let second = artifact(ArtifactKind::Bundle, "bundles/b.tar.zst.enc", 200);
        assert_eq!(
            store.put_artifact(acme, second.clone()).await.unwrap(),
            Some("bundles/a.tar.zst.enc".to_owned())
        );
        assert_eq!(
            store
                .artifact(acme, instance.id, ArtifactKind::Bundle)
                .await
                .unwrap(),
            Some(second.clone())
        );
        // Rewritten in place: the caller must not delete the new file.
        let same_path = artifact(ArtifactKind::Bundle, "bundles/b.tar.zst.enc", 300);
        assert_eq!(store.put_artifact(acme, same_path).await.unwrap(), None);

        let website = artifact(ArtifactKind::Website, "sites/a.zip", 50);
        assert_eq!(
            store.put_artifact(acme, website.clone()).await.unwrap(),
            None
        );
        assert_eq!(
            store
                .artifact(acme, instance.id, ArtifactKind::Website)
                .await
                .unwrap(),
            Some(website)
        );
        assert_eq!(
            store
                .artifact(globex, instance.id, ArtifactKind::Website)
                .await
                .unwrap(),
            None,
            "another tenant does not see it"
        );
        assert_eq!(db.count("artifacts").await, 2);

        let foreign = store
            .put_artifact(globex, artifact(ArtifactKind::Bundle, "evil", 1))
            .await;
        assert!(
            matches!(foreign, Err(StoreError::NotFound("provisioning instance"))),
            "{foreign:?}"
        );
        assert_eq!(
            store
                .artifact(acme, instance.id, ArtifactKind::Bundle)
                .await
                .unwrap()
                .map(|record| (record.storage_path, record.size_bytes)),
            Some(("bundles/b.tar.zst.enc".to_owned(), 300))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_opened_session_and_its_certificate_are_found() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let (instance, token) = machine(store, acme, [1; 32]).await;
        let (_, other_token) = machine(store, acme, [2; 32]).await;
        let expires_at = now() + Duration::minutes(15);
        let new = session(&instance, &token, expires_at);
        let cert = certificate("ab:cd:ef");
        store
            .open_machine_session(new.clone(), cert.clone(), now())
            .await
            .unwrap();

        let found = store
            .certificate_by_fingerprint("ab:cd:ef")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.tenant_id, found.instance_id, found.session_id),
            (acme, instance.id, new.id)
        );
        assert_eq!(found.serial, "serial-ab:cd:ef");
        assert_eq!(
            (found.not_before, found.not_after, found.revoked_at),
            (cert.not_before, cert.not_after, None)
        );
        assert_eq!(
            store.certificate_by_fingerprint("00:00").await.unwrap(),
            None
        );
        let stored = store.machine_session(acme, new.id).await.unwrap().unwrap();
        assert_eq!(
            (
                stored.tenant_id,
                stored.instance_id,
                stored.token_id,
                stored.expires_at,
                stored.completed_at
            ),
            (acme, instance.id, token.id, expires_at, None)
        );
        assert_eq!(
            store.machine_session(acme, Uuid::now_v7()).await.unwrap(),
            None
        );
        let globex = tenant(store, "globex").await;
        assert_eq!(
            store.machine_session(globex, new.id).await.unwrap(),
            None,
            "another tenant does not see it"
        );

        // A reused fingerprint leaves no session behind.
        let duplicate = store
            .open_machine_session(session(&instance, &token, expires_at), cert, now())
            .await;
        assert!(
            matches!(duplicate, Err(StoreError::Conflict("certificate"))),
            "{duplicate:?}"
        );
        // Another instance's token cannot open a session of this one.
        let crossed = store
            .open_machine_session(
                session(&instance, &other_token, expires_at),
                certificate("12:34"),
                now(),
            )
            .await;
        assert!(
            matches!(crossed, Err(StoreError::NotFound("bootstrap token"))),
            "{crossed:?}"
        );
        assert_eq!(db.count("provisioning_sessions").await, 1);
        assert_eq!(db.count("issued_certificates").await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_completes_once_and_stores_its_download_tokens() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let (instance, token) = machine(store, acme, [1; 32]).await;
        let new = session(&instance, &token, now() + Duration::minutes(15));
        store
            .open_machine_session(new.clone(), certificate("aa"), now())
            .await
            .unwrap();
        let completed_at = now();
        let completed = store
            .complete_machine_session(
                acme,
                new.id,
                completed_at,
                vec![
                    download_token([10; 32], instance.id),
                    download_token([11; 32], instance.id),
                ],
            )
            .await
            .unwrap();
        assert_eq!(completed, instance);
        assert_eq!(
            store
                .machine_session(acme, new.id)
                .await
                .unwrap()
                .unwrap()
                .completed_at,
            Some(completed_at)
        );
        let (bootstrap, _) = store
            .bootstrap_token_of(instance.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bootstrap.consumed_at, Some(completed_at));
        for hash in [[10; 32], [11; 32]] {
            let download = store
                .find_token(TokenPurpose::Download, &hash)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (download.tenant_id, download.subject_id),
                (acme, instance.id)
            );
        }

        let again = store
            .complete_machine_session(
                acme,
                new.id,
                now(),
                vec![download_token([12; 32], instance.id)],
            )
            .await;
        assert!(
            matches!(again, Err(SessionError::AlreadyComplete)),
            "{again:?}"
        );
        assert_eq!(
            store
                .find_token(TokenPurpose::Download, &[12; 32])
                .await
                .unwrap(),
            None,
            "a refused completion stores no tokens"
        );
        let unknown = store
            .complete_machine_session(acme, Uuid::now_v7(), now(), Vec::new())
            .await;
        assert!(matches!(unknown, Err(SessionError::Unknown)), "{unknown:?}");
        let foreign = tenant(store, "globex").await;
        let elsewhere = store
            .complete_machine_session(foreign, new.id, now(), Vec::new())
            .await;
        assert!(
            matches!(elsewhere, Err(SessionError::Unknown)),
            "another tenant's session is unknown: {elsewhere:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_session_does_not_complete_or_consume_the_token() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let (instance, token) = machine(store, acme, [1; 32]).await;
        let new = session(&instance, &token, now() + Duration::minutes(15));
        store
            .open_machine_session(new.clone(), certificate("aa"), now())
            .await
            .unwrap();
        let later = now() + Duration::minutes(16);
        let expired = store
            .complete_machine_session(
                acme,
                new.id,
                later,
                vec![download_token([10; 32], instance.id)],
            )
            .await;
        assert!(matches!(expired, Err(SessionError::Expired)), "{expired:?}");
        let (bootstrap, _) = store
            .bootstrap_token_of(instance.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bootstrap.consumed_at, None);
        assert_eq!(
            store
                .machine_session(acme, new.id)
                .await
                .unwrap()
                .unwrap()
                .completed_at,
            None
        );
        assert_eq!(db.count("one_time_tokens").await, 1);

        // A live session whose bootstrap token has expired cannot complete.
        let (late, late_token) = store
            .create_machine_instance(
                acme,
                NewMachineInstance {
                    bootstrap_token: NewToken {
                        expires_at: now() + Duration::minutes(1),
                        ..bootstrap_token([2; 32])
                    },
                    ..new_machine("edge-2", [2; 32])
                },
                now(),
            )
            .await
            .unwrap();
        let live = session(&late, &late_token, now() + Duration::minutes(15));
        store
            .open_machine_session(live.clone(), certificate("bb"), now())
            .await
            .unwrap();
        let refused = store
            .complete_machine_session(acme, live.id, now() + Duration::minutes(2), Vec::new())
            .await;
        assert!(
            matches!(refused, Err(SessionError::AlreadyComplete)),
            "{refused:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_session_of_a_bootstrapped_instance_cannot_complete() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let (instance, token) = machine(store, acme, [1; 32]).await;
        let expires_at = now() + Duration::minutes(15);
        let first = session(&instance, &token, expires_at);
        let second = session(&instance, &token, expires_at);
        store
            .open_machine_session(first.clone(), certificate("aa"), now())
            .await
            .unwrap();
        store
            .open_machine_session(second.clone(), certificate("bb"), now())
            .await
            .unwrap();
        store
            .complete_machine_session(acme, first.id, now(), Vec::new())
            .await
            .unwrap();
        let refused = store
            .complete_machine_session(acme, second.id, now(), Vec::new())
            .await;
        assert!(
            matches!(refused, Err(SessionError::AlreadyComplete)),
            "{refused:?}"
        );
        assert_eq!(
            store
                .machine_session(acme, second.id)
                .await
                .unwrap()
                .unwrap()
                .completed_at,
            None
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_one_of_twenty_concurrent_completions_wins() {
    on_both_backends(|db| async move {
        let store = Arc::new(db.store.clone());
        let acme = tenant(&store, "acme").await;
        let (instance, token) = machine(&store, acme, [1; 32]).await;
        let new = session(&instance, &token, now() + Duration::minutes(15));
        store
            .open_machine_session(new.clone(), certificate("aa"), now())
            .await
            .unwrap();
        warm_up(&store, 16).await;
        let tasks: Vec<_> = (0..20u8)
            .map(|n| {
                let store = Arc::clone(&store);
                let tokens = vec![download_token([100 + n; 32], instance.id)];
                tokio::spawn(async move {
                    store
                        .complete_machine_session(acme, new.id, now(), tokens)
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(completed) => {
                    winners += 1;
                    assert_eq!(completed.id, instance.id);
                }
                Err(SessionError::AlreadyComplete) => {}
                Err(other) => panic!("{:?}: unexpected {other:?}", db.backend()),
            }
        }
        assert_eq!(winners, 1, "{:?}", db.backend());
        // The bootstrap token and the winner's one download token.
        assert_eq!(db.count("one_time_tokens").await, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn callbacks_are_accepted_in_order_and_a_replay_writes_nothing() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let (instance, _) = machine(store, acme, [1; 32]).await;
        let steps = [
            (1, CallbackStage::Installing, Some("apt install")),
            (2, CallbackStage::Configuring, None),
            (3, CallbackStage::Securing, Some("firewall up")),
        ];
        for (n, (seq, stage, message)) in steps.into_iter().enumerate() {
            let at = now() + Duration::seconds(n as i64);
            let state = store
                .record_callback(
                    acme,
                    instance.id,
                    at,
                    seq,
                    stage,
                    message.map(str::to_owned),
                    "info",
                )
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                state,
                CallbackState {
                    last: Some((u8::try_from(seq).unwrap(), stage)),
                    message: message.map(str::to_owned),
                    updated_at: at,
                }
            );
            assert_eq!(
                store.callback_state(acme, instance.id).await.unwrap(),
                Some(state)
            );
        }

        // A replay of seq 2 is refused and changes nothing.
        let before = store.callback_state(acme, instance.id).await.unwrap();
        let replay = store
            .record_callback(
                acme,
                instance.id,
                now() + Duration::minutes(1),
                2,
                CallbackStage::Configuring,
                Some("again".into()),
                "info",
            )
            .await
            .unwrap();
        assert_eq!(
            replay,
            Err(CallbackError::NotIncreasing { seq: 2, last: 3 })
        );
        assert_eq!(
            store.callback_state(acme, instance.id).await.unwrap(),
            before
        );
        assert_eq!(db.count("provision_logs").await, 3);

        let ready = store
            .record_callback(
                acme,
                instance.id,
                now() + Duration::minutes(2),
                4,
                CallbackStage::Ready,
                Some("done".into()),
                "info",
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ready.last, Some((4, CallbackStage::Ready)));
        let after_final = store
            .record_callback(
                acme,
                instance.id,
                now() + Duration::minutes(3),
                4,
                CallbackStage::Ready,
                None,
                "info",
            )
            .await
            .unwrap();
        assert_eq!(
            after_final,
            Err(CallbackError::AlreadyFinal(CallbackStage::Ready))
        );

        let (logs, _) = store.provision_logs(acme, instance.id, 100).await.unwrap();
        let lines: Vec<(&str, &str, &str)> = logs
            .iter()
            .map(|log| (log.stage.as_str(), log.level.as_str(), log.message.as_str()))
            .collect();
        assert_eq!(
            lines,
            vec![
                ("installing", "info", "apt install"),
                ("configuring", "info", ""),
                ("securing", "info", "firewall up"),
                ("ready", "info", "done"),
            ]
        );
        assert!(logs.iter().all(|log| log.instance_id == instance.id));

        let unknown = store
            .record_callback(
                acme,
                Uuid::now_v7(),
                now(),
                1,
                CallbackStage::Installing,
                None,
                "info",
            )
            .await;
        assert!(
            matches!(unknown, Err(StoreError::NotFound("provisioning instance"))),
            "{unknown:?}"
        );
        assert_eq!(
            store.callback_state(acme, Uuid::now_v7()).await.unwrap(),
            None
        );
        assert_eq!(db.count("provision_logs").await, 4);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_callbacks_are_judged_one_after_the_other() {
    on_both_backends(|db| async move {
        let store = Arc::new(db.store.clone());
        let acme = tenant(&store, "acme").await;
        let (instance, _) = machine(&store, acme, [1; 32]).await;
        warm_up(&store, 10).await;
        // Ten copies of the same callback: only one may be accepted.
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .record_callback(
                            acme,
                            instance.id,
                            now(),
                            1,
                            CallbackStage::Installing,
                            None,
                            "info",
                        )
                        .await
                })
            })
            .collect();
        let mut accepted = 0;
        for task in tasks {
            match task.await.unwrap().unwrap() {
                Ok(_) => accepted += 1,
                Err(CallbackError::NotIncreasing { seq: 1, last: 1 }) => {}
                Err(other) => panic!("{:?}: unexpected {other:?}", db.backend()),
            }
        }
        assert_eq!(accepted, 1, "{:?}", db.backend());
        assert_eq!(db.count("provision_logs").await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn provision_logs_come_back_oldest_first() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let globex = tenant(store, "globex").await;
        let (instance, _) = machine(store, acme, [1; 32]).await;
        let (other, _) = machine(store, acme, [2; 32]).await;
        let start = now();
        for (offset, message) in [(2, "third"), (0, "first"), (1, "second")] {
            store
                .append_provision_log(
                    acme,
                    instance.id,
                    "installing",
                    "info",
                    message,
                    start + Duration::seconds(offset),
                    &POLICY,
                )
                .await
                .unwrap()
                .unwrap();
        }
        store
            .append_provision_log(
                acme,
                other.id,
                "installing",
                "warn",
                "elsewhere",
                start,
                &POLICY,
            )
            .await
            .unwrap()
            .unwrap();
        let messages = |(logs, _): (Vec<agentry_store::ProvisionLog>, i64)| {
            logs.into_iter()
                .map(|log| (log.message, log.at))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            messages(store.provision_logs(acme, instance.id, 10).await.unwrap()),
            vec![
                ("first".to_owned(), start),
                ("second".to_owned(), start + Duration::seconds(1)),
                ("third".to_owned(), start + Duration::seconds(2)),
            ]
        );
        assert_eq!(
            messages(store.provision_logs(acme, instance.id, 2).await.unwrap()),
            vec![
                ("second".to_owned(), start + Duration::seconds(1)),
                ("third".to_owned(), start + Duration::seconds(2)),
            ]
        );
        assert_eq!(
            store.provision_logs(acme, instance.id, 2).await.unwrap().1,
            3
        );
        // Same instant: insertion order.
        for message in ["tie-a", "tie-b", "tie-c"] {
            store
                .append_provision_log(acme, other.id, "securing", "info", message, start, &POLICY)
                .await
                .unwrap()
                .unwrap();
        }
        let (other_logs, _) = store.provision_logs(acme, other.id, 10).await.unwrap();
        assert_eq!(
            other_logs
                .iter()
                .map(|log| log.message.as_str())
                .collect::<Vec<_>>(),
            vec!["elsewhere", "tie-a", "tie-b", "tie-c"]
        );
        assert_eq!(other_logs[0].level, "warn");

        let foreign = store
            .append_provision_log(
                globex,
                instance.id,
                "installing",
                "info",
                "no",
                now(),
                &POLICY,
            )
            .await;
        assert!(
            matches!(foreign, Err(StoreError::NotFound("provisioning instance"))),
            "{foreign:?}"
        );
        assert_eq!(db.count("provision_logs").await, 7);
    })
    .await;
}
