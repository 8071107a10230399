//! The audit log: who did what to which target, and how it ended. Every mutating admin call is
//! written here (refusals included), by the admin API's one dispatch point, and so are what the
//! controller itself does and what it refused an agent.

use gatehouse_proto::names::Role;
use gatehouse_proto::text::escape;
use tracing::info;

use crate::Shared;
use crate::secrets::random_id;
use crate::store::AuditRow;

/// Who made a call.
#[derive(Debug, Clone)]
pub enum Actor {
    /// A local process on the admin socket.
    Local { uid: u32 },
    /// An API token.
    Token {
        id: String,
        name: String,
        role: Role,
    },
    /// The controller itself (dev mode set-up).
    Controller,
    /// An enrolled agent, over its stream (what the controller refused it).
    Agent { id: String },
}

impl Actor {
    /// What the actor may do.
    pub fn role(&self) -> Role {
        match self {
            Actor::Local { .. } | Actor::Controller => Role::Admin,
            Actor::Token { role, .. } => *role,
            Actor::Agent { .. } => Role::Viewer,
        }
    }

    pub(crate) fn label(&self) -> String {
        match self {
            Actor::Local { uid } => format!("local:uid={uid}"),
            Actor::Token { id, name, role } => format!("token:{id} ({name}, {role})"),
            Actor::Controller => "controller".into(),
            Actor::Agent { id } => format!("agent:{id}"),
        }
    }
}

/// Writes an audit entry; a failure to write is logged, never hidden.
pub async fn record(
    shared: &Shared,
    actor: &Actor,
    action: &str,
    target: &str,
    error: Option<&str>,
) {
    // Targets and errors carry callers' text: one entry is one line, whatever they sent.
    let entry = AuditRow {
        at_ms: now_ms(),
        actor: escape(&actor.label()).into_owned(),
        action: action.to_owned(),
        target: escape(target).into_owned(),
        result: error.map_or_else(|| "ok".to_owned(), |e| format!("error: {}", escape(e))),
    };
    info!(actor = %entry.actor, action, target = %entry.target, result = %entry.result, "audit");
    if let Err(e) = shared.store.audit_insert(&random_id(20), &entry).await {
        tracing::error!("cannot write the audit log: {e}");
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
