//! How far the PostgreSQL schema is from being distributed by `tenant_id`
//! (Citus, docs/scaling.md "Past one PostgreSQL"). A distributed table's
//! primary key and unique constraints must contain the distribution column,
//! and a foreign key between distributed tables must too, on both sides;
//! otherwise Citus refuses to distribute the table. This test reads every
//! table from the catalog of a freshly migrated database and requires the
//! tables that are not ready to be exactly `NOT_YET_SHARDABLE`, so the gap
//! can neither grow unnoticed nor shrink without the list being shortened.

use std::collections::{BTreeMap, BTreeSet};

use diesel::QueryableByName;
use diesel::sql_types::{Bool, Text};
use diesel_async::RunQueryDsl;

use agentry_store::DatabaseUrl;
use agentry_testkit::postgres_db;

/// Tables that belong to no tenant, with why. Under Citus they become
/// reference tables (a copy on every node, which distributed tables may
/// refer to) or stay on the coordinator; docs/scaling.md says which.
const GLOBAL: &[(&str, &str)] = &[
    (
        "tenants",
        "the tenants themselves: every tenant-owned row refers to one",
    ),
    (
        "signing_keys",
        "instance-wide: sign the agent JWTs of every tenant",
    ),
    (
        "certificate_authorities",
        "instance-wide: the CA every tenant's machines chain to",
    ),
    (
        "instance",
        "the one-row marker of seed 002's instance bootstrap",
    ),
    (
        "change_log",
        "SQLite's change feed, kept on PostgreSQL only for the schema comparison",
    ),
    ("__diesel_schema_migrations", "the migrations applied"),
];

/// Tenant-owned tables that cannot be distributed by `tenant_id` yet, each
/// with everything it lacks (in the words `lacks` uses). Shorten it as the
/// schema catches up.
const NOT_YET_SHARDABLE: &[(&str, &[&str])] = &[
    (
        "agents",
        &["primary key (id)", "foreign key (parent_id) -> agents (id)"],
    ),
    (
        "api_keys",
        &[
            "primary key (id)",
            "unique (key_hash)",
            "foreign key (agent_id) -> agents (id)",
        ],
    ),
    (
        "artifacts",
        &[
            "primary key (id)",
            "unique (instance_id, kind)",
            "foreign key (instance_id) -> provisioning_instances (id)",
        ],
    ),
    ("audit_events", &["primary key (id)"]),
    (
        "callback_states",
        &[
            "primary key (instance_id)",
            "foreign key (instance_id) -> provisioning_instances (id)",
        ],
    ),
    ("channels", &["primary key (id)"]),
    (
        "invites",
        &[
            "primary key (id)",
            "unique (token_id)",
            "foreign key (token_id) -> one_time_tokens (id)",
            "foreign key (user_id) -> users (id)",
        ],
    ),
    (
        "issued_certificates",
        &[
            "primary key (id)",
            "unique (fingerprint)",
            "unique (serial)",
            "foreign key (instance_id) -> provisioning_instances (id)",
            "foreign key (session_id) -> provisioning_sessions (id)",
        ],
    ),
    (
        "ledger_entries",
        &[
            "primary key (id)",
            "unique (agent_id, seq)",
            "foreign key (agent_id) -> agents (id)",
        ],
    ),
    (
        "lifecycle_events",
        &["primary key (id)", "foreign key (agent_id) -> agents (id)"],
    ),
    (
        "memberships",
        &[
            "primary key (channel_id, user_id)",
            "foreign key (channel_id) -> channels (id)",
            "foreign key (user_id) -> users (id)",
        ],
    ),
    (
        "one_time_tokens",
        &["primary key (id)", "unique (token_hash)"],
    ),
    (
        "provision_logs",
        &[
            "primary key (id)",
            "foreign key (instance_id) -> provisioning_instances (id)",
        ],
    ),
    (
        "provisioning_instances",
        &["primary key (id)", "foreign key (agent_id) -> agents (id)"],
    ),
    (
        "provisioning_sessions",
        &[
            "primary key (id)",
            "foreign key (instance_id) -> provisioning_instances (id)",
            "foreign key (token_id) -> one_time_tokens (id)",
        ],
    ),
    (
        "users",
        &["primary key (id)", "foreign key (agent_id) -> agents (id)"],
    ),
];

const TENANT: &str = "tenant_id";

#[derive(QueryableByName)]
struct Table {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    has_tenant_id: bool,
    #[diesel(sql_type = Bool)]
    tenant_id_nullable: bool,
}

