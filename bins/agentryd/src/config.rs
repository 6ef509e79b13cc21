//! The server's configuration: read once at start, passed down explicitly.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

/// Agentry: identity, credentials, budgets and a lifecycle for AI agents.
#[derive(Debug, Parser)]
#[command(name = "agentryd", version, about)]
pub(crate) struct Config {
    /// Address and port the HTTP API listens on.
    #[arg(long, env = "AGENTRY_BIND", default_value = "127.0.0.1:8080")]
    pub(crate) bind: SocketAddr,

    /// Database to use: `sqlite://path` (or a bare path) for the embedded
    /// default, `postgres://...` for production.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://agentry.db",
        global = true
    )]
    pub(crate) database_url: String,

    /// Do not apply pending migrations at start (apply them with
    /// `agentryd migrate` instead).
    #[arg(long, env = "AGENTRY_SKIP_MIGRATIONS")]
    pub(crate) skip_migrations: bool,

    /// Most database connections the server holds open.
    #[arg(long, env = "AGENTRY_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub(crate) db_max_connections: usize,

    /// Log filter in `tracing` syntax, e.g. `info` or `agentry_http=debug,info`.
    #[arg(long, env = "AGENTRY_LOG", default_value = "info", global = true)]
    pub(crate) log: String,

    /// Write logs as JSON lines instead of human-readable text.
    #[arg(long, env = "AGENTRY_LOG_JSON", global = true)]
    pub(crate) log_json: bool,

    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve the API (what runs when no command is given).
    Serve,
    /// Apply pending database migrations, or list them with --status.
    Migrate {
        /// List applied and pending migrations; change nothing.
        #[arg(long)]
        status: bool,
    },
    /// Create a demo tenant with an admin and a provisioner key (printed
    /// once) and a few agents. Running it again changes nothing.
    Seed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_setting_has_help_and_defaults_parse() {
        Config::command().debug_assert();
        let command = Config::command();
        let subcommands = command
            .get_subcommands()
            .flat_map(|sub| sub.get_arguments());
        for arg in command.get_arguments().chain(subcommands) {
            if arg.get_id() == "help" || arg.get_id() == "version" {
                continue;
            }
            assert!(
                arg.get_help().is_some(),
                "--{} has no help line",
                arg.get_id()
            );
        }
        let config = Config::try_parse_from(["agentryd", "--bind", "0.0.0.0:9000"]).unwrap();
        assert_eq!(config.bind.port(), 9000);
        assert!(config.command.is_none());
        assert!(Config::try_parse_from(["agentryd", "--bind", "nowhere"]).is_err());
        let migrate = Config::try_parse_from([
            "agentryd",
            "migrate",
            "--status",
            "--database-url",
            "postgres://x/y",
        ])
        .unwrap();
        assert!(matches!(
            migrate.command,
            Some(Command::Migrate { status: true })
        ));
        assert_eq!(migrate.database_url, "postgres://x/y");
    }
}
