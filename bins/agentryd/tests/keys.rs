//! Keys and secrets against the real binary: the first admin key written to
//! a 0600 file instead of stderr, owner-only database, key and artifact
//! folder, and `agentryd admin revoke-signing-key` reaching a running
//! server through the SQLite change log.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{free_port, http, start};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `agentryd admin <args>` on the database in `dir`.
fn admin(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentryd"))
        .arg("admin")
        .args(args)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("agentry.db").display()),
        )
        .env("AGENTRY_MASTER_KEY_FILE", dir.join("agentry.key"))
        .env_remove("AGENTRY_MASTER_KEY")
        .output()
        .expect("agentryd admin runs")
}

fn kids(port: u16) -> Vec<String> {
    let (status, jwks) = http(port, "GET", "/.well-known/jwks.json", None, None);
    assert_eq!(status, 200);
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|key| key["kid"].as_str().expect("kid").to_owned())
        .collect()
}

#[test]
fn the_first_admin_key_goes_to_a_private_file_and_every_secret_file_is_owner_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("admin.key");
    let port = free_port();
    let key_file_arg = key_file.to_str().expect("utf-8 path");
    let server = start(
        dir.path(),
        port,
        &["--no-tls", "--admin-key-file", key_file_arg],
        1,
    );
    assert!(
        !server
            .startup
            .iter()
            .any(|line| line.contains("agy_admin_")),
        "the key is not on stderr: {:#?}",
        server.startup
    );
    let key = std::fs::read_to_string(&key_file).expect("the key file is written");
    let key = key.trim();
    assert!(key.starts_with("agy_admin_"), "{key}");
    let (status, _) = http(port, "GET", "/v1/agent/profiles", Some(key), None);
    assert_eq!(status, 200, "the key in the file works");

    assert_eq!(mode(&key_file), 0o600);
    let database = dir.path().join("agentry.db");
    for file in [
        "agentry.db",
        "agentry.db-wal",
        "agentry.db-shm",
        "agentry.key",
    ] {
        assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
    }
    assert!(database.exists());
    assert_eq!(mode(&dir.path().join("artifacts")), 0o700, "artifacts");
    drop(server);

    // Never over an existing file: the server refuses to start, the file
    // keeps what it held, and no tenant was created (a later start with
    // another file gets the first key).
    let again = tempfile::tempdir().expect("temp dir");
    let taken = again.path().join("admin.key");
    std::fs::write(&taken, "keep me\n").expect("write");
    let refused = Command::new(env!("CARGO_BIN_EXE_agentryd"))
        .args(["--no-tls", "--bind", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-key-file", taken.to_str().expect("utf-8 path")])
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", again.path().join("agentry.db").display()),
        )
        .env("AGENTRY_MASTER_KEY_FILE", again.path().join("agentry.key"))
        .env_remove("AGENTRY_MASTER_KEY")
        .output()
        .expect("agentryd runs");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("never overwritten"), "{stderr}");
    assert!(!stderr.contains("agy_admin_"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&taken).expect("read"), "keep me\n");
}

#[test]
fn revoke_signing_key_reaches_the_running_server_and_explains_mistakes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _server = start(dir.path(), port, &["--no-tls"], 1);
    let before = kids(port);
    let [kid] = before.as_slice() else {
        panic!("one key on a fresh instance: {before:?}");
    };

    let unknown = admin(dir.path(), &["revoke-signing-key", "key-nobody"]);
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success());
    assert!(
        stderr.contains("no signing key has the kid") && stderr.contains(kid.as_str()),
        "{stderr}"
    );

    let revoked = admin(dir.path(), &["revoke-signing-key", kid]);
    let stderr = String::from_utf8_lossy(&revoked.stderr);
    assert!(revoked.status.success(), "{stderr}");
    assert!(stderr.contains("it was the current key"), "{stderr}");

    // The server polls the change log every second; a generous bound.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let after = loop {
        let now = kids(port);
        if !now.contains(kid) && !now.is_empty() {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server still publishes {kid}: {now:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(after.len(), 1, "only the replacement: {after:?}");

    let twice = admin(dir.path(), &["revoke-signing-key", kid]);
    let stderr = String::from_utf8_lossy(&twice.stderr);
    assert!(twice.status.success(), "{stderr}");
    assert!(stderr.contains("already revoked"), "{stderr}");
}
