//! Wall-clock time wherever it decides something (renewals, identity rotation, token expiry,
//! online/offline, the ACME retry schedule): read through a [`Clock`], the system's in the
//! daemons, a manual one that tests move instead of sleeping. Waits and timeouts run on tokio's
//! clock, which tests pause and advance the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The time, in Unix seconds.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None`: the system clock.
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that stands at `start` until moved.
    pub fn manual(start: i64) -> Self {
        Self {
            manual: Some(Arc::new(AtomicI64::new(start))),
        }
    }

    /// Now, in Unix seconds.
    pub fn now(&self) -> i64 {
        match &self.manual {
            Some(t) => t.load(Ordering::SeqCst),
            None => crate::now_unix(),
        }
    }

    /// Moves a manual clock forward (every copy of it sees the new time).
    ///
    /// # Panics
    /// On the system clock, which only time moves.
    pub fn advance(&self, by: Duration) {
        let t = self
            .manual
            .as_ref()
            .expect("only a manual clock can be moved");
        t.fetch_add(by.as_secs() as i64, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_copies_share_it() {
        let clock = Clock::manual(1_000);
        let copy = clock.clone();
        assert_eq!(clock.now(), 1_000);
        copy.advance(Duration::from_secs(90));
        assert_eq!(clock.now(), 1_090);
        let system = Clock::system().now();
        assert!((system - crate::now_unix()).abs() <= 1);
    }
}
