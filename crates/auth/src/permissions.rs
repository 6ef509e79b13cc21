//! What each API key role may do, as data.

use agentry_domain::ApiKeyRole;

/// One thing a caller may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Read agent profiles and registry records.
    AgentProfileRead,
    /// Create and update agent profiles and registry records.
    AgentProfileWrite,
    /// Hard-delete an agent profile.
    AgentProfileDelete,
    /// Move agents through the lifecycle, revoke them, rotate their keys.
    AgentLifecycleManage,
    /// Read and write the tenant's agent-limits map.
    AgentLimitsManage,
    /// Bootstrap an agent (seed 000).
    AgentBootstrap,
    /// Record spends and holds on behalf of an agent.
    SpendRecord,
    /// Read the audit trail.
    AuditRead,
    /// Create and manage machine provisioning instances (seed 003).
    InstanceProvision,
}

impl Permission {
    pub const ALL: [Permission; 9] = [
        AgentProfileRead,
        AgentProfileWrite,
        AgentProfileDelete,
        AgentLifecycleManage,
        AgentLimitsManage,
        AgentBootstrap,
        SpendRecord,
        AuditRead,
        InstanceProvision,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Permission::AgentProfileRead => "agent.profile.read",
            Permission::AgentProfileWrite => "agent.profile.write",
            Permission::AgentProfileDelete => "agent.profile.delete",
            Permission::AgentLifecycleManage => "agent.lifecycle.manage",
            Permission::AgentLimitsManage => "agent.limits.manage",
            Permission::AgentBootstrap => "agent.bootstrap",
            Permission::SpendRecord => "spend.record",
            Permission::AuditRead => "audit.read",
            Permission::InstanceProvision => "instance.provision",
        }
    }
}

use Permission::*;

/// The whole policy. Seed 001 gives admin, operator and auditor their
/// reach; seed 000 says a provisioner key "grants provisioning authority,
/// not runtime access", so it may bootstrap and nothing else.
const TABLE: &[(ApiKeyRole, &[Permission])] = &[
    // Admin may do everything there is.
    (ApiKeyRole::Admin, &Permission::ALL),
    (
        ApiKeyRole::Operator,
        &[
            AgentProfileRead,
            AgentProfileWrite,
            AgentLifecycleManage,
            AgentLimitsManage,
            AgentBootstrap,
            SpendRecord,
            AuditRead,
            InstanceProvision,
        ],
    ),
    (ApiKeyRole::Auditor, &[AgentProfileRead, AuditRead]),
    (ApiKeyRole::Provisioner, &[AgentBootstrap]),
];

pub fn permissions(role: ApiKeyRole) -> &'static [Permission] {
    TABLE
        .iter()
        .find(|(candidate, _)| *candidate == role)
        .map_or(&[], |(_, permissions)| permissions)
}

pub fn role_has(role: ApiKeyRole, permission: Permission) -> bool {
    permissions(role).contains(&permission)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(role: ApiKeyRole, allowed: &[Permission]) {
        let all = Permission::ALL;
        for permission in all {
            assert_eq!(
                role_has(role, permission),
                allowed.contains(&permission),
                "{role} and {}",
                permission.as_str()
            );
        }
    }

    #[test]
    fn admin_may_do_everything() {
        check(
            ApiKeyRole::Admin,
            &[
                AgentProfileRead,
                AgentProfileWrite,
                AgentProfileDelete,
                AgentLifecycleManage,
                AgentLimitsManage,
                AgentBootstrap,
                SpendRecord,
                AuditRead,
                InstanceProvision,
            ],
        );
    }

    #[test]
    fn operator_may_do_everything_but_hard_delete() {
        check(
            ApiKeyRole::Operator,
            &[
                AgentProfileRead,
                AgentProfileWrite,
                AgentLifecycleManage,
                AgentLimitsManage,
                AgentBootstrap,
                SpendRecord,
                AuditRead,
                InstanceProvision,
            ],
        );
    }

    #[test]
    fn auditor_may_only_read() {
        check(ApiKeyRole::Auditor, &[AgentProfileRead, AuditRead]);
    }

    #[test]
    fn provisioner_may_only_bootstrap() {
        check(ApiKeyRole::Provisioner, &[AgentBootstrap]);
    }
}
