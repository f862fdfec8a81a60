//! Retries: full-jitter exponential backoff (the official SDKs' defaults: 0.5 s base, 8 s
//! cap) and a retry budget per backend (extra attempts at most a share of requests over a
//! sliding window, like Envoy's retry budgets), so that our retries never pile onto an
//! overloaded provider.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Backoff before retry number `attempt` (0-based): a uniform draw in `[0, min(cap, base·2^n)]`;
/// `jitter` is the draw in `[0, 1]` (tests pass 1.0 for the ceiling).
pub fn backoff(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(cap);
    ceiling.mul_f64(jitter.clamp(0.0, 1.0))
}

/// Extra attempts allowed per backend over a sliding window.
#[derive(Debug)]
pub struct RetryBudget {
    share: f64,
    min_retries: usize,
    window: Duration,
    requests: VecDeque<Instant>,
    retries: VecDeque<Instant>,
}

impl RetryBudget {
    /// Retries may be `share` of the requests in `window`, and at least `min_retries`.
    pub fn new(share: f64, min_retries: usize, window: Duration) -> RetryBudget {
        RetryBudget {
            share,
            min_retries,
            window,
            requests: VecDeque::new(),
            retries: VecDeque::new(),
        }
    }

    fn prune(&mut self, now: Instant) {
        for q in [&mut self.requests, &mut self.retries] {
            while q
                .front()
                .is_some_and(|&t| now.duration_since(t) > self.window)
            {
                q.pop_front();
            }
        }
    }

    /// Counts a first attempt.
    pub fn request(&mut self, now: Instant) {
        self.prune(now);
        self.requests.push_back(now);
    }

    /// Takes a retry from the budget if there is one left.
    pub fn try_retry(&mut self, now: Instant) -> bool {
        self.prune(now);
        let allowed =
            ((self.requests.len() as f64 * self.share).floor() as usize).max(self.min_retries);
        if self.retries.len() < allowed {
            self.retries.push_back(now);
            true
        } else {
            false
        }
    }
}

impl Default for RetryBudget {
    fn default() -> RetryBudget {
        RetryBudget::new(0.2, 3, Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_jitter_scales_it() {
        let (base, cap) = (Duration::from_millis(500), Duration::from_secs(8));
        let ceilings: Vec<u128> = (0..7)
            .map(|n| backoff(n, base, cap, 1.0).as_millis())
            .collect();
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(backoff(3, base, cap, 0.0), Duration::ZERO);
        assert_eq!(backoff(3, base, cap, 0.25), Duration::from_secs(1));
    }

    #[test]
    fn the_budget_allows_a_share_of_requests_with_a_floor() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(0.2, 3, Duration::from_secs(10));
        // With few requests the floor applies: 3 retries, not 4.
        for _ in 0..5 {
            b.request(t0);
        }
        assert_eq!((0..5).filter(|_| b.try_retry(t0)).count(), 3);
        // With 50 requests in the window, 20 % is 10.
        for _ in 0..45 {
            b.request(t0);
        }
        assert_eq!((0..20).filter(|_| b.try_retry(t0)).count(), 7);
        // After the window, both counts start again.
        let later = t0 + Duration::from_secs(11);
        assert!(b.try_retry(later));
    }
}
