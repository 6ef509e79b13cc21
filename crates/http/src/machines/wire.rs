//! Seed 003's request and response shapes, and the checks a request
//! passes before any work: the wire belongs here, the rules to
//! `agentry-lifecycle`.

use agentry_auth::is_hex_token;
use agentry_store::ArtifactRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::redact::debug_redacting;
use crate::validate::Problems;
use crate::wire::{
    AgentSlugSchema, ArtifactKindSchema, CallbackStageSchema, TimestampSchema, timestamp,
};

/// Largest JSON document (config, secrets, lockfile) kept per instance.
const MAX_DOCUMENT_BYTES: usize = 32 * 1024;

/// An instance to provision. Only `name` is required.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateProvisioningInstance)]
pub(super) struct CreateInstance {
    #[schema(min_length = 1, max_length = 120)]
    pub(super) name: String,
    /// An agent of the tenant to bind the machine to: its client
    /// certificate then also reads that agent's own state.
    #[schema(value_type = Option<AgentSlugSchema>)]
    pub(super) agent_id: Option<String>,
    /// A JSON object of at most 32 KiB, handed to the machine by `/secrets`.
    #[schema(value_type = Option<Object>)]
    pub(super) agent_config: Option<Value>,
    /// A JSON object of at most 32 KiB; sealed at rest and shown to nobody
    /// but the machine, once.
    #[schema(value_type = Option<Object>)]
    pub(super) agent_secrets: Option<Value>,
    /// A JSON object of at most 32 KiB, handed to the machine by `/secrets`.
    #[schema(value_type = Option<Object>)]
    pub(super) skill_lockfile: Option<Value>,
    /// The bundle's 32-byte key; sealed at rest and shown to nobody but
    /// the machine, once.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub(super) decryption_key_hex: Option<String>,
    /// How long the bootstrap token lives.
    #[schema(minimum = 60, maximum = 2_592_000, default = 86_400)]
    #[serde(default, deserialize_with = "crate::wire::whole_number::optional")]
    pub(super) bootstrap_token_ttl_seconds: Option<i64>,
}

