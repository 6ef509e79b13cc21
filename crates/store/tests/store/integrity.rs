//! `Store::check_integrity`: silent on a sound database, and it names each
//! kind of damage it looks for.

use agentry_domain::{AgentOrigin, Email, LifecycleState, Money};
use agentry_ledger::EnforcedLimits;
use agentry_lifecycle::TerminationReason;
use agentry_store::{
    Appends, BootstrapAgent, BootstrapHuman, InstanceBootstrap, NewAgent, NewAuditEvent,
    ProfilePatch, now,
};

use crate::support::on_both_backends;
use crate::{slug, tenant};

#[tokio::test(flavor = "multi_thread")]
async fn a_sound_database_passes_and_each_kind_of_damage_is_named() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let mut new = NewAgent::named(slug("spender"), AgentOrigin::Api).starting_in(LifecycleState::Active);
        new.budget_daily = Some(Money::from_usd(10));
        let agent = store.create_agent(acme, new, now()).await.unwrap();
        let limits = EnforcedLimits::enforce(Some(Money::from_usd(10)), None, None, None);
        for _ in 0..3 {
            store
                .ledger_transaction(acme, &[agent.id], |accounts| {
                    let entry = accounts[&agent.id].spend(Money::from_usd(2), &limits, now())?;
                    Ok(Appends {
                        entries: vec![(agent.id, entry)],
                        idempotency_key: None,
                    })
                })
                .await
                .unwrap();
        }
        for action in ["one", "two"] {
            store
                .append_audit(
                    acme,
                    NewAuditEvent {
                        actor: "test".into(),
                        action: action.into(),
                        target: None,
                        outcome: "ok".into(),
                        detail: serde_json::json!({}),
                    },
                    now(),
                )
                .await
                .unwrap();
        }
        let report = store.check_integrity(now()).await.unwrap();
        assert_eq!(report.violations, Vec::<String>::new());
        assert_eq!((report.tenants, report.agents, report.ledger_entries, report.audit_events), (1, 1, 3, 2));

        // A terminated agent whose revocation time was lost.
        let ended = NewAgent::named(slug("ended"), AgentOrigin::Api).starting_in(LifecycleState::Active);
        let ended = store.create_agent(acme, ended, now()).await.unwrap();
        store
            .reclaim_agent(acme, ended.id, TerminationReason::Operator, now())
            .await
            .unwrap();
        assert_eq!(store.check_integrity(now()).await.unwrap().violations, Vec::<String>::new());
        db.execute_raw("UPDATE agents SET revoked_at = NULL WHERE slug = 'ended'").await;
        // A cap lowered under what was committed.
        let patch = ProfilePatch {
            budget_daily: Some(Some(Money::from_usd(5))),
            ..Default::default()
        };
        store.update_agent_profile(acme, &agent.slug, patch, now()).await.unwrap();
        // An agent bootstrap activated whose limits entry is gone.
        db.execute_raw(&format!(
            "INSERT INTO lifecycle_events (id, tenant_id, agent_id, from_state, to_state, cause, at) \
             SELECT id, tenant_id, id, 'provisioned', 'active', 'bootstrap', created_at FROM agents WHERE slug = '{}'",
            agent.slug
        ))
        .await;
        // An audit event edited after the fact.
        db.execute_raw("UPDATE audit_events SET action = 'forged' WHERE seq = 2").await;
        // Two invites: one accepted as it should be, one whose token was
        // used up without its user getting a password.
        let human = |n: u8| BootstrapHuman {
            email: Email::parse(&format!("human-{n}@example.com")).unwrap(),
            display_name: format!("Human {n}"),
            role: "member".into(),
            invite_hash: [n; 32],
            invite_expires_at: now() + time::Duration::days(1),
        };
        store
            .bootstrap_instance(
                InstanceBootstrap {
                    primary_email: Email::parse("primary@example.com").unwrap(),
                    primary_password_hash: "hash".into(),
                    primary_agent: BootstrapAgent {
                        agent: NewAgent::named(slug("primary"), AgentOrigin::Api).starting_in(LifecycleState::Active),
                        key_hash: [9; 32],
                    },
                    agents: Vec::new(),
                    humans: vec![human(1), human(2)],
                    channel_name: "general".into(),
                    channel_topic: None,
                },
                now(),
            )
            .await
            .unwrap();
        store.accept_invite(&[1; 32], "hash".into(), None, now()).await.unwrap();
        // And a machine whose bootstrap token is used up with no session
        // completed.
        store
            .create_machine_instance(acme, crate::provisioning::new_machine("edge-1", [7; 32]), now())
            .await
            .unwrap();
        assert_eq!(store.check_integrity(now()).await.unwrap().consumed_tokens, 1);
        db.execute_raw("UPDATE one_time_tokens SET consumed_at = created_at WHERE consumed_at IS NULL")
            .await;

        let report = store.check_integrity(now()).await.unwrap();
        let all = report.violations.join("\n");
        assert_eq!(report.consumed_tokens, 3);
        assert!(all.contains("invite token") && all.contains("did not take effect"), "{all}");
        assert!(all.contains("provisioning token"), "{all}");
        assert_eq!(report.violations.len(), 6, "{all}");
        assert!(all.contains("agent ended: terminated, but without its revoked_at"), "{all}");
        assert!(all.contains("above its cap"), "{all}");
        assert!(all.contains("no agent-limits entry"), "{all}");
        assert!(all.contains("audit event 2 breaks the chain"), "{all}");
    })
    .await;
}
