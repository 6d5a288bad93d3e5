//! Stream notes ([`crate::media::notes`]): kept in order, bounded, refused for an
//! unknown call, and kept when the packets are swept.

use std::sync::Arc;

use super::*;
use crate::media::notes::{
    MAX_NOTE_BYTES, MAX_SIGNALS_PER_CALL, SignalKind, StreamInfo, StreamNote, StreamParticipant, StreamSignal,
};

fn info(stream_id: &str, started: i64) -> StreamInfo {
    StreamInfo {
        protocol: "audiohook".into(),
        stream_id: Some(stream_id.into()),
        account: Some("org-1".into()),
        conversation_id: Some("conv-1".into()),
        participant: Some(StreamParticipant {
            id: "p-1".into(),
            ani: "tel:+15551234567".into(),
            ani_name: "Caller".into(),
            dnis: "tel:+18005550100".into(),
        }),
        language: Some("en-US".into()),
        custom_parameters: vec![("queue".into(), "billing".into())],
        tracks: vec!["inbound".into(), "outbound".into()],
        start_offset_ms: 0,
        started_at: at(started),
    }
}

fn signal(kind: SignalKind, value: &str, offset_ms: u64, when: i64) -> StreamSignal {
    StreamSignal { kind, value: value.into(), offset_ms, stream_id: Some("s-1".into()), at: at(when) }
}

/// Notes come back in the order written, split into streams and signals; an unknown
/// call, an oversized note and a note beyond the per-call count are refused, storing
/// nothing; a packets sweep keeps them.
pub async fn stream_notes_are_kept_in_order_bounded_and_survive_a_sweep(store: Arc<dyn CallStore>) {
    let s = &*store;
    let nobody = StreamNote::Started(Box::new(info("s-0", 0)));
    assert!(matches!(s.note_stream(&id("no-such-call"), &nobody, at(0)).await, Err(StoreError::NotFound { .. })));

    let call = call_in_state(s, "notes-1", CallState::Archived).await;
    let (first, again) = (info("s-1", 30), info("s-2", 60));
    let (digit, mark) = (signal(SignalKind::Dtmf, "5", 1_200, 40), signal(SignalKind::Mark, "greeting", 2_000, 50));
    s.note_stream(&call, &StreamNote::Started(Box::new(first.clone())), at(30)).await.expect("stream");
    s.note_stream(&call, &StreamNote::Signal(digit.clone()), at(40)).await.expect("dtmf");
    s.note_stream(&call, &StreamNote::Signal(mark.clone()), at(50)).await.expect("mark");
    s.note_stream(&call, &StreamNote::Started(Box::new(again.clone())), at(60)).await.expect("reconnect");
    let snap = snapshot(s, &call).await;
    assert_eq!(snap.streams, vec![first.clone(), again.clone()]);
    assert_eq!(snap.signals, vec![digit.clone(), mark.clone()]);
    assert_eq!(snap.updated_at, at(60));

    let mut huge = info("s-3", 70);
    huge.custom_parameters = vec![("blob".into(), "x".repeat(MAX_NOTE_BYTES))];
    let refused = s.note_stream(&call, &StreamNote::Started(Box::new(huge)), at(70)).await;
    assert!(matches!(refused, Err(StoreError::InvalidArgument(_))), "{refused:?}");
    assert_eq!(snapshot(s, &call).await.streams.len(), 2, "nothing stored");

    for n in 2..MAX_SIGNALS_PER_CALL {
        let note = StreamNote::Signal(signal(SignalKind::Dtmf, "1", n as u64, 80));
        s.note_stream(&call, &note, at(80)).await.expect("within the bound");
    }
    let over = StreamNote::Signal(signal(SignalKind::Dtmf, "9", 0, 90));
    assert!(matches!(s.note_stream(&call, &over, at(90)).await, Err(StoreError::InvalidArgument(_))));
    let snap = snapshot(s, &call).await;
    assert_eq!(snap.signals.len(), MAX_SIGNALS_PER_CALL);
    assert_eq!(snap.signals[..2], [digit, mark]);

    s.sweep_packets(at(1_000), 10, at(1_000)).await.expect("sweep");
    let swept = snapshot(s, &call).await;
    assert!(swept.packets_swept.is_some());
    assert_eq!((swept.streams.len(), swept.signals.len()), (2, MAX_SIGNALS_PER_CALL), "notes outlive the packets");
}
