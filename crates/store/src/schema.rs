//! The diesel schema of both backends, written from the PostgreSQL
//! migrations under `migrations/postgres/` (column types through the
//! portable types of `crate::types`).

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    tenants (id) {
        id -> PortableUuid,
        name -> Text,
        created_at -> PortableTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    agents (id) {
        id -> PortableUuid,
        tenant_id -> PortableUuid,
        slug -> Text,
        display_name -> Nullable<Text>,
        description -> Nullable<Text>,
        owner_id -> Nullable<Text>,
        cost_center -> Nullable<Text>,
        budget_daily_micros -> Nullable<BigInt>,
        budget_monthly_micros -> Nullable<BigInt>,
        role -> Text,
        lifecycle_state -> Text,
        manifest_id -> Nullable<Text>,
        parent_id -> Nullable<PortableUuid>,
        expires_at -> Nullable<PortableTime>,
        metadata -> Text,
        scopes -> Text,
        trust_level -> Text,
        credential_epoch -> BigInt,
        last_seen_at -> Nullable<PortableTime>,
        revoked_at -> Nullable<PortableTime>,
        created_at -> PortableTime,
        updated_at -> PortableTime,
        origin -> Text,
        name -> Nullable<Text>,
        parent_slug -> Nullable<Text>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    api_keys (id) {
        id -> PortableUuid,
        tenant_id -> PortableUuid,
        agent_id -> Nullable<PortableUuid>,
        role -> Nullable<Text>,
        key_hash -> Binary,
        label -> Nullable<Text>,
        created_at -> PortableTime,
        last_used_at -> Nullable<PortableTime>,
        revoked_at -> Nullable<PortableTime>,
        expires_at -> Nullable<PortableTime>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    lifecycle_events (id) {
        id -> PortableUuid,
        tenant_id -> PortableUuid,
        agent_id -> PortableUuid,
        from_state -> Text,
        to_state -> Text,
        cause -> Text,
        at -> PortableTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    agent_limits (tenant_id) {
        tenant_id -> PortableUuid,
        version -> BigInt,
        updated_at -> PortableTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::PortableUuid;

    agent_limit_entries (tenant_id, limit_key) {
        tenant_id -> PortableUuid,
        limit_key -> Text,
        max_budget_micros -> Nullable<BigInt>,
        max_requests_per_minute -> Nullable<BigInt>,
        version -> BigInt,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    ledger_entries (id) {
        id -> PortableUuid,
        tenant_id -> PortableUuid,
        agent_id -> PortableUuid,
        seq -> BigInt,
        kind -> Text,
        amount_micros -> BigInt,
        hold_id -> Nullable<PortableUuid>,
        counterparty_id -> Nullable<PortableUuid>,
        expires_at -> Nullable<PortableTime>,
        idempotency_key -> Nullable<Text>,
        at -> PortableTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    one_time_tokens (id) {
        id -> PortableUuid,
        tenant_id -> PortableUuid,
        purpose -> Text,
        token_hash -> Binary,
        subject_id -> PortableUuid,
        attempts -> BigInt,
        max_attempts -> BigInt,
        expires_at -> PortableTime,
        consumed_at -> Nullable<PortableTime>,
        created_at -> PortableTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    users (id) {
        id -> PortableUuid,
        tenant_id -> PortableUuid,
        email -> Text,
        display_name -> Text,
        kind -> Text,
        role -> Text,
        agent_id -> Nullable<PortableUuid>,
        password_hash -> Nullable<Text>,
        created_at -> PortableTime,
        session_epoch -> BigInt,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    invites (id) {
        id -> PortableUuid,
        tenant_id -> PortableUuid,
        user_id -> PortableUuid,
        token_id -> PortableUuid,
        created_at -> PortableTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    channels (id) {
        id -> PortableUuid,
        tenant_id -> PortableUuid,
        name -> Text,
        created_at -> PortableTime,
        topic -> Nullable<Text>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    memberships (channel_id, user_id) {
        channel_id -> PortableUuid,
        user_id -> PortableUuid,
        tenant_id -> PortableUuid,
        role -> Text,
        created_at -> PortableTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    provisioning_instances (id) {
        id -> PortableUuid,
        tenant_id -> PortableUuid,
        name -> Text,
        agent_config -> Text,
        agent_secrets_sealed -> Nullable<Binary>,
        skill_lockfile -> Text,
        decryption_key_sealed -> Nullable<Binary>,
        created_at -> PortableTime,
        agent_id -> Nullable<PortableUuid>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    provisioning_sessions (id) {
        id -> PortableUuid,
        tenant_id -> PortableUuid,
        instance_id -> PortableUuid,
        token_id -> PortableUuid,
        expires_at -> PortableTime,
        completed_at -> Nullable<PortableTime>,
        created_at -> PortableTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    issued_certificates (id) {
        id -> PortableUuid,
        tenant_id -> PortableUuid,
        instance_id -> PortableUuid,
        session_id -> PortableUuid,
        serial -> Text,
        fingerprint -> Text,
        not_before -> PortableTime,
        not_after -> PortableTime,
        revoked_at -> Nullable<PortableTime>,
        created_at -> PortableTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    callback_states (instance_id) {
        instance_id -> PortableUuid,
        tenant_id -> PortableUuid,
        last_seq -> Nullable<BigInt>,
        stage -> Nullable<Text>,
        message -> Nullable<Text>,
        updated_at -> PortableTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    provision_logs (id) {
        id -> PortableUuid,
        tenant_id -> PortableUuid,
        instance_id -> PortableUuid,
        stage -> Text,
        level -> Text,
        message -> Text,
        at -> PortableTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    artifacts (id) {
        id -> PortableUuid,
        tenant_id -> PortableUuid,
        instance_id -> PortableUuid,
        kind -> Text,
        storage_path -> Text,
        size_bytes -> BigInt,
        cipher_hash -> Nullable<Text>,
        plain_hash -> Nullable<Text>,
        created_at -> PortableTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    audit_events (id) {
        id -> PortableUuid,
        tenant_id -> PortableUuid,
        seq -> BigInt,
        actor -> Text,
        action -> Text,
        target -> Nullable<Text>,
        outcome -> Text,
        detail -> Text,
        at -> PortableTime,
        prev_hash -> Binary,
        hash -> Binary,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    signing_keys (kid) {
        kid -> Text,
        algorithm -> Text,
        public_jwk -> Text,
        private_sealed -> Binary,
        created_at -> PortableTime,
        retired_at -> Nullable<PortableTime>,
        revoked_at -> Nullable<PortableTime>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::PortableTime;

    change_log (id) {
        id -> BigInt,
        change -> Text,
        at -> PortableTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    instance (singleton) {
        singleton -> BigInt,
        instance_id -> PortableUuid,
        tenant_id -> PortableUuid,
        bootstrapped_at -> PortableTime,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::types::{PortableTime, PortableUuid};

    certificate_authorities (id) {
        id -> PortableUuid,
        cert_pem -> Text,
        key_sealed -> Binary,
        not_after -> PortableTime,
        created_at -> PortableTime,
        retired_at -> Nullable<PortableTime>,
    }
}

diesel::joinable!(agents -> tenants (tenant_id));
diesel::joinable!(api_keys -> tenants (tenant_id));
diesel::joinable!(api_keys -> agents (agent_id));
diesel::joinable!(lifecycle_events -> tenants (tenant_id));
diesel::joinable!(lifecycle_events -> agents (agent_id));
diesel::joinable!(agent_limits -> tenants (tenant_id));
diesel::joinable!(agent_limit_entries -> tenants (tenant_id));
diesel::joinable!(ledger_entries -> tenants (tenant_id));
diesel::joinable!(ledger_entries -> agents (agent_id));
diesel::joinable!(one_time_tokens -> tenants (tenant_id));
diesel::joinable!(users -> tenants (tenant_id));
diesel::joinable!(users -> agents (agent_id));
diesel::joinable!(invites -> tenants (tenant_id));
diesel::joinable!(invites -> users (user_id));
diesel::joinable!(invites -> one_time_tokens (token_id));
diesel::joinable!(channels -> tenants (tenant_id));
diesel::joinable!(memberships -> channels (channel_id));
diesel::joinable!(memberships -> users (user_id));
diesel::joinable!(memberships -> tenants (tenant_id));
diesel::joinable!(provisioning_instances -> tenants (tenant_id));
diesel::joinable!(provisioning_instances -> agents (agent_id));
diesel::joinable!(provisioning_sessions -> tenants (tenant_id));
diesel::joinable!(provisioning_sessions -> provisioning_instances (instance_id));
diesel::joinable!(provisioning_sessions -> one_time_tokens (token_id));
diesel::joinable!(issued_certificates -> tenants (tenant_id));
diesel::joinable!(issued_certificates -> provisioning_instances (instance_id));
diesel::joinable!(issued_certificates -> provisioning_sessions (session_id));
diesel::joinable!(callback_states -> provisioning_instances (instance_id));
diesel::joinable!(callback_states -> tenants (tenant_id));
diesel::joinable!(provision_logs -> tenants (tenant_id));
diesel::joinable!(provision_logs -> provisioning_instances (instance_id));
diesel::joinable!(artifacts -> tenants (tenant_id));
diesel::joinable!(artifacts -> provisioning_instances (instance_id));
diesel::joinable!(audit_events -> tenants (tenant_id));

diesel::allow_tables_to_appear_in_same_query!(
    tenants,
    agents,
    api_keys,
    lifecycle_events,
    agent_limits,
    agent_limit_entries,
    ledger_entries,
    one_time_tokens,
    users,
    invites,
    channels,
    memberships,
    provisioning_instances,
    provisioning_sessions,
    issued_certificates,
    callback_states,
    provision_logs,
    artifacts,
    audit_events,
    signing_keys,
    change_log,
    instance,
    certificate_authorities,
);
