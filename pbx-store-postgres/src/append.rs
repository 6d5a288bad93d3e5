//! The batch append: one statement, one round trip and one commit per batch, whatever
//! the batch holds.
//!
//! The work is done by `pbx_append`, a PL/pgSQL function the migrations create
//! (`migrations/20261202170100_append_function.sql`, which states its rules and steps).
//! This module hands it the batch as parallel arrays (call ids, channels, sequences,
//! payload bytes and kinds, sender timestamps) and turns its answer, one row per packet
//! in input order, into [`PacketOutcome`]s. The statement runs in an implicit
//! transaction of its own, so:
//!
//! - **Whole or nothing**: the batch is stored entirely or, on any error, not at all. The
//!   answer arrives after the commit, so every packet answered as stored is durable; the
//!   answer's decoding cannot fail on a row the schema admits (verdict codes and states
//!   are the function's and the schema's own).
//! - **Deadlock-free**: the function locks the batch's calls, then creates the missing
//!   ones, both in byte order of their ids, the one order every batch takes. When
//!   another batch created one of them in between, the function fails with
//!   `serialization_failure` rather than lock out of order, having stored nothing, and
//!   the batch runs again (a second round trip, in that race only).
//! - **Same verdicts as every store**: each packet is classified in input order, per
//!   (call, channel), with the rules of [`pbx_core::ordering::OrderingCounters::observe`];
//!   a repeat of an earlier packet of the batch is a duplicate (or conflict) of it. The
//!   conformance suite's model test and the crate's differential test check this against
//!   the memory store.

use chrono::{DateTime, Utc};
use pbx_core::ordering::{PacketOrder, SeqRange};
use pbx_core::packet::NewPacket;
use pbx_core::store::{Appended, PacketOutcome, PacketRejection, StoreError};
use sqlx::PgPool;

use crate::error::{CorruptRow, store_error};
use crate::rows;

const APPEND: &str =
    "SELECT ord, verdict, created, gap_first, closed_state FROM pbx_append($1, $2, $3, $4, $5, $6, $7)";

/// How often a batch runs when another batch keeps creating one of its calls between
/// the function's lock and its insert (then nothing of it was stored; see the
/// migration).
const MAX_ATTEMPTS: usize = 4;

/// `pbx_append` found a call created by another batch after it locked the others.
fn created_concurrently(error: &sqlx::Error) -> bool {
    error.as_database_error().and_then(|db| db.code()).is_some_and(|code| code == "40001")
}

/// One packet's answer from `pbx_append`.
#[derive(sqlx::FromRow)]
struct VerdictRow {
    ord: i64,
    verdict: i16,
    created: bool,
    gap_first: Option<i64>,
    closed_state: Option<String>,
}

/// Appends a batch; see the module docs.
pub(crate) async fn append(
    pool: &PgPool,
    batch: &[NewPacket],
    now: DateTime<Utc>,
) -> Result<Vec<PacketOutcome>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let n = batch.len();
    let (mut ids, mut channels, mut seqs) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut data, mut is_text, mut ts) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for p in batch {
        let id = p.call_id.as_str();
        ids.push(id);
        channels.push(i16::from(p.packet.channel()));
        seqs.push(rows::db_counter(id, "sequence", p.packet.sequence())?);
        data.push(p.packet.data().bytes().as_ref());
        is_text.push(p.packet.data().is_text());
        ts.push(p.packet.timestamp());
    }
    let mut attempt = 1;
    let answers: Vec<VerdictRow> = loop {
        let answer = sqlx::query_as(APPEND)
            .bind(&ids)
            .bind(&channels)
            .bind(&seqs)
            .bind(&data)
            .bind(&is_text)
            .bind(&ts)
            .bind(now)
            .fetch_all(pool)
            .await;
        match answer {
            Err(e) if attempt < MAX_ATTEMPTS && created_concurrently(&e) => attempt += 1,
            answer => break answer.map_err(store_error)?,
        }
    };
    if answers.len() != n {
        return Err(StoreError::backend(format!("pbx_append answered {} of {n} packets", answers.len())));
    }
    batch.iter().zip(answers).enumerate().map(|(i, (p, row))| outcome(i, p, row)).collect()
}

/// The outcome of the `i`th packet (0-based) from its row.
fn outcome(i: usize, p: &NewPacket, row: VerdictRow) -> Result<PacketOutcome, StoreError> {
    let id = p.call_id.as_str();
    if usize::try_from(row.ord).ok() != Some(i + 1) {
        return Err(CorruptRow::error(id, format!("pbx_append answered packet {} at position {}", row.ord, i + 1)));
    }
    let sequence = p.packet.sequence();
    let order = match row.verdict {
        0 => PacketOrder::InOrder,
        1 => {
            let first = row.gap_first.ok_or_else(|| CorruptRow::error(id, "a gap without its first sequence"))?;
            let first = rows::unsigned(id, "gap start", first)?;
            if first >= sequence {
                return Err(CorruptRow::error(id, format!("gap from {first} before sequence {sequence}")));
            }
            PacketOrder::Gap { missing: SeqRange { first, last: sequence - 1 } }
        }
        2 => PacketOrder::OutOfOrder,
        3 => PacketOrder::Duplicate,
        4 => return Ok(Err(PacketRejection::Conflict { call_id: p.call_id.clone(), sequence })),
        5 => {
            let state = row.closed_state.ok_or_else(|| CorruptRow::error(id, "a closed call without its state"))?;
            let state = rows::state(id, &state)?;
            return Ok(Err(PacketRejection::CallClosed { call_id: p.call_id.clone(), state }));
        }
        other => return Err(CorruptRow::error(id, format!("unknown verdict {other} from pbx_append"))),
    };
    Ok(Ok(Appended { order, created_call: row.created }))
}