#[derive(QueryableByName)]
struct UniqueKey {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Bool)]
    primary: bool,
    /// Comma-separated, in index order; an expression column is left out,
    /// so it can never count as `tenant_id`.
    #[diesel(sql_type = Text)]
    columns: String,
}

#[derive(QueryableByName)]
struct ForeignKey {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    columns: String,
    #[diesel(sql_type = Text)]
    target: String,
    #[diesel(sql_type = Text)]
    target_columns: String,
}

// Ordinary and partitioned tables only: sequences and indexes are not
// distributed by themselves (docs/scaling.md covers the one sequence).
const TABLES: &str = "SELECT c.relname::text AS name, \
    (a.attname IS NOT NULL) AS has_tenant_id, \
    COALESCE(NOT a.attnotnull, false) AS tenant_id_nullable \
    FROM pg_class c \
    JOIN pg_namespace n ON n.oid = c.relnamespace \
    LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped \
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')";
// Unique indexes rather than unique constraints: a unique index made with
// CREATE UNIQUE INDEX constrains as much and has no pg_constraint row.
const UNIQUE_KEYS: &str = "SELECT t.relname::text AS table_name, ix.indisprimary AS primary, \
    COALESCE(string_agg(a.attname::text, ', ' ORDER BY k.ord), '') AS columns \
    FROM pg_index ix \
    JOIN pg_class t ON t.oid = ix.indrelid \
    JOIN pg_namespace n ON n.oid = t.relnamespace \
    CROSS JOIN LATERAL unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
    LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
    WHERE n.nspname = 'public' AND ix.indisunique \
    GROUP BY t.relname, ix.indexrelid, ix.indisprimary";
const FOREIGN_KEYS: &str = "SELECT t.relname::text AS table_name, \
    string_agg(a.attname::text, ', ' ORDER BY k.ord) AS columns, \
    r.relname::text AS target, \
    string_agg(ra.attname::text, ', ' ORDER BY k.ord) AS target_columns \
    FROM pg_constraint c \
    JOIN pg_class t ON t.oid = c.conrelid \
    JOIN pg_class r ON r.oid = c.confrelid \
    JOIN pg_namespace n ON n.oid = t.relnamespace \
    CROSS JOIN LATERAL unnest(c.conkey, c.confkey) WITH ORDINALITY AS k(col, refcol, ord) \
    JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.col \
    JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = k.refcol \
    WHERE n.nspname = 'public' AND c.contype = 'f' \
    GROUP BY t.relname, r.relname, c.oid";

struct Catalog {
    tables: Vec<Table>,
    unique_keys: Vec<UniqueKey>,
    foreign_keys: Vec<ForeignKey>,
}

async fn catalog(url: &DatabaseUrl) -> Catalog {
    let DatabaseUrl::Postgres(url) = url else {
        panic!("the sharding check reads PostgreSQL's catalog");
    };
    let mut conn = agentry_store::connect_postgres(url).await.unwrap();
    Catalog {
        tables: diesel::sql_query(TABLES).load(&mut conn).await.unwrap(),
        unique_keys: diesel::sql_query(UNIQUE_KEYS)
            .load(&mut conn)
            .await
            .unwrap(),
        foreign_keys: diesel::sql_query(FOREIGN_KEYS)
            .load(&mut conn)
            .await
            .unwrap(),
    }
}

fn listed(columns: &str) -> Vec<&str> {
    columns.split(", ").filter(|c| !c.is_empty()).collect()
}

/// Whether a foreign key is one Citus accepts between two tables
/// distributed by `tenant_id`: it must pair `tenant_id` with `tenant_id`.
fn pairs_tenants(key: &ForeignKey) -> bool {
    listed(&key.columns)
        .iter()
        .zip(listed(&key.target_columns))
        .any(|(column, target)| *column == TENANT && target == TENANT)
}

