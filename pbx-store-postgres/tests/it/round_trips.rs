//! An append is one statement and one round trip, whatever the batch holds: counted on
//! the wire, by a proxy between the store and PostgreSQL that reads the frontend
//! protocol's messages.
//!
//! In the extended query protocol a client sends its messages (Parse, Bind, Execute, ..)
//! and then a Sync, and waits for the server's ReadyForQuery: one Sync is one round trip.
//! A simple Query (how sqlx sends `BEGIN` and `COMMIT`) is one too. One Execute and no
//! BEGIN means the statement ran in an implicit transaction of its own: one commit.
//! (sqlx's pool also pings a connection, a bare Sync, when it is returned to the pool,
//! after the caller has its answer; that is the pool's, and every operation's, so it is
//! not counted.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pbx_core::packet::Payload;
use pbx_core::prelude::*;
use pbx_store_postgres::{PgCallStore, PgStoreOptions};
use sqlx::PgPool;
use sqlx::postgres::PgSslMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// What clients sent: each round trip as the messages it carried.
#[derive(Clone, Default)]
struct Wire(Arc<Mutex<WireLog>>);

#[derive(Default)]
struct WireLog {
    /// Messages since the last Sync.
    pending: Vec<u8>,
    /// Round trips that carried statements: the messages before each Sync.
    round_trips: Vec<Vec<u8>>,
    /// Simple Query messages (each its own round trip).
    queries: usize,
}

/// What the client sent over an interval.
#[derive(Debug, PartialEq, Eq)]
struct Sent {
    /// Extended-protocol round trips that carried something (a Sync after messages).
    round_trips: usize,
    /// Statements executed in them.
    executes: usize,
    /// Simple queries (`BEGIN`, `COMMIT`, ..).
    queries: usize,
}

impl Wire {
    fn take(&self) -> Sent {
        let mut log = self.0.lock().unwrap();
        let sent = Sent {
            round_trips: log.round_trips.len(),
            executes: log.round_trips.iter().flatten().filter(|m| **m == b'E').count(),
            queries: log.queries,
        };
        *log = WireLog::default();
        sent
    }

    fn record(&self, kind: u8) {
        let mut log = self.0.lock().unwrap();
        match kind {
            b'Q' => log.queries += 1,
            // A Sync with nothing before it is sqlx's ping, which its pool sends when a
            // connection is returned (after the caller has its answer): not part of
            // any operation, so not counted.
            b'S' if log.pending.is_empty() => {}
            b'S' => {
                let carried = std::mem::take(&mut log.pending);
                log.round_trips.push(carried);
            }
            other => log.pending.push(other),
        }
    }
}

/// Splits the client's byte stream into messages: the untyped startup messages first
/// (an SSLRequest, if any, then the StartupMessage), then typed ones.
#[derive(Default)]
struct Parser {
    buf: Vec<u8>,
    started: bool,
}

impl Parser {
    fn feed(&mut self, bytes: &[u8], wire: &Wire) {
        self.buf.extend_from_slice(bytes);
        loop {
            let header = if self.started { 5 } else { 4 };
            if self.buf.len() < header {
                return;
            }
            let at = header - 4;
            let len = u32::from_be_bytes(self.buf[at..at + 4].try_into().unwrap()) as usize;
            let total = at + len;
            if self.buf.len() < total {
                return;
            }
            if self.started {
                wire.record(self.buf[0]);
            } else {
                // 80877103 is SSLRequest (and 80877104 GSSENCRequest); anything else the
                // StartupMessage, after which every message is typed.
                let code = u32::from_be_bytes(self.buf[4..8].try_into().unwrap());
                self.started = !matches!(code, 80877103 | 80877104);
            }
            self.buf.drain(..total);
        }
    }
}

/// Listens on a local port and forwards every connection to `upstream`, counting what
/// clients send.
async fn proxy(upstream: (String, u16)) -> (u16, Wire) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let wire = Wire::default();
    let counted = wire.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect((upstream.0.as_str(), upstream.1)).await.unwrap();
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut server_rx, mut server_tx) = server.into_split();
            let wire = counted.clone();
            tokio::spawn(async move {
                let mut parser = Parser::default();
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                    parser.feed(&buf[..n], &wire);
                    if server_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
            });
        }
    });
    (port, wire)
}

