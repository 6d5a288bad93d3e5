//! Integration tests of pbx-server: HTTP-level tests on the memory store through
//! `poem::test::TestClient`, the AI path with a scripted AI, and end-to-end tests of the
//! real binary against PostgreSQL.

mod ai;
mod auth;
mod concurrency;
mod contract;
mod dashboard;
mod events;
mod events_ws;
mod helpers;
mod malformed;
mod media;
mod metrics;
mod openapi;
#[cfg(feature = "postgres")]
mod postgres;
mod retention;
mod shutdown;
mod spawned;
mod speech;
mod stalling;
mod streams_audiohook;
mod streams_audiosocket;
mod streams_twilio;
mod unavailable;
mod webhooks;
mod wiring;
