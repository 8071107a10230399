//! Agents: the fleet's hosts, their labels, status and desired-state history.

use gatehouse_proto::names::{LabelKey, Selector, validate_labels};
use gatehouse_proto::v1::*;

use super::{Audited, agent_id_arg};
use crate::Shared;
use crate::error::{Error, Refused, Result};
use crate::store::AgentRow;

fn agent_view(shared: &Shared, row: AgentRow, desired_generation: u64) -> Agent {
    let live = shared.fleet.view(&row.id);
    let last_seen = live.last_seen.or(row.last_seen_at).unwrap_or(0);
    let status = shared.agent_status(&row);
    Agent {
        id: row.id,
        hostname: row.hostname,
        labels: row.labels.into_iter().collect(),
        enrolled_at: row.enrolled_at,
        revoked_at: row.revoked_at.unwrap_or(0),
        status: status.into(),
        last_seen_at: last_seen,
        connected_since: live.connected_since.unwrap_or(0),
        sessions: live.sessions,
        desired_generation,
        applied_generation: row.applied_generation,
        version: row.version,
        facts: row.facts,
        metrics: live.metrics,
        metrics_sampled_at: live.metrics_sampled_at,
        certificate_serial: row.cert_serial,
        certificate_not_after: row.cert_not_after,
        domain: row.domain,
    }
}

/// One agent as the API shows it.
pub(super) async fn agent_by_id(shared: &Shared, id: &str) -> Result<Agent> {
    let row =
        shared.store.agent_get(id).await?.ok_or_else(|| {
            Error::NotFound(format!("no agent {id:?}: see gatehousectl agents list"))
        })?;
    let generation = shared
        .store
        .desired_latest(id)
        .await?
        .map_or(0, |d| d.generation);
    Ok(agent_view(shared, row, generation))
}

/// Applies `edit` to a known agent's newest desired state (a new generation when it changes).
pub(super) async fn change_state(
    shared: &Shared,
    agent_id: &str,
    edit: impl FnOnce(DesiredState) -> Result<DesiredState, Refused>,
) -> Result<DesiredState> {
    agent_by_id(shared, agent_id).await?;
    crate::desired::change(shared, agent_id, edit).await
}

/// The agent's last apply: its generation, when, and the per-item results.
pub(super) async fn last_apply(
    shared: &Shared,
    agent_id: &str,
) -> Result<(u64, i64, Vec<ItemResult>)> {
    let row = shared
        .store
        .agent_get(agent_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no agent {agent_id:?}")))?;
    Ok(row
        .last_apply
        .map_or((0, 0, Vec::new()), |r| (r.generation, r.at, r.items())))
}

/// The most agents one page holds, and how many a page holds when the caller does not say.
const MAX_PAGE: u32 = 5_000;
const DEFAULT_PAGE: u32 = 500;
/// Rows read from the store at a time while filtering.
const CHUNK: u32 = 1_000;

/// A page of agents: those after the page token that match the selector and status, in id order.
pub(crate) async fn list_agents(
    shared: &Shared,
    req: ListAgentsRequest,
) -> Result<ListAgentsResponse> {
    let selector: Selector = req.selector.parse()?;
    if !matches!(req.status.as_str(), "" | "online" | "offline" | "revoked") {
        return Err(Error::Invalid(format!(
            "status {:?} is not online, offline or revoked",
            req.status
        )));
    }
    let size = match req.page_size {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let mut after = match req.page_token.as_str() {
        "" => String::new(),
        token => agent_id_arg(token)
            .map_err(|_| Error::Invalid("the page token is not one a previous page gave".into()))?,
    };
    let mut agents = Vec::new();
    loop {
        let rows = shared.store.agent_page(&after, CHUNK).await?;
        let last_chunk = rows.len() < CHUNK as usize;
        for row in rows {
            after = row.id.clone();
            let wanted = selector.matches(&row.labels)
                && (req.status.is_empty() || shared.agent_status(&row) == req.status);
            if !wanted {
                continue;
            }
            let generation = shared
                .store
                .desired_latest(&row.id)
                .await?
                .map_or(0, |d| d.generation);
            agents.push(agent_view(shared, row, generation));
            if agents.len() == size as usize {
                return Ok(ListAgentsResponse {
                    agents,
                    next_page_token: after,
                });
            }
        }
        if last_chunk {
            return Ok(ListAgentsResponse {
                agents,
                next_page_token: String::new(),
            });
        }
    }
}

/// Every agent, all pages (for the status page).
pub(crate) async fn all_agents(shared: &Shared) -> Result<Vec<Agent>> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = list_agents(
            shared,
            ListAgentsRequest {
                page_size: MAX_PAGE,
                page_token,
                ..Default::default()
            },
        )
        .await?;
        out.extend(page.agents);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = page.next_page_token;
    }
}

pub(super) async fn get_agent(shared: &Shared, req: GetAgentRequest) -> Result<Agent> {
    agent_by_id(shared, &agent_id_arg(&req.id)?).await
}

