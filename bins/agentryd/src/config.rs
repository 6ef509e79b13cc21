//! The server's configuration: read once at start, passed down explicitly.

use std::net::SocketAddr;
use std::path::PathBuf;

use agentry_domain::ApiKeyRole;
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

    /// The base URL clients reach this server at; the `iss` of every token.
    #[arg(
        long,
        env = "AGENTRY_PUBLIC_URL",
        default_value = "http://localhost:8080",
        global = true
    )]
    pub(crate) public_url: String,

    /// Where the master key (which seals signing keys at rest) is kept when
    /// AGENTRY_MASTER_KEY is not set; created with mode 0600 on first run.
    #[arg(
        long,
        env = "AGENTRY_MASTER_KEY_FILE",
        default_value = "agentry.key",
        global = true
    )]
    pub(crate) master_key_file: PathBuf,

    /// Lifetime of agent tokens, in seconds (seed 000: one hour).
    #[arg(long, env = "AGENTRY_AGENT_TOKEN_TTL", default_value_t = 3600)]
    pub(crate) agent_token_ttl: u32,

    /// Lifetime of session tokens, in seconds (seed 002: 24 hours).
    #[arg(long, env = "AGENTRY_SESSION_TOKEN_TTL", default_value_t = 86_400)]
    pub(crate) session_token_ttl: u32,

    /// Lifetime of invite links for humans, in seconds (seed 002: 7 days).
    #[arg(long, env = "AGENTRY_INVITE_TTL", default_value_t = 604_800)]
    pub(crate) invite_ttl: u32,

    /// Address and port of the mTLS listener for provisioning machines
    /// (seed 003); it serves the whole API over TLS and asks for, but does
    /// not require, a client certificate.
    #[arg(long, env = "AGENTRY_TLS_BIND", default_value = "127.0.0.1:8443")]
    pub(crate) tls_bind: SocketAddr,
    /// Serve no mTLS listener.
    #[arg(long, env = "AGENTRY_NO_TLS")]
    pub(crate) no_tls: bool,
    /// Names (DNS or IP) the mTLS listener's certificate is issued for,
    /// comma-separated; machines must reach it by one of them.
    #[arg(
        long,
        env = "AGENTRY_TLS_HOSTNAMES",
        default_value = "localhost,127.0.0.1",
        value_delimiter = ','
    )]
    pub(crate) tls_hostnames: Vec<String>,
    /// Where uploaded artifact bundles are kept; defaults to `artifacts`
    /// beside a SQLite database file, or in the working directory.
    #[arg(long, env = "AGENTRY_ARTIFACT_DIR")]
    pub(crate) artifact_dir: Option<PathBuf>,
    /// Largest artifact bundle accepted, in bytes.
    #[arg(long, env = "AGENTRY_MAX_ARTIFACT_BYTES", default_value_t = 1 << 30)]
    pub(crate) max_artifact_bytes: u64,
    /// A secret the first-run workspace setup (`POST /api/v1/bootstrap`)
    /// must carry as its bearer credential. Without it, setup is open to
    /// the first caller, as seed 002 has it.
    #[arg(long, env = "AGENTRY_SETUP_TOKEN", hide_env_values = true)]
    pub(crate) setup_token: Option<String>,
    /// Password attempts (logins, invite acceptances) per account in any
    /// minute; 0 for no limit.
    #[arg(long, env = "AGENTRY_LOGIN_ATTEMPTS_PER_MINUTE", default_value_t = 10)]
    pub(crate) login_attempts_per_minute: u32,
    /// Password attempts from one client address in any minute; 0 for no
    /// limit.
    #[arg(
        long,
        env = "AGENTRY_LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE",
        default_value_t = 60
    )]
    pub(crate) login_attempts_per_address_per_minute: u32,
    // Keys and secrets (issue 15).
    /// Requests per minute each tenant API key may make (bursts of up to a
    /// minute's worth); over it: 429 `rate_limited` with `Retry-After`.
    /// 0 for no limit.
    #[arg(long, env = "AGENTRY_API_KEY_RPM", default_value_t = agentry_http::state::DEFAULT_API_KEY_RPM)]
    pub(crate) api_key_rpm: u32,
    /// On first run, write the first admin API key to this file (created
    /// with mode 0600; an existing file is never overwritten) instead of
    /// printing it on stderr, for machines whose stderr goes to a shared log.
    #[arg(long, env = "AGENTRY_ADMIN_KEY_FILE")]
    pub(crate) admin_key_file: Option<PathBuf>,

    /// Serve `/metrics` on this address alone instead of beside the API
    /// (which then answers 404 for it): keep the address private.
    #[arg(long, env = "AGENTRY_METRICS_BIND")]
    pub(crate) metrics_bind: Option<SocketAddr>,
    /// Seconds a client has to send a whole request head; a connection
    /// whose head is not complete by then is closed.
    #[arg(long, env = "AGENTRY_HEAD_TIMEOUT", default_value_t = 5)]
    pub(crate) head_timeout: u64,
    /// Seconds a client has to send a request body (a large upload gets
    /// one more second per 64 KiB received); past it the request is
    /// answered 408 and the connection closed.
    #[arg(long, env = "AGENTRY_BODY_TIMEOUT", default_value_t = 30)]
    pub(crate) body_timeout: u64,
    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, env = "AGENTRY_KEEP_ALIVE", default_value_t = 5)]
    pub(crate) keep_alive: u64,
    /// Most client connections open at once, over every listener and
    /// worker; past it new connections wait in the kernel's backlog.
    #[arg(long, env = "AGENTRY_MAX_CONNECTIONS", default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_connections: u64,
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
    /// Check the database's invariants (bootstrapped agents have their
    /// limits, ledgers balance, no account over its caps, audit chains
    /// intact); exits non-zero on any violation. Read-only.
    Verify,
    /// Operator tasks on keys.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::enum_variant_names,
    reason = "the variants are the CLI's command names, which say what they act on"
)]
pub(crate) enum AdminCommand {
    /// Mint a tenant API key and print it once.
    CreateKey {
        /// admin, operator, auditor or provisioner.
        #[arg(long)]
        role: ApiKeyRole,
        /// The tenant's name or id; defaults to the only tenant when there
        /// is one (a workspace set up through seed 002's first-run call is
        /// the tenant `workspace`).
        #[arg(long)]
        tenant: Option<String>,
        /// A note on what the key is for.
        #[arg(long)]
        label: Option<String>,
    },
    /// Revoke an API key by its id; it stops working at once.
    RevokeKey {
        /// The key's id (a UUID).
        id: String,
    },
    /// Make a new JWT signing key current; tokens signed by the previous
    /// key keep verifying until they expire.
    RotateSigningKey,
    /// Revoke a JWT signing key (the day it leaks): every token it signed
    /// is refused at once, on every replica, and it leaves the JWKS. A
    /// current key is replaced by a fresh one in the same step.
    RevokeSigningKey {
        /// The key's `kid`, as in the JWKS and the tokens' header.
        kid: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn every_argument(command: &clap::Command) -> Vec<clap::Arg> {
        let mut args: Vec<clap::Arg> = command.get_arguments().cloned().collect();
        for sub in command.get_subcommands() {
            args.extend(every_argument(sub));
        }
        args
    }

    #[test]
    fn every_setting_has_help_and_defaults_parse() {
        Config::command().debug_assert();
        for arg in every_argument(&Config::command()) {
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
        assert_eq!(
            (config.head_timeout, config.body_timeout, config.keep_alive),
            (5, 30, 5)
        );
        assert_eq!(config.max_connections, 10_000);
        assert!(config.metrics_bind.is_none());
        assert!(Config::try_parse_from(["agentryd", "--max-connections", "0"]).is_err());
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
        let create =
            Config::try_parse_from(["agentryd", "admin", "create-key", "--role", "provisioner"])
                .unwrap();
        assert!(matches!(
            create.command,
            Some(Command::Admin(AdminCommand::CreateKey {
                role: ApiKeyRole::Provisioner,
                ..
            }))
        ));
        assert!(
            Config::try_parse_from(["agentryd", "admin", "create-key", "--role", "root"]).is_err()
        );
        let revoke =
            Config::try_parse_from(["agentryd", "admin", "revoke-signing-key", "key-1"]).unwrap();
        assert!(matches!(
            revoke.command,
            Some(Command::Admin(AdminCommand::RevokeSigningKey { ref kid })) if kid == "key-1"
        ));
        assert_eq!(config.api_key_rpm, agentry_http::state::DEFAULT_API_KEY_RPM);
        assert!(config.admin_key_file.is_none());
    }
}
