//! Application-level liveness for a long-lived stream. HTTP/2 keepalive proves the connection
//! is up, not that the peer still reads: a peer whose reading loop is stuck keeps answering
//! HTTP/2 pings. So each side sends its own `Ping` every third of the timeout and expects the
//! peer's `Pong`, which only a peer that reads and writes can give. A ping that is not answered
//! within the timeout (counted from when it was queued, so a writer that cannot send is
//! caught too) means the stream is stalled, and the side that sees it tears it down.

use std::time::Duration;

use tokio::time::Instant;

/// The peer did not answer a ping in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled {
    pub waited: Duration,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the peer has not answered a ping for {} s: it stopped reading or writing",
            self.waited.as_secs()
        )
    }
}

impl std::error::Error for Stalled {}

/// One side's view of whether its peer is still making progress.
#[derive(Debug, Clone)]
pub struct Liveness {
    timeout: Duration,
    every: Duration,
    next_ping: Instant,
    /// The last ping queued.
    last: Option<(u64, Instant)>,
    /// The oldest ping not answered yet.
    awaiting: Option<(u64, Instant)>,
}

impl Liveness {
    /// Pings every third of `timeout`, the first a third of it after `now`.
    pub fn new(timeout: Duration, now: Instant) -> Self {
        let every = (timeout / 3).max(Duration::from_millis(100));
        Self {
            timeout,
            every,
            next_ping: now + every,
            last: None,
            awaiting: None,
        }
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The nonce of a ping to queue now, if one is due.
    pub fn ping_due(&mut self, now: Instant) -> Option<u64> {
        if now < self.next_ping {
            return None;
        }
        self.next_ping = now + self.every;
        let nonce = self.last.map_or(1, |(n, _)| n + 1);
        self.last = Some((nonce, now));
        if self.awaiting.is_none() {
            self.awaiting = self.last;
        }
        Some(nonce)
    }

    /// The peer answered ping `nonce` (and, the stream being ordered, every one before it).
    pub fn pong(&mut self, nonce: u64) {
        let Some((waiting_for, _)) = self.awaiting else {
            return;
        };
        if nonce < waiting_for {
            return;
        }
        // Pings queued after the answered one are still waited for.
        self.awaiting = self.last.filter(|(n, _)| *n > nonce);
    }

    /// Whether the peer is still answering.
    pub fn check(&self, now: Instant) -> Result<(), Stalled> {
        match self.awaiting {
            Some((_, at)) if now.duration_since(at) >= self.timeout => Err(Stalled {
                waited: now.duration_since(at),
            }),
            _ => Ok(()),
        }
    }

    /// When to look again: the next ping, or when the oldest unanswered one times out.
    pub fn next_wake(&self) -> Instant {
        match self.awaiting {
            Some((_, at)) => self.next_ping.min(at + self.timeout),
            None => self.next_ping,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);

    #[test]
    fn an_answering_peer_is_alive() {
        let start = Instant::now();
        let mut l = Liveness::new(T, start);
        assert_eq!(l.ping_due(start), None);
        let mut now = start;
        for _ in 0..10 {
            now += Duration::from_secs(10);
            let nonce = l.ping_due(now).expect("a ping every 10 s");
            l.pong(nonce);
            assert_eq!(l.check(now + T), Ok(()));
        }
    }

    #[test]
    fn an_unanswered_ping_stalls_after_the_timeout_from_when_it_was_queued() {
        let start = Instant::now();
        let mut l = Liveness::new(T, start);
        let first = start + Duration::from_secs(10);
        l.ping_due(first).unwrap();
        // Later pings do not move the deadline of the first.
        l.ping_due(first + Duration::from_secs(10)).unwrap();
        assert_eq!(l.check(first + T - Duration::from_secs(1)), Ok(()));
        assert!(l.check(first + T).is_err());
        assert_eq!(l.next_wake(), first + Duration::from_secs(20));
    }

    #[test]
    fn an_answer_to_an_old_ping_keeps_waiting_for_the_newer_one() {
        let start = Instant::now();
        let mut l = Liveness::new(T, start);
        let a = start + Duration::from_secs(10);
        let n1 = l.ping_due(a).unwrap();
        let b = a + Duration::from_secs(10);
        let n2 = l.ping_due(b).unwrap();
        l.pong(n1);
        assert!(l.check(b + T).is_err(), "ping {n2} is still unanswered");
        l.pong(n2);
        assert_eq!(l.check(b + T), Ok(()));
        // A stale or repeated answer changes nothing.
        l.pong(n1);
        assert_eq!(l.check(b + T * 2), Ok(()));
    }
}
