//! The shared requests-per-minute count: leases never grant past the limit,
//! however many replicas race, and past minutes are pruned.

use agentry_domain::AgentId;
use agentry_ledger::lease_from;
use agentry_store::RateLease;

use crate::support::on_both_backends;
use crate::tenant;

const MINUTE: i64 = 29_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn leases_follow_the_ledgers_rule_and_stop_at_the_limit() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let agent = AgentId::from_uuid(uuid::Uuid::now_v7());
        let mut total = 0;
        for ask in [2, 2, 3, 10, 1] {
            let lease = store
                .lease_rate(acme, agent, MINUTE, ask, 10)
                .await
                .unwrap();
            let (expected_total, expected_grant) = lease_from(total, ask, 10);
            assert_eq!(
                lease,
                RateLease {
                    granted: expected_grant,
                    total: expected_total
                }
            );
            total = lease.total;
        }
        assert_eq!(total, 10);
        // Another minute, another agent and another tenant count apart.
        let next = store
            .lease_rate(acme, agent, MINUTE + 1, 4, 10)
            .await
            .unwrap();
        assert_eq!((next.granted, next.total), (4, 4));
        let other = AgentId::from_uuid(uuid::Uuid::now_v7());
        assert_eq!(
            store
                .lease_rate(acme, other, MINUTE, 4, 10)
                .await
                .unwrap()
                .granted,
            4
        );
        let globex = tenant(store, "globex").await;
        assert_eq!(
            store
                .lease_rate(globex, agent, MINUTE, 4, 10)
                .await
                .unwrap()
                .granted,
            4
        );
        // A limit lowered below what was leased grants nothing more.
        let lowered = store
            .lease_rate(acme, agent, MINUTE + 1, 4, 3)
            .await
            .unwrap();
        assert_eq!((lowered.granted, lowered.total), (0, 4));
        assert!(lowered.spent(3));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_leases_never_grant_past_the_limit() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let agent = AgentId::from_uuid(uuid::Uuid::now_v7());
        let leases = (0..40).map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.lease_rate(acme, agent, MINUTE, 3, 50).await })
        });
        let mut granted = 0;
        for lease in leases {
            granted += lease.await.unwrap().unwrap().granted;
        }
        assert_eq!(granted, 50);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn past_minutes_are_pruned_and_the_current_one_kept() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let agent = AgentId::from_uuid(uuid::Uuid::now_v7());
        for minute in MINUTE - 3..=MINUTE {
            store.lease_rate(acme, agent, minute, 1, 10).await.unwrap();
        }
        assert_eq!(store.prune_rate_leases(MINUTE).await.unwrap(), 2);
        assert_eq!(db.count("rate_leases").await, 2);
        // The kept minutes keep their counts.
        let lease = store
            .lease_rate(acme, agent, MINUTE - 1, 1, 10)
            .await
            .unwrap();
        assert_eq!(lease.total, 2);
    })
    .await;
}
