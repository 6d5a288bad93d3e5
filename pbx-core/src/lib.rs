//! # pbx-core
//!
//! The domain of pbx, a call-centre backend: PBX audio packets come in at high
//! frequency, each call moves through a state machine
//! (`IN_PROGRESS -> COMPLETED -> PROCESSING_AI -> ARCHIVED | FAILED`), packet order is
//! checked without ever blocking ingestion, and AI work (transcription, sentiment) runs
//! in the background against an unreliable service with retries that survive crashes.
//!
//! This crate does no I/O of its own. Storage is behind [`store::CallStore`]
//! (`pbx-store-memory`, `pbx-store-postgres`), the AI behind [`ai::AiClient`]. Every
//! consumer goes through [`gateway::Gateway`] (ingest, hang-up, reads, re-drive) and
//! [`processor::Processor`] (the AI worker, also at `gateway::Processor`).
//!
//! - [`state`]: the state machine, a pure function.
//! - [`ordering`]: the ordering validator, O(1) per packet.
//! - [`retry`]: the retry policy, pure and seeded.
//! - [`media`]: media formats, G.711 decoding, audio assembly and WAV framing.
//! - [`store`], [`ai`]: the two boundaries.
//! - [`gateway`]: the orchestration: group-commit ingest, hang-up, reads, events.
//! - [`processor`]: the AI worker: claims, AI attempts under heartbeats and the retry
//!   policy, idle hang-up, graceful shutdown; it uses the gateway through its methods.
//! - [`retention`]: how long finished calls keep their packets, and themselves.
//! - [`webhooks`]: the completion webhooks' durable outbox, on the event log.
//! - `testkit` (feature): the conformance suite every backend runs.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod ai;
pub mod clock;
pub mod events;
pub mod gateway;
pub mod id;
pub mod media;
pub mod metrics;
pub mod ordering;
pub mod packet;
pub mod processor;
pub mod retention;
pub mod retry;
pub mod state;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod webhooks;

pub use id::{CallId, InvalidCallId, WorkerId};
pub use media::MediaFormat;
pub use packet::{NewPacket, Packet, PacketError, PacketLimits, Payload, StoredPacket};
pub use state::CallState;

/// The names most consumers need, in one import.
pub mod prelude {
    pub use crate::ai::{AiClient, AiError, AiResult, Sentiment, SentimentLabel, SimulatedAi, SimulatedAiConfig};
    pub use crate::events::{EventBody, EventType, StoredEvent};
    pub use crate::gateway::{Feed, FeedItem, Gateway, GatewayConfig, GatewayError, GroupCommit};
    pub use crate::id::{CallId, WorkerId};
    pub use crate::media::{Encoding, MediaFormat};
    pub use crate::ordering::{OrderingCounters, OrderingReport, PacketOrder, SeqRange};
    pub use crate::packet::{NewPacket, Packet, PacketLimits, Payload, StoredPacket};
    pub use crate::processor::{Processor, ProcessorConfig};
    pub use crate::retry::{Jitter, RetryPolicy};
    pub use crate::state::{CallState, Transition};
    pub use crate::store::{Appended, CallSnapshot, CallStore, Opened, PacketRejection, StoreError};
}
