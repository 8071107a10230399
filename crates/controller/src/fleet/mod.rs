//! The live view of the fleet, in memory: which agents have a stream open, their latest report,
//! and one latest-wins "desired state changed" signal per agent (never a queue). Each stream
//! is served by a [`session`].

pub mod changes;
pub mod clean;
pub mod history;
pub mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gatehouse_proto::v1::agent_message::Msg as Up;
use gatehouse_proto::v1::controller_message::Msg as Down;
use gatehouse_proto::v1::{
    AgentMessage, CertificateInventory, ControllerMessage, HostMetrics, LogLines, Report,
    TunnelStatus,
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// What the controller knows of an agent right now.
#[derive(Debug, Clone, Default)]
pub struct LiveView {
    pub connected_since: Option<i64>,
    pub sessions: u64,
    pub last_seen: Option<i64>,
    pub metrics: Option<HostMetrics>,
    pub metrics_sampled_at: i64,
    /// Certificates installed on the host, from its latest report.
    pub certificates: Vec<CertificateInventory>,
    /// Tunnels on the host, from its latest report.
    pub tunnels: Vec<TunnelStatus>,
    /// WireGuard interfaces on the host, from its latest report.
    pub wireguard: Vec<gatehouse_proto::v1::WireguardStatus>,
}

#[derive(Debug, Default)]
struct Live {
    session: Option<Session>,
    view: LiveView,
    changed: Arc<Notify>,
}

#[derive(Debug)]
struct Session {
    id: u64,
    cancel: CancellationToken,
    commands: mpsc::Sender<ControllerMessage>,
}

/// Requests for one agent (logs) that may wait for its stream; past it the caller is told
/// to try again.
const COMMANDS: usize = 16;
/// Batches of log lines that may wait for one reader.
const LOG_BATCHES: usize = 64;

/// A stream's registration; closing the stream hands it back with [`Fleet::close`].
#[derive(Debug)]
pub struct SessionTicket {
    pub id: u64,
    pub cancel: CancellationToken,
    pub changed: Arc<Notify>,
    /// Messages for the agent from elsewhere in the controller (a log request).
    pub commands: mpsc::Receiver<ControllerMessage>,
}

/// The agent has no stream open here.
#[derive(Debug, thiserror::Error)]
#[error("agent {0} is not connected to this controller")]
pub struct NotConnected(pub String);

/// The registry. Cheap operations under one mutex; nothing awaits while holding it.
#[derive(Debug, Default)]
pub struct Fleet {
    agents: Mutex<HashMap<String, Live>>,
    next_session: std::sync::atomic::AtomicU64,
    /// Stream messages by direction and kind, for `/metrics`.
    pub messages: MessageCounts,
    /// Log readers by request id: the agent asked, and where its lines go.
    log_readers: Mutex<HashMap<u64, (String, mpsc::Sender<LogLines>)>>,
    next_logs: AtomicU64,
}

const UP_KINDS: [&str; 9] = [
    "hello",
    "ack",
    "report",
    "identity_renewal",
    "certificate_request",
    "ping",
    "pong",
    "log_lines",
    "empty",
];
const DOWN_KINDS: [&str; 11] = [
    "desired_state",
    "identity_certificate",
    "goodbye",
    "certificate",
    "certificate_error",
    "ping",
    "pong",
    "logs_request",
    "logs_cancel",
    "allowlist_entries",
    "error",
];

/// How many messages every stream together received and sent, by kind.
#[derive(Debug, Default)]
pub struct MessageCounts {
    received: [AtomicU64; UP_KINDS.len()],
    sent: [AtomicU64; DOWN_KINDS.len()],
}

impl MessageCounts {
    /// Counts a message from an agent.
    pub fn received(&self, message: &AgentMessage) {
        let i = match &message.msg {
            Some(Up::Hello(_)) => 0,
            Some(Up::Ack(_)) => 1,
            Some(Up::Report(_)) => 2,
            Some(Up::IdentityRenewal(_)) => 3,
            Some(Up::CertificateRequest(_)) => 4,
            Some(Up::Ping(_)) => 5,
            Some(Up::Pong(_)) => 6,
            Some(Up::LogLines(_)) => 7,
            None => 8,
        };
        self.received[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a message to an agent (an error that ends a stream included).
    pub fn sent(&self, message: &Result<ControllerMessage, tonic::Status>) {
        let i = match message.as_ref().map(|m| &m.msg) {
            Ok(Some(Down::DesiredState(_))) => 0,
            Ok(Some(Down::IdentityCertificate(_))) => 1,
            Ok(Some(Down::Goodbye(_))) => 2,
            Ok(Some(Down::Certificate(_))) => 3,
            Ok(Some(Down::CertificateError(_))) => 4,
            Ok(Some(Down::Ping(_))) => 5,
            Ok(Some(Down::Pong(_))) => 6,
            Ok(Some(Down::LogsRequest(_))) => 7,
            Ok(Some(Down::LogsCancel(_))) => 8,
            Ok(Some(Down::AllowlistEntries(_))) => 9,
            Ok(None) | Err(_) => 10,
        };
        self.sent[i].fetch_add(1, Ordering::Relaxed);
    }

    /// `(direction, kind, count)` for every kind.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let received = UP_KINDS
            .iter()
            .zip(&self.received)
            .map(|(k, n)| ("received", *k, n.load(Ordering::Relaxed)));
        let sent = DOWN_KINDS
            .iter()
            .zip(&self.sent)
            .map(|(k, n)| ("sent", *k, n.load(Ordering::Relaxed)));
        received.chain(sent).collect()
    }
}

impl Fleet {
    /// Registers a new stream for `agent`, ending any older one.
    pub fn open(&self, agent: &str, now: i64) -> SessionTicket {
        let id = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let (commands, receiver) = mpsc::channel(COMMANDS);
        let mut agents = self.agents.lock().expect("fleet lock");
        let live = agents.entry(agent.to_owned()).or_default();
        if let Some(old) = live.session.replace(Session {
            id,
            cancel: cancel.clone(),
            commands,
        }) {
            old.cancel.cancel();
        }
        live.view.connected_since = Some(now);
        live.view.sessions += 1;
        live.view.last_seen = Some(now);
        SessionTicket {
            id,
            cancel,
            changed: live.changed.clone(),
            commands: receiver,
        }
    }

    /// Sends `message` down the agent's stream (through its session's outbox).
    pub fn command(&self, agent: &str, message: Down) -> Result<(), NotConnected> {
        let agents = self.agents.lock().expect("fleet lock");
        let session = agents
            .get(agent)
            .and_then(|l| l.session.as_ref())
            .ok_or_else(|| NotConnected(agent.to_owned()))?;
        session
            .commands
            .try_send(ControllerMessage { msg: Some(message) })
            .map_err(|_| NotConnected(agent.to_owned()))
    }

    /// A new log request id for `agent`, and where its lines arrive.
    pub fn open_logs(&self, agent: &str) -> (u64, mpsc::Receiver<LogLines>) {
        let id = self.next_logs.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(LOG_BATCHES);
        self.log_readers
            .lock()
            .expect("log readers lock")
            .insert(id, (agent.to_owned(), tx));
        (id, rx)
    }

    /// Forgets a log reader (its caller hung up, or the lines are done).
    pub fn close_logs(&self, id: u64) {
        self.log_readers
            .lock()
            .expect("log readers lock")
            .remove(&id);
    }

    /// Hands lines from `agent` to their reader; lines for another agent's request, or for a
    /// reader that cannot keep up, are dropped.
    pub fn log_lines(&self, agent: &str, lines: LogLines) {
        let readers = self.log_readers.lock().expect("log readers lock");
        if let Some((asked, tx)) = readers.get(&lines.id)
            && asked == agent
        {
            let _ = tx.try_send(lines);
        }
    }

    /// Unregisters a stream (if it is still the agent's current one).
    pub fn close(&self, agent: &str, session: u64) {
        let mut agents = self.agents.lock().expect("fleet lock");
        if let Some(live) = agents.get_mut(agent)
            && live.session.as_ref().is_some_and(|s| s.id == session)
        {
            live.session = None;
            live.view.connected_since = None;
            drop(agents);
            // Log readers of this agent end: no more lines can come.
            self.log_readers
                .lock()
                .expect("log readers lock")
                .retain(|id, (asked, tx)| {
                    if asked != agent {
                        return true;
                    }
                    let _ = tx.try_send(LogLines {
                        id: *id,
                        lines: Vec::new(),
                        done: true,
                        error: "the agent's stream ended".into(),
                    });
                    false
                });
        }
    }

    /// Records that the agent was heard from.
    pub fn seen(&self, agent: &str, now: i64) {
        if let Some(live) = self.agents.lock().expect("fleet lock").get_mut(agent) {
            live.view.last_seen = Some(now);
        }
    }

    /// Keeps the latest report (only the latest: memory stays bounded).
    pub fn report(&self, agent: &str, report: Report, now: i64) {
        if let Some(live) = self.agents.lock().expect("fleet lock").get_mut(agent) {
            live.view.last_seen = Some(now);
            if report.sampled_at >= live.view.metrics_sampled_at {
                // A report sent right after a change may carry no metrics: keep the last ones.
                if report.metrics.is_some() {
                    live.view.metrics = report.metrics;
                    live.view.metrics_sampled_at = report.sampled_at;
                }
                live.view.certificates = report.certificates;
                live.view.tunnels = report.tunnels;
                live.view.wireguard = report.wireguard;
            }
        }
    }

    /// Tells the agent's stream that its desired state changed. Many changes before the stream
    /// looks collapse into one wake-up, and the stream then sends only the newest generation.
    pub fn desired_changed(&self, agent: &str) {
        let mut agents = self.agents.lock().expect("fleet lock");
        agents
            .entry(agent.to_owned())
            .or_default()
            .changed
            .notify_one();
    }

    /// Wakes the agent's stream if this controller holds one (another controller's change).
    pub fn wake(&self, agent: &str) {
        if let Some(live) = self.agents.lock().expect("fleet lock").get(agent)
            && live.session.is_some()
        {
            live.changed.notify_one();
        }
    }

    /// Wakes every stream held here: each looks at its agent's newest desired state.
    pub fn wake_all(&self) {
        for live in self.agents.lock().expect("fleet lock").values() {
            if live.session.is_some() {
                live.changed.notify_one();
            }
        }
    }

    /// Ends the agent's stream now (revocation).
    pub fn disconnect(&self, agent: &str) {
        if let Some(live) = self.agents.lock().expect("fleet lock").get_mut(agent)
            && let Some(session) = &live.session
        {
            session.cancel.cancel();
        }
    }

    /// Ends every stream (shutdown).
    pub fn disconnect_all(&self) {
        for live in self.agents.lock().expect("fleet lock").values() {
            if let Some(session) = &live.session {
                session.cancel.cancel();
            }
        }
    }

    /// A copy of what is known of `agent`.
    pub fn view(&self, agent: &str) -> LiveView {
        self.agents
            .lock()
            .expect("fleet lock")
            .get(agent)
            .map(|l| l.view.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_stream_ends_the_old_one() {
        let fleet = Fleet::default();
        let first = fleet.open("a", 10);
        let second = fleet.open("a", 20);
        assert!(first.cancel.is_cancelled());
        assert!(!second.cancel.is_cancelled());
        // Closing the stale session does not unregister the current one.
        fleet.close("a", first.id);
        assert_eq!(fleet.view("a").connected_since, Some(20));
        assert_eq!(fleet.view("a").sessions, 2);
        fleet.close("a", second.id);
        assert_eq!(fleet.view("a").connected_since, None);
    }

    #[test]
    fn only_the_latest_report_is_kept() {
        let fleet = Fleet::default();
        fleet.open("a", 1);
        let m = |cpu, at| Report {
            sampled_at: at,
            metrics: Some(HostMetrics {
                cpu_percent: cpu,
                ..Default::default()
            }),
            ..Default::default()
        };
        fleet.report("a", m(1.0, 100), 100);
        fleet.report("a", m(3.0, 90), 101);
        assert_eq!(fleet.view("a").metrics.unwrap().cpu_percent, 1.0);
        fleet.report("unknown", m(2.0, 1), 1);
        assert!(fleet.view("unknown").metrics.is_none());
    }
}
