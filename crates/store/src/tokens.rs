//! One-time tokens (invites, provisioning bootstrap tokens, artifact
//! download tokens): stored as SHA-256, expiring, consumed at most once, with
//! an attempt counter that stops at its limit. Whether a token may be used
//! is `agentry_lifecycle::OneTimeToken::admits`; the single statements that
//! must decide and write at once filter with its SQL twins below.

use agentry_domain::TenantId;
use agentry_lifecycle::{OneTimeToken, TokenRefusal, TokenUse};
use diesel::dsl;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::{read, write_one};
use crate::schema::one_time_tokens;
use crate::types::{DbTime, DbUuid};
use crate::{Store, StoreError, new_id};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    Invite,
    Bootstrap,
    Download,
}

impl TokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::Invite => "invite",
            TokenPurpose::Bootstrap => "bootstrap",
            TokenPurpose::Download => "download",
        }
    }
}

/// Why a token cannot be used. Callers usually answer all of them alike
/// (401 or 410) so a guesser learns nothing; the detail is for audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not valid")]
    Unknown,
    #[error("the token has expired")]
    Expired,
    #[error("the token has already been used")]
    Consumed,
    #[error("the token has been tried too many times")]
    TooManyAttempts,
}

impl From<TokenRefusal> for TokenError {
    fn from(refusal: TokenRefusal) -> Self {
        match refusal {
            TokenRefusal::Consumed => TokenError::Consumed,
            TokenRefusal::Expired => TokenError::Expired,
            TokenRefusal::TooManyAttempts => TokenError::TooManyAttempts,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewToken {
    pub purpose: TokenPurpose,
    pub token_hash: [u8; 32],
    /// What the token grants access to (a user, an instance, an artifact).
    pub subject_id: Uuid,
    pub max_attempts: i64,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub subject_id: Uuid,
    pub attempts: i64,
    pub max_attempts: i64,
    pub expires_at: OffsetDateTime,
    pub consumed_at: Option<OffsetDateTime>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = one_time_tokens)]
pub(crate) struct TokenRow {
    pub(crate) id: DbUuid,
    pub(crate) tenant_id: DbUuid,
    pub(crate) purpose: String,
    pub(crate) token_hash: Vec<u8>,
    pub(crate) subject_id: DbUuid,
    pub(crate) attempts: i64,
    pub(crate) max_attempts: i64,
    pub(crate) expires_at: DbTime,
    pub(crate) consumed_at: Option<DbTime>,
    pub(crate) created_at: DbTime,
}

impl TokenRow {
    pub(crate) fn new(tenant: TenantId, token: NewToken, now: OffsetDateTime) -> Self {
        TokenRow {
            id: DbUuid(new_id()),
            tenant_id: DbUuid(tenant.as_uuid()),
            purpose: token.purpose.as_str().to_owned(),
            token_hash: token.token_hash.to_vec(),
            subject_id: DbUuid(token.subject_id),
            attempts: 0,
            max_attempts: token.max_attempts,
            expires_at: DbTime::new(token.expires_at),
            consumed_at: None,
            created_at: DbTime::new(now),
        }
    }
}

impl From<TokenRow> for TokenRecord {
    fn from(row: TokenRow) -> Self {
        TokenRecord {
            id: row.id.0,
            tenant_id: TenantId::from_uuid(row.tenant_id.0),
            subject_id: row.subject_id.0,
            attempts: row.attempts,
            max_attempts: row.max_attempts,
            expires_at: row.expires_at.get(),
            consumed_at: row.consumed_at.map(DbTime::get),
        }
    }
}

impl TokenRecord {
    /// What decides whether the token may be used.
    pub fn one_time_token(&self) -> OneTimeToken {
        OneTimeToken {
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            expires_at: self.expires_at,
            consumed_at: self.consumed_at,
        }
    }

    /// Whether a try of the token may begin at `now`, and if not, why.
    pub fn usable(&self, now: OffsetDateTime) -> Result<(), TokenError> {
        Ok(self.one_time_token().admits(TokenUse::Try, now)?)
    }
}

/// The rows `OneTimeToken::admits(TokenUse::Consume, now)` accepts, as SQL:
/// unused and unexpired. It mirrors that function so that one UPDATE can
/// decide and write at once (of concurrent consumers exactly one wins);
/// `one_time_token_sql_agrees_with_the_rule` in the store's tests holds the
/// two together on both backends. Change both or neither.
pub(crate) fn admits_consume(now: DbTime) -> AdmitsConsume {
    one_time_tokens::consumed_at
        .is_null()
        .and(one_time_tokens::expires_at.gt(now))
}

/// The rows `OneTimeToken::admits(TokenUse::Try, now)` accepts, as SQL:
/// those [`admits_consume`] accepts that have a try left. Its mirror, as
/// that one is.
pub(crate) fn admits_try(now: DbTime) -> AdmitsTry {
    admits_consume(now).and(one_time_tokens::attempts.lt(one_time_tokens::max_attempts))
}

pub(crate) type AdmitsConsume = dsl::And<
    dsl::IsNull<one_time_tokens::consumed_at>,
    dsl::Gt<one_time_tokens::expires_at, DbTime>,
>;
pub(crate) type AdmitsTry =
    dsl::And<AdmitsConsume, dsl::Lt<one_time_tokens::attempts, one_time_tokens::max_attempts>>;

impl Store {
    pub async fn insert_token(
        &self,
        tenant: TenantId,
        token: NewToken,
        now: OffsetDateTime,
    ) -> Result<TokenRecord, StoreError> {
        let row = TokenRow::new(tenant, token, now);
        write_one!(self, |conn| {
            diesel::insert_into(one_time_tokens::table)
                .values(&row)
                .execute(conn)
                .await
                .map_err(|error| crate::tenants::conflict_as(error, "token"))
        })?;
        Ok(row.into())
    }

    /// The token with this hash and purpose, whatever its state.
    pub async fn find_token(
        &self,
        purpose: TokenPurpose,
        token_hash: &[u8; 32],
    ) -> Result<Option<TokenRecord>, StoreError> {
        let row: Option<TokenRow> = read!(self, |conn| {
            one_time_tokens::table
                .filter(one_time_tokens::token_hash.eq(token_hash.as_slice()))
                .filter(one_time_tokens::purpose.eq(purpose.as_str()))
                .select(TokenRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        Ok(row.map(TokenRecord::from))
    }

    /// Consumes the token if it is unused and unexpired at `now` (attempts
    /// gate starting a try, not finishing one). One statement decides, so
    /// of any number of concurrent consumers exactly one wins; the others get
    /// `TokenError::Consumed`.
    pub async fn consume_token(
        &self,
        purpose: TokenPurpose,
        token_hash: &[u8; 32],
        now: OffsetDateTime,
    ) -> Result<TokenRecord, StoreError> {
        let now = DbTime::new(now);
        let won: Option<TokenRow> = write_one!(self, |conn| {
            diesel::update(
                one_time_tokens::table
                    .filter(one_time_tokens::token_hash.eq(token_hash.as_slice()))
                    .filter(one_time_tokens::purpose.eq(purpose.as_str()))
                    .filter(admits_consume(now)),
            )
            .set(one_time_tokens::consumed_at.eq(now))
            .returning(TokenRow::as_returning())
            .get_result(conn)
            .await
            .optional()
        })?;
        if let Some(row) = won {
            return Ok(row.into());
        }
        self.explain_refusal(purpose, token_hash, TokenUse::Consume, now.get())
            .await
    }

    /// Counts one attempt at using the token (a download try, say) if any
    /// are left; the counter never passes `max_attempts`.
    pub async fn record_token_attempt(
        &self,
        purpose: TokenPurpose,
        token_hash: &[u8; 32],
        now: OffsetDateTime,
    ) -> Result<TokenRecord, StoreError> {
        let db_now = DbTime::new(now);
        let counted: Option<TokenRow> = write_one!(self, |conn| {
            diesel::update(
                one_time_tokens::table
                    .filter(one_time_tokens::token_hash.eq(token_hash.as_slice()))
                    .filter(one_time_tokens::purpose.eq(purpose.as_str()))
                    .filter(admits_try(db_now)),
            )
            .set(one_time_tokens::attempts.eq(one_time_tokens::attempts + 1))
            .returning(TokenRow::as_returning())
            .get_result(conn)
            .await
            .optional()
        })?;
        match counted {
            Some(row) => Ok(row.into()),
            None => {
                self.explain_refusal(purpose, token_hash, TokenUse::Try, now)
                    .await
            }
        }
    }

    async fn explain_refusal(
        &self,
        purpose: TokenPurpose,
        token_hash: &[u8; 32],
        intent: TokenUse,
        now: OffsetDateTime,
    ) -> Result<TokenRecord, StoreError> {
        let Some(token) = self.find_token(purpose, token_hash).await? else {
            return Err(TokenError::Unknown.into());
        };
        token
            .one_time_token()
            .admits(intent, now)
            .map_err(TokenError::from)?;
        // Usable now but refused a moment ago: it expired or was used in
        // between; report it as used, the state it is in for everyone else.
        Err(TokenError::Consumed.into())
    }
}
