//! A graceful stop loses nothing the server answered: SIGTERM under a
//! bootstrap load lets the requests in flight finish, and every audit event
//! they queued is written before the process exits.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{first_admin_key, free_port, start, try_http};
use serde_json::json;

#[test]
fn a_graceful_stop_writes_every_audit_event_it_queued() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let server = start(dir.path(), port, &["--no-tls"], 1);
    let key = Arc::new(first_admin_key(&server).expect("a first run prints an admin key"));
    let answered = Arc::new(AtomicUsize::new(0));
    // Bootstraps from eight threads until the server stops answering; each
    // answered one has queued one audit event.
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let (key, answered) = (Arc::clone(&key), Arc::clone(&answered));
            std::thread::spawn(move || {
                for n in 0.. {
                    let body = json!({ "agent_id": format!("load-{worker}-{n}") });
                    match try_http(port, "POST", "/v1/agent/bootstrap", Some(&key), Some(&body)) {
                        Ok((201, _)) => {
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok((status, body)) => panic!("bootstrap answered {status}: {body}"),
                        // Stopped: no longer accepting connections.
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    // Stop once the load is well under way, not at a moment of the clock.
    while answered.load(Ordering::SeqCst) < 200 {
        std::thread::yield_now();
    }
    let status = server.terminate();
    for worker in workers {
        worker.join().expect("a load worker ends");
    }
    assert!(status.success(), "agentryd exited with {status}");

    let output = Command::new(env!("CARGO_BIN_EXE_agentryd"))
        .arg("verify")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("agentry.db").display()),
        )
        .env("AGENTRY_MASTER_KEY_FILE", dir.path().join("agentry.key"))
        .output()
        .expect("agentryd verify runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    // "checked ..., N audit events on sqlite"
    let audited: usize = report
        .split(", ")
        .find_map(|part| part.split_once(" audit events"))
        .and_then(|(count, _)| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no audit event count in {report}"));
    let answered = answered.load(Ordering::SeqCst);
    assert!(
        audited >= answered,
        "{answered} bootstraps were answered, but only {audited} audit events were written"
    );
}
