//! The server's configuration: read once at start, passed down explicitly.

use std::net::SocketAddr;

use clap::Parser;

/// Agentry: identity, credentials, budgets and a lifecycle for AI agents.
#[derive(Debug, Parser)]
#[command(name = "agentryd", version, about)]
pub(crate) struct Config {
    /// Address and port the HTTP API listens on.
    #[arg(long, env = "AGENTRY_BIND", default_value = "127.0.0.1:8080")]
    pub(crate) bind: SocketAddr,

    /// Database to use: `sqlite://path` (or a bare path) for the embedded
    /// default, `postgres://...` for production.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://agentry.db")]
    pub(crate) database_url: String,

    /// Log filter in `tracing` syntax, e.g. `info` or `agentry_http=debug,info`.
    #[arg(long, env = "AGENTRY_LOG", default_value = "info")]
    pub(crate) log: String,

    /// Write logs as JSON lines instead of human-readable text.
    #[arg(long, env = "AGENTRY_LOG_JSON")]
    pub(crate) log_json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_setting_has_help_and_defaults_parse() {
        Config::command().debug_assert();
        for arg in Config::command().get_arguments() {
            assert!(
                arg.get_help().is_some(),
                "--{} has no help line",
                arg.get_id()
            );
        }
        let config = Config::try_parse_from(["agentryd", "--bind", "0.0.0.0:9000"]).unwrap();
        assert_eq!(config.bind.port(), 9000);
        assert!(Config::try_parse_from(["agentryd", "--bind", "nowhere"]).is_err());
    }
}
