use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// Everything a repository call can answer besides success. The variants a
/// caller acts on are typed; the rest is `Unavailable` (retry later: 503) or
/// `Database` (a bug or a broken database: 500).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule refused the write (duplicate agent, e-mail, ...).
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The write would break an invariant the state of the data protects;
    /// the message says which.
    #[error("{0}")]
    Refused(&'static str),
    /// An optimistic update lost its race every time it was tried.
    #[error("{what} changed concurrently {attempts} times; nothing was written")]
    ContentionExhausted { what: &'static str, attempts: u32 },
    /// The agent's lifecycle forbids what was asked (suspended, terminated,
    /// quarantined...), as judged inside the transaction.
    #[error(transparent)]
    Denied(#[from] agentry_lifecycle::Denial),
    /// The idempotency key was used before; this is the entry it recorded.
    #[error("this request was already recorded")]
    Replayed(Box<agentry_ledger::Entry>),
    /// The ledger refused the operation (insufficient budget and friends).
    #[error(transparent)]
    Ledger(#[from] agentry_ledger::LedgerError),
    /// A one-time token that cannot be used (unknown, expired, consumed,
    /// out of attempts).
    #[error(transparent)]
    Token(#[from] crate::tokens::TokenError),
    /// The database cannot be reached or is too busy right now.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Database(DieselError),
}

impl From<DieselError> for StoreError {
    fn from(error: DieselError) -> Self {
        match &error {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                StoreError::Conflict("a record with the same unique key")
            }
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                StoreError::Unavailable(info.message().to_owned())
            }
            // SQLite reports a lock it waited for in vain as an unknown error
            // whose message is the only signal.
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, info)
                if info.message().contains("database is locked")
                    || info.message().contains("database table is locked") =>
            {
                StoreError::Unavailable(info.message().to_owned())
            }
            DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, info) => {
                StoreError::Unavailable(info.message().to_owned())
            }
            // A PostgreSQL going down or coming up, or a connection it cut:
            // the driver reports these with their message only. They are
            // outages (503, retry), not bugs (500).
            DieselError::DatabaseError(_, info) if is_outage(info.message()) => {
                StoreError::Unavailable(info.message().to_owned())
            }
            // A transaction whose connection broke under it.
            DieselError::BrokenTransactionManager => {
                StoreError::Unavailable("the connection broke during a transaction".into())
            }
            _ => StoreError::Database(error),
        }
    }
}

/// Messages of PostgreSQL (and its driver) for a server that is shutting
/// down, starting up, or has dropped the connection.
fn is_outage(message: &str) -> bool {
    const OUTAGES: [&str; 6] = [
        "connection closed",
        "terminating connection",
        "the database system is shutting down",
        "the database system is starting up",
        "the database system is in recovery mode",
        "server closed the connection",
    ];
    OUTAGES.iter().any(|outage| message.contains(outage))
}

impl From<deadpool::managed::PoolError<diesel_async::pooled_connection::PoolError>> for StoreError {
    fn from(
        error: deadpool::managed::PoolError<diesel_async::pooled_connection::PoolError>,
    ) -> Self {
        StoreError::Unavailable(error.to_string())
    }
}

impl StoreError {
    /// Whether the caller should answer 503 and let the client retry.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::ContentionExhausted { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_going_away_is_an_outage_not_a_bug() {
        let outage = |message: &str| {
            StoreError::from(DieselError::DatabaseError(
                DatabaseErrorKind::Unknown,
                Box::new(message.to_owned()),
            ))
            .is_unavailable()
        };
        assert!(outage("connection closed"));
        assert!(outage(
            "FATAL: terminating connection due to administrator command"
        ));
        assert!(outage("the database system is shutting down"));
        assert!(!outage("syntax error at or near \"SELEC\""));
        assert!(StoreError::from(DieselError::BrokenTransactionManager).is_unavailable());
    }
}
