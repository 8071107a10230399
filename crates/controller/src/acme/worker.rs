//! The background worker: drives due orders (several at a time, each at most once), pushes
//! issued certificates to their hosts, starts renewals when they are due, and sweeps DNS-01
//! records that finished orders left.
//!
//! With several controllers on one PostgreSQL, one leads (an advisory lock): the others only
//! queue orders for it, and take over when its connection goes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{dns01, order, renewal};
use crate::Shared;
use crate::store::{Leader, LeaderJob, OrderState};

/// Orders driven at the same time.
const PARALLEL: usize = 8;
/// The longest sleep between looks at the store.
const IDLE: Duration = Duration::from_secs(60);

/// How often a controller that does not lead checks whether it may.
const FOLLOW: Duration = Duration::from_secs(15);

/// Runs until `shutdown`; orders in flight then stop where they are and resume at the next
/// start.
pub async fn run(shared: Arc<Shared>, timings: order::Timings, shutdown: CancellationToken) {
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let slots = Arc::new(Semaphore::new(PARALLEL));
    let mut leader: Option<Leader> = None;
    let mut following = false;
    loop {
        let leads = match &mut leader {
            Some(l) => l.still().await,
            None => false,
        };
        if !leads {
            leader = match shared.store.try_lead(LeaderJob::Acme).await {
                Ok(l) => l,
                Err(e) => {
                    warn!("cannot take the ACME leader lock: {e}");
                    None
                }
            };
            if leader.is_none() {
                if !following {
                    info!("another controller runs the ACME worker; this one queues orders");
                    following = true;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(FOLLOW) => continue,
                }
            }
            if following {
                info!("this controller now runs the ACME worker");
                following = false;
            }
        }
        dns01::sweep(&shared).await;
        match shared.store.acme_orders_due(shared.now()).await {
            Ok(due) => {
                for pending in due {
                    if !in_flight
                        .lock()
                        .expect("in-flight lock")
                        .insert(pending.id.clone())
                    {
                        continue;
                    }
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let shared = shared.clone();
                    let in_flight = in_flight.clone();
                    let shutdown = shutdown.clone();
                    let span = tracing::info_span!(
                        "order",
                        order = %pending.id,
                        agent_id = %pending.agent_id,
                        certificate = %pending.certificate,
                    );
                    let tasks = shared.tasks.clone();
                    tasks.spawn(tracing::Instrument::instrument(
                        async move {
                            let id = pending.id.clone();
                            tokio::select! {
                                _ = shutdown.cancelled() => {}
                                done = order::drive(&shared, &timings, pending) => {
                                    if done.state == OrderState::Issued {
                                        crate::fleet::changes::announce(&shared, &done.agent_id).await;
                                    }
                                }
                            }
                            in_flight.lock().expect("in-flight lock").remove(&id);
                            drop(slot);
                            shared.acme_wake.notify_one();
                        },
                        span,
                    ));
                }
            }
            Err(e) => warn!("cannot list ACME orders: {e}"),
        }
        let renewal_due = renewal::run_due(&shared).await;
        let order_due = shared.store.acme_next_due().await.ok().flatten();
        let sleep = match [renewal_due, order_due].into_iter().flatten().min() {
            Some(due) => {
                Duration::from_secs((due - shared.now()).clamp(1, IDLE.as_secs() as i64) as u64)
            }
            None => IDLE,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.acme_wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}
