//! Host metrics, sampled on the report interval and sent in `Report`s; while the controller is
//! away the newest few wait in a bounded buffer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_common::jitter;
use gatehouse_proto::v1::{Report, TunnelStatus};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::host::metrics;
use crate::runtime::Agent;

/// How many reports the agent keeps while the controller is away.
pub const REPORT_BUFFER: usize = 16;

/// Reports waiting to be sent, at most [`REPORT_BUFFER`]; the oldest go first when full.
#[derive(Debug, Default)]
pub(crate) struct ReportBuffer {
    queue: Mutex<VecDeque<Report>>,
    pub(crate) ready: Notify,
}

impl ReportBuffer {
    pub(crate) fn push(&self, report: Report) {
        let mut q = self.queue.lock().expect("report buffer lock");
        if q.len() == REPORT_BUFFER {
            q.pop_front();
        }
        q.push_back(report);
        drop(q);
        self.ready.notify_one();
    }

    pub(crate) fn drain(&self) -> Vec<Report> {
        self.queue
            .lock()
            .expect("report buffer lock")
            .drain(..)
            .collect()
    }
}

impl Agent {
    /// Samples the host on the report interval until `shutdown`.
    pub(crate) async fn sample_metrics(self: Arc<Self>, shutdown: CancellationToken) {
        let mut sampler = match tokio::task::spawn_blocking(metrics::Sampler::new).await {
            Ok(Ok(sampler)) => sampler,
            Ok(Err(e)) => {
                warn!("host metrics are unavailable, reports will carry none: {e}");
                return;
            }
            Err(e) => {
                warn!("host metrics are unavailable: {e}");
                return;
            }
        };
        let mut interval = self.interval.subscribe();
        // The first report goes out a second after start (CPU usage needs two readings).
        let mut next = Instant::now() + Duration::from_secs(1);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.changed() => {
                    // A shorter interval takes effect now; a longer one after the next report.
                    next = next.min(Instant::now() + jitter(*interval.borrow_and_update()));
                    continue;
                }
                _ = tokio::time::sleep_until(next) => {}
            }
            let (report, facts, s) = tokio::task::spawn_blocking(move || {
                let m = sampler.sample();
                let facts = sampler.facts();
                (m, facts, sampler)
            })
            .await
            .expect("metrics sampling");
            sampler = s;
            *self.facts.lock().expect("facts lock") = facts;
            self.reports.push(Report {
                sampled_at: self.clock.now(),
                metrics: Some(report),
                applied_generation: self.applied_generation(),
                certificates: self.host.certs().inventory(),
                tunnels: self.tunnel_status(),
                wireguard: self.wireguard_status(),
            });
            next = Instant::now() + jitter(*interval.borrow());
        }
    }

    /// Checks every tunnel on `tunnels.check_interval` until `shutdown`, whether or not the
    /// controller is reachable: the watchdog restarts tunnels that stay unready, and a change
    /// of a tunnel's state is reported at once (a rotation waits for it).
    pub(crate) async fn watch_tunnels(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let every = self.config().tunnels.check_interval;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let wanted = self.applied_tunnels();
            if wanted.is_empty() && self.tunnel_status().is_empty() {
                continue;
            }
            let statuses = self.host.tunnels().check(&wanted, self.clock.now()).await;
            let changed = {
                let mut last = self.tunnel_status.lock().expect("tunnel status lock");
                let key = |s: &[TunnelStatus]| -> Vec<(String, String, u32, bool, u64, u32)> {
                    s.iter()
                        .map(|t| {
                            (
                                t.name.clone(),
                                t.active_state.clone(),
                                t.main_pid,
                                t.ready,
                                t.revision,
                                t.ready_connections,
                            )
                        })
                        .collect()
                };
                let changed = key(&last) != key(&statuses);
                *last = statuses.clone();
                changed
            };
            if changed {
                self.reports.push(Report {
                    sampled_at: self.clock.now(),
                    metrics: None,
                    applied_generation: self.applied_generation(),
                    certificates: self.host.certs().inventory(),
                    tunnels: statuses,
                    wireguard: self.wireguard_status(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_buffer_is_bounded() {
        let buffer = ReportBuffer::default();
        for i in 0..100 {
            buffer.push(Report {
                sampled_at: i,
                ..Default::default()
            });
        }
        let drained = buffer.drain();
        assert_eq!(drained.len(), REPORT_BUFFER);
        assert_eq!(drained.last().unwrap().sampled_at, 99);
        assert!(buffer.drain().is_empty());
    }
}
