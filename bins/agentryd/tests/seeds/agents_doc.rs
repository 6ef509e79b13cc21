//! docs/agents.md's commands, run as written: its shell blocks in order in
//! one shell, with its Python block saved where the page says, against a
//! fresh server with the mTLS listener.

use std::path::Path;
use std::process::Command;

use crate::{Backend, Instance, mcp_python, on_both_backends, required};

on_both_backends!(connect_an_agent_runs_as_written);

/// The blocks of `language` in a Markdown page, in order.
fn blocks<'a>(page: &'a str, language: &str) -> Vec<&'a str> {
    let fence = format!("```{language}\n");
    let mut found = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let Some(end) = body.find("```") else {
            break;
        };
        found.push(&body[..end]);
        rest = &body[end..];
    }
    found
}

fn connect_an_agent_runs_as_written(backend: Backend) {
    let tools = Command::new("sh")
        .args([
            "-c",
            "command -v curl && command -v jq && command -v openssl",
        ])
        .output()
        .is_ok_and(|output| output.status.success());
    if required(tools, "docs/agents.md's commands need curl, jq and openssl").is_none() {
        return;
    }
    let Some(python) = mcp_python() else {
        return;
    };
    let Some(instance) = Instance::start(backend, true) else {
        return;
    };
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/agents.md"))
            .expect("docs/agents.md");
    let shell = blocks(&page, "sh");
    let python_blocks = blocks(&page, "python");
    assert!(shell.len() >= 6, "the page lost its shell blocks");
    assert_eq!(python_blocks.len(), 1, "one Python example");
    let work = tempfile::tempdir().expect("temp dir");
    std::fs::write(work.path().join("agentry_mcp.py"), python_blocks[0]).expect("write");

    let provisioner = instance.cli(&["admin", "create-key", "--role", "provisioner"]);
    let tls_port = instance.tls_port.expect("the mTLS listener");
    let output = Command::new("sh")
        .args(["-e", "-c", &shell.concat()])
        .current_dir(work.path())
        .env("AGENTRY", instance.base_url())
        .env("AGENTRY_TLS", format!("https://localhost:{tls_port}"))
        .env("PROVISIONER", &provisioner)
        .env("PYTHON", python)
        .output()
        .expect("sh runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "docs/agents.md failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    for expected in [
        "agent_bootstrap",
        "agent_self_awareness",
        "GET /v1/agent/status",
        "\"cert_exchange\": \"POST /v1/agent/auth/cert\",",
        "\"agent\": \"docs-agent\",",
        "docs-agent",
        "4.98",
        "insufficient_budget",
        "11 tools",
        "True insufficient_budget",
    ] {
        assert!(
            lines.iter().any(|line| line.trim() == expected),
            "no line {expected:?} in:\n{stdout}"
        );
    }
}
