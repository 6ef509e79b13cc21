//! Seed 004's repository: registration with its key, keyset pages, key
//! rotation.

use agentry_domain::{AgentOrigin, LifecycleState, TrustLevel};
use agentry_lifecycle::TerminationReason;
use agentry_store::{AgentPageQuery, NewAgent, StoreError, now};

use crate::support::on_both_backends;
use crate::{slug, tenant};

#[tokio::test(flavor = "multi_thread")]
async fn registering_creates_the_agent_and_its_key_or_neither() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let new = || {
            NewAgent::named(slug("assistant"), AgentOrigin::Api).starting_in(LifecycleState::Active)
        };
        let (agent, key) = store
            .register_agent(acme, new(), [1; 32], now())
            .await
            .unwrap();
        assert_eq!(key.agent_id, Some(agent.id));
        assert_eq!(
            store
                .find_api_key(&[1; 32])
                .await
                .unwrap()
                .map(|key| key.id),
            Some(key.id)
        );
        // A taken name: a conflict, and the second key was not stored.
        assert!(matches!(
            store.register_agent(acme, new(), [2; 32], now()).await,
            Err(StoreError::Conflict("agent"))
        ));
        assert!(store.find_api_key(&[2; 32]).await.unwrap().is_none());
        assert_eq!(db.count("api_keys").await, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_follow_ids_and_filters() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let (acme, globex) = (tenant(store, "acme").await, tenant(store, "globex").await);
        let mut ids = Vec::new();
        for i in 0..7 {
            let mut new = NewAgent::named(slug(&format!("agent-{i}")), AgentOrigin::Api)
                .starting_in(LifecycleState::Active);
            new.trust_level = if i % 2 == 0 {
                TrustLevel::Low
            } else {
                TrustLevel::High
            };
            ids.push(store.create_agent(acme, new, now()).await.unwrap().id);
        }
        store
            .create_agent(
                globex,
                NewAgent::named(slug("elsewhere"), AgentOrigin::Api)
                    .starting_in(LifecycleState::Active),
                now(),
            )
            .await
            .unwrap();
        store
            .reclaim_agent(acme, ids[3], TerminationReason::Revoked, now())
            .await
            .unwrap();
        let page = |query: AgentPageQuery| async move {
            store
                .agents_page(acme, query)
                .await
                .unwrap()
                .into_iter()
                .map(|agent| agent.id)
                .collect::<Vec<_>>()
        };
        let first = page(AgentPageQuery {
            limit: 3,
            ..Default::default()
        })
        .await;
        assert_eq!(first, ids[..3]);
        let rest = page(AgentPageQuery {
            after: Some(ids[2]),
            limit: 10,
            ..Default::default()
        })
        .await;
        assert_eq!(rest, ids[3..]);
        let high = page(AgentPageQuery {
            limit: 10,
            trust_level: Some(TrustLevel::High),
            ..Default::default()
        })
        .await;
        assert_eq!(high, [ids[1], ids[3], ids[5]]);
        let revoked = page(AgentPageQuery {
            limit: 10,
            revoked: Some(true),
            ..Default::default()
        })
        .await;
        assert_eq!(revoked, [ids[3]]);
        let active = page(AgentPageQuery {
            limit: 10,
            revoked: Some(false),
            ..Default::default()
        })
        .await;
        assert_eq!(active.len(), 6);
        assert!(!active.contains(&ids[3]));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_retires_every_old_key_and_the_epoch_but_not_for_the_revoked() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let (agent, _) = store
            .register_agent(
                acme,
                NewAgent::named(slug("rotating"), AgentOrigin::Api)
                    .starting_in(LifecycleState::Active),
                [1; 32],
                now(),
            )
            .await
            .unwrap();
        let new_key = store
            .rotate_agent_key(acme, agent.id, [2; 32], now())
            .await
            .unwrap();
        assert!(
            store
                .find_api_key(&[1; 32])
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_some()
        );
        assert_eq!(
            store.find_api_key(&[2; 32]).await.unwrap().unwrap().id,
            new_key.id
        );
        assert!(new_key.revoked_at.is_none());
        let after = store.find_agent(acme, agent.id).await.unwrap().unwrap();
        assert_eq!(after.credential_epoch, agent.credential_epoch + 1);

        let other = tenant(store, "other").await;
        assert!(matches!(
            store
                .rotate_agent_key(other, agent.id, [3; 32], now())
                .await,
            Err(StoreError::NotFound("agent"))
        ));
        store
            .reclaim_agent(acme, agent.id, TerminationReason::Revoked, now())
            .await
            .unwrap();
        assert!(matches!(
            store.rotate_agent_key(acme, agent.id, [4; 32], now()).await,
            Err(StoreError::Refused(_))
        ));
        assert!(
            store.find_api_key(&[4; 32]).await.unwrap().is_none(),
            "a refusal stores nothing"
        );
        assert!(
            store
                .find_api_key(&[2; 32])
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_none()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_is_kept_as_written_and_unique_by_its_slug() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let called = |name: &str| {
            NewAgent::called(
                agentry_domain::AgentName::parse(name).unwrap(),
                AgentOrigin::Api,
            )
            .starting_in(LifecycleState::Active)
        };
        let agent = store
            .create_agent(acme, called("Support Bot"), now())
            .await
            .unwrap();
        let found = store.find_agent(acme, agent.id).await.unwrap().unwrap();
        assert_eq!(found.name.as_str(), "Support Bot");
        assert_eq!(found.slug, agent.slug);
        let by_slug = store.find_agent_by_slug(acme, &agent.slug).await.unwrap();
        assert_eq!(by_slug.map(|agent| agent.id), Some(agent.id));
        // Another case of the same name is the same slug: taken.
        assert!(matches!(
            store.create_agent(acme, called("SUPPORT BOT"), now()).await,
            Err(StoreError::Conflict("agent"))
        ));
        // A name that is its own slug is stored as the slug alone.
        let plain = store
            .create_agent(acme, called("support-bot"), now())
            .await
            .unwrap();
        let found = store.find_agent(acme, plain.id).await.unwrap().unwrap();
        assert_eq!(found.name.as_str(), "support-bot");
    })
    .await;
}
