//! Seed 003 against the real binary and its real mTLS listener, with curl
//! and openssl as an operator and a machine would use them: the whole of
//! `examples/provision-machine.sh` (the steps of docs/provisioning.md),
//! then certificates the listener must refuse.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{first_admin_key, free_port, start};

fn run(command: &mut Command) -> Output {
    command.output().expect("the command runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `openssl` with `args` in `dir`; panics with its output on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let output = run(Command::new("openssl").current_dir(dir).args(args));
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        text(&output.stderr)
    );
}

/// POSTs `body` to the mTLS listener with curl; returns status and body.
fn curl_post(dir: &Path, url: &str, body: &str, identity: Option<(&str, &str)>) -> (u16, String) {
    let mut command = Command::new("curl");
    command
        .current_dir(dir)
        .args([
            "-sS",
            "--cacert",
            "ca.pem",
            "-H",
            "content-type: application/json",
        ])
        .args(["-w", "\n%{http_code}", "-d", body, url]);
    if let Some((cert, key)) = identity {
        command.args(["--cert", cert, "--key", key]);
    }
    let output = run(&mut command);
    assert!(
        output.status.success(),
        "curl {url}: {}",
        text(&output.stderr)
    );
    let stdout = text(&output.stdout);
    let (body, status) = stdout.rsplit_once('\n').expect("a status line");
    (status.trim().parse().expect("a status"), body.to_owned())
}

#[test]
fn an_operator_and_a_machine_follow_the_documented_steps_with_curl_and_openssl() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (port, tls_port) = (free_port(), free_port());
    let server = start(
        dir.path(),
        port,
        &["--tls-bind", &format!("127.0.0.1:{tls_port}")],
        2,
    );
    let key = first_admin_key(&server).expect("the first run prints an admin key");
    let tls_url = format!("https://localhost:{tls_port}");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/provision-machine.sh");
    let provisioned = run(Command::new("bash")
        .arg(&script)
        .env("AGENTRY_URL", format!("http://127.0.0.1:{port}"))
        .env("AGENTRY_TLS_URL", &tls_url)
        .env("AGENTRY_API_KEY", &key));
    let stdout = text(&provisioned.stdout);
    let stderr = text(&provisioned.stderr);
    assert!(
        provisioned.status.success(),
        "the script failed:\n{stderr}\n{stdout}"
    );
    assert!(stderr.contains("both hashes match"), "{stderr}");
    let state: serde_json::Value =
        serde_json::from_str(stdout.lines().next().expect("the instance's state")).expect("JSON");
    assert_eq!(state["callback"]["stage"], "ready");
    assert_eq!(state["callback"]["seq"], 4);
    let logs: serde_json::Value =
        serde_json::from_str(stdout.lines().nth(1).expect("the logs")).expect("JSON");
    let stages: Vec<&str> = logs["logs"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|log| log["stage"].as_str().expect("a stage"))
        .collect();
    assert_eq!(
        stages,
        [
            "phase-0",
            "installing",
            "configuring",
            "securing",
            "files",
            "ready"
        ]
    );
    assert!(
        !stdout.contains("example-secret"),
        "secrets never leave /secrets"
    );

    // The listener completes the handshake with any certificate and judges
    // it after: one from another CA is a 401, and so is none at all.
    let work = dir.path();
    let ca = run(Command::new("curl").args([
        "-fsS",
        &format!("http://127.0.0.1:{port}/internal/bootstrap/ca.pem"),
    ]));
    std::fs::write(work.join("ca.pem"), &ca.stdout).expect("write ca.pem");
    openssl(
        work,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "rogue-ca.key",
            "-out",
            "rogue-ca.pem",
            "-subj",
            "/CN=rogue",
            "-days",
            "1",
        ],
    );
    openssl(
        work,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "rogue.key",
            "-out",
            "rogue.csr",
            "-subj",
            "/CN=rogue-machine",
        ],
    );
    // v3 with client-auth usage, like ours: only the issuer is wrong.
    std::fs::write(
        work.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .expect("write client.ext");
    openssl(
        work,
        &[
            "x509",
            "-req",
            "-in",
            "rogue.csr",
            "-CA",
            "rogue-ca.pem",
            "-CAkey",
            "rogue-ca.key",
            "-CAcreateserial",
            "-extfile",
            "client.ext",
            "-out",
            "rogue.crt",
            "-days",
            "1",
        ],
    );
    let secrets = format!("{tls_url}/internal/bootstrap/secrets");
    let body = format!(r#"{{"session_id":"{}"}}"#, uuid::Uuid::nil());
    let (status, answer) = curl_post(work, &secrets, &body, Some(("rogue.crt", "rogue.key")));
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("invalid_client_certificate"), "{answer}");
    let (status, answer) = curl_post(work, &secrets, &body, None);
    assert_eq!(status, 401, "{answer}");
    assert!(answer.contains("client_certificate_required"), "{answer}");

    // The plain listener carries no certificate at all. (An expired
    // certificate of our own CA is refused in crates/http's tests.)
    let (status, _) = curl_post(
        work,
        &format!("http://127.0.0.1:{port}/internal/bootstrap/secrets"),
        &body,
        None,
    );
    assert_eq!(status, 401);
    drop(server);
}