/// What to change on an instance; a field left out (or `null`) is left as
/// it is.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PatchProvisioningInstance)]
pub(super) struct PatchInstance {
    /// A JSON object of at most 32 KiB.
    #[schema(value_type = Option<Object>)]
    pub(super) agent_config: Option<Value>,
    /// A JSON object of at most 32 KiB; sealed at rest.
    #[schema(value_type = Option<Object>)]
    pub(super) agent_secrets: Option<Value>,
    /// A JSON object of at most 32 KiB.
    #[schema(value_type = Option<Object>)]
    pub(super) skill_lockfile: Option<Value>,
    /// Sealed at rest.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub(super) decryption_key_hex: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = CertificateRequest)]
pub(super) struct CertRequest {
    /// The instance's bootstrap token; not used up here.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub(super) bootstrap_token: String,
    /// A PKCS#10 request; only its public key is used.
    #[schema(min_length = 100, max_length = 10_000)]
    pub(super) csr_pem: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct SecretsRequest {
    /// The `session_id` from `/internal/bootstrap/cert`.
    #[schema(format = Uuid)]
    pub(super) session_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct CallbackRequest {
    /// installing 1, configuring 2, securing 3, ready 4; error 2 or 3.
    /// Must be above the last accepted one.
    #[schema(minimum = 1, maximum = 4)]
    #[serde(deserialize_with = "crate::wire::whole_number::deserialize")]
    pub(super) seq: i64,
    #[schema(value_type = CallbackStageSchema)]
    pub(super) stage: String,
    #[schema(max_length = 2000)]
    pub(super) message: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct DiagnosticRequest {
    /// Kept as the log line's `stage`.
    #[schema(min_length = 1, max_length = 80)]
    pub(super) label: String,
    #[schema(value_type = Option<LogLevel>, default = "info")]
    pub(super) level: Option<String>,
    #[schema(max_length = 2000)]
    pub(super) message: String,
}

#[derive(Deserialize, ToSchema)]
pub(super) struct EarlyDiagnosticRequest {
    /// The instance's bootstrap token; not used up.
    #[schema(min_length = 10, max_length = 200)]
    pub(super) bootstrap_token: String,
    /// The instance's id.
    #[schema(min_length = 1, max_length = 80)]
    pub(super) instance_id: String,
    /// Kept as the log line's `stage`.
    #[schema(min_length = 1, max_length = 80)]
    pub(super) label: String,
    #[schema(value_type = Option<LogLevel>, default = "info")]
    pub(super) level: Option<String>,
    #[schema(max_length = 2000)]
    pub(super) message: String,
}

/// How serious a provisioning log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
#[schema(rename_all = "lowercase")]
pub(super) enum LogLevel {
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub(super) const ALL: [LogLevel; 3] = [LogLevel::Info, LogLevel::Warn, LogLevel::Error];

    pub(super) const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// An operator's view of an instance, as every operator route answers it
/// (creation adds the bootstrap token itself): never a secret.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ProvisioningInstance)]
pub(super) struct InstanceView {
    #[serde(flatten)]
    pub(super) fields: InstanceFields,
    /// The bootstrap token's state; `null` if it is gone.
    pub(super) bootstrap_token: Option<BootstrapTokenState>,
}

/// The answer to a creation: the instance and its bootstrap token, shown
/// this once.
#[derive(Serialize, ToSchema)]
#[schema(as = ProvisioningInstanceCreated)]
pub(super) struct CreatedInstance {
    #[serde(flatten)]
    pub(super) fields: InstanceFields,
    /// 64 lowercase hex characters; stored only as a hash, never shown
    /// again.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub(super) bootstrap_token: String,
    #[schema(value_type = TimestampSchema)]
    pub(super) bootstrap_token_expires_at: String,
}

/// What the operator views of an instance have in common.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ProvisioningInstanceFields)]
pub(super) struct InstanceFields {
    pub(super) instance_id: Uuid,
    /// The tenant's id, a UUID.
    #[schema(format = Uuid)]
    pub(super) tenant_id: String,
    pub(super) name: String,
    /// The agent the machine is bound to.
    #[schema(value_type = Option<AgentSlugSchema>)]
    pub(super) agent_id: Option<String>,
    #[schema(value_type = Object)]
    pub(super) agent_config: Value,
    #[schema(value_type = Object)]
    pub(super) skill_lockfile: Value,
    pub(super) has_agent_secrets: bool,
    pub(super) has_decryption_key: bool,
    /// The encrypted bundle, once uploaded.
    pub(super) artifact: Option<ArtifactInfo>,
    /// The website tarball, once uploaded.
    pub(super) website: Option<ArtifactInfo>,
    /// The last accepted callback.
    pub(super) callback: Option<CallbackProgress>,
    #[schema(value_type = TimestampSchema)]
    pub(super) created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct BootstrapTokenState {
    #[schema(value_type = TimestampSchema)]
    pub(super) expires_at: String,
    /// When `/secrets` used it up.
    #[schema(value_type = Option<TimestampSchema>)]
    pub(super) consumed_at: Option<String>,
}

/// An uploaded file, as stored.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ProvisioningArtifact)]
pub(super) struct ArtifactInfo {
    pub(super) size_bytes: i64,
    /// `sha256:` and the hex digest of the bytes as uploaded.
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    pub(super) artifact_cipher_hash: Option<String>,
    /// `X-Bundle-Plain-Hash` as uploaded.
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    pub(super) bundle_plain_hash: Option<String>,
    #[schema(value_type = TimestampSchema)]
    pub(super) uploaded_at: String,
}

impl From<ArtifactRecord> for ArtifactInfo {
    fn from(record: ArtifactRecord) -> Self {
        ArtifactInfo {
            size_bytes: record.size_bytes,
            artifact_cipher_hash: record.cipher_hash,
            bundle_plain_hash: record.plain_hash,
            uploaded_at: timestamp(record.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CallbackProgress {
    /// `null` before the first callback.
    #[schema(minimum = 1, maximum = 4)]
    pub(super) seq: Option<u8>,
    /// `null` before the first callback.
    #[schema(value_type = Option<CallbackStageSchema>)]
    pub(super) stage: Option<&'static str>,
    pub(super) message: Option<String>,
    #[schema(value_type = TimestampSchema)]
    pub(super) updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct UploadedArtifact {
    #[schema(value_type = ArtifactKindSchema)]
    pub(super) kind: &'static str,
    #[serde(flatten)]
    pub(super) artifact: ArtifactInfo,
}

/// The provisioning log, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ProvisionLogs {
    /// How many lines the log has in all; `logs` holds the last 1000.
    pub(super) total: u64,
    pub(super) logs: Vec<ProvisionLogLine>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ProvisionLogLine {
    /// The callback's stage, or the diagnostic's label.
    pub(super) stage: String,
    #[schema(value_type = LogLevel)]
    pub(super) level: String,
    pub(super) message: String,
    #[schema(value_type = TimestampSchema)]
    pub(super) at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct IssuedCertificate {
    /// The client certificate, valid one hour, for client authentication
    /// only.
    pub(super) cert_pem: String,
    /// For `/internal/bootstrap/secrets`.
    pub(super) session_id: Uuid,
}

/// Seed 003's secrets, handed out once per instance.
#[derive(Serialize, ToSchema)]
pub(super) struct MachineSecrets {
    /// For `/internal/bootstrap/callback` and `/diagnostic` (the
    /// `callback_jwt` scheme); valid two hours.
    pub(super) callback_jwt: String,
    /// For `X-Download-Token`; valid one hour, three tries per file.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub(super) artifact_download_token: String,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub(super) decryption_key_hex: Option<String>,
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    pub(super) artifact_cipher_hash: Option<String>,
    #[schema(pattern = "^sha256:[0-9a-f]{64}$")]
    pub(super) bundle_plain_hash: Option<String>,
    #[schema(value_type = Object)]
    pub(super) agent_config: Value,
    /// `{}` when the operator set none.
    #[schema(value_type = Object)]
    pub(super) agent_secrets: Value,
    #[schema(value_type = Object)]
    pub(super) skill_lockfile: Value,
}

debug_redacting!(CreateInstance {
    name, agent_id, agent_config, skill_lockfile, bootstrap_token_ttl_seconds;
    secret: agent_secrets, decryption_key_hex
});
debug_redacting!(PatchInstance {
    agent_config, skill_lockfile;
    secret: agent_secrets, decryption_key_hex
});
debug_redacting!(CertRequest { csr_pem; secret: bootstrap_token });
debug_redacting!(EarlyDiagnosticRequest {
    instance_id, label, level, message;
    secret: bootstrap_token
});
debug_redacting!(CreatedInstance { fields, bootstrap_token_expires_at; secret: bootstrap_token });
debug_redacting!(MachineSecrets {
    artifact_cipher_hash, bundle_plain_hash, agent_config, skill_lockfile;
    secret: callback_jwt, artifact_download_token, decryption_key_hex, agent_secrets
});

/// What a machine's report is answered with.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Acknowledgement {
    #[schema(value_type = String, examples("ok"))]
    pub(super) status: &'static str,
    pub(super) message: String,
}

pub(super) fn is_sha256_label(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(is_hex_token)
}

/// An optional JSON document that must be an object and not huge.
pub(super) fn document(problems: &mut Problems, field: &str, value: Option<&Value>) {
    if let Some(value) = value {
        if !value.is_object() {
            problems.push(format!("{field}: must be a JSON object"));
        } else if value.to_string().len() > MAX_DOCUMENT_BYTES {
            problems.push(format!(
                "{field}: must be at most {MAX_DOCUMENT_BYTES} bytes of JSON"
            ));
        }
    }
}

pub(super) fn decryption_key(problems: &mut Problems, value: Option<&str>) {
    if value.is_some_and(|key| !is_hex_token(key)) {
        problems.push("decryption_key_hex: must be 64 lowercase hex characters".into());
    }
}

pub(super) fn level(problems: &mut Problems, level: Option<&str>) -> LogLevel {
    let text = level.unwrap_or(LogLevel::Info.as_str());
    LogLevel::ALL
        .into_iter()
        .find(|level| level.as_str() == text)
        .unwrap_or_else(|| {
            problems.push("level: must be one of info, warn, error".into());
            LogLevel::Info
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schemas and descriptions above spell out seed 003's numbers;
    /// they must be the numbers the policy enforces.
    #[test]
    fn the_documented_lifetimes_and_limits_are_the_policys() {
        let policy = super::super::POLICY;
        assert_eq!(policy.min_bootstrap_token_ttl.whole_seconds(), 60);
        assert_eq!(policy.max_bootstrap_token_ttl.whole_seconds(), 2_592_000);
        assert_eq!(policy.default_bootstrap_token_ttl.whole_seconds(), 86_400);
        assert_eq!(policy.session_lifetime.whole_minutes(), 15);
        assert_eq!(policy.client_certificate_lifetime.whole_hours(), 1);
        assert_eq!(policy.callback_token_lifetime.whole_hours(), 2);
        assert_eq!(policy.download_token_lifetime.whole_hours(), 1);
        assert_eq!(policy.download_attempts, 3);
        assert_eq!(policy.max_log_lines, 10_000);
    }

    #[test]
    fn debug_hides_tokens_keys_and_secrets() {
        let secrets = MachineSecrets {
            callback_jwt: "eyJ.callback.jwt".into(),
            artifact_download_token: "d0wnl0ad".repeat(8),
            decryption_key_hex: Some("dec0de".repeat(10)),
            artifact_cipher_hash: None,
            bundle_plain_hash: None,
            agent_config: serde_json::json!({"model": "small"}),
            agent_secrets: serde_json::json!({"openai": "sk-hunter2"}),
            skill_lockfile: serde_json::json!({}),
        };
        let shown = format!("{secrets:?}");
        for secret in ["callback.jwt", "d0wnl0ad", "dec0de", "hunter2"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("small"), "the rest is shown: {shown}");
        let request = CertRequest {
            bootstrap_token: "b00t".repeat(16),
            csr_pem: "-----BEGIN CERTIFICATE REQUEST-----".into(),
        };
        assert!(!format!("{request:?}").contains("b00t"));
    }
}
