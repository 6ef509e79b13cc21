//! Seed 003's curl commands, run by `sh` as the seed prints them (the line
//! breaks its text lost put back), with only the host and port and the
//! credentials substituted: the bootstrap token, the instance id, the
//! session id, the callback JWT, the download token, the machine's CSR and,
//! through curl's own config file (`CURL_HOME`), the CA to trust and the
//! client certificate. The status each gets is the one the seed gives.
//!
//! Two commands carry placeholders that are not credentials and that the
//! seed's own schema refuses: `/cert`'s `"csr_pem": "stringstring..."`
//! (not a CSR: the seed's "400: Invalid CSR") and `/callback`'s
//! `"stage": "string"` (the seed's "400: Invalid stage/seq"). They are run
//! as printed for that 400, and then with a real CSR and the schema's
//! first stage (`installing`) for the 200 and the body the seed prints.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::{
    Backend, Instance, curl_available, expect_status, fixture, keys, on_both_backends, substitute,
};

on_both_backends!(curl_commands_as_printed);

const PRINTED_INSTANCE: &str = "497f6eca-6276-4993-bfeb-53cbbbba6f08";

/// The machine's side: a working directory, and curl configurations with
/// and without its client certificate.
struct Machine {
    work: PathBuf,
    tls_url: String,
}

impl Machine {
    /// A `CURL_HOME` whose `.curlrc` trusts our CA (and presents the
    /// machine's certificate when `mtls`), and prints the status last.
    fn curl_home(&self, mtls: bool) -> PathBuf {
        let home = self.work.join(if mtls { "curl-mtls" } else { "curl" });
        std::fs::create_dir_all(&home).expect("a curl home");
        let mut config = format!(
            "silent\nshow-error\ncacert = \"{}\"\nwrite-out = \"\\n%{{http_code}}\"\n",
            self.work.join("ca.pem").display()
        );
        if mtls {
            config.push_str(&format!(
                "cert = \"{}\"\nkey = \"{}\"\n",
                self.work.join("machine.crt").display(),
                self.work.join("machine.key").display()
            ));
        }
        std::fs::write(home.join(".curlrc"), config).expect("write .curlrc");
        home
    }

