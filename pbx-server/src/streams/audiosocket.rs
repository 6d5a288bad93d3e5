//! Asterisk AudioSocket over TCP: one task per connection, driving a
//! [`AudioSocketSession`].
//!
//! Point Asterisk at it from the dialplan (the UUID names the call in pbx):
//!
//! ```text
//! exten => 100,1,Answer()
//!  same => n,AudioSocket(${UUID()},pbx.example.com:9092)
//! ```
//!
//! or as a channel, to choose the rate: `Dial(AudioSocket/pbx.example.com:9092/${UUID()}/c(slin16))`.
//!
//! The connection's end on a frame boundary (how Asterisk hangs up) or a `0x00` frame
//! completes the call at once. A connection that breaks (mid-frame, a reset, a read
//! error) or stays silent for the stream idle timeout is a drop: its call completes
//! after the idle timeout unless the same UUID connects again meanwhile. A protocol
//! error (96 or 192 kHz audio, a rate change, audio before the UUID...) is logged and
//! the connection closed; pbx never sends Asterisk a hang-up, so the phone call goes on.

use std::future::Future;
use std::net::SocketAddr;

use pbx_core::media::audiosocket::AudioSocketSession;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Streams;
use super::driver::{Flow, StreamDriver};

/// Serves AudioSocket connections from `listener` until `shutdown` resolves; then stops
/// accepting, ends the open connections (their calls complete as dropped streams) and
/// returns once their queued frames are stored.
pub async fn serve(listener: TcpListener, streams: Streams, shutdown: impl Future<Output = ()> + Send) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "AudioSocket: listening");
    }
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, addr)) => {
                    let _ = socket.set_nodelay(true);
                    tasks.spawn(connection(socket, addr, streams.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "AudioSocket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

async fn connection(mut socket: TcpStream, addr: SocketAddr, streams: Streams, mut stop: watch::Receiver<bool>) {
    let idle = streams.config().stream_idle_timeout;
    let mut driver = StreamDriver::new(streams, "audiosocket", addr.to_string());
    let mut session = AudioSocketSession::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = tokio::time::timeout(idle, socket.read(&mut buf)) => read,
            _ = stop.changed() => break,
        };
        let result = match read {
            Err(_) => {
                tracing::warn!(peer = %addr, call_id = ?driver.call_id(), ?idle, "AudioSocket: no data for the idle timeout; closing");
                break;
            }
            Ok(Err(e)) => {
                tracing::warn!(peer = %addr, call_id = ?driver.call_id(), error = %e, "AudioSocket: read failed");
                break;
            }
            Ok(Ok(0)) => session.finish(),
            Ok(Ok(n)) => session.receive(&buf[..n]),
        };
        match result {
            Ok(actions) => match driver.apply(actions).await {
                Ok(Flow::Continue) if !session.is_ended() => {}
                Ok(_) => break,
                Err(_) => break,
            },
            Err(error) => {
                driver.protocol_error(&error);
                break;
            }
        }
    }
    drop(socket);
    driver.finish().await;
}
