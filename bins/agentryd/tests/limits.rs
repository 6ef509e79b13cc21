//! Input the HTTP layer refuses before any handler runs, against the real
//! binary: huge headers, and a huge body announced up front. Each gets a
//! 4xx, and the server goes on serving.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{free_port, http, start};

/// Sends raw bytes and returns the status of the answer, if one came.
fn raw(port: u16, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
}

#[test]
fn huge_headers_and_bodies_are_refused_and_the_server_carries_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let _server = start(dir.path(), port, &["--no-tls"], 1);

    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-filler: {}\r\nconnection: close\r\n\r\n",
        "a".repeat(256 * 1024)
    );
    let status = raw(port, huge_header.as_bytes()).expect("an answer");
    assert!((400..500).contains(&status), "huge header: {status}");

    let many_headers: String = (0..500).map(|i| format!("x-h{i}: v\r\n")).collect();
    let request = format!(
        "GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n{many_headers}connection: close\r\n\r\n"
    );
    let status = raw(port, request.as_bytes()).expect("an answer");
    assert!((400..500).contains(&status), "500 headers: {status}");

    // 10 MB announced: refused on the announcement, nothing like it read.
    let announced = "POST /api/v1/bootstrap HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 10485760\r\nconnection: close\r\n\r\n{";
    assert_eq!(raw(port, announced.as_bytes()), Some(413));

    assert_eq!(http(port, "GET", "/healthz", None, None).0, 200);
}
