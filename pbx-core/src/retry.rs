//! Retry policy for AI work, shaped like Temporal's: exponential backoff with a cap,
//! a bounded number of attempts, jitter, `retry_after` hints and non-retryable errors.
//!
//! The policy is a pure function; the caller schedules the next attempt. Tests pass a
//! seeded RNG and get the same delays every run.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::ai::AiError;

/// How the computed backoff is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// The exact exponential delay.
    None,
    /// AWS "full jitter": uniform in `[0, delay]`. Spreads retries best.
    #[default]
    Full,
    /// AWS "equal jitter": `delay / 2` plus uniform in `[0, delay / 2]`.
    Equal,
}

/// An invalid retry policy setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRetryPolicy {
    /// `backoff_coefficient` must be finite and at least 1.
    #[error("backoff coefficient {0} must be a finite number >= 1")]
    BackoffCoefficient(f64),
    /// `maximum_attempts` must be at least 1.
    #[error("maximum attempts must be at least 1")]
    MaximumAttempts,
    /// `initial_interval` must be positive and not above `maximum_interval`.
    #[error("initial interval {initial:?} must be > 0 and <= maximum interval {maximum:?}")]
    Intervals {
        /// The initial interval given.
        initial: Duration,
        /// The maximum interval given.
        maximum: Duration,
    },
}

/// When and whether to retry failed AI work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Delay before the first retry. Default 1 s.
    pub initial_interval: Duration,
    /// Multiplier applied per further retry. Default 2.0.
    pub backoff_coefficient: f64,
    /// Cap on any single delay (also caps `retry_after` hints). Default 60 s.
    pub maximum_interval: Duration,
    /// Attempts in all, the first included. Default 5.
    pub maximum_attempts: u32,
    /// Randomisation. Default [`Jitter::Full`].
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            maximum_interval: Duration::from_secs(60),
            maximum_attempts: 5,
            jitter: Jitter::Full,
        }
    }
}

impl RetryPolicy {
    /// Checks the settings; call it where the policy enters from configuration.
    pub fn validate(&self) -> Result<(), InvalidRetryPolicy> {
        if !self.backoff_coefficient.is_finite() || self.backoff_coefficient < 1.0 {
            return Err(InvalidRetryPolicy::BackoffCoefficient(self.backoff_coefficient));
        }
        if self.maximum_attempts == 0 {
            return Err(InvalidRetryPolicy::MaximumAttempts);
        }
        if self.initial_interval.is_zero() || self.initial_interval > self.maximum_interval {
            return Err(InvalidRetryPolicy::Intervals {
                initial: self.initial_interval,
                maximum: self.maximum_interval,
            });
        }
        Ok(())
    }

