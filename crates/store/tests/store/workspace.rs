//! Seed 002's workspace in the store: a tenant of its own with an admin key
//! for its primary agent, agents filed by origin, session epochs, and
//! invites read before they are spent.

use agentry_domain::{AgentOrigin, ApiKeyRole, Email, LifecycleState};
use agentry_store::{
    AgentLimitEntry, BootstrapAgent, BootstrapHuman, InstanceBootstrap, NewAgent, StoreError,
    TokenError, now,
};

use crate::support::on_both_backends;
use crate::{slug, tenant};

fn workspace(humans: Vec<BootstrapHuman>) -> InstanceBootstrap {
    InstanceBootstrap {
        primary_email: Email::parse("primary@example.com").unwrap(),
        primary_password_hash: "first hash".into(),
        primary_agent: BootstrapAgent {
            agent: NewAgent::named(slug("primary"), AgentOrigin::Workspace),
            key_hash: [9; 32],
        },
        agents: vec![BootstrapAgent {
            agent: NewAgent::named(slug("worker"), AgentOrigin::Workspace),
            key_hash: [8; 32],
        }],
        humans,
        channel_name: "general".into(),
        channel_topic: None,
    }
}

fn human(n: u8, expires_in: time::Duration) -> BootstrapHuman {
    BootstrapHuman {
        email: Email::parse(&format!("human-{n}@example.com")).unwrap(),
        display_name: format!("Human {n}"),
        role: "member".into(),
        invite_hash: [n; 32],
        invite_expires_at: now() + expires_in,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_workspace_gets_a_tenant_of_its_own_and_its_primary_key_administers_it() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let operator = tenant(store, "default").await;
        // An operator's tenant already has the name: the workspace's is
        // suffixed, never shared.
        tenant(store, "workspace").await;
        let created = store
            .bootstrap_instance(workspace(Vec::new()), now())
            .await
            .unwrap();
        assert_ne!(created.tenant_id, operator);
        let tenants = store.list_tenants().await.unwrap();
        let own = tenants.iter().find(|t| t.id == created.tenant_id).unwrap();
        assert!(own.name.starts_with("workspace-"), "{}", own.name);
        assert_eq!(
            store.instance_tenant().await.unwrap(),
            Some(created.tenant_id)
        );
        assert!(store.list_agents(operator).await.unwrap().is_empty());

        let primary = store.find_api_key(&[9; 32]).await.unwrap().unwrap();
        let worker = store.find_api_key(&[8; 32]).await.unwrap().unwrap();
        assert_eq!(
            (primary.role, primary.tenant_id),
            (Some(ApiKeyRole::Admin), created.tenant_id)
        );
        assert_eq!(primary.agent_id, Some(created.primary_agent.0.id));
        assert_eq!(worker.role, None, "the other agents' keys are theirs alone");
        for agent in store.list_agents(created.tenant_id).await.unwrap() {
            assert_eq!(agent.origin, AgentOrigin::Workspace);
        }

        // A rotation of the primary agent's key keeps its role.
        let rotated = store
            .rotate_agent_key(
                created.tenant_id,
                created.primary_agent.0.id,
                [7; 32],
                now(),
            )
            .await
            .unwrap();
        assert_eq!(rotated.role, Some(ApiKeyRole::Admin));
        assert!(
            store
                .find_api_key(&[9; 32])
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_some()
        );
        let rotated = store
            .rotate_agent_key(created.tenant_id, created.agents[0].0.id, [6; 32], now())
            .await
            .unwrap();
        assert_eq!(rotated.role, None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_remember_the_route_that_made_them() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let acme = tenant(store, "acme").await;
        let entry = AgentLimitEntry {
            max_budget: None,
            max_requests_per_minute: Some(30),
        };
        // Whatever the caller asked for, a bootstrap files its agent as its own.
        let (bootstrapped, _) = store
            .create_bootstrapped_agent(
                acme,
                NewAgent::named(slug("booted"), AgentOrigin::Api),
                entry,
                now(),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bootstrapped.origin, AgentOrigin::Bootstrap);
        let registered = store
            .create_agent(
                acme,
                NewAgent::named(slug("listed"), AgentOrigin::Registry),
                now(),
            )
            .await
            .unwrap();
        let plain = store
            .create_agent(
                acme,
                NewAgent::named(slug("plain"), AgentOrigin::Api),
                now(),
            )
            .await
            .unwrap();
        let read = |id| async move { store.find_agent(acme, id).await.unwrap().unwrap().origin };
        assert_eq!(read(bootstrapped.id).await, AgentOrigin::Bootstrap);
        assert_eq!(read(registered.id).await, AgentOrigin::Registry);
        assert_eq!(read(plain.id).await, AgentOrigin::Api);
        // The origin alone decides the state an agent is born in.
        assert_eq!(
            (
                bootstrapped.lifecycle_state,
                registered.lifecycle_state,
                plain.lifecycle_state
            ),
            (
                LifecycleState::Active,
                LifecycleState::Active,
                LifecycleState::Provisioned
            )
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ending_sessions_moves_the_epoch_and_can_set_a_password() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let created = store
            .bootstrap_instance(workspace(Vec::new()), now())
            .await
            .unwrap();
        let tenant = created.tenant_id;
        let user = store
            .user(tenant, created.primary_user_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(user.session_epoch, 0);
        let ended = store.end_sessions(tenant, user.id, None).await.unwrap();
        assert_eq!(
            (ended.session_epoch, ended.password_hash.as_deref()),
            (1, Some("first hash"))
        );
        let changed = store
            .end_sessions(tenant, user.id, Some("second hash".into()))
            .await
            .unwrap();
        assert_eq!(
            (changed.session_epoch, changed.password_hash.as_deref()),
            (2, Some("second hash"))
        );
        assert_eq!(store.user(tenant, user.id).await.unwrap().unwrap(), changed);
        // Another tenant's id finds nobody.
        let other = crate::tenant(store, "other").await;
        assert!(store.user(other, user.id).await.unwrap().is_none());
        assert!(matches!(
            store.end_sessions(other, user.id, None).await,
            Err(StoreError::NotFound("user"))
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invite_is_read_without_being_spent() {
    on_both_backends(|db| async move {
        let store = &db.store;
        let humans = vec![
            human(1, time::Duration::days(1)),
            human(2, -time::Duration::hours(1)),
        ];
        store
            .bootstrap_instance(workspace(humans), now())
            .await
            .unwrap();
        let invited = store.invited_user(&[1; 32], now()).await.unwrap();
        assert_eq!(invited.email, "human-1@example.com");
        assert_eq!(invited.password_hash, None);
        // Reading it twice spends nothing.
        store.invited_user(&[1; 32], now()).await.unwrap();
        let accepted = store
            .accept_invite(&[1; 32], "hash".into(), Some("Human One".into()), now())
            .await
            .unwrap();
        assert_eq!(accepted.display_name, "Human One");
        assert_eq!(accepted.password_hash.as_deref(), Some("hash"));
        for (hash, expected) in [
            ([1; 32], TokenError::Consumed),
            ([2; 32], TokenError::Expired),
            ([3; 32], TokenError::Unknown),
        ] {
            match store.invited_user(&hash, now()).await {
                Err(StoreError::Token(error)) => assert_eq!(error, expected),
                other => panic!("{hash:?}: {other:?}"),
            }
        }
    })
    .await;
}
