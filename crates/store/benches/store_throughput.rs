//! `cargo xtask bench store`: throughput of the store's hot primitives on
//! SQLite and PostgreSQL, each reported as a ratio to a `SELECT 1` round
//! trip measured in the same run on the same pool (the floor any query
//! pays), so numbers from different machines compare.
//!
//! A benchmark, not a test: it asserts nothing and prints figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentry_domain::{AgentId, AgentOrigin, AgentSlug, LifecycleState, Money, TenantId};
use agentry_ledger::EnforcedLimits;
use agentry_store::{Appends, DatabaseUrl, NewAgent, PoolOptions, Store, now};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

const CONCURRENCY: usize = 16;
const RUN_FOR: Duration = Duration::from_secs(3);
const POSTGRES_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// Runs `operation` from `CONCURRENCY` tasks for `RUN_FOR`; returns ops/s.
async fn throughput<F, Fut>(operation: F) -> f64
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let operation = Arc::new(operation);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let operation = Arc::clone(&operation);
            tokio::spawn(async move {
                let mut done = 0usize;
                while started.elapsed() < RUN_FOR {
                    operation(worker, done).await;
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("benchmark task");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn bench(label: &str, store: Store) {
    let tenant: TenantId = store
        .create_tenant("bench", now())
        .await
        .expect("tenant")
        .id;
    let ping = {
        let store = store.clone();
        throughput(move |_, _| {
            let store = store.clone();
            async move { store.ping().await.expect("ping") }
        })
        .await
    };
    let create = {
        let store = store.clone();
        throughput(move |worker, n| {
            let store = store.clone();
            async move {
                let slug = AgentSlug::parse(&format!("bench-{worker}-{n}")).expect("slug");
                store
                    .create_agent(
                        tenant,
                        NewAgent::named(slug, AgentOrigin::Api).starting_in(LifecycleState::Active),
                        now(),
                    )
                    .await
                    .expect("create agent");
            }
        })
        .await
    };
    // One agent per worker: spends of different agents do not contend.
    let mut agents: Vec<AgentId> = Vec::new();
    for worker in 0..CONCURRENCY {
        let slug = AgentSlug::parse(&format!("spender-{worker}")).expect("slug");
        let agent = store
            .create_agent(
                tenant,
                NewAgent::named(slug, AgentOrigin::Api).starting_in(LifecycleState::Active),
                now(),
            )
            .await
            .expect("spender");
        agents.push(agent.id);
    }
    let agents = Arc::new(agents);
    let limits = EnforcedLimits::enforce(None, None, None, None);
    let spend = {
        let store = store.clone();
        throughput(move |worker, _| {
            let (store, agent) = (store.clone(), agents[worker]);
            async move {
                store
                    .ledger_transaction(tenant, &[agent], |accounts| {
                        let entry = accounts[&agent].spend(Money::CENT, &limits, now())?;
                        Ok(Appends {
                            entries: vec![(agent, entry)],
                            idempotency_key: None,
                        })
                    })
                    .await
                    .expect("spend");
            }
        })
        .await
    };
    println!(
        "{label:9} SELECT 1 {ping:>9.0}/s (baseline) | create agent {create:>8.0}/s ({:.3} x) | ledger append {spend:>8.0}/s ({:.3} x)",
        create / ping,
        spend / ping,
    );
}

#[tokio::main]
async fn main() {
    println!(
        "store throughput, {CONCURRENCY} concurrent tasks, {} s per figure; ratios are to SELECT 1 on the same backend",
        RUN_FOR.as_secs()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = DatabaseUrl::parse(&format!(
        "sqlite://{}",
        dir.path().join("bench.db").display()
    ))
    .expect("url");
    let store = Store::connect(&sqlite, &PoolOptions::default()).expect("sqlite");
    store.migrate().await.expect("migrate");
    bench("sqlite", store).await;

    let Ok(mut admin) = AsyncPgConnection::establish(&format!("{POSTGRES_SERVER}/postgres")).await
    else {
        println!("postgres  skipped: {POSTGRES_SERVER} is unreachable");
        return;
    };
    let name = format!("agentry_bench_{}", uuid::Uuid::now_v7().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create bench database");
    let url = DatabaseUrl::parse(&format!("{POSTGRES_SERVER}/{name}")).expect("url");
    let store = Store::connect(&url, &PoolOptions::default()).expect("postgres");
    store.migrate().await.expect("migrate");
    bench("postgres", store).await;
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("drop bench database");
}