    /// The exponential delay before retry number `failures` (1 for the first retry),
    /// capped at `maximum_interval`, before jitter.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(1024) as i32;
        let secs = self.initial_interval.as_secs_f64() * self.backoff_coefficient.powi(exponent);
        let max = self.maximum_interval.as_secs_f64();
        if secs.is_finite() && secs < max { Duration::from_secs_f64(secs) } else { self.maximum_interval }
    }

    /// The delay before the next attempt, after `failures` failed attempts in all (the
    /// one that just failed included), or `None` to give up: the error is not
    /// retryable or the attempts are spent. A `retry_after` hint is honoured as a lower
    /// bound, capped at `maximum_interval`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pbx_core::{ai::AiError, retry::{Jitter, RetryPolicy}};
    /// use rand::SeedableRng;
    /// let policy = RetryPolicy { jitter: Jitter::None, ..RetryPolicy::default() };
    /// let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    /// let err = AiError::unavailable("timeout");
    /// assert_eq!(policy.next_delay(1, &err, &mut rng), Some(Duration::from_secs(1)));
    /// assert_eq!(policy.next_delay(3, &err, &mut rng), Some(Duration::from_secs(4)));
    /// assert_eq!(policy.next_delay(5, &err, &mut rng), None);
    /// assert_eq!(policy.next_delay(1, &AiError::permanent("bad audio"), &mut rng), None);
    /// ```
    pub fn next_delay<R: Rng + ?Sized>(&self, failures: u32, error: &AiError, rng: &mut R) -> Option<Duration> {
        if !error.is_retryable() {
            return None;
        }
        self.delay_after(failures, error.retry_after(), rng)
    }

    /// The delay before the next attempt after `failures` failed attempts of any
    /// retryable work (webhook deliveries too), honouring a `retry_after` hint as a
    /// lower bound capped at `maximum_interval`; `None` once the attempts are spent.
    pub fn delay_after<R: Rng + ?Sized>(
        &self,
        failures: u32,
        retry_after: Option<Duration>,
        rng: &mut R,
    ) -> Option<Duration> {
        if failures >= self.maximum_attempts {
            return None;
        }
        let delay = self.backoff(failures);
        let jittered = match self.jitter {
            Jitter::None => delay,
            Jitter::Full => delay.mul_f64(rng.random::<f64>()),
            Jitter::Equal => delay / 2 + (delay / 2).mul_f64(rng.random::<f64>()),
        };
        let floor = retry_after.unwrap_or_default().min(self.maximum_interval);
        Some(jittered.max(floor))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy { jitter, ..RetryPolicy::default() }
    }

    #[test]
    fn exponential_and_capped() {
        let p = policy(Jitter::None);
        let mut rng = StdRng::seed_from_u64(1);
        let e = AiError::unavailable("x");
        let got: Vec<_> = (1..5).map(|n| p.next_delay(n, &e, &mut rng).unwrap().as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8]);
        assert_eq!(p.backoff(30), Duration::from_secs(60));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(60));
        assert_eq!(p.next_delay(5, &e, &mut rng), None);
    }

    #[test]
    fn honours_retry_after_up_to_the_cap() {
        let p = policy(Jitter::Full);
        let mut rng = StdRng::seed_from_u64(1);
        let e = AiError::rate_limited("slow down", Some(Duration::from_secs(7)));
        assert!(p.next_delay(1, &e, &mut rng).unwrap() >= Duration::from_secs(7));
        let e = AiError::rate_limited("slow down", Some(Duration::from_secs(3600)));
        assert_eq!(p.next_delay(1, &e, &mut rng), Some(Duration::from_secs(60)));
    }

    #[test]
    fn permanent_errors_fail_at_once() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(policy(Jitter::Full).next_delay(1, &AiError::permanent("no"), &mut rng), None);
    }

    #[test]
    fn validation() {
        assert!(RetryPolicy::default().validate().is_ok());
        let bad = RetryPolicy { backoff_coefficient: 0.5, ..RetryPolicy::default() };
        assert!(matches!(bad.validate(), Err(InvalidRetryPolicy::BackoffCoefficient(_))));
        let bad = RetryPolicy { maximum_attempts: 0, ..RetryPolicy::default() };
        assert_eq!(bad.validate(), Err(InvalidRetryPolicy::MaximumAttempts));
        let bad = RetryPolicy { initial_interval: Duration::from_secs(90), ..RetryPolicy::default() };
        assert!(matches!(bad.validate(), Err(InvalidRetryPolicy::Intervals { .. })));
    }

    #[test]
    fn seeded_rng_is_deterministic() {
        let p = policy(Jitter::Full);
        let e = AiError::unavailable("x");
        let a: Vec<_> = (1..5).map(|n| p.next_delay(n, &e, &mut StdRng::seed_from_u64(9))).collect();
        let b: Vec<_> = (1..5).map(|n| p.next_delay(n, &e, &mut StdRng::seed_from_u64(9))).collect();
        assert_eq!(a, b);
    }

    proptest! {
        /// Delays stay within the jitter's bounds and never exceed the cap.
        #[test]
        fn delays_within_bounds(
            initial_ms in 1u64..5_000,
            coefficient in 1.0f64..5.0,
            max_ms in 5_000u64..120_000,
            attempts in 1u32..20,
            failures in 1u32..40,
            jitter in prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal)],
            retry_after_ms in proptest::option::of(0u64..200_000),
            seed in any::<u64>(),
        ) {
            let p = RetryPolicy {
                initial_interval: Duration::from_millis(initial_ms),
                backoff_coefficient: coefficient,
                maximum_interval: Duration::from_millis(max_ms),
                maximum_attempts: attempts,
                jitter,
            };
            prop_assert!(p.validate().is_ok());
            let e = AiError::rate_limited("x", retry_after_ms.map(Duration::from_millis));
            let mut rng = StdRng::seed_from_u64(seed);
            let got = p.next_delay(failures, &e, &mut rng);
            if failures >= attempts {
                prop_assert_eq!(got, None);
            } else {
                let d = got.unwrap();
                let base = p.backoff(failures);
                prop_assert!(base <= p.maximum_interval);
                prop_assert!(d <= p.maximum_interval);
                let floor = e.retry_after().unwrap_or_default().min(p.maximum_interval);
                prop_assert!(d >= floor);
                let low = match jitter { Jitter::None => base, Jitter::Full => Duration::ZERO, Jitter::Equal => base / 2 };
                prop_assert!(d >= low.max(floor) && d <= base.max(floor), "{:?} not in [{:?}, {:?}]", d, low, base);
            }
        }

        /// Without jitter, delays never decrease from one retry to the next.
        #[test]
        fn backoff_is_monotonic(n in 1u32..100) {
            let p = RetryPolicy::default();
            prop_assert!(p.backoff(n) <= p.backoff(n + 1));
        }
    }
}
