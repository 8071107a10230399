//! Full-jitter exponential backoff (reconnects, retries) and small random helpers.

use std::time::Duration;

/// A uniformly random number in `0..=max`.
pub fn random_below(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system RNG works");
    u64::from_le_bytes(bytes) % (max + 1)
}

/// `d` ± 10 %.
pub fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    let spread = ms / 5;
    Duration::from_millis(ms - spread / 2 + random_below(spread))
}

/// Full-jitter exponential backoff: each delay is uniform in `0..=min(cap, base·2^attempt)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// Backoff from `base` doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            attempt: 0,
            base,
            cap,
        }
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        self.base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap)
    }

    /// How many delays were taken since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_millis(random_below(ceiling.as_millis() as u64))
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let ceilings: Vec<u64> = (0..8)
            .map(|_| {
                let c = b.ceiling().as_secs();
                let d = b.next_delay();
                assert!(d <= Duration::from_secs(c));
                c
            })
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60]);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(60));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(30)).as_millis();
            assert!((27_000..=33_000).contains(&d), "{d}");
        }
    }
}
