//! The call state machine: a pure function from `(state, trigger)` to a transition.
//!
//! ```text
//! IN_PROGRESS --hang-up--> COMPLETED --claim--> PROCESSING_AI --success--> ARCHIVED
//!                              ^                  |   ^   |
//!                              |                  |   +---+ retryable failure (retry scheduled)
//!                              |                  +--give up / permanent error--> FAILED
//!                              +--------------------re-drive (operator)--------------+
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The lifecycle state of a call. Serialised exactly as `IN_PROGRESS`, `COMPLETED`,
/// `PROCESSING_AI`, `ARCHIVED`, `FAILED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallState {
    /// Packets are streaming in.
    InProgress,
    /// The call hung up; AI work is pending.
    Completed,
    /// AI work is running, or a retry of it is scheduled.
    ProcessingAi,
    /// AI work succeeded; the call is done.
    Archived,
    /// AI work failed for good; an operator may re-drive the call.
    Failed,
}

impl CallState {
    /// Every state, in lifecycle order.
    pub const ALL: [CallState; 5] =
        [CallState::InProgress, CallState::Completed, CallState::ProcessingAi, CallState::Archived, CallState::Failed];

    /// The state's wire name (`IN_PROGRESS`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            CallState::InProgress => "IN_PROGRESS",
            CallState::Completed => "COMPLETED",
            CallState::ProcessingAi => "PROCESSING_AI",
            CallState::Archived => "ARCHIVED",
            CallState::Failed => "FAILED",
        }
    }

    /// `true` for ARCHIVED and FAILED: nothing happens to the call by itself any more.
    pub const fn is_terminal(self) -> bool {
        matches!(self, CallState::Archived | CallState::Failed)
    }

    /// `true` only for IN_PROGRESS, the one state that takes packets.
    pub const fn accepts_packets(self) -> bool {
        matches!(self, CallState::InProgress)
    }
}

impl fmt::Display for CallState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`CallState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown call state {0:?}; expected one of IN_PROGRESS, COMPLETED, PROCESSING_AI, ARCHIVED, FAILED")]
pub struct UnknownState(pub String);

impl FromStr for CallState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CallState::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// What happens to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A packet arrives.
    Packet,
    /// The call hangs up (explicitly, or idle for too long).
    HangUp,
    /// An AI worker claims the call's pending work.
    Claim,
    /// The AI work succeeded.
    Succeed,
    /// The AI work failed and a retry is scheduled.
    RetryLater,
    /// The AI work failed for good (permanent error or attempts exhausted).
    GiveUp,
    /// An operator re-drives a failed call.
    Redrive,
}

/// The outcome of a permitted trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The state before.
    pub from: CallState,
    /// The state after (equal to `from` for a self-loop or an idempotent no-op).
    pub to: CallState,
    /// `false` when the trigger was already satisfied (completing a COMPLETED call):
    /// nothing must be written.
    pub applied: bool,
}

impl Transition {
    /// `true` when the state changes.
    pub fn changes_state(&self) -> bool {
        self.from != self.to
    }
}

/// A trigger that the state machine refuses in the given state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot apply {trigger:?} to a call in state {state}")]
pub struct InvalidTransition {
    /// The call's state.
    pub state: CallState,
    /// The refused trigger.
    pub trigger: Trigger,
}

/// Applies `trigger` to a call in `state`.
///
/// - packets only while IN_PROGRESS (a self-loop);
/// - hang-up IN_PROGRESS -> COMPLETED, and a no-op in every later state (already hung up);
/// - claim COMPLETED -> PROCESSING_AI, and PROCESSING_AI -> PROCESSING_AI (a scheduled
///   retry, or the rescue of an expired lease);
/// - success PROCESSING_AI -> ARCHIVED; retry-later stays PROCESSING_AI; give-up
///   PROCESSING_AI -> FAILED;
/// - re-drive FAILED -> COMPLETED.
///
/// ```
/// use pbx_core::state::{transition, CallState, Trigger};
/// let t = transition(CallState::InProgress, Trigger::HangUp).unwrap();
/// assert_eq!(t.to, CallState::Completed);
/// assert!(!transition(CallState::Completed, Trigger::HangUp).unwrap().applied);
/// assert!(transition(CallState::Archived, Trigger::Packet).is_err());
/// ```
pub fn transition(state: CallState, trigger: Trigger) -> Result<Transition, InvalidTransition> {
    use CallState::*;
    use Trigger::*;
    let to = match (state, trigger) {
        (InProgress, Packet) => InProgress,
        (InProgress, HangUp) => Completed,
        (Completed | ProcessingAi | Archived | Failed, HangUp) => {
            return Ok(Transition { from: state, to: state, applied: false });
        }
        (Completed | ProcessingAi, Claim) => ProcessingAi,
        (ProcessingAi, Succeed) => Archived,
        (ProcessingAi, RetryLater) => ProcessingAi,
        (ProcessingAi, GiveUp) => Failed,
        (Failed, Redrive) => Completed,
        _ => return Err(InvalidTransition { state, trigger }),
    };
    Ok(Transition { from: state, to, applied: true })
}

