//! `agentryd admin ...`: operator tasks that need no running server.

use agentry_auth::{ApiKey, ApiKeyKind, MasterKey};
use agentry_domain::{ApiKeyRole, TenantId};
use agentry_http::new_signing_key;
use agentry_store::{NewApiKey, SigningKeyRevocation, Store, StoreError, now};
use anyhow::{Context, bail};

use crate::config::AdminCommand;

pub(crate) async fn run(
    store: &Store,
    master: &MasterKey,
    command: AdminCommand,
) -> anyhow::Result<()> {
    match command {
        AdminCommand::CreateKey {
            role,
            tenant,
            label,
        } => create_key(store, role, tenant, label).await,
        AdminCommand::RevokeKey { id } => {
            let id: uuid::Uuid = id.parse().context("the key id must be a UUID")?;
            let key = store
                .api_key_by_id(id)
                .await?
                .with_context(|| format!("no API key has the id {id}"))?;
            store.revoke_api_key(key.tenant_id, id, now()).await?;
            eprintln!("revoked API key {id}; it stops working on the next request");
            Ok(())
        }
        AdminCommand::RotateSigningKey => {
            let key = new_signing_key(master, now());
            let kid = key.kid.clone();
            store.rotate_signing_key(key, now()).await?;
            eprintln!(
                "signing key {kid} is now current; tokens signed by the previous key verify until they expire"
            );
            Ok(())
        }
        AdminCommand::RevokeSigningKey { kid } => revoke_signing_key(store, master, &kid).await,
    }
}

/// Revokes a signing key; a replacement is prepared in case it is the
/// current one, and used only then.
async fn revoke_signing_key(store: &Store, master: &MasterKey, kid: &str) -> anyhow::Result<()> {
    let replacement = new_signing_key(master, now());
    match store.revoke_signing_key(kid, replacement, now()).await {
        Ok(SigningKeyRevocation::Revoked { replaced_by }) => {
            eprintln!(
                "revoked signing key {kid}: every token it signed is refused from now on, on every replica"
            );
            if let Some(current) = replaced_by {
                eprintln!("it was the current key; {current} is current now");
            }
            Ok(())
        }
        Ok(SigningKeyRevocation::AlreadyRevoked) => {
            eprintln!("signing key {kid} was already revoked; nothing changed");
            Ok(())
        }
        Err(StoreError::NotFound(_)) => {
            let known: Vec<String> = store
                .signing_keys()
                .await?
                .into_iter()
                .filter(|key| key.revoked_at.is_none())
                .map(|key| key.kid)
                .collect();
            bail!(
                "no signing key has the kid {kid:?}; the keys not revoked are: {}",
                known.join(", ")
            )
        }
        Err(error) => Err(error.into()),
    }
}

/// Mints a tenant key and prints it, the only time it is shown, on stdout
/// (so it can be captured) with the explanation on stderr.
pub(crate) async fn create_key(
    store: &Store,
    role: ApiKeyRole,
    tenant: Option<String>,
    label: Option<String>,
) -> anyhow::Result<()> {
    let tenant = match tenant {
        Some(text) => match text.parse::<TenantId>() {
            Ok(id) => id,
            Err(_) => {
                store
                    .find_tenant_by_name(&text)
                    .await?
                    .with_context(|| format!("there is no tenant named or numbered {text:?}"))?
                    .id
            }
        },
        None => {
            let tenants = store.list_tenants().await?;
            match tenants.as_slice() {
                [only] => only.id,
                [] => bail!("there is no tenant yet; start agentryd once to create one"),
                _ => bail!("there are several tenants; name one with --tenant"),
            }
        }
    };
    let key = ApiKey::mint(ApiKeyKind::Tenant(role));
    let record = store
        .insert_api_key(
            tenant,
            NewApiKey {
                role: Some(role),
                agent_id: None,
                key_hash: key.hash().0,
                label,
            },
            now(),
        )
        .await?;
    eprintln!(
        "created {role} key {} in tenant {tenant}; it will not be shown again:",
        record.id
    );
    println!("{}", key.expose());
    Ok(())
}
