//! The store asks `agentry-lifecycle` and does what it says: the SQL twins
//! of one-time-token validity agree with `OneTimeToken::admits`, and the
//! provisioning commands refuse what `BootstrapSession` and
//! `ProvisioningPolicy` refuse, on both backends.

use agentry_lifecycle::{CallbackStage, ProvisioningPolicy, SessionTerms, TokenRefusal, TokenUse};
use agentry_store::{
    ArtifactKind, ArtifactRecord, MachineInstance, NewIssuedCertificate, NewToken,
    OpenSessionError, StoreError, TokenError, TokenPurpose, now,
};
use agentry_testkit::on_both_backends;
use time::Duration;
use uuid::Uuid;

use super::provisioning::new_machine;
use super::tenant;

const POLICY: ProvisioningPolicy = ProvisioningPolicy::SEED_003;

/// Every state a token can be in around `now` (used or not; expired a
/// second ago, at this very instant, a microsecond from now or later;
/// untried, on its last try, out of tries; or allowed none at all), each
/// judged by the SQL of `consume_token` and `record_token_attempt` and by
/// the rule: the two must agree on every one.
#[tokio::test(flavor = "multi_thread")]
async fn one_time_token_sql_agrees_with_the_rule() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let at = now();
        let earlier = at - Duration::hours(2);
        let mut cases = Vec::new();
        for used in [false, true] {
            for expires_in in [
                -Duration::SECOND,
                Duration::ZERO,
                Duration::MICROSECOND,
                Duration::HOUR,
            ] {
                for (max_attempts, attempts) in [(3, 0), (3, 2), (3, 3), (0, 0)] {
                    for intent in [TokenUse::Try, TokenUse::Consume] {
                        cases.push((used, expires_in, max_attempts, attempts, intent));
                    }
                }
            }
        }
        for (n, (used, expires_in, max_attempts, attempts, intent)) in
            cases.into_iter().enumerate()
        {
            let hash = [u8::try_from(n).unwrap(); 32];
            store
                .insert_token(
                    acme,
                    NewToken {
                        purpose: TokenPurpose::Download,
                        token_hash: hash,
                        subject_id: Uuid::now_v7(),
                        max_attempts,
                        expires_at: at + expires_in,
                    },
                    earlier,
                )
                .await
                .unwrap();
            for _ in 0..attempts {
                store
                    .record_token_attempt(TokenPurpose::Download, &hash, earlier)
                    .await
                    .unwrap();
            }
            if used {
                store
                    .consume_token(TokenPurpose::Download, &hash, earlier)
                    .await
                    .unwrap();
            }
            let token = store
                .find_token(TokenPurpose::Download, &hash)
                .await
                .unwrap()
                .unwrap()
                .one_time_token();
            assert_eq!(
                (token.attempts, token.consumed_at.is_some()),
                (attempts, used)
            );
            let rule = token.admits(intent, at).map_err(TokenError::from);
            let sql = match intent {
                TokenUse::Try => {
                    store
                        .record_token_attempt(TokenPurpose::Download, &hash, at)
                        .await
                }
                TokenUse::Consume => store.consume_token(TokenPurpose::Download, &hash, at).await,
            };
            let sql = match sql {
                Ok(_) => Ok(()),
                Err(StoreError::Token(refused)) => Err(refused),
                Err(other) => panic!("{:?}: {other:?}", db.backend()),
            };
            assert_eq!(
                sql,
                rule,
                "{:?}: used {used}, expires in {expires_in}, {attempts} of {max_attempts} tries, {intent:?}",
                db.backend()
            );
        }
    })
    .await;
}

fn certificate(fingerprint: &str) -> NewIssuedCertificate {
    NewIssuedCertificate {
        serial: format!("serial-{fingerprint}"),
        fingerprint: fingerprint.into(),
        not_before: now(),
        not_after: now() + Duration::hours(1),
    }
}

