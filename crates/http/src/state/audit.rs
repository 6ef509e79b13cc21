//! The audit writer: events queued by handlers and the guard, appended in
//! batches off the request path.

use agentry_domain::TenantId;
use agentry_store::Store;

/// Audit events waiting to be written before new ones are dropped.
pub(super) const AUDIT_QUEUE: usize = 65_536;
/// Most audit events written in one transaction.
const AUDIT_BATCH: usize = 512;

/// What the audit writer is sent.
pub(super) enum AuditMessage {
    Event(TenantId, agentry_store::NewAuditEvent),
    /// Answered once everything queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Writes queued audit events until every sender is gone. Whatever queued
/// while the last batch was written goes into the next, grouped by tenant
/// in queue order, so each tenant's chain head is locked once per batch
/// rather than once per event.
pub(super) async fn write_audit_trail(
    store: Store,
    mut queue: tokio::sync::mpsc::Receiver<AuditMessage>,
) {
    let mut queued = Vec::with_capacity(AUDIT_BATCH);
    while queue.recv_many(&mut queued, AUDIT_BATCH).await > 0 {
        let mut batches: Vec<(TenantId, Vec<agentry_store::NewAuditEvent>)> = Vec::new();
        let mut flushed = Vec::new();
        for message in queued.drain(..) {
            let (tenant, event) = match message {
                AuditMessage::Event(tenant, event) => (tenant, event),
                AuditMessage::Flush(done) => {
                    flushed.push(done);
                    continue;
                }
            };
            match batches.iter_mut().find(|(known, _)| *known == tenant) {
                Some((_, events)) => events.push(event),
                None => batches.push((tenant, vec![event])),
            }
        }
        for (tenant, events) in batches {
            let count = events.len();
            let appended = store
                .detached(async move |store| {
                    store
                        .append_audit_batch(tenant, events, agentry_store::now())
                        .await
                })
                .await;
            if let Err(error) = appended {
                tracing::warn!(%error, count, "cannot append to the audit trail");
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}
