//! `agentryd seed`: a demo tenant to try the API against.

use agentry_auth::{ApiKey, ApiKeyKind};
use agentry_domain::{AgentOrigin, AgentSlug, ApiKeyRole, Money};
use agentry_store::{NewAgent, NewApiKey, Store, StoreError, now};
use anyhow::Context;

const TENANT: &str = "demo";

/// Demo agents: slug, how each was made (which decides its state: the
/// registry's act at once, a profile waits for its bootstrap), daily budget
/// in USD.
const AGENTS: &[(&str, AgentOrigin, u32)] = &[
    ("demo-summarizer", AgentOrigin::Registry, 5),
    ("demo-researcher", AgentOrigin::Registry, 10),
    ("demo-reviewer", AgentOrigin::Api, 2),
];

pub(crate) async fn run(store: &Store) -> anyhow::Result<()> {
    let tenant = match store.find_tenant_by_name(TENANT).await? {
        Some(tenant) => {
            eprintln!("tenant {TENANT:?} exists already; its keys were shown when it was created");
            tenant
        }
        None => {
            let tenant = store
                .create_tenant(TENANT, now())
                .await
                .context("cannot create the demo tenant")?;
            eprintln!("created tenant {TENANT:?} ({})", tenant.id);
            eprintln!("API keys (shown once, they will not be shown again):");
            for role in [ApiKeyRole::Admin, ApiKeyRole::Provisioner] {
                let key = ApiKey::mint(ApiKeyKind::Tenant(role));
                let stored = NewApiKey {
                    role: Some(role),
                    agent_id: None,
                    key_hash: key.hash().0,
                    label: Some(format!("seed {role}")),
                };
                store.insert_api_key(tenant.id, stored, now()).await?;
                println!("{role:12} {}", key.expose());
            }
            tenant
        }
    };
    for (slug, origin, budget) in AGENTS {
        let mut agent = NewAgent::named(AgentSlug::parse(slug)?, *origin);
        agent.display_name = Some(format!("Demo {}", slug.trim_start_matches("demo-")));
        agent.budget_daily = Some(Money::from_usd(*budget));
        match store.create_agent(tenant.id, agent, now()).await {
            Ok(created) => eprintln!("created agent {slug} ({})", created.id),
            Err(StoreError::Conflict(_)) => eprintln!("agent {slug} exists already"),
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}
