//! Test support for pbx backends and consumers (feature `testkit`).
//!
//! - [`conformance`]: the suite every [`CallStore`](crate::store::CallStore) backend runs,
//!   through [`call_store_conformance!`](crate::call_store_conformance).
//! - [`gateway`]: the gateway and processor suite, run over a real backend through
//!   [`gateway_conformance!`](crate::gateway_conformance).
//! - [`ai`]: [`ScriptedAi`](ai::ScriptedAi), an [`AiClient`](crate::ai::AiClient) whose
//!   outcomes a test scripts.
//! - [`clock`]: [`ManualClock`](clock::ManualClock), a clock a test moves by hand.

pub mod ai;
pub mod clock;
pub mod conformance;
pub mod gateway;
pub mod overlap;
pub mod wrap;