pub(crate) async fn get_agent_status(shared: &Shared, req: GetAgentRequest) -> Result<AgentStatus> {
    let id = agent_id_arg(&req.id)?;
    let agent = agent_by_id(shared, &id).await?;
    let (applied_generation, applied_at, results) = last_apply(shared, &id).await?;
    let history = shared
        .store
        .desired_history(&id, 50)
        .await?
        .into_iter()
        .map(|d| GenerationInfo {
            generation: d.generation,
            created_at: d.created_at,
            sites: d.state.sites.len() as u32,
            certificates: d.state.certificates.len() as u32,
        })
        .collect();
    Ok(AgentStatus {
        agent: Some(agent),
        applied_generation,
        applied_at,
        results,
        certificates: shared.fleet.view(&id).certificates,
        history,
    })
}

impl Audited for RevokeAgentRequest {
    type Response = Agent;
    fn target(&self) -> String {
        format!("agent:{}", self.id)
    }
}

pub(super) async fn revoke_agent(shared: &Shared, req: RevokeAgentRequest) -> Result<Agent> {
    let id = agent_id_arg(&req.id)?;
    agent_by_id(shared, &id).await?;
    shared.store.agent_revoke(&id, shared.now()).await?;
    // Refuse the next handshake and close the open stream now.
    shared.revoked.insert(&id);
    shared.fleet.disconnect(&id);
    agent_by_id(shared, &id).await
}

impl Audited for SetAgentLabelsRequest {
    type Response = Agent;
    fn target(&self) -> String {
        format!("agent:{}", self.id)
    }
}

pub(super) async fn set_agent_labels(shared: &Shared, req: SetAgentLabelsRequest) -> Result<Agent> {
    let id = agent_id_arg(&req.id)?;
    let labels = validate_labels(&req.labels)?;
    agent_by_id(shared, &id).await?;
    shared.store.agent_set_labels(&id, &labels).await?;
    change_state(shared, &id, |mut state| {
        state.labels = labels.into_iter().collect();
        Ok(state)
    })
    .await?;
    agent_by_id(shared, &id).await
}

impl Audited for LabelAgentsRequest {
    type Response = LabelAgentsResponse;
    fn target(&self) -> String {
        format!("agents:{}", self.selector)
    }
    fn detail(&self) -> Option<String> {
        let mut changes: Vec<String> = self.set.iter().map(|(k, v)| format!("{k}={v}")).collect();
        changes.sort();
        changes.extend(self.remove.iter().map(|k| format!("-{k}")));
        Some(changes.join(","))
    }
}

/// Sets and removes labels on every agent the selector matches (revoked ones left alone).
pub(super) async fn label_agents(
    shared: &Shared,
    req: LabelAgentsRequest,
) -> Result<LabelAgentsResponse> {
    let selector: Selector = req.selector.parse()?;
    if selector.is_empty() {
        return Err(Error::Invalid(
            "name the agents with --selector (a selector that matches nothing is refused too)"
                .into(),
        ));
    }
    let set = validate_labels(&req.set)?;
    let remove: Vec<String> = req
        .remove
        .iter()
        .map(|k| k.parse::<LabelKey>().map(|k| k.as_str().to_owned()))
        .collect::<Result<_, _>>()?;
    if set.is_empty() && remove.is_empty() {
        return Err(Error::Invalid(
            "give labels to set (k=v) or remove (k-)".into(),
        ));
    }
    let (mut matched, mut changed) = (0u32, 0u32);
    let mut after = String::new();
    loop {
        let rows = shared.store.agent_page(&after, CHUNK).await?;
        let done = rows.len() < CHUNK as usize;
        for row in rows {
            after = row.id.clone();
            if row.revoked_at.is_some() || !selector.matches(&row.labels) {
                continue;
            }
            matched += 1;
            let mut labels = row.labels.clone();
            labels.extend(set.clone());
            labels.retain(|k, _| !remove.contains(k));
            let labels = validate_labels(&labels)?;
            if labels == row.labels {
                continue;
            }
            shared.store.agent_set_labels(&row.id, &labels).await?;
            crate::desired::change(shared, &row.id, |mut state| {
                state.labels = labels.into_iter().collect();
                Ok(state)
            })
            .await?;
            changed += 1;
        }
        if done {
            break;
        }
    }
    if matched == 0 {
        return Err(Error::NotFound(format!(
            "no agent matches {selector}: see gatehousectl agents list --selector"
        )));
    }
    Ok(LabelAgentsResponse { matched, changed })
}

impl Audited for RollbackAgentRequest {
    type Response = Agent;
    fn target(&self) -> String {
        format!("agent:{}", self.agent_id)
    }
    fn detail(&self) -> Option<String> {
        Some(format!("to={}", self.to_generation))
    }
}

pub(super) async fn rollback_agent(shared: &Shared, req: RollbackAgentRequest) -> Result<Agent> {
    let id = agent_id_arg(&req.agent_id)?;
    let earlier = shared
        .store
        .desired_get(&id, req.to_generation)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "agent {id} has no generation {}: see gatehousectl agents status {id}",
                req.to_generation
            ))
        })?;
    change_state(shared, &id, |current| {
        Ok(crate::sites::rollback(earlier.state, current))
    })
    .await?;
    agent_by_id(shared, &id).await
}
