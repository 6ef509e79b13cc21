//! Starting the real `agentryd` binary for end-to-end tests.

#![allow(dead_code, reason = "each test file uses a part of this")]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The server, killed when the test ends however it ends.
pub(crate) struct Server {
    child: Child,
    /// What it printed before it listened (the first admin key among it).
    pub(crate) startup: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Starts `agentryd` on a SQLite file in `dir` with `args`, and returns once
/// it has said it listens `listeners` times: an event, not a sleep.
pub(crate) fn start(dir: &Path, port: u16, args: &[&str], listeners: usize) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentryd"))
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(args)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("agentry.db").display()),
        )
        .env("AGENTRY_MASTER_KEY_FILE", dir.join("agentry.key"))
        .env("AGENTRY_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env_remove("AGENTRY_MASTER_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agentryd");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut startup = Vec::new();
    let mut heard = 0;
    for line in lines.by_ref().map_while(Result::ok) {
        heard += usize::from(line.contains("agentryd: listening on"));
        startup.push(line);
        if heard == listeners {
            break;
        }
    }
    assert_eq!(heard, listeners, "agentryd exited early: {startup:#?}");
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Server { child, startup }
}

/// The first-run admin key agentryd printed, if it did.
pub(crate) fn first_admin_key(server: &Server) -> Option<String> {
    server
        .startup
        .iter()
        .map(|line| line.trim())
        .find(|line| line.starts_with("agy_admin_"))
        .map(str::to_owned)
}