    /// Runs the fixture `name` with `substitutions` (the host is always
    /// substituted); its status and body.
    fn run(&self, name: &str, substitutions: &[(&str, &str)], mtls: bool) -> (u16, Vec<u8>) {
        let mut all = vec![("https://loading", self.tls_url.as_str())];
        all.extend_from_slice(substitutions);
        let script = substitute(&fixture(name), &all);
        let output = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .current_dir(&self.work)
            .env("CURL_HOME", self.curl_home(mtls))
            .output()
            .expect("sh runs");
        assert!(
            output.status.success(),
            "{script}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let split = output
            .stdout
            .iter()
            .rposition(|byte| *byte == b'\n')
            .expect("curl wrote the status");
        let status = String::from_utf8_lossy(&output.stdout[split + 1..])
            .trim()
            .parse()
            .expect("a status");
        (status, output.stdout[..split].to_vec())
    }

    fn run_json(&self, name: &str, substitutions: &[(&str, &str)], mtls: bool) -> (u16, Value) {
        let (status, body) = self.run(name, substitutions, mtls);
        let json = serde_json::from_slice(&body).unwrap_or_else(|_| {
            panic!("{name}: {status} {}", String::from_utf8_lossy(&body));
        });
        (status, json)
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn sha256(dir: &Path, file: &str) -> String {
    let digest = openssl(dir, &["dgst", "-sha256", "-r", file]);
    let digest = String::from_utf8_lossy(&digest);
    format!(
        "sha256:{}",
        digest.split_whitespace().next().expect("a digest")
    )
}

/// `{ "message": ..., "status": ... }`, the body the seed prints for
/// `/callback`, `/diagnostic` and `/early-diagnostic`.
#[track_caller]
fn acknowledged(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 200, "{what}: {body}");
    assert_eq!(keys(body), ["message", "status"], "{what}: {body}");
}

fn curl_commands_as_printed(backend: Backend) {
    if curl_available().is_none() {
        return;
    }
    let Some(instance) = Instance::start(backend, true) else {
        return;
    };
    let admin = instance.admin_key.as_str();
    let work = instance.dir.path().join("machine");
    std::fs::create_dir_all(&work).expect("a machine directory");
    let machine = Machine {
        work: work.clone(),
        tls_url: format!("https://localhost:{}", instance.tls_port.expect("mTLS")),
    };
    let ca = instance.request("GET", "/internal/bootstrap/ca.pem", &[], None);
    expect_status(&ca, 200, "GET /internal/bootstrap/ca.pem");
    std::fs::write(work.join("ca.pem"), &ca.body).expect("write ca.pem");

    // The operator's side (ours, not the seed's): an instance with its
    // bundle and a website.
    let bundle = b"the encrypted bundle\n\x00\x01\x02".repeat(100);
    std::fs::write(work.join("bundle.tar.gz"), &bundle).expect("write the bundle");
    let website = b"the website tarball\n".repeat(50);
    let created = instance.call(
        "POST",
        "/v1/provisioning/instances",
        Some(admin),
        Some(&json!({
            "name": "seed-003-machine",
            "agent_config": { "model": "small" },
            "agent_secrets": { "EXAMPLE_API_KEY": "example-secret" },
            "skill_lockfile": { "skills": {} },
            "decryption_key_hex": "ab".repeat(32),
        })),
    );
    expect_status(&created, 201, "POST /v1/provisioning/instances");
    let instance_id = created.json()["instance_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let token = created.json()["bootstrap_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let auth = format!("Bearer {admin}");
    let plain_hash = sha256(&work, "bundle.tar.gz");
    let uploaded = instance.request(
        "PUT",
        &format!("/v1/provisioning/instances/{instance_id}/artifact"),
        &[
            ("authorization", &auth),
            ("content-type", "application/octet-stream"),
            ("x-bundle-plain-hash", &plain_hash),
        ],
        Some(&bundle),
    );
    expect_status(&uploaded, 200, "PUT .../artifact");
    let uploaded = instance.request(
        "PUT",
        &format!("/v1/provisioning/instances/{instance_id}/website"),
        &[
            ("authorization", &auth),
            ("content-type", "application/octet-stream"),
        ],
        Some(&website),
    );
    expect_status(&uploaded, 200, "PUT .../website");

    // Early diagnostic, before the machine has a certificate.
    let (status, body) = machine.run_json(
        "seed_003_early_diagnostic.sh",
        &[
            (
                r#""bootstrap_token": "stringstri""#,
                &format!(r#""bootstrap_token": "{token}""#),
            ),
            (
                r#""instance_id": "string""#,
                &format!(r#""instance_id": "{instance_id}""#),
            ),
        ],
        false,
    );
    acknowledged(status, &body, "early-diagnostic");

    // /cert: as printed (token substituted) its CSR is no CSR: 400.
    let printed_token = format!(r#""bootstrap_token": "{}stri""#, "string".repeat(10));
    let real_token = format!(r#""bootstrap_token": "{token}""#);
    let (status, body) =
        machine.run_json("seed_003_cert.sh", &[(&printed_token, &real_token)], false);
    assert_eq!(status, 400, "/cert with the printed csr_pem: {body}");
    // With the machine's CSR.
    openssl(
        &work,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "machine.key",
            "-out",
            "machine.csr",
            "-subj",
            "/CN=machine",
        ],
    );
    let csr = std::fs::read_to_string(work.join("machine.csr")).expect("the CSR");
    let printed_csr = format!(r#""csr_pem": "{}stri""#, "string".repeat(16));
    let real_csr = format!(r#""csr_pem": "{}""#, csr.replace('\n', "\\n"));
    let (status, issued) = machine.run_json(
        "seed_003_cert.sh",
        &[(&printed_token, &real_token), (&printed_csr, &real_csr)],
        false,
    );
    assert_eq!(status, 200, "/cert: {issued}");
    assert_eq!(keys(&issued), ["cert_pem", "session_id"], "{issued}");
    std::fs::write(
        work.join("machine.crt"),
        issued["cert_pem"].as_str().expect("a certificate"),
    )
    .expect("write machine.crt");
    let session = issued["session_id"].as_str().expect("a session");

    // /secrets over mTLS.
    let (status, secrets) = machine.run_json(
        "seed_003_secrets.sh",
        &[(
            r#""session_id": "string""#,
            &format!(r#""session_id": "{session}""#),
        )],
        true,
    );
    assert_eq!(status, 200, "/secrets: {secrets}");
    assert_eq!(
        keys(&secrets),
        [
            "agent_config",
            "agent_secrets",
            "artifact_cipher_hash",
            "artifact_download_token",
            "bundle_plain_hash",
            "callback_jwt",
            "decryption_key_hex",
            "skill_lockfile"
        ]
    );
    assert_eq!(
        secrets["agent_secrets"]["EXAMPLE_API_KEY"],
        "example-secret"
    );
    assert_eq!(secrets["bundle_plain_hash"], plain_hash.as_str());
    let callback_auth = format!(
        r#""authorization: Bearer {}""#,
        secrets["callback_jwt"].as_str().expect("a JWT")
    );
    let printed_auth = r#""authorization: string""#;

    // /callback as printed: "string" is no stage, the seed's 400.
    let (status, body) = machine.run_json(
        "seed_003_callback.sh",
        &[(printed_auth, &callback_auth)],
        true,
    );
    assert_eq!(status, 400, "/callback with the printed stage: {body}");
    let (status, body) = machine.run_json(
        "seed_003_callback.sh",
        &[
            (printed_auth, &callback_auth),
            (r#""stage": "string""#, r#""stage": "installing""#),
        ],
        true,
    );
    acknowledged(status, &body, "callback installing(1)");

    // /diagnostic as printed.
    let (status, body) = machine.run_json(
        "seed_003_diagnostic.sh",
        &[(printed_auth, &callback_auth)],
        true,
    );
    acknowledged(status, &body, "diagnostic");

    // The downloads: the printed token is not the one /secrets gave (401);
    // the real one streams the bytes.
    let download = format!(
        r#""x-download-token: {}""#,
        secrets["artifact_download_token"]
            .as_str()
            .expect("a token")
    );
    let printed_download = r#""x-download-token: string""#;
    let (status, body) = machine.run(
        "seed_003_artifact.sh",
        &[(PRINTED_INSTANCE, &instance_id)],
        true,
    );
    assert_eq!(
        status,
        401,
        "/artifacts with the printed token: {}",
        String::from_utf8_lossy(&body)
    );
    let (status, body) = machine.run(
        "seed_003_artifact.sh",
        &[
            (PRINTED_INSTANCE, &instance_id),
            (printed_download, &download),
        ],
        true,
    );
    assert_eq!(
        status,
        200,
        "/artifacts: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(body == bundle, "the bundle as uploaded");
    let (status, body) = machine.run(
        "seed_003_artifact_website.sh",
        &[
            (PRINTED_INSTANCE, &instance_id),
            (printed_download, &download),
        ],
        true,
    );
    assert_eq!(status, 200, "/website: {}", String::from_utf8_lossy(&body));
    assert!(body == website, "the website as uploaded");

    // The operator sees what the machine reported.
    let state = instance.call(
        "GET",
        &format!("/v1/provisioning/instances/{instance_id}"),
        Some(admin),
        None,
    );
    expect_status(&state, 200, "the instance's state");
    assert_eq!(state.json()["callback"]["stage"], "installing");
    assert_eq!(state.json()["callback"]["seq"], json!(1));
    let logs = instance.call(
        "GET",
        &format!("/v1/provisioning/instances/{instance_id}/logs"),
        Some(admin),
        None,
    );
    expect_status(&logs, 200, "the instance's logs");
    let logs = logs.json();
    let stages: Vec<&str> = logs["logs"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|log| log["stage"].as_str().expect("a stage"))
        .collect();
    assert_eq!(stages, ["string", "installing", "string"]);
}
