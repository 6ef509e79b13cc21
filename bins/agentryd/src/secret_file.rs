//! Files and folders that hold secrets, created readable by their owner
//! only, whatever the process's umask.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::Context;

/// Creates `path` with mode 0600; an existing file is an error, never
/// overwritten (it may hold a key someone still needs).
pub(crate) fn create(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} for the first admin key (an existing file is never overwritten)",
                path.display()
            )
        })
}

/// Writes `secret` and a newline to `file` (made by [`create`]) and syncs it.
pub(crate) fn write(mut file: File, path: &Path, secret: &str) -> anyhow::Result<()> {
    file.write_all(secret.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the first admin key to {}", path.display()))
}

/// Creates the folder `path` (and any missing parents) with mode 0700
/// unless it exists; an existing folder keeps the mode its owner gave it.
pub(crate) fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create the folder {}", path.display()))
}
