//! How many group-commit batches are appended at once, tuned from what commits measure.
//!
//! Which concurrency stores the most packets per second depends on the machine: where
//! the database has cores to spare, two batches in flight commit nearly twice as much;
//! where it has none (2 cores shared with the server and the load), the second batch
//! only takes packets away from the first and makes every commit smaller. The tuner
//! finds out by trying, the way a congestion controller probes for bandwidth:
//!
//! - Time is cut into windows of at least [`WINDOW`] and [`MIN_BATCHES`] commits; a
//!   window's rate is the packets it committed per second. A window is *saturated*
//!   when every slot held a batch at least [`SATURATED`] of the time: only then does a
//!   faster setting exist to be found (below that, the load decides the rate, and every
//!   setting measures the same).
//! - After `interval` saturated windows at the current setting `k`, one window runs at
//!   a neighbour (`k + 1` or `k - 1`, alternating, within `1..=max`), then one at `k`
//!   again. The probe wins when its rate beats the mean of the windows before and after
//!   it by [`MARGIN`]: comparing against both sides cancels a machine's drift.
//! - A neighbour that wins [`CONFIRMATIONS`] probes in a row becomes the setting (the
//!   next probe goes on in the same direction); a probe that loses doubles `interval`,
//!   up to [`MAX_INTERVAL`] (about half a minute under load), so a setting that is
//!   already best costs one probe window in [`MAX_INTERVAL`]: about 0.1 % when the
//!   neighbour is a quarter slower. A probe that wins once and then fails to confirm
//!   (noise) keeps the interval it had.
//!
//! Pure: it sees windows, not clocks or stores, so its tests can drive it with any
//! rate curve.

use std::time::Duration;

/// The shortest measuring window.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);
/// The fewest commits a window holds (slow commits make longer windows).
pub(crate) const MIN_BATCHES: u32 = 4;
/// A window longer than this closes whatever it holds (an idle one, unsaturated).
pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(1);
/// The share of a window every slot must be busy for it to count as saturated.
pub(crate) const SATURATED: f64 = 0.9;
/// How much faster a probe must be than the setting around it to win.
pub(crate) const MARGIN: f64 = 0.03;
/// Probes a neighbour must win in a row to become the setting.
pub(crate) const CONFIRMATIONS: u32 = 2;
/// Saturated windows between probes after a setting changes.
pub(crate) const MIN_INTERVAL: u32 = 4;
/// The longest wait between probes, in saturated windows.
pub(crate) const MAX_INTERVAL: u32 = 256;

/// What one window measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window {
    /// Packets committed during the window.
    pub(crate) packets: u64,
    /// The window's length.
    pub(crate) elapsed: Duration,
    /// Whether every slot was busy for at least [`SATURATED`] of it.
    pub(crate) saturated: bool,
}