#[cfg(test)]
mod tests {
    use super::*;
    use CallState::*;
    use Trigger::*;
    use proptest::prelude::*;

    const TRIGGERS: [Trigger; 7] = [Packet, HangUp, Claim, Succeed, RetryLater, GiveUp, Redrive];

    #[test]
    fn full_table() {
        // (state, trigger) -> Some(to) when applied, None when refused; no-ops listed apart.
        let expect = |s: CallState, t: Trigger| -> Option<CallState> {
            match (s, t) {
                (InProgress, Packet) => Some(InProgress),
                (InProgress, HangUp) => Some(Completed),
                (Completed, Claim) | (ProcessingAi, Claim) => Some(ProcessingAi),
                (ProcessingAi, Succeed) => Some(Archived),
                (ProcessingAi, RetryLater) => Some(ProcessingAi),
                (ProcessingAi, GiveUp) => Some(Failed),
                (Failed, Redrive) => Some(Completed),
                _ => None,
            }
        };
        for s in CallState::ALL {
            for t in TRIGGERS {
                let got = transition(s, t);
                match (expect(s, t), got) {
                    (Some(to), Ok(tr)) => assert_eq!(tr, Transition { from: s, to, applied: true }),
                    (None, Ok(tr)) => {
                        assert_eq!(t, HangUp, "{s} {t:?}");
                        assert_eq!(tr, Transition { from: s, to: s, applied: false });
                    }
                    (None, Err(e)) => assert_eq!(e, InvalidTransition { state: s, trigger: t }),
                    (Some(_), Err(e)) => panic!("{s} {t:?} refused: {e}"),
                }
            }
        }
    }

    #[test]
    fn wire_names_round_trip() {
        for s in CallState::ALL {
            assert_eq!(s.as_str().parse::<CallState>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        assert!("in_progress".parse::<CallState>().is_err());
    }

    fn rank(s: CallState) -> u8 {
        match s {
            InProgress => 0,
            Completed => 1,
            ProcessingAi => 2,
            Archived | Failed => 3,
        }
    }

    proptest! {
        /// Random event sequences: terminal states stay terminal except through re-drive,
        /// no state is skipped (every applied change moves one step forward, or re-drives),
        /// and a refused trigger never changes anything.
        #[test]
        fn random_event_sequences(triggers in proptest::collection::vec(proptest::sample::select(TRIGGERS.to_vec()), 0..64)) {
            let mut state = InProgress;
            let mut seen_completed = false;
            for t in triggers {
                match transition(state, t) {
                    Ok(tr) => {
                        prop_assert_eq!(tr.from, state);
                        if state.is_terminal() {
                            prop_assert!(tr.to == state || (state == Failed && t == Redrive && tr.to == Completed));
                        }
                        if tr.changes_state() {
                            let forward_one = rank(tr.to) == rank(tr.from) + 1;
                            let redrive = tr.from == Failed && tr.to == Completed;
                            prop_assert!(forward_one || redrive, "{:?} skipped states", tr);
                        }
                        if !tr.applied {
                            prop_assert_eq!(t, HangUp);
                            prop_assert_eq!(tr.to, tr.from);
                        }
                        state = tr.to;
                    }
                    Err(e) => prop_assert_eq!(e.state, state),
                }
                if state == Completed { seen_completed = true; }
                // Once hung up, a call never takes packets again.
                if seen_completed { prop_assert!(!state.accepts_packets()); }
            }
        }
    }
}
