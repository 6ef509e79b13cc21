//! What a machine reports: its callbacks, judged by
//! `agentry_lifecycle::CallbackSequence` under the lock of the instance's
//! callback state, and the provisioning log they and the diagnostics write.

use agentry_domain::TenantId;
use agentry_lifecycle::{
    CallbackError, CallbackSequence, CallbackStage, ProvisionLogFull, ProvisioningPolicy,
};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use time::OffsetDateTime;
use uuid::Uuid;

use super::INSTANCE;
use crate::db::{read, write_tx};
use crate::schema::{callback_states, provision_logs, provisioning_instances};
use crate::types::{DbTime, DbUuid};
use crate::{Store, StoreError, new_id};

/// The last accepted callback of an instance (`None` before the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackState {
    pub last: Option<(u8, CallbackStage)>,
    pub message: Option<String>,
    pub updated_at: OffsetDateTime,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = callback_states)]
struct CallbackRow {
    tenant_id: DbUuid,
    last_seq: Option<i64>,
    stage: Option<String>,
    message: Option<String>,
    updated_at: DbTime,
}

impl CallbackRow {
    fn last(&self) -> Result<Option<(u8, CallbackStage)>, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("callback state: {what}"));
        match (self.last_seq, self.stage.as_deref()) {
            (None, None) => Ok(None),
            (Some(seq), Some(stage)) => {
                let seq = u8::try_from(seq).map_err(|_| corrupt("seq out of range"))?;
                let stage = stage
                    .parse::<CallbackStage>()
                    .map_err(|_| corrupt("unknown stage"))?;
                Ok(Some((seq, stage)))
            }
            _ => Err(corrupt("seq and stage must be set together")),
        }
    }

    fn into_state(self) -> Result<CallbackState, StoreError> {
        Ok(CallbackState {
            last: self.last()?,
            message: self.message,
            updated_at: self.updated_at.get(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionLog {
    pub id: Uuid,
    pub instance_id: Uuid,
    /// A callback stage's name, or another label the caller chose.
    pub stage: String,
    pub level: String,
    pub message: String,
    pub at: OffsetDateTime,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = provision_logs)]
struct LogRow {
    id: DbUuid,
    tenant_id: DbUuid,
    instance_id: DbUuid,
    stage: String,
    level: String,
    message: String,
    at: DbTime,
}

impl LogRow {
    fn new(
        tenant_id: DbUuid,
        instance_id: Uuid,
        stage: &str,
        level: &str,
        message: &str,
        at: OffsetDateTime,
    ) -> Self {
        LogRow {
            id: DbUuid(new_id()),
            tenant_id,
            instance_id: DbUuid(instance_id),
            stage: stage.to_owned(),
            level: level.to_owned(),
            message: message.to_owned(),
            at: DbTime::new(at),
        }
    }
}

impl From<LogRow> for ProvisionLog {
    fn from(row: LogRow) -> Self {
        ProvisionLog {
            id: row.id.0,
            instance_id: row.instance_id.0,
            stage: row.stage,
            level: row.level,
            message: row.message,
            at: row.at.get(),
        }
    }
}

impl Store {
    /// Records a provisioning callback in one transaction: under the lock
    /// of the instance's callback state, [`CallbackSequence::accept`]
    /// judges `(seq, stage)` against the last accepted callback; an
    /// accepted one is stored with its message and logged (stage name,
    /// `level`, the message or ""). A refusal is handed back as
    /// `Ok(Err(..))` and writes nothing. Concurrent callbacks of one
    /// instance are judged one after the other. An unknown instance is
    /// `NotFound("provisioning instance")`.
    #[expect(
        clippy::too_many_arguments,
        reason = "whose instance, when, and the callback's four fields"
    )]
    pub async fn record_callback(
        &self,
        tenant: TenantId,
        instance_id: Uuid,
        now: OffsetDateTime,
        seq: i64,
        stage: CallbackStage,
        message: Option<String>,
        level: &str,
    ) -> Result<Result<CallbackState, CallbackError>, StoreError> {
        let updated_at = DbTime::new(now);
        let (tenant_id, id) = (DbUuid(tenant.as_uuid()), DbUuid(instance_id));
        write_tx!(self, |conn| {
            let target = callback_states::table
                .filter(callback_states::tenant_id.eq(tenant_id))
                .filter(callback_states::instance_id.eq(id));
            let locked = diesel::update(target)
                .set(callback_states::updated_at.eq(callback_states::updated_at))
                .execute(conn)
                .await?;
            if locked == 0 {
                return Err(StoreError::NotFound(INSTANCE));
            }
            let row: CallbackRow = target.select(CallbackRow::as_select()).first(conn).await?;
            let next = match CallbackSequence::resume(row.last()?).accept(seq, stage) {
                Ok(next) => next,
                Err(refusal) => return Ok(Err(refusal)),
            };
            let last = next.last();
            diesel::update(target)
                .set((
                    callback_states::last_seq.eq(last.map(|(seq, _)| i64::from(seq))),
                    callback_states::stage.eq(last.map(|(_, stage)| stage.as_str())),
                    callback_states::message.eq(&message),
                    callback_states::updated_at.eq(updated_at),
                ))
                .execute(conn)
                .await?;
            diesel::insert_into(provision_logs::table)
                .values(&LogRow::new(
                    row.tenant_id,
                    instance_id,
                    stage.as_str(),
                    level,
                    message.as_deref().unwrap_or(""),
                    now,
                ))
                .execute(conn)
                .await?;
            Ok::<_, StoreError>(Ok(CallbackState {
                last,
                message: message.clone(),
                updated_at: updated_at.get(),
            }))
        })
    }

    /// The tenant's instance's last accepted callback; `None` for an
    /// unknown instance.
    pub async fn callback_state(
        &self,
        tenant: TenantId,
        instance_id: Uuid,
    ) -> Result<Option<CallbackState>, StoreError> {
        let row: Option<CallbackRow> = read!(self, |conn| {
            callback_states::table
                .filter(callback_states::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(callback_states::instance_id.eq(DbUuid(instance_id)))
                .select(CallbackRow::as_select())
                .first(conn)
                .await
                .optional()
        })?;
        row.map(CallbackRow::into_state).transpose()
    }

    /// Appends a line to the instance's provisioning log (the callbacks log
    /// themselves through [`Store::record_callback`]) if
    /// [`ProvisioningPolicy::admits_log_line`] agrees, counted under the
    /// instance's row lock so concurrent diagnostics cannot overfill it. A
    /// full log is `Ok(Err(..))` and writes nothing. `NotFound` when
    /// `tenant` has no such instance.
    #[expect(
        clippy::too_many_arguments,
        reason = "a log line's fields, where it goes and the limit it must respect"
    )]
    pub async fn append_provision_log(
        &self,
        tenant: TenantId,
        instance_id: Uuid,
        stage: &str,
        level: &str,
        message: &str,
        now: OffsetDateTime,
        policy: &ProvisioningPolicy,
    ) -> Result<Result<(), ProvisionLogFull>, StoreError> {
        let tenant_id = DbUuid(tenant.as_uuid());
        let row = LogRow::new(tenant_id, instance_id, stage, level, message, now);
        write_tx!(self, |conn| {
            // The portable row lock (see `change_lifecycle`), which also
            // checks the instance is the tenant's.
            let locked = diesel::update(
                provisioning_instances::table
                    .filter(provisioning_instances::tenant_id.eq(tenant_id))
                    .filter(provisioning_instances::id.eq(row.instance_id)),
            )
            .set(provisioning_instances::name.eq(provisioning_instances::name))
            .execute(conn)
            .await?;
            if locked == 0 {
                return Err(StoreError::NotFound(INSTANCE));
            }
            let lines: i64 = provision_logs::table
                .filter(provision_logs::instance_id.eq(row.instance_id))
                .count()
                .get_result(conn)
                .await?;
            if let Err(full) = policy.admits_log_line(lines) {
                return Ok(Err(full));
            }
            diesel::insert_into(provision_logs::table)
                .values(&row)
                .execute(conn)
                .await?;
            Ok::<_, StoreError>(Ok(()))
        })
    }

    /// The last `limit` lines of the instance's provisioning log, oldest
    /// first (ties in time broken by id, which grows with insertion), and
    /// how many lines it has in all. The last, not the first: a chatty
    /// machine must not hide how its provisioning ended.
    pub async fn provision_logs(
        &self,
        tenant: TenantId,
        instance_id: Uuid,
        limit: i64,
    ) -> Result<(Vec<ProvisionLog>, i64), StoreError> {
        let (mut rows, total): (Vec<LogRow>, i64) = read!(self, |conn| {
            let of_instance = provision_logs::table
                .filter(provision_logs::tenant_id.eq(DbUuid(tenant.as_uuid())))
                .filter(provision_logs::instance_id.eq(DbUuid(instance_id)));
            let rows = of_instance
                .order((provision_logs::at.desc(), provision_logs::id.desc()))
                .limit(limit.max(0))
                .select(LogRow::as_select())
                .load(conn)
                .await?;
            let total: i64 = of_instance.count().get_result(conn).await?;
            Ok::<_, diesel::result::Error>((rows, total))
        })?;
        rows.reverse();
        Ok((rows.into_iter().map(ProvisionLog::from).collect(), total))
    }
}
