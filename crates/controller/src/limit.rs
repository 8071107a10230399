//! At most N events per key in any minute: certificates signed per agent and name (whatever an
//! agent asks), failed enrollments per source address. Memory stays bounded: one short queue
//! of times per key seen in the last minute.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// The window the limit counts over, in seconds.
pub const WINDOW: i64 = 60;

/// An event past the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub limit: u32,
    /// Seconds until the next event is allowed.
    pub retry_in: i64,
    /// The first refusal for this key since it was last allowed (the one to audit or log).
    pub first: bool,
}

#[derive(Debug, Default)]
struct Recent {
    at: VecDeque<i64>,
    refused: bool,
}

/// The limiter.
#[derive(Debug)]
pub struct PerMinute {
    limit: AtomicU32,
    recent: Mutex<HashMap<String, Recent>>,
}

impl PerMinute {
    /// At most `limit` per key per minute.
    pub fn new(limit: u32) -> Self {
        Self {
            limit: AtomicU32::new(limit.max(1)),
            recent: Mutex::default(),
        }
    }

    /// Changes the limit (a config reload); what was counted stays counted.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit.max(1), Ordering::Relaxed);
    }

    fn with<T>(&self, key: &str, now: i64, f: impl FnOnce(&mut Recent, u32) -> T) -> T {
        let mut recent = self.recent.lock().expect("rate limit lock");
        if recent.len() > 10_000 {
            recent.retain(|_, r| r.at.back().is_some_and(|t| now - t < WINDOW));
        }
        let entry = recent.entry(key.to_owned()).or_default();
        while entry.at.front().is_some_and(|t| now - t >= WINDOW) {
            entry.at.pop_front();
        }
        f(entry, self.limit.load(Ordering::Relaxed))
    }

    fn refusal(entry: &mut Recent, limit: u32, now: i64) -> Result<(), Refused> {
        if entry.at.len() < limit as usize {
            entry.refused = false;
            return Ok(());
        }
        let first = !entry.refused;
        entry.refused = true;
        Err(Refused {
            limit,
            retry_in: (entry.at[0] + WINDOW - now).max(1),
            first,
        })
    }

    /// Whether one more event for `key` would be allowed at `now` (Unix seconds); counts
    /// nothing.
    pub fn check(&self, key: &str, now: i64) -> Result<(), Refused> {
        self.with(key, now, |entry, limit| Self::refusal(entry, limit, now))
    }

    /// Counts one event.
    pub fn record(&self, key: &str, now: i64) {
        self.with(key, now, |entry, _| entry.at.push_back(now));
    }

    /// Counts one event if it is allowed.
    pub fn take(&self, key: &str, now: i64) -> Result<(), Refused> {
        self.with(key, now, |entry, limit| {
            Self::refusal(entry, limit, now)?;
            entry.at.push_back(now);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_limit_per_key_in_any_minute() {
        let l = PerMinute::new(3);
        for t in [100, 101, 102] {
            l.take("a/www", t).unwrap();
        }
        let refused = l.take("a/www", 110).unwrap_err();
        assert_eq!(
            refused,
            Refused {
                limit: 3,
                retry_in: 50,
                first: true
            }
        );
        assert!(!l.take("a/www", 120).unwrap_err().first, "reported once");
        // Other keys are not held back.
        l.take("a/api", 110).unwrap();
        l.take("b/www", 110).unwrap();
        // A minute after the first, one more may go.
        l.take("a/www", 160).unwrap();
        assert!(l.take("a/www", 160).is_err());
    }

    #[test]
    fn checking_counts_nothing() {
        let l = PerMinute::new(1);
        for _ in 0..5 {
            l.check("10.0.0.1", 100).unwrap();
        }
        l.record("10.0.0.1", 100);
        assert!(l.check("10.0.0.1", 101).is_err());
        assert!(l.check("10.0.0.2", 101).is_ok());
    }
}
