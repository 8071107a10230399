//! The audit log, read back.

use gatehouse_proto::v1::*;

use crate::Shared;
use crate::error::Result;

pub(super) async fn list_audit(
    shared: &Shared,
    req: ListAuditRequest,
) -> Result<ListAuditResponse> {
    let limit = match req.limit {
        0 => 100,
        n => n.min(10_000),
    };
    let entries = shared.store.audit_list(limit).await?;
    Ok(ListAuditResponse {
        entries: entries
            .into_iter()
            .map(|e| AuditEntry {
                at_ms: e.at_ms,
                actor: e.actor,
                action: e.action,
                target: e.target,
                result: e.result,
            })
            .collect(),
    })
}
