//! Backoff for messages that failed for a transient reason: instead of waiting out the work
//! queue's whole visibility timeout (360 s), a failed message becomes visible again after a delay
//! that doubles with each delivery (2, 4, 8 … s), capped and jittered, so a short outage heals
//! within seconds of its end and a long one is not hammered.

use std::time::Duration;

use async_trait::async_trait;

use crate::store::StoreError;

/// Doubling delays from `base`, at most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The longest delay after the `receive_count`th delivery failed: `base · 2^(n-1)`, at most
    /// `cap`, in whole seconds (what SQS takes).
    pub fn ceiling(&self, receive_count: u32) -> u32 {
        let doublings = receive_count.saturating_sub(1).min(31);
        let delay = self
            .base
            .as_secs()
            .saturating_mul(1u64 << doublings)
            .min(self.cap.as_secs());
        u32::try_from(delay).unwrap_or(u32::MAX)
    }

    /// A delay drawn evenly from the upper half of the ceiling ("equal jitter"), so messages that
    /// failed together do not all return together, and none returns much earlier than planned.
    pub fn delay(&self, receive_count: u32, rng: &mut fastrand::Rng) -> u32 {
        let ceiling = self.ceiling(receive_count);
        let floor = ceiling / 2;
        rng.u32(floor..=ceiling)
    }
}

/// When a received message becomes visible again.
#[async_trait]
pub trait MessageVisibility: Send + Sync {
    /// Sets each `(receipt handle, seconds)`; returns how many could not be set (they keep the
    /// queue's visibility timeout, which only delays their retry).
    async fn delay(&self, messages: &[(String, u32)]) -> Result<usize, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_base_up_to_the_cap() {
        let b = Backoff::default();
        let ceilings: Vec<u32> = (1..=9).map(|n| b.ceiling(n)).collect();
        assert_eq!(ceilings, vec![2, 4, 8, 16, 32, 60, 60, 60, 60]);
        assert_eq!(b.ceiling(0), 2);
        assert_eq!(b.ceiling(u32::MAX), 60);
        let none = Backoff {
            base: Duration::ZERO,
            cap: Duration::from_secs(60),
        };
        assert_eq!(none.ceiling(7), 0);
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let b = Backoff::default();
        let mut rng = fastrand::Rng::with_seed(7);
        for n in 1..=10 {
            for _ in 0..100 {
                let d = b.delay(n, &mut rng);
                assert!(d <= b.ceiling(n) && d >= b.ceiling(n) / 2, "{n}: {d}");
            }
        }
        // Spread: 100 messages failing together on their 6th delivery return over 30-60 s.
        let spread: std::collections::BTreeSet<u32> =
            (0..100).map(|_| b.delay(6, &mut rng)).collect();
        assert!(spread.len() > 10, "{spread:?}");
    }
}
