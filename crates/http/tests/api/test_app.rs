//! The setup most HTTP tests share, as a builder: an app on the test
//! database, one tenant, its keys by role and its agents by slug.
//!
//! ```ignore
//! let t = TestApp::on(&db)
//!     .with_key(ApiKeyRole::Provisioner)
//!     .with_agent("worker", LifecycleState::Active)
//!     .start()
//!     .await;
//! let (status, body) = get(&t.app, "/v1/agent/status", Some(&t.token("worker"))).await;
//! ```

use std::collections::BTreeMap;

use actix_web::dev::{Service, ServiceResponse};
use agentry_auth::ApiKey;
use agentry_domain::{ApiKeyRole, LifecycleState, TenantId};
use agentry_http::{AppState, Settings};
use agentry_store::{AgentRecord, now};
use agentry_testkit::TestDb;

use crate::{agent, app, state_with, tenant, tenant_key};

type SettingsChange = Box<dyn FnOnce(&mut Settings)>;

/// What a test asks for before the app starts.
pub(crate) struct TestAppBuilder<'db> {
    db: &'db TestDb,
    tenant: &'static str,
    settings: Vec<SettingsChange>,
    roles: Vec<ApiKeyRole>,
    agents: Vec<(&'static str, LifecycleState)>,
}

/// A started app with the tenant, keys and agents its builder named.
pub(crate) struct TestApp<S> {
    pub state: AppState,
    pub app: S,
    /// The tenant everything below belongs to.
    pub tenant: TenantId,
    keys: Vec<(ApiKeyRole, ApiKey)>,
    agents: BTreeMap<&'static str, AgentRecord>,
}

impl TestApp<()> {
    /// A builder for an app on `db` with a tenant named `acme`.
    pub(crate) fn on(db: &TestDb) -> TestAppBuilder<'_> {
        TestAppBuilder {
            db,
            tenant: "acme",
            settings: Vec::new(),
            roles: Vec::new(),
            agents: Vec::new(),
        }
    }
}

impl<'db> TestAppBuilder<'db> {
    /// Changes the app's settings before it starts.
    pub(crate) fn with_settings(mut self, change: impl FnOnce(&mut Settings) + 'static) -> Self {
        self.settings.push(Box::new(change));
        self
    }

    /// A tenant API key with `role`, for [`TestApp::key`].
    pub(crate) fn with_key(mut self, role: ApiKeyRole) -> Self {
        self.roles.push(role);
        self
    }

    /// An agent `slug` in `state` with a $5 daily budget, for
    /// [`TestApp::agent`] and [`TestApp::token`].
    pub(crate) fn with_agent(mut self, slug: &'static str, state: LifecycleState) -> Self {
        self.agents.push((slug, state));
        self
    }

    pub(crate) async fn start(
        self,
    ) -> TestApp<
        impl Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
    > {
        let changes = self.settings;
        let state = state_with(self.db, move |settings| {
            for change in changes {
                change(settings);
            }
        })
        .await;
        let app = app(&state).await;
        let store = &self.db.store;
        let tenant = tenant(store, self.tenant).await;
        let mut keys = Vec::new();
        for role in self.roles {
            keys.push((role, tenant_key(store, tenant, role).await));
        }
        let mut agents = BTreeMap::new();
        for (slug, lifecycle) in self.agents {
            agents.insert(slug, agent(store, tenant, slug, lifecycle).await);
        }
        TestApp {
            state,
            app,
            tenant,
            keys,
            agents,
        }
    }
}

impl<S> TestApp<S>
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = actix_web::Error>,
{
    /// The tenant key with `role` the builder asked for.
    pub(crate) fn key(&self, role: ApiKeyRole) -> &str {
        self.keys
            .iter()
            .find_map(|(held, key)| (*held == role).then_some(key))
            .unwrap_or_else(|| panic!("no {role:?} key: ask the builder with_key"))
            .expose()
    }

    /// The agent `slug` the builder asked for.
    pub(crate) fn agent(&self, slug: &str) -> &AgentRecord {
        self.agents
            .get(slug)
            .unwrap_or_else(|| panic!("no agent {slug}: ask the builder with_agent"))
    }

    /// A fresh agent token for `slug`.
    pub(crate) fn token(&self, slug: &str) -> String {
        self.state
            .mint_agent_token(self.agent(slug), now())
            .unwrap()
            .0
    }
}
