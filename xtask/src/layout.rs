//! Checks on the source tree that keep the crates readable: no module of
//! the layers that grow fastest (crates/http, crates/store) is longer than
//! a reader takes in at once (issue 17).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Lines a source file of the checked crates may have.
pub(crate) const MAX_MODULE_LINES: usize = 600;

/// The folders whose `.rs` files are held to [`MAX_MODULE_LINES`].
const CHECKED: &[&str] = &["crates/http/src", "crates/store/src"];

/// Fails naming every file over [`MAX_MODULE_LINES`].
pub(crate) fn check(root: &Path) -> Result<()> {
    let mut too_long = Vec::new();
    for folder in CHECKED {
        for file in rust_files(&root.join(folder))? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let lines = text.lines().count();
            if lines > MAX_MODULE_LINES {
                let shown = file
                    .strip_prefix(root)
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                too_long.push(format!("{shown}: {lines} lines"));
            }
        }
    }
    if too_long.is_empty() {
        return Ok(());
    }
    bail!(
        "split these modules along their concerns (at most {MAX_MODULE_LINES} lines each):\n  {}",
        too_long.join("\n  ")
    )
}

fn rust_files(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder)
            .with_context(|| format!("cannot list {}", folder.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_module_is_named() {
        let root = std::env::temp_dir().join(format!("agentry-layout-{}", std::process::id()));
        let folder = root.join("crates/http/src/family");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::create_dir_all(root.join("crates/store/src")).unwrap();
        std::fs::write(folder.join("short.rs"), "fn a() {}\n").unwrap();
        assert!(check(&root).is_ok());
        std::fs::write(folder.join("long.rs"), "//\n".repeat(MAX_MODULE_LINES + 1)).unwrap();
        let refused = check(&root).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&root);
        assert!(
            refused.contains("crates/http/src/family/long.rs: 601 lines"),
            "{refused}"
        );
        assert!(!refused.contains("short.rs"), "{refused}");
    }
}
