//! The edge against the real binary: clients that send slowly or hold
//! connections, the connection cap, `/metrics` on a listener of its own
//! and bounded whatever methods clients make up, and HSTS on TLS only.
//!
//! Waits here are bounds on a timeout feature ("closed within N s"), set
//! well above the timeouts configured, never a guess at readiness.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{free_port, http, start};

fn connect(port: u16, read_limit: Duration) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(read_limit))
        .expect("set a read timeout");
    stream
}

/// Reads until the server closes the connection; fails if it has not
/// within the stream's read timeout.
fn read_until_closed(stream: &mut TcpStream, what: &str) -> String {
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => String::from_utf8_lossy(&answer).into_owned(),
        Err(error) if error.kind() == ErrorKind::ConnectionReset => {
            String::from_utf8_lossy(&answer).into_owned()
        }
        Err(error) => panic!(
            "{what}: not closed in time ({error}); read so far: {}",
            String::from_utf8_lossy(&answer)
        ),
    }
}

fn status_of(answer: &str) -> Option<u16> {
    answer.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_half_sent_head_is_closed_within_the_head_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _server = start(dir.path(), port, &["--no-tls", "--head-timeout", "1"], 1);
    let mut stream = connect(port, Duration::from_secs(5));
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")
        .expect("send half a head");
    let answer = read_until_closed(&mut stream, "a half-sent head");
    // actix may say 408 before it closes; it must not serve the request.
    assert!(matches!(status_of(&answer), None | Some(408)), "{answer}");
    assert_eq!(http(port, "GET", "/healthz", None, None).0, 200);
}

#[test]
fn a_body_that_trickles_is_answered_408_and_the_connection_closed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _server = start(dir.path(), port, &["--no-tls", "--body-timeout", "1"], 1);

    // A body announced and never finished, to a route that reads it
    // without a credential (seed 002's setup, on a fresh instance).
    let mut stream = connect(port, Duration::from_secs(6));
    stream
        .write_all(
            b"POST /api/v1/bootstrap HTTP/1.1\r\nhost: 127.0.0.1\r\n\
              content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"primary\"",
        )
        .expect("send a head and a little body");
    let trickler = {
        let mut stream = stream.try_clone().expect("clone the stream");
        std::thread::spawn(move || {
            // A byte every 200 ms until the server hangs up (or 20 s).
            for _ in 0..100 {
                std::thread::sleep(Duration::from_millis(200));
                if stream.write_all(b" ").is_err() {
                    break;
                }
            }
        })
    };
    let answer = read_until_closed(&mut stream, "a trickled body");
    assert_eq!(status_of(&answer), Some(408), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(
        answer.contains("x-content-type-options: nosniff"),
        "{answer}"
    );
    drop(stream);
    trickler.join().expect("the trickler ends");

    assert_eq!(http(port, "GET", "/healthz", None, None).0, 200);
}

#[test]
fn a_connection_over_the_cap_waits_until_another_closes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _server = start(
        dir.path(),
        port,
        &["--no-tls", "--max-connections", "1", "--keep-alive", "60"],
        1,
    );
    // One connection, served and held open (keep-alive).
    let mut held = connect(port, Duration::from_secs(10));
    held.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .expect("send a request");
    let mut answer = Vec::new();
    let mut buffer = [0; 1024];
    while !String::from_utf8_lossy(&answer).contains("{\"status\":\"ok\"}") {
        let read = held.read(&mut buffer).expect("an answer");
        assert!(read > 0, "the held connection was closed");
        answer.extend_from_slice(&buffer[..read]);
    }

    // The kernel accepts the next one, but the server does not serve it.
    let mut waiting = connect(port, Duration::from_secs(1));
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .expect("send a request");
    let mut first = [0; 1];
    let error = waiting
        .read(&mut first)
        .expect_err("served past the connection cap");
    assert!(
        matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{error}"
    );

    // Once the held one goes, the waiting one is served.
    drop(held);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    let answer = read_until_closed(&mut waiting, "the waiting connection");
    assert_eq!(status_of(&answer), Some(200), "{answer}");
}

/// Sends `GET /metrics` (or anything) with `Connection: close`; the whole
/// answer as text.
fn raw_get(port: u16, path: &str) -> String {
    let mut stream = connect(port, Duration::from_secs(10));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .expect("send a request");
    read_until_closed(&mut stream, path)
}

#[test]
fn metrics_on_their_own_listener_stay_small_whatever_methods_clients_make_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (port, metrics_port) = (free_port(), free_port());
    let metrics_bind = format!("127.0.0.1:{metrics_port}");
    let _server = start(
        dir.path(),
        port,
        &["--no-tls", "--metrics-bind", &metrics_bind],
        2,
    );
    assert_eq!(http(port, "GET", "/healthz", None, None).0, 200);
    let before = raw_get(metrics_port, "/metrics").len();
    for i in 0..200 {
        let method = format!("MADEUP{i}{}", "X".repeat(2_000));
        let mut stream = connect(port, Duration::from_secs(10));
        write!(
            stream,
            "{method} /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
        )
        .expect("send a request");
        let answer = read_until_closed(&mut stream, "a made-up method");
        assert!(status_of(&answer).is_some(), "{answer}");
    }
    let metrics = raw_get(metrics_port, "/metrics");
    assert_eq!(status_of(&metrics), Some(200), "{metrics}");
    assert!(
        !metrics.contains("MADEUP"),
        "a made-up method became a label"
    );
    assert!(
        metrics.contains(
            r#"agentry_http_requests_total{route="/healthz",method="GET",status="200"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    // The made-up methods added a series or two (one per status), not 200.
    assert!(
        metrics.len() < before + 4_000,
        "{} bytes before, {} after",
        before,
        metrics.len()
    );
    // The API listener no longer serves them.
    let on_api = raw_get(port, "/metrics");
    assert_eq!(status_of(&on_api), Some(404), "{on_api}");
    assert!(on_api.contains("\"code\":\"not_found\""), "{on_api}");
}

/// The response headers of a GET with curl (`-k`: the test checks headers,
/// not the certificate, which `machine.rs` does).
fn curl_headers(url: &str) -> String {
    let output = Command::new("curl")
        .args(["-sSk", "-o", "/dev/null", "-D", "-", url])
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_lowercase()
}

#[test]
fn hsts_is_sent_over_tls_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (port, tls_port) = (free_port(), free_port());
    let _server = start(
        dir.path(),
        port,
        &["--tls-bind", &format!("127.0.0.1:{tls_port}")],
        2,
    );
    let over_tls = curl_headers(&format!("https://127.0.0.1:{tls_port}/healthz"));
    assert!(
        over_tls.contains("strict-transport-security: max-age=31536000"),
        "{over_tls}"
    );
    assert!(
        over_tls.contains("x-content-type-options: nosniff"),
        "{over_tls}"
    );
    let plain = curl_headers(&format!("http://127.0.0.1:{port}/healthz"));
    assert!(!plain.contains("strict-transport-security"), "{plain}");
    assert!(plain.contains("cache-control: no-store"), "{plain}");
}
