//! The repository test suite: every test runs on SQLite and PostgreSQL.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failed unwrap is a failed test"
)]

mod feed;
mod integrity;
mod limits;
mod provisioning;
mod provisioning_rules;
mod rate_leases;
mod registry;
mod revocation;
mod schema;
mod sharding;
mod workspace;
use agentry_testkit as support;

use std::sync::Arc;

use agentry_domain::{AgentId, AgentOrigin, AgentSlug, LifecycleState, Money, TenantId};
use agentry_ledger::{EnforcedLimits, EntryKind, LedgerError, LimitsEdit, verify_transfers};
use agentry_lifecycle::{LifecycleCommand, LifecycleError, TerminationReason};
use agentry_store::{
    AgentLimitEntry, Appends, NewAgent, NewAuditEvent, NewToken, Store, StoreError, TokenError,
    TokenPurpose, now,
};
use support::on_both_backends;
use time::Duration;

fn slug(text: &str) -> AgentSlug {
    AgentSlug::parse(text).expect("valid slug in test")
}

async fn tenant(store: &Store, name: &str) -> TenantId {
    store
        .create_tenant(name, now())
        .await
        .expect("create tenant")
        .id
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_are_all_applied_and_idempotent() {
    on_both_backends(|db| async move {
        let status = db.store.migration_status().await.unwrap();
        assert!(!status.is_empty());
        assert!(
            status.iter().all(|migration| migration.applied),
            "{status:?}"
        );
        assert!(
            db.store.migrate().await.unwrap().is_empty(),
            "second run applies nothing"
        );
        db.store.ping().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_agent_is_a_typed_conflict_within_a_tenant_only() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let (acme, globex) = (tenant(store, "acme").await, tenant(store, "globex").await);
        let mut new = NewAgent::named(slug("summarizer-v1"), AgentOrigin::Api)
            .starting_in(LifecycleState::Active);
        new.budget_daily = Some(Money::parse_usd("5").unwrap());
        new.metadata = serde_json::json!({ "can_delegate": true });
        new.scopes = vec!["read:docs".into()];
        let created = store.create_agent(acme, new.clone(), now()).await.unwrap();

        let duplicate = store.create_agent(acme, new.clone(), now()).await;
        assert!(
            matches!(duplicate, Err(StoreError::Conflict("agent"))),
            "{:?}: {duplicate:?}",
            db.backend()
        );
        // The same slug in another tenant is a different agent.
        let other = store.create_agent(globex, new, now()).await.unwrap();
        assert_ne!(other.id, created.id);

        let found = store
            .find_agent_by_slug(acme, &slug("summarizer-v1"))
            .await
            .unwrap();
        assert_eq!(
            found.as_ref(),
            Some(&created),
            "round trip is exact on {:?}",
            db.backend()
        );
        assert_eq!(
            store.find_agent(globex, created.id).await.unwrap(),
            None,
            "no cross-tenant read"
        );
        assert_eq!(store.list_agents(acme).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_changes_are_checked_recorded_and_bump_the_epoch_on_termination() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let agent = store
            .create_agent(
                acme,
                NewAgent::named(slug("worker-1"), AgentOrigin::Api)
                    .starting_in(LifecycleState::Active),
                now(),
            )
            .await
            .unwrap();
        let refused = store
            .transition(
                acme,
                agent.id,
                LifecycleCommand::Request(LifecycleState::Terminated),
                now(),
            )
            .await
            .unwrap();
        assert!(matches!(
            refused,
            Err(LifecycleError::InvalidTransition { .. })
        ));

        let (suspended, event) = store
            .transition(
                acme,
                agent.id,
                LifecycleCommand::Request(LifecycleState::Suspended),
                now(),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(suspended.lifecycle_state, LifecycleState::Suspended);
        assert!(event.is_some());
        assert_eq!(suspended.credential_epoch, 0);

        let (revoked, _) = store
            .transition(
                acme,
                agent.id,
                LifecycleCommand::Terminate(TerminationReason::Revoked),
                now(),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(revoked.lifecycle_state, LifecycleState::Terminated);
        assert_eq!(revoked.credential_epoch, 1);
        assert!(revoked.revoked_at.is_some());
        let stored = store.find_agent(acme, agent.id).await.unwrap().unwrap();
        assert_eq!(stored, revoked);

        let other = tenant(store, "globex").await;
        let missing = store
            .transition(
                other,
                agent.id,
                LifecycleCommand::Terminate(TerminationReason::Revoked),
                now(),
            )
            .await;
        assert!(matches!(missing, Err(StoreError::NotFound("agent"))));
    })
    .await;
}

/// A merge of one entry, `agent:worker-{n}`.
fn merge(n: u32) -> LimitsEdit {
    LimitsEdit::Merge(std::collections::BTreeMap::from([(
        format!("agent:worker-{n}"),
        Some(AgentLimitEntry {
            max_budget: Some(Money::from_usd(n)),
            max_requests_per_minute: Some(30 + n),
        }),
    )]))
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_limit_patches_lose_no_update() {
    on_both_backends(|db| async move {
        let store = Arc::new(db.store.clone());
        let acme = tenant(&store, "acme").await;
        let tasks: Vec<_> = (0..16)
            .map(|n| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.edit_agent_limits(acme, &merge(n), now()).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap().unwrap();
        }
        let limits = store.agent_limits(acme).await.unwrap();
        assert_eq!(
            limits.entries.len(),
            16,
            "{:?}: {:?}",
            db.backend(),
            limits.entries.keys()
        );
        assert_eq!(limits.version, 16);
        assert_eq!(
            limits.entries["agent:worker-7"].max_budget,
            Some(Money::from_usd(7))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_limits_edit_writes_nothing() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        // One good entry beside a bad one: the ledger refuses the edit.
        let edit = LimitsEdit::Replace(std::collections::BTreeMap::from([
            ("agent:a".to_owned(), AgentLimitEntry::default()),
            (String::new(), AgentLimitEntry::default()),
        ]));
        let refused = store.edit_agent_limits(acme, &edit, now()).await.unwrap();
        assert!(refused.is_err(), "{refused:?}");
        let limits = store.agent_limits(acme).await.unwrap();
        assert!(limits.entries.is_empty());
        assert_eq!(limits.version, 0);
    })
    .await;
}

/// 32 concurrent spends of $0.75 from `agent` under a $10 daily limit, each
/// through the next of `stores` in turn (each having read the account
/// first, so it holds one the others' spends make stale); how many were
/// accepted.
async fn spend_concurrently(stores: &[Store], tenant: TenantId, agent: AgentId) -> usize {
    let limits = EnforcedLimits::enforce(Some(Money::from_usd(10)), None, None, None);
    let spend = Money::parse_usd("0.75").unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|n| {
            let through = stores[n % stores.len()].clone();
            tokio::spawn(async move {
                through.account(tenant, agent).await.unwrap();
                through
                    .ledger_transaction(tenant, &[agent], |accounts| {
                        let entry = accounts[&agent].spend(spend, &limits, now())?;
                        Ok(Appends {
                            entries: vec![(agent, entry)],
                            idempotency_key: None,
                        })
                    })
                    .await
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(StoreError::Ledger(LedgerError::InsufficientBudget { .. })) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    accepted
}

async fn spender(store: &Store, tenant: TenantId, name: &str) -> AgentId {
    store
        .create_agent(
            tenant,
            NewAgent::named(slug(name), AgentOrigin::Api).starting_in(LifecycleState::Active),
            now(),
        )
        .await
        .unwrap()
        .id
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_spends_never_pass_the_limit() {
    on_both_backends(|db| async move {
        let store = db.store.clone();
        let acme = tenant(&store, "acme").await;
        let agent = spender(&store, acme, "spender").await;
        // 13 x 0.75 = 9.75 fits, a 14th would be 10.50.
        let accepted = spend_concurrently(std::slice::from_ref(&store), acme, agent).await;
        assert_eq!(accepted, 13, "{:?}", db.backend());
        let account = store.account(acme, agent).await.unwrap();
        assert_eq!(
            account.spent(agentry_ledger::Window::Day, now()),
            Money::parse_usd("9.75").unwrap()
        );
        let ledger = store.tenant_ledger(acme).await.unwrap();
        assert_eq!(ledger.len(), 13);
        assert!(verify_transfers(ledger.iter().map(|(agent, entry)| (*agent, entry))).is_ok());
    })
    .await;
}

/// Each process keeps the accounts it read and replays only newer entries:
/// two replicas spending from one agent must still see each other's every
/// spend under the lock, and read the same account afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn spends_through_two_replicas_never_pass_the_limit() {
    on_both_backends(|db| async move {
        let store = db.store.clone();
        let replica = Store::connect(&db.url, &agentry_store::PoolOptions::default()).unwrap();
        let acme = tenant(&store, "acme").await;
        let agent = spender(&store, acme, "shared").await;
        let stores = [store, replica];
        let accepted = spend_concurrently(&stores, acme, agent).await;
        assert_eq!(accepted, 13, "{:?}", db.backend());
        for reader in &stores {
            let account = reader.account(acme, agent).await.unwrap();
            assert_eq!(
                account.spent(agentry_ledger::Window::Day, now()),
                Money::parse_usd("9.75").unwrap()
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delegation_writes_both_sides_and_a_repeated_idempotency_key_is_refused() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let parent = store
            .create_agent(
                acme,
                NewAgent::named(slug("parent"), AgentOrigin::Api)
                    .starting_in(LifecycleState::Active),
                now(),
            )
            .await
            .unwrap()
            .id;
        let child = store
            .create_agent(
                acme,
                NewAgent::named(slug("child"), AgentOrigin::Api)
                    .starting_in(LifecycleState::Active),
                now(),
            )
            .await
            .unwrap()
            .id;
        let limits = EnforcedLimits::enforce(Some(Money::from_usd(5)), None, None, None);
        store
            .ledger_transaction(acme, &[parent, child], |accounts| {
                let (slice, allocation) = accounts[&parent].delegate(
                    parent,
                    child,
                    Money::from_usd(2),
                    &limits,
                    now(),
                )?;
                Ok(Appends {
                    entries: vec![(parent, slice), (child, allocation)],
                    idempotency_key: Some("delegate-1".into()),
                })
            })
            .await
            .unwrap();
        let child_account = store.account(acme, child).await.unwrap();
        assert_eq!(child_account.unspent_allocation(now()), Money::from_usd(2));
        let ledger = store.tenant_ledger(acme).await.unwrap();
        assert!(verify_transfers(ledger.iter().map(|(agent, entry)| (*agent, entry))).is_ok());
        assert!(matches!(
            ledger[0].1.kind,
            EntryKind::DelegationSlice { .. } | EntryKind::Allocation { .. }
        ));

        let spend = async |key: &'static str| {
            store
                .ledger_transaction(acme, &[parent], move |accounts| {
                    let entry = accounts[&parent].spend(Money::from_usd(1), &limits, now())?;
                    Ok(Appends {
                        entries: vec![(parent, entry)],
                        idempotency_key: Some(key.into()),
                    })
                })
                .await
        };
        spend("spend-1").await.unwrap();
        let repeated = spend("spend-1").await;
        assert!(
            matches!(repeated, Err(StoreError::Conflict("ledger entry"))),
            "{repeated:?}"
        );
        assert_eq!(store.ledger_entries(acme, parent).await.unwrap().len(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_one_of_twenty_concurrent_consumers_wins() {
    on_both_backends(|db| async move {
        let store = Arc::new(db.store.clone());
        let acme = tenant(&store, "acme").await;
        let hash = [7u8; 32];
        store
            .insert_token(
                acme,
                NewToken {
                    purpose: TokenPurpose::Bootstrap,
                    token_hash: hash,
                    subject_id: uuid::Uuid::now_v7(),
                    max_attempts: 1,
                    expires_at: now() + Duration::hours(1),
                },
                now(),
            )
            .await
            .unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .consume_token(TokenPurpose::Bootstrap, &hash, now())
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(token) => {
                    winners += 1;
                    assert!(token.consumed_at.is_some());
                }
                Err(StoreError::Token(TokenError::Consumed)) => {}
                Err(other) => panic!("{:?}: unexpected {other:?}", db.backend()),
            }
        }
        assert_eq!(winners, 1, "{:?}", db.backend());
        // The wrong purpose does not find it at all.
        let wrong = store
            .consume_token(TokenPurpose::Invite, &hash, now())
            .await;
        assert!(matches!(wrong, Err(StoreError::Token(TokenError::Unknown))));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attempt_counters_stop_at_their_limit_and_expired_tokens_refuse() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let new = |hash: [u8; 32], expires_in: Duration| NewToken {
            purpose: TokenPurpose::Download,
            token_hash: hash,
            subject_id: uuid::Uuid::now_v7(),
            max_attempts: 3,
            expires_at: now() + expires_in,
        };
        store
            .insert_token(acme, new([1; 32], Duration::hours(1)), now())
            .await
            .unwrap();
        for expected in 1..=3 {
            let token = store
                .record_token_attempt(TokenPurpose::Download, &[1; 32], now())
                .await
                .unwrap();
            assert_eq!(token.attempts, expected);
        }
        let fourth = store
            .record_token_attempt(TokenPurpose::Download, &[1; 32], now())
            .await;
        assert!(matches!(
            fourth,
            Err(StoreError::Token(TokenError::TooManyAttempts))
        ));
        // A transfer that started on the last attempt may still complete.
        store
            .consume_token(TokenPurpose::Download, &[1; 32], now())
            .await
            .unwrap();

        store
            .insert_token(acme, new([2; 32], Duration::seconds(1)), now())
            .await
            .unwrap();
        let later = now() + Duration::seconds(2);
        let expired = store
            .consume_token(TokenPurpose::Download, &[2; 32], later)
            .await;
        assert!(
            matches!(expired, Err(StoreError::Token(TokenError::Expired))),
            "{expired:?}"
        );
        let unknown = store
            .consume_token(TokenPurpose::Download, &[3; 32], now())
            .await;
        assert!(matches!(
            unknown,
            Err(StoreError::Token(TokenError::Unknown))
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_chain_verifies_and_names_the_first_tampered_event() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let globex = tenant(store, "globex").await;
        for n in 0..5 {
            for tenant in [acme, globex] {
                store
                    .append_audit(
                        tenant,
                        NewAuditEvent {
                            actor: "key:test".into(),
                            action: "agent.bootstrap".into(),
                            target: Some(format!("agent:worker-{n}")),
                            outcome: "success".into(),
                            detail: serde_json::json!({ "n": n }),
                        },
                        now(),
                    )
                    .await
                    .unwrap();
            }
        }
        assert_eq!(store.verify_audit_chain(acme).await.unwrap(), Ok(5));
        let about = store
            .audit_events_for(acme, "agent:worker-2", 10)
            .await
            .unwrap();
        assert_eq!(about.len(), 1);
        assert_eq!(about[0].detail, serde_json::json!({ "n": 2 }));

        db.execute_raw("UPDATE audit_events SET outcome = 'failure' WHERE seq = 3")
            .await;
        let broken = store.verify_audit_chain(acme).await.unwrap().unwrap_err();
        assert_eq!(broken.seq, 3, "{:?}", db.backend());
        assert!(broken.to_string().contains("seq 3"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_audit_event_is_reported_as_missing() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        for action in ["a", "b", "c"] {
            let event = NewAuditEvent {
                actor: "system".into(),
                action: action.into(),
                target: None,
                outcome: "success".into(),
                detail: serde_json::Value::Null,
            };
            store.append_audit(acme, event, now()).await.unwrap();
        }
        db.execute_raw("DELETE FROM audit_events WHERE seq = 2")
            .await;
        let broken = store.verify_audit_chain(acme).await.unwrap().unwrap_err();
        assert_eq!(broken.seq, 2);
        assert_eq!(broken.reason, "an event is missing");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_are_found_by_hash_and_revoked_per_tenant() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let globex = tenant(store, "globex").await;
        let key = store
            .insert_api_key(
                acme,
                agentry_store::NewApiKey {
                    role: Some(agentry_domain::ApiKeyRole::Provisioner),
                    agent_id: None,
                    key_hash: [9; 32],
                    label: Some("ci".into()),
                },
                now(),
            )
            .await
            .unwrap();
        let found = store.find_api_key(&[9; 32]).await.unwrap().unwrap();
        assert_eq!(found, key);
        assert_eq!(store.find_api_key(&[8; 32]).await.unwrap(), None);
        assert!(matches!(
            store.revoke_api_key(globex, key.id, now()).await,
            Err(StoreError::NotFound("API key"))
        ));
        store.revoke_api_key(acme, key.id, now()).await.unwrap();
        store.revoke_api_key(acme, key.id, now()).await.unwrap();
        assert!(
            store
                .find_api_key(&[9; 32])
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_some()
        );
        assert_eq!(store.count_tenants().await.unwrap(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_postgres_database_is_created_once() {
    let sqlite = support::sqlite_db().await;
    assert!(!Store::ensure_database(&sqlite.url).await.unwrap());
    // Reuse the harness's reachability rule: skip outside CI, fail inside.
    let Some((probe, probe_name)) = support::postgres_db().await else {
        return;
    };
    drop(probe);
    support::drop_postgres(&probe_name).await;
    let name = format!("agentry_ensure_{}", uuid::Uuid::now_v7().simple());
    let url =
        agentry_store::DatabaseUrl::parse(&format!("postgres://postgres@127.0.0.1:5432/{name}"))
            .unwrap();
    let created = Store::ensure_database(&url).await;
    let again = Store::ensure_database(&url).await;
    support::drop_postgres(&name).await;
    assert!(created.unwrap(), "the first call creates it");
    assert!(!again.unwrap(), "the second finds it");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_tenant_is_created_once_with_its_key() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let key = |byte: u8| agentry_store::NewApiKey {
            role: Some(agentry_domain::ApiKeyRole::Admin),
            agent_id: None,
            key_hash: [byte; 32],
            label: Some("first admin".into()),
        };
        let first = store
            .create_first_tenant("default", key(1), now())
            .await
            .unwrap();
        assert_eq!(first.map(|tenant| tenant.name), Some("default".to_owned()));
        assert_eq!(
            store
                .create_first_tenant("default", key(2), now())
                .await
                .unwrap(),
            None
        );
        assert!(store.find_api_key(&[1; 32]).await.unwrap().is_some());
        assert!(
            store.find_api_key(&[2; 32]).await.unwrap().is_none(),
            "nothing written"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_the_signing_key_retires_the_previous_one() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let key = |kid: &str| agentry_store::SigningKeyRecord {
            kid: kid.into(),
            algorithm: "EdDSA".into(),
            public_jwk: format!("{{\"kid\":\"{kid}\"}}"),
            private_sealed: vec![1, 2, 3],
            created_at: now(),
            retired_at: None,
            revoked_at: None,
        };
        let mut changes = store.subscribe_changes();
        store.rotate_signing_key(key("k1"), now()).await.unwrap();
        store
            .rotate_signing_key(key("k2"), now() + Duration::seconds(1))
            .await
            .unwrap();
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!((keys[0].kid.as_str(), keys[0].retired_at), ("k2", None));
        assert_eq!(keys[1].kid, "k1");
        assert!(keys[1].retired_at.is_some());
        assert_eq!(
            changes.recv().await.unwrap(),
            agentry_store::Change::SigningKeys
        );
        let duplicate = store.rotate_signing_key(key("k2"), now()).await;
        assert!(matches!(
            duplicate,
            Err(StoreError::Conflict("signing key"))
        ));
        assert_eq!(
            store.signing_keys().await.unwrap()[0].kid,
            "k2",
            "a failed rotation retires nothing"
        );
    })
    .await;
}

fn signing_key(kid: &str) -> agentry_store::SigningKeyRecord {
    agentry_store::SigningKeyRecord {
        kid: kid.into(),
        algorithm: "EdDSA".into(),
        public_jwk: format!("{{\"kid\":\"{kid}\"}}"),
        private_sealed: vec![1, 2, 3],
        created_at: now(),
        retired_at: None,
        revoked_at: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_the_current_signing_key_makes_its_replacement_current_in_one_step() {
    use agentry_store::{Change, KidDigest, SigningKeyRevocation};
    on_both_backends(|db| async move {
        let store = &db.store;
        store
            .rotate_signing_key(signing_key("k1"), now())
            .await
            .unwrap();
        let mut changes = store.subscribe_changes();
        let revoked = store
            .revoke_signing_key("k1", signing_key("k2"), now())
            .await
            .unwrap();
        assert_eq!(
            revoked,
            SigningKeyRevocation::Revoked {
                replaced_by: Some("k2".into())
            }
        );
        assert_eq!(
            changes.recv().await.unwrap(),
            Change::SigningKeyRevoked(KidDigest::of("k1"))
        );
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            (keys[0].kid.as_str(), keys[0].retired_at, keys[0].revoked_at),
            ("k2", None, None),
            "exactly one current key, never revoked"
        );
        assert_eq!(keys[1].kid, "k1");
        assert!(keys[1].retired_at.is_some() && keys[1].revoked_at.is_some());

        // Twice is harmless: nothing written, nothing announced.
        assert_eq!(
            store
                .revoke_signing_key("k1", signing_key("k3"), now())
                .await
                .unwrap(),
            SigningKeyRevocation::AlreadyRevoked
        );
        assert_eq!(store.signing_keys().await.unwrap().len(), 2);
        assert!(changes.try_recv().is_err(), "no change announced");
        // An unknown kid is an error, and changes nothing either.
        assert!(matches!(
            store
                .revoke_signing_key("nobody", signing_key("k4"), now())
                .await,
            Err(StoreError::NotFound("signing key"))
        ));
        assert_eq!(store.signing_keys().await.unwrap().len(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_retired_signing_key_leaves_the_current_one() {
    use agentry_store::SigningKeyRevocation;
    on_both_backends(|db| async move {
        let store = &db.store;
        store
            .rotate_signing_key(signing_key("k1"), now())
            .await
            .unwrap();
        store
            .rotate_signing_key(signing_key("k2"), now() + Duration::seconds(1))
            .await
            .unwrap();
        assert_eq!(
            store
                .revoke_signing_key("k1", signing_key("unused"), now())
                .await
                .unwrap(),
            SigningKeyRevocation::Revoked { replaced_by: None }
        );
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(keys.len(), 2, "the replacement is not used");
        assert_eq!((keys[0].kid.as_str(), keys[0].revoked_at), ("k2", None));
        assert!(keys[1].revoked_at.is_some());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn last_seen_only_moves_forward() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let agent = store
            .create_agent(
                acme,
                NewAgent::named(slug("seen"), AgentOrigin::Api).starting_in(LifecycleState::Active),
                now(),
            )
            .await
            .unwrap()
            .id;
        let later = now() + Duration::minutes(5);
        store
            .record_last_seen(vec![(acme, agent, later)])
            .await
            .unwrap();
        store
            .record_last_seen(vec![(acme, agent, now())])
            .await
            .unwrap();
        let stored = store.find_agent(acme, agent).await.unwrap().unwrap();
        assert_eq!(
            stored.last_seen_at.map(|seen| seen.unix_timestamp()),
            Some(later.unix_timestamp()),
            "the earlier sighting did not overwrite the later one"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spend_and_a_revocation_reach_another_replica_through_the_change_feed() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let agent = store
            .create_agent(
                acme,
                NewAgent::named(slug("revoked"), AgentOrigin::Api)
                    .starting_in(LifecycleState::Active),
                now(),
            )
            .await
            .unwrap()
            .id;
        // A second store on the same database stands for another replica
        // (or, on SQLite, the operator's CLI next to the server).
        let replica = Store::connect(&db.url, &agentry_store::PoolOptions::default()).unwrap();
        let mut heard = replica.subscribe_changes();
        replica.start_change_listener(&db.url).await.unwrap();
        let mut local = store.subscribe_changes();
        if db.backend() == agentry_store::Backend::Postgres {
            // The listener distrusts the feed until its first heartbeat
            // comes back, then announces a resync.
            assert_eq!(
                heard.recv().await.unwrap(),
                agentry_store::Change::Untrusted
            );
            assert_eq!(heard.recv().await.unwrap(), agentry_store::Change::Resync);
        }
        // A spend moves the agent's account, which replicas cache too.
        let unlimited = EnforcedLimits::enforce(None, None, None, None);
        store
            .ledger_transaction(acme, &[agent], |accounts| {
                let entry = accounts[&agent].spend(Money::from_usd(1), &unlimited, now())?;
                Ok(Appends {
                    entries: vec![(agent, entry)],
                    idempotency_key: None,
                })
            })
            .await
            .unwrap();
        assert_eq!(
            local.recv().await.unwrap(),
            agentry_store::Change::Ledger(agent)
        );
        assert_eq!(
            heard.recv().await.unwrap(),
            agentry_store::Change::Ledger(agent)
        );
        store
            .transition(
                acme,
                agent,
                LifecycleCommand::Terminate(TerminationReason::Revoked),
                now(),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            local.recv().await.unwrap(),
            agentry_store::Change::Agent(agent)
        );
        // PostgreSQL delivers on commit; SQLite within one poll interval.
        assert_eq!(
            heard.recv().await.unwrap(),
            agentry_store::Change::Agent(agent)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operators_termination_takes_the_subtree_and_its_budgets_in_one_command() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let usd = |text: &str| Money::parse_usd(text).unwrap();
        let limits = EnforcedLimits::enforce(Some(usd("5")), None, None, None);
        let active = |name: &str| {
            NewAgent::named(slug(name), AgentOrigin::Api).starting_in(LifecycleState::Active)
        };
        let parent = store
            .create_agent(acme, active("parent"), now())
            .await
            .unwrap();
        let child = store
            .create_delegated_agent(acme, parent.id, active("child"), now(), |view, child| {
                Ok(view
                    .account(parent.id)?
                    .delegate(parent.id, child, usd("2"), &limits, now())?)
            })
            .await
            .unwrap();
        let terminate = LifecycleCommand::Request(LifecycleState::Terminated);
        let suspend = LifecycleCommand::Request(LifecycleState::Suspended);
        store
            .transition(acme, parent.id, suspend, now())
            .await
            .unwrap()
            .unwrap();

        let (ended, event) = store
            .transition(acme, parent.id, terminate, now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ended.lifecycle_state, LifecycleState::Terminated);
        assert_eq!(ended.credential_epoch, 1);
        assert_eq!(
            event.map(|event| event.to),
            Some(LifecycleState::Terminated)
        );
        assert_eq!(
            store.find_agent(acme, parent.id).await.unwrap().unwrap(),
            ended
        );
        let child = store.find_agent(acme, child.id).await.unwrap().unwrap();
        assert_eq!(child.lifecycle_state, LifecycleState::Terminated);
        assert!(store.account(acme, child.id).await.unwrap().is_settled());
        let ledger = store.tenant_ledger(acme).await.unwrap();
        assert!(verify_transfers(ledger.iter().map(|(agent, entry)| (*agent, entry))).is_ok());

        // Judged against the agent as it is under the locks: a second
        // request is refused and writes nothing.
        let refused = store
            .transition(acme, parent.id, terminate, now())
            .await
            .unwrap();
        assert!(matches!(
            refused,
            Err(LifecycleError::InvalidTransition { .. })
        ));
        assert_eq!(store.tenant_ledger(acme).await.unwrap().len(), ledger.len());
        let forced = LifecycleCommand::Terminate(TerminationReason::Revoked);
        assert!(matches!(
            store
                .transition(acme, parent.id, forced, now())
                .await
                .unwrap(),
            Err(LifecycleError::AlreadyTerminated)
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reclaiming_a_child_returns_exactly_its_unspent_budget_through_the_tree() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let usd = |text: &str| Money::parse_usd(text).unwrap();
        let parent = store
            .create_agent(
                acme,
                NewAgent::named(slug("parent"), AgentOrigin::Api)
                    .starting_in(LifecycleState::Active),
                now(),
            )
            .await
            .unwrap();
        let limits = |daily: &str| EnforcedLimits::enforce(Some(usd(daily)), None, None, None);
        let delegate = async |from: AgentId, name: &str, amount: &str, daily: &str| {
            let mut child =
                NewAgent::named(slug(name), AgentOrigin::Api).starting_in(LifecycleState::Active);
            child.budget_daily = Some(usd(amount));
            let (amount, limits) = (usd(amount), limits(daily));
            store
                .create_delegated_agent(acme, from, child, now(), |view, child| {
                    Ok(view
                        .account(from)?
                        .delegate(from, child, amount, &limits, now())?)
                })
                .await
        };
        let child = delegate(parent.id, "child", "2", "5").await.unwrap();
        let grandchild = delegate(child.id, "grandchild", "1", "2").await.unwrap();
        let spend = async |agent: AgentId, amount: &str, daily: &str| {
            let (amount, limits) = (usd(amount), limits(daily));
            store
                .ledger_transaction(acme, &[agent], |accounts| {
                    let entry = accounts[&agent].spend(amount, &limits, now())?;
                    Ok(Appends {
                        entries: vec![(agent, entry)],
                        idempotency_key: None,
                    })
                })
                .await
                .unwrap();
        };
        spend(child.id, "0.5", "2").await;
        spend(grandchild.id, "0.25", "1").await;

        // A taken slug writes nothing, not even the parent's slice.
        let before = store.ledger_entries(acme, parent.id).await.unwrap().len();
        assert!(matches!(
            delegate(parent.id, "child", "1", "5").await,
            Err(StoreError::Conflict("agent"))
        ));
        assert_eq!(
            store.ledger_entries(acme, parent.id).await.unwrap().len(),
            before
        );

        let reclaimed = store
            .reclaim_agent(acme, child.id, TerminationReason::ReclaimedByParent, now())
            .await
            .unwrap();
        // Grandchild returns 0.75; child returns 2 - 0.5 - 1 + 0.75.
        assert_eq!(reclaimed.refunded, usd("1.25"));
        assert_eq!(reclaimed.terminated, vec![grandchild.id, child.id]);
        assert!(!reclaimed.already_terminated);
        let parent_account = store.account(acme, parent.id).await.unwrap();
        assert_eq!(
            parent_account
                .remaining(&limits("5"), now())
                .map(|(money, _)| money),
            Some(usd("4.25"))
        );
        let ledger = store.tenant_ledger(acme).await.unwrap();
        assert!(verify_transfers(ledger.iter().map(|(agent, entry)| (*agent, entry))).is_ok());
        for id in [child.id, grandchild.id] {
            let agent = store.find_agent(acme, id).await.unwrap().unwrap();
            assert_eq!(agent.lifecycle_state, LifecycleState::Terminated);
            assert_eq!(agent.credential_epoch, 1);
        }
        assert!(
            store
                .live_children(acme, parent.id)
                .await
                .unwrap()
                .is_empty()
        );

        let again = store
            .reclaim_agent(acme, child.id, TerminationReason::ReclaimedByParent, now())
            .await
            .unwrap();
        assert_eq!(
            (
                again.refunded,
                again.already_terminated,
                again.terminated.len()
            ),
            (Money::ZERO, true, 0)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_children_are_found_for_the_reaper() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let mut short = NewAgent::named(slug("short-lived"), AgentOrigin::Api)
            .starting_in(LifecycleState::Active);
        short.expires_at = Some(now() + Duration::seconds(30));
        let short = store.create_agent(acme, short, now()).await.unwrap();
        store
            .create_agent(
                acme,
                NewAgent::named(slug("forever"), AgentOrigin::Api)
                    .starting_in(LifecycleState::Active),
                now(),
            )
            .await
            .unwrap();
        assert!(store.expired_agents(now(), 10).await.unwrap().is_empty());
        let later = now() + Duration::minutes(1);
        assert_eq!(
            store.expired_agents(later, 10).await.unwrap(),
            vec![(acme, short.id)]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn money_moves_by_one_command_that_rechecks_the_agent_and_remembers_its_key() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let mut new = NewAgent::named(slug("spender"), AgentOrigin::Registry);
        new.budget_daily = Some(Money::from_usd(5));
        let agent = store.create_agent(acme, new, now()).await.unwrap();
        let spend = |usd| agentry_ledger::Movement::Spend {
            amount: Money::from_usd(usd),
        };

        let (account, limits) = store
            .move_money(acme, agent.id, spend(3), Some("k-1".into()), now())
            .await
            .unwrap();
        assert_eq!(limits.daily, Some(Money::from_usd(5)));
        assert_eq!(
            account.spent(agentry_ledger::Window::Day, now()),
            Money::from_usd(3)
        );
        // The key again: nothing is recorded, the earlier entry comes back.
        match store
            .move_money(acme, agent.id, spend(3), Some("k-1".into()), now())
            .await
        {
            Err(StoreError::Replayed(earlier)) => assert!(spend(3).is_replayed_by(&earlier)),
            other => panic!("{other:?}"),
        }
        // Past the limit: refused, nothing written.
        match store
            .move_money(acme, agent.id, spend(3), None, now())
            .await
        {
            Err(StoreError::Ledger(LedgerError::InsufficientBudget { .. })) => {}
            other => panic!("{other:?}"),
        }
        // A suspension committed a moment ago counts.
        store
            .transition(
                acme,
                agent.id,
                LifecycleCommand::Request(LifecycleState::Suspended),
                now(),
            )
            .await
            .unwrap()
            .unwrap();
        match store
            .move_money(acme, agent.id, spend(1), None, now())
            .await
        {
            Err(StoreError::Denied(denial)) => assert!(denial.is_payment_required()),
            other => panic!("{other:?}"),
        }
        let entries = store.ledger_entries(acme, agent.id).await.unwrap();
        assert_eq!(entries.len(), 1, "{entries:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delegation_is_one_command_that_rechecks_the_parent_and_slices_its_budget() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let mut new = NewAgent::named(slug("parent"), AgentOrigin::Registry);
        new.budget_daily = Some(Money::from_usd(5));
        let parent = store.create_agent(acme, new, now()).await.unwrap();
        let child = |name: &str| NewAgent::named(slug(name), AgentOrigin::Delegation);

        let made = store
            .delegate(acme, parent.id, child("child"), Money::from_usd(2), now())
            .await
            .unwrap();
        assert_eq!(made.parent_id, Some(parent.id));
        assert_eq!(made.lifecycle_state, LifecycleState::Active);
        let account = store.account(acme, parent.id).await.unwrap();
        assert_eq!(
            account.committed(agentry_ledger::Window::Day, now()),
            Money::from_usd(2),
            "the slice counts against the parent"
        );
        // More than the parent has left: the ledger refuses, nothing is made.
        match store
            .delegate(acme, parent.id, child("greedy"), Money::from_usd(4), now())
            .await
        {
            Err(StoreError::Ledger(LedgerError::InsufficientBudget { .. })) => {}
            other => panic!("{other:?}"),
        }
        assert!(
            store
                .find_agent_by_slug(acme, &slug("greedy"))
                .await
                .unwrap()
                .is_none()
        );
        store
            .transition(
                acme,
                parent.id,
                LifecycleCommand::Request(LifecycleState::Suspended),
                now(),
            )
            .await
            .unwrap()
            .unwrap();
        match store
            .delegate(acme, parent.id, child("late"), Money::from_usd(1), now())
            .await
        {
            Err(StoreError::Denied(denial)) => assert!(denial.is_payment_required()),
            other => panic!("{other:?}"),
        }
    })
    .await;
}
