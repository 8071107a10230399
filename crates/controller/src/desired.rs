//! An agent's desired state: every change is a new generation, and nothing else writes one.

use gatehouse_proto::v1::DesiredState;

use crate::Shared;
use crate::error::{Refused, Result};

/// Changes an agent's desired state: a new generation when `edit` alters it, nothing when it
/// does not. Serialised within this controller, then the agent's stream is told.
pub async fn change(
    shared: &Shared,
    agent_id: &str,
    edit: impl FnOnce(DesiredState) -> Result<DesiredState, Refused>,
) -> Result<DesiredState> {
    let _guard = shared.state_changes.lock().await;
    let store = &shared.store;
    let current = store
        .desired_latest(agent_id)
        .await?
        .map(|d| d.state)
        .unwrap_or_default();
    let next = edit(current.clone())?;
    let unchanged = DesiredState {
        generation: current.generation,
        ..next.clone()
    } == current;
    if unchanged {
        return Ok(current);
    }
    let stored = store.desired_push(agent_id, next, shared.now()).await?;
    crate::fleet::changes::announce(shared, agent_id).await;
    Ok(stored)
}