fn bundle(instance_id: Uuid) -> ArtifactRecord {
    ArtifactRecord {
        instance_id,
        kind: ArtifactKind::Bundle,
        storage_path: format!("{instance_id}/bundle"),
        size_bytes: 3,
        cipher_hash: None,
        plain_hash: None,
        created_at: now(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bootstrap_session_opens_for_a_usable_token_of_a_ready_instance_only() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let mut new = new_machine("edge-1", [1; 32]);
        new.bootstrap_token.expires_at = now() + Duration::minutes(10);
        let (instance, token) = store
            .create_machine_instance(acme, new, now())
            .await
            .unwrap();
        let issue = |fingerprint: &'static str| {
            move |_: &MachineInstance, session_id: Uuid, terms: &SessionTerms| {
                assert_eq!(terms.certificate_lifetime, Duration::HOUR);
                Ok::<_, &str>((certificate(fingerprint), session_id))
            }
        };

        let unknown = store
            .open_bootstrap_session(&[9; 32], &POLICY, now(), issue("00"))
            .await;
        assert!(
            matches!(unknown, Err(OpenSessionError::InvalidToken(None))),
            "{unknown:?}"
        );
        // Neither the bundle nor the key is attached.
        let unready = store
            .open_bootstrap_session(&[1; 32], &POLICY, now(), issue("01"))
            .await;
        assert!(
            matches!(unready, Err(OpenSessionError::NotReady)),
            "{unready:?}"
        );
        store.put_artifact(acme, bundle(instance.id)).await.unwrap();
        store
            .update_machine_instance(
                acme,
                instance.id,
                agentry_store::MachineInstancePatch {
                    decryption_key_sealed: Some(vec![7; 16]),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        let refused = store
            .open_bootstrap_session(&[1; 32], &POLICY, now(), |_, _, _| {
                Err::<(NewIssuedCertificate, ()), _>("bad csr")
            })
            .await;
        assert!(
            matches!(refused, Err(OpenSessionError::Issue("bad csr"))),
            "{refused:?}"
        );
        assert_eq!(db.count("provisioning_sessions").await, 0);

        let opened_at = now();
        let opened = store
            .open_bootstrap_session(&[1; 32], &POLICY, opened_at, issue("02"))
            .await
            .unwrap();
        assert_eq!(opened.instance.id, instance.id);
        assert_eq!(opened.issued, opened.session_id);
        let session = store
            .machine_session(acme, opened.session_id)
            .await
            .unwrap()
            .unwrap();
        // Fifteen minutes, cut short by the token's ten.
        assert_eq!(
            (session.token_id, session.expires_at),
            (token.id, token.expires_at)
        );
        assert!(
            store
                .certificate_by_fingerprint("02")
                .await
                .unwrap()
                .is_some()
        );

        store
            .complete_machine_session(acme, opened.session_id, now(), Vec::new())
            .await
            .unwrap();
        let used = store
            .open_bootstrap_session(&[1; 32], &POLICY, now(), issue("03"))
            .await;
        assert!(
            matches!(
                used,
                Err(OpenSessionError::InvalidToken(Some(TokenRefusal::Consumed)))
            ),
            "{used:?}"
        );
        assert_eq!(db.count("provisioning_sessions").await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_log_refuses_diagnostics_but_still_logs_callbacks() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let (instance, _) = store
            .create_machine_instance(acme, new_machine("edge-1", [1; 32]), now())
            .await
            .unwrap();
        let small = ProvisioningPolicy {
            max_log_lines: 2,
            ..POLICY
        };
        let append = |message: &'static str| async move {
            store
                .append_provision_log(acme, instance.id, "probe", "info", message, now(), &small)
                .await
                .unwrap()
        };
        assert_eq!(append("one").await, Ok(()));
        assert_eq!(append("two").await, Ok(()));
        let full = append("three").await.unwrap_err();
        assert_eq!(full.max_lines, 2);
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
            .unwrap()
            .unwrap();
        let (_, lines) = store.provision_logs(acme, instance.id, 0).await.unwrap();
        assert_eq!(lines, 3);
    })
    .await;
}
