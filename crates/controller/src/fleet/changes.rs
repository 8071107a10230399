//! Desired-state changes across controllers. A committed change wakes the stream of its agent
//! here and, on PostgreSQL, is announced with `NOTIFY` on [`CHANNEL`] (the payload: the agent
//! id); every controller listens and wakes the stream it holds for that agent, so a change made
//! through any controller reaches the host at once. On SQLite there is one controller, and
//! waking locally is all.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Shared;

/// The channel changes are announced on.
pub const CHANNEL: &str = "gatehouse_changed";

/// Wakes `agent`'s stream, on whichever controller holds it.
pub async fn announce(shared: &Shared, agent: &str) {
    shared.fleet.desired_changed(agent);
    if shared.store.is_postgres()
        && let Err(e) = shared.store.notify(CHANNEL, agent).await
    {
        // The stream still finds the change when it next looks (its agent's pings).
        warn!(
            agent,
            "cannot announce a change to the other controllers: {e}"
        );
    }
}

/// How long to wait before listening again after the connection failed.
const RELISTEN: Duration = Duration::from_secs(2);

/// Listens for announcements until `shutdown` (PostgreSQL only).
pub async fn listen(shared: Arc<Shared>, shutdown: CancellationToken) {
    let url = shared.config().database.clone();
    let mut failing = false;
    loop {
        let listener = async {
            let mut l = PgListener::connect(url.expose()).await?;
            l.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            _ = shutdown.cancelled() => return,
            l = listener => match l {
                Ok(l) => l,
                Err(e) => {
                    if !failing {
                        warn!("cannot listen for other controllers' changes: {e}");
                        failing = true;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(RELISTEN) => continue,
                    }
                }
            },
        };
        if failing {
            info!("listening for other controllers' changes again");
            failing = false;
        }
        // Whatever was announced while nobody listened: every stream here looks again.
        shared.fleet.wake_all();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.try_recv() => match n {
                    Ok(Some(n)) => shared.fleet.wake(n.payload()),
                    // The connection dropped; the next call connects again, and what was missed
                    // is looked at by every stream.
                    Ok(None) => shared.fleet.wake_all(),
                    Err(e) => {
                        warn!("lost the listener for other controllers' changes: {e}");
                        break;
                    }
                },
            }
        }
    }
}