/// A store whose one connection goes through the counting proxy.
async fn counted_store(pool: &PgPool) -> (PgCallStore, Wire) {
    let direct = options(pool);
    let (port, wire) = proxy((direct.get_host().to_owned(), direct.get_port())).await;
    let through = direct.host("127.0.0.1").port(port).ssl_mode(PgSslMode::Disable);
    // No ping before use: the test never idles that long.
    let settings = PgStoreOptions::default().max_connections(2).min_connections(0).ping_after_idle(Duration::MAX);
    let pool = settings.pool_options().max_connections(1).connect_with(through).await.expect("proxied pool");
    (PgCallStore::new(pool), wire)
}

fn on(call: &str, channel: i64, seq: i64, data: Payload) -> NewPacket {
    NewPacket::new(id(call), Packet::new(seq, data, seq as f64 * 0.02).unwrap().on_channel(channel).unwrap())
}

const ONE: Sent = Sent { round_trips: 1, executes: 1, queries: 0 };

#[sqlx::test(migrator = "pbx_store_postgres::MIGRATOR")]
async fn every_append_is_one_statement_in_one_round_trip(pool: PgPool) {
    let (store, wire) = counted_store(&pool).await;
    // The first use of a statement on a connection prepares it (one more round trip).
    append_ok(&store, &[packet("warm", 1)], at(0)).await;
    store.complete(&id("warm"), at(0)).await.unwrap();
    wire.take();

    // The counter sees round trips: a hang-up is a transaction of its own statements.
    append_ok(&store, &[packet("closed", 1)], at(1)).await;
    assert_eq!(wire.take(), ONE, "a new call");
    store.complete(&id("closed"), at(2)).await.unwrap();
    let hang_up = wire.take();
    assert!(hang_up.round_trips + hang_up.queries > 1, "a transaction is several round trips: {hang_up:?}");

    let audio = |b: u8| Payload::Audio(vec![b; 160].into());
    append_ok(&store, &[packet("a", 1), packet("a", 2), packet("b", 1)], at(3)).await;
    assert_eq!(wire.take(), ONE, "in order, new calls");
    append_ok(&store, &[packet("a", 3), packet("b", 2), packet("a", 4)], at(4)).await;
    assert_eq!(wire.take(), ONE, "in order, existing calls");

    let mixed = [
        packet("a", 9),               // gap
        packet("a", 6),               // late
        packet("a", 2),               // resent
        data_packet("a", 3, "other"), // conflict
        packet("closed", 2),          // closed call
        packet("c", 5),               // new call starting late
        on("a", 1, 1, audio(1)),      // the other channel
        on("a", 1, 1, audio(1)),      // resent within the batch
        on("a", 1, 1, audio(2)),      // conflict within the batch
        on("a", 1, 3, Payload::Text("x".into())),
        packet("a", 6), // resent within the batch
    ];
    let out = store.append(&mixed, at(5)).await.unwrap();
    assert_eq!(wire.take(), ONE, "a batch mixing every case");
    assert_eq!(out.iter().filter(|o| o.is_err()).count(), 3, "{out:?}");

    let big: Vec<NewPacket> =
        (0..1000).map(|i| on(&format!("big-{}", i % 10), (i / 10) % 2, 1 + i / 20, audio(7))).collect();
    append_ok(&store, &big, at(6)).await;
    assert_eq!(wire.take(), ONE, "1000 packets of 10 new calls on 2 channels");
    let late: Vec<NewPacket> = big.iter().rev().cloned().collect();
    let out = append_ok(&store, &late, at(7)).await;
    assert!(out.iter().all(|a| a.is_duplicate()));
    assert_eq!(wire.take(), ONE, "1000 resent packets");

    let snap = store.get(&id("big-3"), 10).await.unwrap();
    assert_eq!(snap.channel_ordering.len(), 2);
    assert_eq!(snap.channel_ordering[1].counters.received, 50);
    assert_eq!(snap.channel_ordering[1].counters.duplicates, 50);
}
