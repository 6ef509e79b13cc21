-- Agentry's initial schema (PostgreSQL). Kept in step with
-- migrations/sqlite/2026-11-27-000000_initial; a test compares the two.
-- Money is integer micro-dollars (BIGINT); every counter is BIGINT so both
-- backends read it as i64; JSON documents are TEXT, read and written whole.

CREATE TABLE tenants (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE agents (
    id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    slug TEXT NOT NULL,
    display_name TEXT,
    description TEXT,
    owner_id TEXT,
    cost_center TEXT,
    budget_daily_micros BIGINT,
    budget_monthly_micros BIGINT,
    role TEXT NOT NULL,
    lifecycle_state TEXT NOT NULL,
    manifest_id TEXT,
    parent_id UUID REFERENCES agents (id),
    expires_at TIMESTAMPTZ,
    metadata TEXT NOT NULL,
    scopes TEXT NOT NULL,
    trust_level TEXT NOT NULL,
    credential_epoch BIGINT NOT NULL,
    last_seen_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, slug)
);
CREATE INDEX agents_parent ON agents (tenant_id, parent_id);
CREATE INDEX agents_expiry ON agents (expires_at);

CREATE TABLE api_keys (
    id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    agent_id UUID REFERENCES agents (id),
    role TEXT,
    key_hash BYTEA NOT NULL UNIQUE,
    label TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX api_keys_agent ON api_keys (agent_id);

CREATE TABLE lifecycle_events (
    id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    agent_id UUID NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    cause TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL
);
CREATE INDEX lifecycle_events_agent ON lifecycle_events (agent_id, at);

CREATE TABLE agent_limits (
    tenant_id UUID PRIMARY KEY REFERENCES tenants (id),
    document TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE ledger_entries (
    id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    agent_id UUID NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    amount_micros BIGINT NOT NULL,
    hold_id UUID,
    counterparty_id UUID,
    expires_at TIMESTAMPTZ,
    idempotency_key TEXT,
    at TIMESTAMPTZ NOT NULL,
    UNIQUE (agent_id, seq),
    UNIQUE (tenant_id, agent_id, idempotency_key)
);

CREATE TABLE rate_windows (
    agent_id UUID PRIMARY KEY REFERENCES agents (id) ON DELETE CASCADE,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    minute BIGINT NOT NULL,
    count BIGINT NOT NULL
);

CREATE TABLE one_time_tokens (
    id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    purpose TEXT NOT NULL,
    token_hash BYTEA NOT NULL UNIQUE,
    subject_id UUID NOT NULL,
    attempts BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    consumed_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX one_time_tokens_subject ON one_time_tokens (subject_id);

CREATE TABLE users (
    id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    email TEXT NOT NULL,
    display_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    role TEXT NOT NULL,
    agent_id UUID REFERENCES agents (id),
    password_hash TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, email)
);

CREATE TABLE invites (
    id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    user_id UUID NOT NULL REFERENCES users (id),
    token_id UUID NOT NULL UNIQUE REFERENCES one_time_tokens (id),
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE channels (
    id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE memberships (
    channel_id UUID NOT NULL REFERENCES channels (id),
    user_id UUID NOT NULL REFERENCES users (id),
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    role TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (channel_id, user_id)
);

CREATE TABLE provisioning_instances (
    id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    agent_config TEXT NOT NULL,
    agent_secrets_sealed BYTEA,
    skill_lockfile TEXT NOT NULL,
    decryption_key_sealed BYTEA,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE provisioning_sessions (
    id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    instance_id UUID NOT NULL REFERENCES provisioning_instances (id),
    token_id UUID NOT NULL REFERENCES one_time_tokens (id),
    expires_at TIMESTAMPTZ NOT NULL,
    completed_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE issued_certificates (
    id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    instance_id UUID NOT NULL REFERENCES provisioning_instances (id),
    session_id UUID NOT NULL REFERENCES provisioning_sessions (id),
    serial TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL UNIQUE,
    not_before TIMESTAMPTZ NOT NULL,
    not_after TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE callback_states (
    instance_id UUID PRIMARY KEY REFERENCES provisioning_instances (id),
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    last_seq BIGINT,
    stage TEXT,
    message TEXT,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE provision_logs (
    id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    instance_id UUID NOT NULL REFERENCES provisioning_instances (id),
    stage TEXT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL
);
CREATE INDEX provision_logs_instance ON provision_logs (instance_id, at);

CREATE TABLE artifacts (
    id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    instance_id UUID NOT NULL REFERENCES provisioning_instances (id),
    kind TEXT NOT NULL,
    storage_path TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    cipher_hash TEXT,
    plain_hash TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (instance_id, kind)
);

CREATE TABLE audit_events (
    id UUID PRIMARY KEY,
    tenant_id UUID NOT NULL REFERENCES tenants (id),
    seq BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL,
    UNIQUE (tenant_id, seq)
);
CREATE INDEX audit_events_target ON audit_events (tenant_id, target, seq);

-- Instance-wide: the keys that sign agent JWTs for every tenant.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    private_sealed BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    retired_at TIMESTAMPTZ
);
