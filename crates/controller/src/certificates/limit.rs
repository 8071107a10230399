//! How many certificates the controller signs per agent and certificate name: at most
//! `limit` in any minute, whatever an agent asks (a host whose disk is full, a looping or
//! hostile agent). Memory stays bounded: one short queue of times per (agent, name) that asked
//! in the last minute.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// The window the limit counts over, in seconds.
pub const WINDOW: i64 = 60;

/// A request past the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub limit: u32,
    /// Seconds until the next request may be signed.
    pub retry_in: i64,
    /// The first refusal of this window (the one to audit).
    pub first: bool,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refused: {} certificates of this name were already issued to this agent in the last \
             minute (issuance_limit); try again in {} s",
            self.limit, self.retry_in
        )
    }
}

#[derive(Debug, Default)]
struct Recent {
    at: VecDeque<i64>,
    refused: bool,
}

/// The limiter.
#[derive(Debug)]
pub struct IssuanceLimit {
    limit: u32,
    recent: Mutex<HashMap<(String, String), Recent>>,
}

impl IssuanceLimit {
    /// At most `limit` per agent and name per minute.
    pub fn new(limit: u32) -> Self {
        Self {
            limit: limit.max(1),
            recent: Mutex::default(),
        }
    }

    /// Counts one issuance at `now` (Unix seconds), or refuses it.
    pub fn check(&self, agent: &str, name: &str, now: i64) -> Result<(), Refused> {
        let mut recent = self.recent.lock().expect("issuance limit lock");
        if recent.len() > 10_000 {
            recent.retain(|_, r| r.at.back().is_some_and(|t| now - t < WINDOW));
        }
        let entry = recent
            .entry((agent.to_owned(), name.to_owned()))
            .or_default();
        while entry.at.front().is_some_and(|t| now - t >= WINDOW) {
            entry.at.pop_front();
        }
        if entry.at.len() >= self.limit as usize {
            let first = !entry.refused;
            entry.refused = true;
            return Err(Refused {
                limit: self.limit,
                retry_in: (entry.at[0] + WINDOW - now).max(1),
                first,
            });
        }
        entry.refused = false;
        entry.at.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_limit_per_agent_and_name_in_any_minute() {
        let l = IssuanceLimit::new(3);
        for t in [100, 101, 102] {
            l.check("a", "www", t).unwrap();
        }
        let refused = l.check("a", "www", 110).unwrap_err();
        assert_eq!(
            refused,
            Refused {
                limit: 3,
                retry_in: 50,
                first: true
            }
        );
        assert!(!l.check("a", "www", 120).unwrap_err().first, "audited once");
        // Other names and agents are not held back.
        l.check("a", "api", 110).unwrap();
        l.check("b", "www", 110).unwrap();
        // A minute after the first, one more may go.
        l.check("a", "www", 160).unwrap();
        assert!(l.check("a", "www", 160).is_err());
        assert!(refused.to_string().contains("try again in 50 s"));
    }
}