/// What keeps each tenant-owned table from being distributed by
/// `tenant_id`, for the tables that lack anything.
fn lacks(catalog: &Catalog, global: &BTreeSet<&str>) -> BTreeMap<String, BTreeSet<String>> {
    let mut lacking: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let tenant_owned: BTreeSet<&str> = catalog
        .tables
        .iter()
        .map(|table| table.name.as_str())
        .filter(|name| !global.contains(name))
        .collect();
    for table in &catalog.tables {
        if !tenant_owned.contains(table.name.as_str()) {
            continue;
        }
        if !table.has_tenant_id {
            lacking
                .entry(table.name.clone())
                .or_default()
                .insert("no tenant_id column".to_owned());
        } else if table.tenant_id_nullable {
            // Citus refuses a row whose distribution column is NULL.
            lacking
                .entry(table.name.clone())
                .or_default()
                .insert("tenant_id is nullable".to_owned());
        }
    }
    for key in &catalog.unique_keys {
        if tenant_owned.contains(key.table_name.as_str()) && !listed(&key.columns).contains(&TENANT)
        {
            let kind = if key.primary { "primary key" } else { "unique" };
            lacking
                .entry(key.table_name.clone())
                .or_default()
                .insert(format!("{kind} ({})", key.columns));
        }
    }
    for key in &catalog.foreign_keys {
        // A distributed table may refer to a reference table by any key.
        if tenant_owned.contains(key.table_name.as_str())
            && tenant_owned.contains(key.target.as_str())
            && !pairs_tenants(key)
        {
            lacking
                .entry(key.table_name.clone())
                .or_default()
                .insert(format!(
                    "foreign key ({}) -> {} ({})",
                    key.columns, key.target, key.target_columns
                ));
        }
    }
    lacking
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tables_not_yet_shardable_by_tenant_are_exactly_the_listed_ones() {
    let Some((postgres, name)) = postgres_db().await else {
        return;
    };
    let catalog = catalog(&postgres.url).await;
    drop(postgres);
    agentry_testkit::drop_postgres(&name).await;

    let global: BTreeSet<&str> = GLOBAL.iter().map(|(table, _)| *table).collect();
    let listed_gap: BTreeMap<String, BTreeSet<String>> = NOT_YET_SHARDABLE
        .iter()
        .map(|(table, lacks)| {
            let lacks = lacks.iter().map(|lack| (*lack).to_owned()).collect();
            ((*table).to_owned(), lacks)
        })
        .collect();
    let tables: BTreeSet<&str> = catalog.tables.iter().map(|t| t.name.as_str()).collect();

    // Without a tenant_id column a table is tenant-owned only if someone
    // said so (by listing what it lacks); anything else is unclassified.
    let unclassified: Vec<&str> = catalog
        .tables
        .iter()
        .filter(|table| {
            !table.has_tenant_id
                && !global.contains(table.name.as_str())
                && !listed_gap.contains_key(&table.name)
        })
        .map(|table| table.name.as_str())
        .collect();
    assert!(
        unclassified.is_empty(),
        "tables neither global nor tenant-owned: {unclassified:?}. Classify each one: \
         list it in GLOBAL with the reason it belongs to no tenant, or give it a \
         tenant_id column (or list it in NOT_YET_SHARDABLE with \"no tenant_id column\")"
    );
    let stale: Vec<&str> = global
        .iter()
        .copied()
        .chain(listed_gap.keys().map(String::as_str))
        .filter(|table| !tables.contains(table))
        .collect();
    assert!(
        stale.is_empty(),
        "listed tables that no longer exist: {stale:?}"
    );
    // A reference table cannot refer to a distributed one.
    let global_to_tenant: Vec<String> = catalog
        .foreign_keys
        .iter()
        .filter(|key| {
            global.contains(key.table_name.as_str()) && !global.contains(key.target.as_str())
        })
        .map(|key| format!("{} -> {}", key.table_name, key.target))
        .collect();
    assert!(
        global_to_tenant.is_empty(),
        "global tables refer to tenant-owned ones: {global_to_tenant:?}"
    );

    let found = lacks(&catalog, &global);
    assert!(
        found.contains_key("agents") && !found.contains_key("agent_limit_entries"),
        "the check itself is broken: {found:?}"
    );
    let none = BTreeSet::new();
    let differences: Vec<String> = found
        .keys()
        .chain(listed_gap.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|table| found.get(*table) != listed_gap.get(*table))
        .map(|table| {
            format!(
                "  {table}: the schema lacks {:?}, NOT_YET_SHARDABLE says {:?}",
                found.get(table).unwrap_or(&none),
                listed_gap.get(table).unwrap_or(&none)
            )
        })
        .collect();
    assert!(
        differences.is_empty(),
        "the tenant-owned tables not yet shardable by tenant_id differ from \
         NOT_YET_SHARDABLE:\n{}\nA table that became ready leaves the list (and \
         docs/scaling.md); a new tenant-owned table puts tenant_id in its primary key, its \
         unique keys and its foreign keys to tenant-owned tables, or is listed with what it \
         lacks.",
        differences.join("\n")
    );
}
