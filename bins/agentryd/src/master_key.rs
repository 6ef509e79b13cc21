//! Where the master key comes from: `AGENTRY_MASTER_KEY` (64 hex digits),
//! else a key file, created with mode 0600 on first run.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use agentry_auth::MasterKey;
use anyhow::{Context, bail};

pub(crate) fn load(path: &Path) -> anyhow::Result<MasterKey> {
    if let Ok(text) = std::env::var("AGENTRY_MASTER_KEY") {
        return MasterKey::from_hex(&text).context("AGENTRY_MASTER_KEY is not valid");
    }
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut file) => {
            let key = MasterKey::generate();
            file.write_all(key.to_hex().as_bytes())
                .and_then(|()| file.write_all(b"\n"))
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write the master key to {}", path.display()))?;
            tracing::warn!(
                path = %path.display(),
                "generated a new master key; back it up: without it the signing keys in the database cannot be opened"
            );
            Ok(key)
        }
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {
            let mut text = String::new();
            let mut file = OpenOptions::new()
                .read(true)
                .open(path)
                .with_context(|| format!("cannot open the master key file {}", path.display()))?;
            let mode = file
                .metadata()
                .map(|meta| std::os::unix::fs::PermissionsExt::mode(&meta.permissions()));
            if let Ok(mode) = mode
                && mode & 0o077 != 0
            {
                bail!(
                    "the master key file {} is readable by others (mode {:o}); run chmod 600 on it",
                    path.display(),
                    mode & 0o777
                );
            }
            file.read_to_string(&mut text)
                .with_context(|| format!("cannot read the master key file {}", path.display()))?;
            MasterKey::from_hex(&text)
                .with_context(|| format!("the master key file {} is not valid", path.display()))
        }
        Err(error) => Err(error)
            .with_context(|| format!("cannot create the master key file {}", path.display())),
    }
}