impl Window {
    fn rate(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Running at the setting, counting saturated windows towards the next probe.
    Steady { windows: u32 },
    /// Running at `candidate` for one window; `before` was the setting's last rate.
    Probe { candidate: usize, before: f64 },
    /// Back at the setting for one window, to compare the probe with both sides.
    After { candidate: usize, before: f64, probe: f64 },
}

/// The hill-climbing controller of the batches in flight (module docs).
#[derive(Debug, Clone)]
pub(crate) struct Tuner {
    max: usize,
    setting: usize,
    phase: Phase,
    /// Saturated windows before the next probe.
    interval: u32,
    /// The interval after a lost probe: doubled by each loss, so a win that fails to
    /// confirm (noise) does not reset it.
    backoff: u32,
    upward: bool,
    /// Probes in a row the current candidate has won.
    wins: u32,
    last_candidate: Option<usize>,
}

impl Tuner {
    /// Starts at one batch in flight (the best setting on small machines) and may go
    /// up to `max` (at least 1).
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            setting: 1,
            phase: Phase::Steady { windows: 0 },
            interval: MIN_INTERVAL,
            backoff: MIN_INTERVAL,
            upward: true,
            wins: 0,
            last_candidate: None,
        }
    }

    /// The batches to keep in flight now (a probe's, during a probe window).
    pub(crate) fn in_flight(&self) -> usize {
        match self.phase {
            Phase::Probe { candidate, .. } => candidate,
            _ => self.setting,
        }
    }

    /// The setting probes are measured against.
    pub(crate) fn setting(&self) -> usize {
        self.setting
    }

    /// Takes one window's measurement and answers the batches to keep in flight next.
    pub(crate) fn window(&mut self, window: Window) -> usize {
        let rate = window.rate();
        self.phase = match self.phase {
            Phase::Steady { windows } if !window.saturated => Phase::Steady { windows },
            Phase::Steady { windows } if windows + 1 < self.interval => Phase::Steady { windows: windows + 1 },
            Phase::Steady { windows } => match self.neighbour() {
                Some(candidate) => Phase::Probe { candidate, before: rate },
                None => Phase::Steady { windows },
            },
            Phase::Probe { candidate, before } => Phase::After { candidate, before, probe: rate },
            // The load fell away around the probe: the comparison means nothing.
            Phase::After { .. } if !window.saturated => Phase::Steady { windows: 0 },
            Phase::After { candidate, before, probe } => {
                self.judge(candidate, probe, (before + rate) / 2.0);
                Phase::Steady { windows: 0 }
            }
        };
        self.in_flight()
    }

    fn judge(&mut self, candidate: usize, probe: f64, around: f64) {
        let won = probe > around * (1.0 + MARGIN);
        tracing::debug!(setting = self.setting, candidate, probe, around, won, "group commit: probe");
        if won {
            self.wins = if self.last_candidate == Some(candidate) { self.wins + 1 } else { 1 };
            self.last_candidate = Some(candidate);
            if self.wins >= CONFIRMATIONS {
                self.upward = candidate > self.setting;
                self.setting = candidate;
                self.wins = 0;
                self.last_candidate = None;
                self.interval = MIN_INTERVAL;
                self.backoff = MIN_INTERVAL;
            } else {
                // Confirm at once, before the machine changes under the comparison.
                self.interval = 1;
            }
        } else {
            self.wins = 0;
            self.last_candidate = None;
            self.upward = !self.upward;
            self.backoff = (self.backoff * 2).min(MAX_INTERVAL);
            self.interval = self.backoff;
        }
    }

    /// The setting to probe next: the pending candidate again, else one step in the
    /// current direction, else the other.
    fn neighbour(&self) -> Option<usize> {
        if let Some(candidate) = self.last_candidate {
            return Some(candidate);
        }
        let up = (self.setting < self.max).then(|| self.setting + 1);
        let down = (self.setting > 1).then(|| self.setting - 1);
        if self.upward { up.or(down) } else { down.or(up) }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn saturated(packets: u64) -> Window {
        Window { packets, elapsed: Duration::from_millis(100), saturated: true }
    }

    /// Drives a tuner against a machine whose rate at `k` in flight is `curve(k)`
    /// (times a noise factor per window), for `windows` windows; answers the share of
    /// windows run at each setting and the final setting.
    fn drive(max: usize, windows: usize, curve: impl Fn(usize) -> f64, noise: &[f64]) -> (Vec<f64>, usize) {
        let mut tuner = Tuner::new(max);
        let mut at = vec![0usize; max + 1];
        for i in 0..windows {
            let k = tuner.in_flight();
            assert!((1..=max).contains(&k), "in flight {k} outside 1..={max}");
            at[k] += 1;
            let rate = curve(k) * noise[i % noise.len()];
            tuner.window(saturated(rate as u64 / 10));
        }
        (at.iter().map(|&n| n as f64 / windows as f64).collect(), tuner.setting())
    }

    #[test]
    fn stays_at_one_when_more_is_slower() {
        // This machine's shape: two batches in flight a third slower than one.
        let (share, setting) = drive(4, 2000, |k| if k == 1 { 8000.0 } else { 5500.0 }, &[1.0]);
        assert_eq!(setting, 1);
        // After backing off, probes cost one window in MAX_INTERVAL + 2.
        assert!(share[1] > 0.97, "{share:?}");
    }

    #[test]
    fn climbs_to_the_best_setting_and_stays() {
        // Another machine's shape: 2 best, 3 no better, 4 worse.
        let curve = |k| [0.0, 16000.0, 22000.0, 21500.0, 17000.0][k];
        let (share, setting) = drive(4, 2000, curve, &[1.0]);
        assert_eq!(setting, 2);
        assert!(share[2] > 0.95, "{share:?}");
    }

    #[test]
    fn follows_a_curve_that_keeps_rising() {
        let (_, setting) = drive(8, 2000, |k| 1000.0 * k as f64, &[1.0]);
        assert_eq!(setting, 8);
    }

    #[test]
    fn unsaturated_windows_never_probe() {
        let mut tuner = Tuner::new(4);
        for _ in 0..1000 {
            let k = tuner.window(Window { packets: 10, elapsed: Duration::from_millis(100), saturated: false });
            assert_eq!(k, 1);
        }
    }

    #[test]
    fn a_probe_with_the_load_gone_after_it_decides_nothing() {
        let mut tuner = Tuner::new(4);
        for _ in 0..MIN_INTERVAL {
            tuner.window(saturated(100));
        }
        assert_eq!(tuner.in_flight(), 2, "probing");
        tuner.window(saturated(10_000)); // the probe, far faster
        tuner.window(Window { packets: 0, elapsed: Duration::from_millis(100), saturated: false });
        assert_eq!((tuner.setting(), tuner.wins), (1, 0));
    }

    #[test]
    fn one_lucky_probe_does_not_move_the_setting() {
        let mut tuner = Tuner::new(4);
        for _ in 0..MIN_INTERVAL {
            tuner.window(saturated(1000));
        }
        tuner.window(saturated(2000)); // probe at 2 wins
        tuner.window(saturated(1000));
        assert_eq!(tuner.setting(), 1);
        assert_eq!(tuner.in_flight(), 1);
        tuner.window(saturated(1000)); // next window probes 2 again at once
        assert_eq!(tuner.in_flight(), 2);
        tuner.window(saturated(900)); // and loses
        tuner.window(saturated(1000));
        assert_eq!(tuner.setting(), 1);
    }

    #[test]
    fn a_lucky_win_that_fails_to_confirm_keeps_the_backoff() {
        let mut tuner = Tuner::new(4);
        // Lose probes until the interval is at its longest.
        while tuner.backoff < MAX_INTERVAL {
            while tuner.in_flight() == 1 {
                tuner.window(saturated(1000));
            }
            tuner.window(saturated(700)); // the probe loses
            tuner.window(saturated(1000));
        }
        while tuner.in_flight() == 1 {
            tuner.window(saturated(1000));
        }
        tuner.window(saturated(2000)); // a lucky probe
        tuner.window(saturated(1000));
        tuner.window(saturated(1000)); // confirming at once
        assert_eq!(tuner.in_flight(), 2);
        tuner.window(saturated(700)); // fails
        tuner.window(saturated(1000));
        // The next probe is MAX_INTERVAL windows away, not MIN_INTERVAL.
        for _ in 0..MAX_INTERVAL - 1 {
            assert_eq!(tuner.window(saturated(1000)), 1);
        }
        assert_eq!(tuner.window(saturated(1000)), 2);
    }

    #[test]
    fn never_leaves_one_when_max_is_one() {
        let (share, setting) = drive(1, 500, |_| 1000.0, &[1.0, 1.2, 0.8]);
        assert_eq!((share[1], setting), (1.0, 1));
    }

    proptest! {
        /// Whatever the rates (noise, spikes, zeros), the setting stays within 1..=max.
        #[test]
        fn stays_in_bounds(max in 1usize..8, rates in proptest::collection::vec((0u64..100_000, any::<bool>()), 1..400)) {
            let mut tuner = Tuner::new(max);
            for (packets, saturated) in rates {
                let k = tuner.window(Window { packets, elapsed: Duration::from_millis(100), saturated });
                prop_assert!((1..=max).contains(&k));
                prop_assert!((1..=max).contains(&tuner.setting()));
            }
        }

        /// With ±10 % noise on every window, a setting a third slower than one is taken
        /// for a small share of the time only, and one stays the setting at the end.
        #[test]
        fn noise_does_not_lure_it_away_from_the_best(noise in proptest::collection::vec(0.9f64..1.1, 50..200)) {
            let (share, setting) = drive(4, 3000, |k| if k == 1 { 8000.0 } else { 5500.0 }, &noise);
            prop_assert_eq!(setting, 1);
            prop_assert!(share[1] > 0.95, "{:?}", share);
        }
    }
}
