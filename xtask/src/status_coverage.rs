//! Which documented statuses were reached: every status the OpenAPI
//! document promises for an operation must be answered at least once by the
//! HTTP tests (which log `METHOD route status` of every answer when
//! `AGENTRY_STATUS_LOG` names a directory). The contract fuzz's answers
//! (its server's `/metrics` counts them by route, method and status) are
//! reported beside them.
//!
//! Two statuses are left out: 500, which no request should ever reach, and
//! 503, which takes an outage; the crash test and `cargo xtask chaos`
//! (PostgreSQL stopped under load) are where outages are exercised. So are
//! the few only a race produces (`RACES`).
//!
//! The tests alone must answer every documented status: `cargo xtask test`
//! fails otherwise. The fuzz's answers are only reported, because it
//! reaches some statuses in some runs and not others (its cases depend on
//! timing), and a gate must not depend on luck.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Statuses an operation documents that no test is expected to reach.
const NOT_REACHABLE_BY_DESIGN: [&str; 2] = ["500", "503"];

/// Statuses only a race between requests produces, which a test could only
/// time by sleeping; each with its race.
const RACES: [(&str, &str, &str); 1] = [
    // The agent was deleted between a bootstrap's refused insert and its
    // re-read.
    ("POST", "/v1/agent/bootstrap", "409"),
];

/// An answer: method (upper case), route pattern, status.
pub(crate) type Answer = (String, String, String);

/// The documented answers of `document` (an OpenAPI JSON text), minus those
/// no test is expected to reach.
pub(crate) fn documented(document: &str) -> Result<BTreeSet<Answer>> {
    let document: serde_json::Value =
        serde_json::from_str(document).context("the OpenAPI document is not JSON")?;
    let paths = document["paths"]
        .as_object()
        .context("the OpenAPI document has no paths")?;
    let mut answers = BTreeSet::new();
    for (path, operations) in paths {
        let Some(operations) = operations.as_object() else {
            continue;
        };
        for (method, operation) in operations {
            let Some(responses) = operation["responses"].as_object() else {
                continue;
            };
            for status in responses.keys() {
                let method = method.to_uppercase();
                let race = RACES.contains(&(method.as_str(), path.as_str(), status.as_str()));
                if !race && !NOT_REACHABLE_BY_DESIGN.contains(&status.as_str()) {
                    answers.insert((method, path.clone(), status.clone()));
                }
            }
        }
    }
    Ok(answers)
}

/// The answers logged under `dir`: the tests' `METHOD route status` lines.
pub(crate) fn logged(dir: &Path) -> Result<BTreeSet<Answer>> {
    let mut answers = BTreeSet::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(answers),
        Err(error) => return Err(error).context("cannot read the status log"),
    };
    for entry in entries {
        let text = std::fs::read_to_string(entry?.path()).context("cannot read a status log")?;
        for line in text.lines() {
            let mut fields = line.split(' ');
            if let (Some(method), Some(route), Some(status)) =
                (fields.next(), fields.next(), fields.next())
            {
                answers.insert((method.to_owned(), route.to_owned(), status.to_owned()));
            }
        }
    }
    Ok(answers)
}

/// The answers a server counted, from its `/metrics` text.
pub(crate) fn from_metrics(metrics: &str) -> BTreeSet<Answer> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("agentry_http_requests_total{"))
        .filter_map(|line| {
            // Routes hold braces too (`{id}`): the labels end at the last.
            let labels = line.rsplit_once("} ")?.0;
            let label = |name: &str| {
                labels
                    .split("\",")
                    .find_map(|pair| pair.strip_prefix(&format!("{name}=\"")))
                    .map(|value| value.trim_end_matches('"').to_owned())
            };
            Some((label("method")?, label("route")?, label("status")?))
        })
        .collect()
}

/// Prints how many documented statuses `seen` covers, `who` having
/// answered them; returns those never answered.
pub(crate) fn count(seen: &BTreeSet<Answer>, who: &str) -> Result<Vec<String>> {
    let document = std::fs::read_to_string(crate::workspace_root().join("docs/openapi.json"))
        .context("cannot read docs/openapi.json")?;
    let documented = documented(&document)?;
    let missing = unreached(&documented, seen);
    eprintln!(
        "xtask: {} of {} documented statuses answered by {who}",
        documented.len() - missing.len(),
        documented.len()
    );
    Ok(missing)
}

/// [`count`], and each status never answered.
pub(crate) fn report(seen: &BTreeSet<Answer>, who: &str) -> Result<Vec<String>> {
    let missing = count(seen, who)?;
    for line in &missing {
        eprintln!("  never answered: {line}");
    }
    Ok(missing)
}

/// Fails unless `seen` answers every documented status.
pub(crate) fn require(seen: &BTreeSet<Answer>, who: &str) -> Result<()> {
    let missing = report(seen, who)?;
    if !missing.is_empty() {
        bail!(
            "{} documented statuses are answered by no test: cover them, or list them in \
             xtask/src/status_coverage.rs with the reason no test can reach them",
            missing.len()
        );
    }
    Ok(())
}

/// The documented answers nobody reached, as `METHOD path status` lines.
pub(crate) fn unreached(documented: &BTreeSet<Answer>, seen: &BTreeSet<Answer>) -> Vec<String> {
    documented
        .difference(seen)
        .map(|(method, path, status)| format!("{method} {path} {status}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(method: &str, path: &str, status: &str) -> Answer {
        (method.into(), path.into(), status.into())
    }

    #[test]
    fn documented_statuses_come_from_every_operation_but_500_and_503() {
        let document = r#"{"paths": {
            "/v1/things/{id}": {
                "get": {"responses": {"200": {}, "404": {}, "500": {}, "503": {}}},
                "delete": {"responses": {"204": {}}}
            }
        }}"#;
        assert_eq!(
            documented(document).unwrap(),
            BTreeSet::from([
                answer("GET", "/v1/things/{id}", "200"),
                answer("GET", "/v1/things/{id}", "404"),
                answer("DELETE", "/v1/things/{id}", "204"),
            ])
        );
    }

    #[test]
    fn metrics_lines_name_route_method_and_status() {
        let metrics = "# HELP agentry_http_requests_total HTTP requests answered.\n\
            agentry_http_requests_total{route=\"/v1/things/{id}\",method=\"GET\",status=\"404\"} 3\n\
            agentry_http_request_duration_seconds_count{route=\"/x\",method=\"GET\",status=\"200\"} 1\n";
        assert_eq!(
            from_metrics(metrics),
            BTreeSet::from([answer("GET", "/v1/things/{id}", "404")])
        );
    }

    #[test]
    fn unreached_lists_what_was_documented_and_not_seen() {
        let documented = BTreeSet::from([answer("GET", "/a", "200"), answer("GET", "/a", "404")]);
        let seen = BTreeSet::from([answer("GET", "/a", "200"), answer("POST", "/b", "201")]);
        assert_eq!(unreached(&documented, &seen), ["GET /a 404"]);
    }
}
