//! Packets: duplicates, conflicts, ordering accounting, read-back order.

use std::sync::Arc;

use super::*;
use crate::media::MediaFormat;
use crate::ordering::{OrderingCounters, PacketOrder, SeqRange};
use crate::packet::StoredPacket;
use crate::store::{Appended, Opened, PacketRejection, StoreError};

fn ok(order: PacketOrder) -> PacketOutcome {
    Ok(Appended { order, created_call: false })
}

/// The same sequence with the same data is an accepted duplicate (counted, not stored
/// again); with different data it is a `Conflict`, counts nothing, and the first data is
/// kept.
pub async fn duplicates_and_conflicts(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = id("call-a");
    append_seqs(s, &call, &[1, 2], at(0)).await;
    assert_eq!(append_one(s, &call, 1, &data(1), at(10)).await, ok(PacketOrder::Duplicate));
    let conflict = append_one(s, &call, 2, "different", at(20)).await;
    assert_eq!(conflict, Err(PacketRejection::Conflict { call_id: call.clone(), sequence: 2 }));
    let snap = snapshot(s, &call).await;
    assert_eq!(snap.ordering.counters, OrderingCounters { received: 2, highest: 2, duplicates: 1, out_of_order: 0 });
    assert_eq!(snap.last_packet_at, at(0), "neither a duplicate nor a conflict stores a packet");
    let packets = s.packets(&call).await.expect("packets");
    assert_eq!(packets.len(), 2);
    assert_eq!((&packets[0].data, &packets[1].data), (&Payload::from(data(1)), &Payload::from(data(2))));
    assert_eq!(packets[1].received_at, at(0), "the first copy is kept");
}

/// Within one batch, packets are classified in input order: a repeat of an earlier
/// packet of the same batch is a duplicate (same data) or a conflict (different data),
/// and the first data is kept. Only the creating packet says `created_call`.
pub async fn duplicates_and_conflicts_within_one_batch(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = id("call-a");
    let batch = [
        new_packet(&call, 1, "one"),
        new_packet(&call, 1, "one"),
        new_packet(&call, 1, "uno"),
        new_packet(&call, 3, "three"),
        new_packet(&call, 3, "tres"),
        new_packet(&call, 2, "two"),
        new_packet(&call, 2, "two"),
    ];
    let out = s.append(&batch, at(0)).await.expect("append");
    let conflict = |sequence| Err(PacketRejection::Conflict { call_id: call.clone(), sequence });
    assert_eq!(
        out,
        vec![
            Ok(Appended { order: PacketOrder::InOrder, created_call: true }),
            ok(PacketOrder::Duplicate),
            conflict(1),
            ok(PacketOrder::Gap { missing: SeqRange { first: 2, last: 2 } }),
            conflict(3),
            ok(PacketOrder::OutOfOrder),
            ok(PacketOrder::Duplicate),
        ]
    );
    let packets = s.packets(&call).await.expect("packets");
    let got: Vec<(u64, String)> = packets.iter().map(|p| (p.sequence, p.data.to_base64_or_text())).collect();
    assert_eq!(got, vec![(1, "one".to_owned()), (2, "two".to_owned()), (3, "three".to_owned())]);
    let counters = snapshot(s, &call).await.ordering.counters;
    assert_eq!(counters, OrderingCounters { received: 3, highest: 3, duplicates: 2, out_of_order: 1 });
}

/// A batch may mix calls: outcomes come back in input order, each call's packets are
/// classified in their input order, and each call is created exactly once.
pub async fn batch_for_many_calls_answers_in_input_order(store: Arc<dyn CallStore>) {
    let s = &*store;
    let (a, b) = (id("a"), id("b"));
    let batch = [
        new_packet(&a, 1, "a1"),
        new_packet(&b, 2, "b2"),
        new_packet(&a, 2, "a2"),
        new_packet(&b, 1, "b1"),
        new_packet(&a, 2, "a2"),
    ];
    let out = s.append(&batch, at(0)).await.expect("append");
    assert_eq!(
        out,
        vec![
            Ok(Appended { order: PacketOrder::InOrder, created_call: true }),
            Ok(Appended { order: PacketOrder::Gap { missing: SeqRange { first: 1, last: 1 } }, created_call: true }),
            ok(PacketOrder::InOrder),
            ok(PacketOrder::OutOfOrder),
            ok(PacketOrder::Duplicate),
        ]
    );
    assert_eq!(snapshot(s, &a).await.ordering.counters.duplicates, 1);
    assert_eq!(snapshot(s, &b).await.ordering.counters.out_of_order, 1);
    // An existing call is never "created" again.
    let out = s.append(&[new_packet(&a, 3, "a3"), new_packet(&id("c"), 1, "c1")], at(1)).await.expect("append");
    assert_eq!(out[0], ok(PacketOrder::InOrder));
    assert_eq!(out[1], Ok(Appended { order: PacketOrder::InOrder, created_call: true }));
}

/// Gaps report the skipped range, late packets are out-of-order, and the snapshot's
/// missing ranges are exactly the holes below the highest sequence.
pub async fn out_of_order_and_gaps_with_exact_ranges(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = id("call-a");
    let steps: [(u64, PacketOrder); 7] = [
        (1, PacketOrder::InOrder),
        (2, PacketOrder::InOrder),
        (5, PacketOrder::Gap { missing: SeqRange { first: 3, last: 4 } }),
        (3, PacketOrder::OutOfOrder),
        (10, PacketOrder::Gap { missing: SeqRange { first: 6, last: 9 } }),
        (11, PacketOrder::InOrder),
        (8, PacketOrder::OutOfOrder),
    ];
    for (i, (seq, order)) in steps.into_iter().enumerate() {
        let out = append_one(s, &call, seq, &data(seq), at(i as i64)).await.expect("accepted");
        assert_eq!(out.order, order, "sequence {seq}");
    }
    let snap = snapshot(s, &call).await;
    let c = snap.ordering.counters;
    assert_eq!(c, OrderingCounters { received: 7, highest: 11, duplicates: 0, out_of_order: 2 });
    assert_eq!(c.missing(), 4);
    assert_eq!(
        snap.ordering.missing_ranges,
        vec![SeqRange { first: 4, last: 4 }, SeqRange { first: 6, last: 7 }, SeqRange { first: 9, last: 9 }]
    );
    assert!(!snap.ordering.missing_ranges_truncated);
    // A call that starts late misses its beginning.
    let late = id("call-b");
    let out = append_one(s, &late, 3, "x", at(0)).await;
    assert_eq!(
        out,
        Ok(Appended { order: PacketOrder::Gap { missing: SeqRange { first: 1, last: 2 } }, created_call: true })
    );
    assert_eq!(snapshot(s, &late).await.ordering.missing_ranges, vec![SeqRange { first: 1, last: 2 }]);
}

/// A jump from 5 to 2^62 is one gap, reported exactly, and the largest sequence
/// (i64::MAX) is stored and read back.
pub async fn huge_gap_is_reported_exactly(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = id("call-a");
    append_seqs(s, &call, &[1, 2, 3, 4, 5], at(0)).await;
    let huge = 1u64 << 62;
    let out = append_one(s, &call, huge, "far", at(1)).await.expect("accepted");
    assert_eq!(out.order, PacketOrder::Gap { missing: SeqRange { first: 6, last: huge - 1 } });
    let snap = snapshot(s, &call).await;
    assert_eq!(snap.ordering.counters, OrderingCounters { received: 6, highest: huge, duplicates: 0, out_of_order: 0 });
    assert_eq!(snap.ordering.counters.missing(), huge - 6);
    assert_eq!(snap.ordering.missing_ranges, vec![SeqRange { first: 6, last: huge - 1 }]);
    let max = i64::MAX as u64;
    let out = append_one(s, &call, max, "last", at(2)).await.expect("accepted");
    assert_eq!(out.order, PacketOrder::Gap { missing: SeqRange { first: huge + 1, last: max - 1 } });
    let seqs: Vec<u64> = s.packets(&call).await.expect("packets").iter().map(|p| p.sequence).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, huge, max]);
}

/// `get(_, max)` lists the lowest `max` missing ranges and says when there are more.
pub async fn missing_ranges_are_truncated(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = id("call-a");
    append_seqs(s, &call, &[2, 4, 6, 8, 10], at(0)).await;
    let range = |n| SeqRange { first: n, last: n };
    let all: Vec<SeqRange> = [1, 3, 5, 7, 9].into_iter().map(range).collect();
    let cases: [(usize, usize, bool); 5] = [(0, 0, true), (2, 2, true), (4, 4, true), (5, 5, false), (50, 5, false)];
    for (max, len, truncated) in cases {
        let snap = s.get(&call, max).await.expect("get");
        assert_eq!(snap.ordering.missing_ranges, all[..len].to_vec(), "max {max}");
        assert_eq!(snap.ordering.missing_ranges_truncated, truncated, "max {max}");
    }
    // No gap: nothing listed, nothing truncated, even with a cap of 0.
    let full = id("call-b");
    append_seqs(s, &full, &[1, 2, 3], at(0)).await;
    let snap = s.get(&full, 0).await.expect("get");
    assert!(snap.ordering.missing_ranges.is_empty());
    assert!(!snap.ordering.missing_ranges_truncated);
}

/// `packets()` returns every stored packet ascending by sequence, whatever the arrival
/// order, with its data, timestamp and arrival time.
pub async fn packets_come_back_in_sequence_order(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = id("call-a");
    for (i, seq) in [5u64, 3, 1, 4, 2].into_iter().enumerate() {
        append_one(s, &call, seq, &data(seq), at(i as i64 * 10)).await.expect("accepted");
    }
    let packets = s.packets(&call).await.expect("packets");
    let got: Vec<(u64, String, f64, DateTime<Utc>)> =
        packets.into_iter().map(|p| (p.sequence, p.data.to_base64_or_text(), p.timestamp, p.received_at)).collect();
    let expect: Vec<_> = [(1u64, 20i64), (2, 40), (3, 10), (4, 30), (5, 0)]
        .into_iter()
        .map(|(seq, ms)| (seq, data(seq), seq as f64 * 0.02, at(ms)))
        .collect();
    assert_eq!(got, expect);
}

/// Channel 0 and channel 1 each count from 1: same sequences, no collision, their own
/// counters and missing ranges.
pub async fn channels_have_their_own_sequence_spaces(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = id("call-stereo");
    let batch = vec![
        new_packet_on(&call, 0, 1, Payload::Audio(vec![1u8; 160].into())),
        new_packet_on(&call, 1, 1, Payload::Audio(vec![2u8; 160].into())),
        new_packet_on(&call, 1, 3, Payload::Audio(vec![3u8; 160].into())),
        new_packet_on(&call, 0, 2, Payload::Audio(vec![4u8; 160].into())),
        new_packet_on(&call, 1, 1, Payload::Audio(vec![2u8; 160].into())),
        new_packet_on(&call, 1, 2, Payload::Audio(vec![5u8; 160].into())),
    ];
    let out = s.append(&batch, at(0)).await.expect("append");
    assert_eq!(
        out,
        vec![
            Ok(Appended { order: PacketOrder::InOrder, created_call: true }),
            Ok(Appended { order: PacketOrder::InOrder, created_call: false }),
            Ok(Appended { order: PacketOrder::Gap { missing: SeqRange { first: 2, last: 2 } }, created_call: false }),
            Ok(Appended { order: PacketOrder::InOrder, created_call: false }),
            Ok(Appended { order: PacketOrder::Duplicate, created_call: false }),
            Ok(Appended { order: PacketOrder::OutOfOrder, created_call: false }),
        ]
    );
    let snap = snapshot(s, &call).await;
    assert_eq!(snap.channel_ordering.len(), 2);
    assert_eq!(snap.ordering, snap.channel_ordering[0]);
    assert_eq!(
        snap.channel_ordering[0].counters,
        OrderingCounters { received: 2, highest: 2, duplicates: 0, out_of_order: 0 }
    );
    assert_eq!(
        snap.channel_ordering[1].counters,
        OrderingCounters { received: 3, highest: 3, duplicates: 1, out_of_order: 1 }
    );
    assert!(snap.channel_ordering[1].missing_ranges.is_empty());
    let packets = s.packets(&call).await.expect("packets");
    let keys: Vec<(u8, u64)> = packets.iter().map(|p| (p.channel, p.sequence)).collect();
    assert_eq!(keys, vec![(0, 1), (0, 2), (1, 1), (1, 2), (1, 3)], "ascending by channel, then sequence");
    assert_eq!(packets[2].data, Payload::Audio(vec![2u8; 160].into()));
    // A mono call lists one channel.
    let mono = id("call-mono");
    append_seqs(s, &mono, &[1, 3], at(0)).await;
    let snap = snapshot(s, &mono).await;
    assert_eq!(snap.channel_ordering.len(), 1);
    assert_eq!(snap.channel_ordering[0].missing_ranges, vec![SeqRange { first: 2, last: 2 }]);
}

/// Audio bytes and a text payload with the same bytes are different payloads: each
/// reads back as it was sent, and one resent as the other is a conflict.
pub async fn text_and_audio_payloads_are_kept_apart(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = id("call-kinds");
    let text = Payload::Text("audio_chunk_1".into());
    let audio = Payload::Audio("audio_chunk_1".into());
    let binary = Payload::Audio(vec![0u8, 255, 127, 128, 0].into());
    let empty = Payload::Audio(Vec::new().into());
    let batch = vec![
        new_packet_on(&call, 0, 1, text.clone()),
        new_packet_on(&call, 0, 2, binary.clone()),
        new_packet_on(&call, 0, 3, empty.clone()),
    ];
    assert!(s.append(&batch, at(0)).await.expect("append").iter().all(Result::is_ok));
    let resent = s.append(&[new_packet_on(&call, 0, 1, audio)], at(1)).await.expect("append");
    assert_eq!(resent, vec![Err(PacketRejection::Conflict { call_id: call.clone(), sequence: 1 })]);
    let again = s.append(&[new_packet_on(&call, 0, 2, binary.clone())], at(2)).await.expect("append");
    assert_eq!(again, vec![Ok(Appended { order: PacketOrder::Duplicate, created_call: false })]);
    let packets = s.packets(&call).await.expect("packets");
    let got: Vec<&Payload> = packets.iter().map(|p| &p.data).collect();
    assert_eq!(got, vec![&text, &binary, &empty]);
}

/// The first declared format stays; the same one again is a no-op, another refused.
pub async fn open_declares_the_media_format_once(store: Arc<dyn CallStore>) {
    let s = &*store;
    let stereo: MediaFormat = "l16/16000/2".parse().expect("format");
    let call = id("call-open");
    let opened = s.open(&call, stereo, at(0)).await.expect("open");
    assert_eq!(opened, Opened { created: true, state: CallState::InProgress });
    let snap = snapshot(s, &call).await;
    assert_eq!(snap.media_format, Some(stereo));
    assert_eq!(snap.state, CallState::InProgress);
    assert_eq!(snap.ordering.counters, OrderingCounters::default());
    assert_eq!(
        s.open(&call, stereo, at(1)).await.expect("again"),
        Opened { created: false, state: CallState::InProgress }
    );
    let refused = s.open(&call, MediaFormat::TELEPHONY, at(2)).await;
    assert!(
        matches!(refused, Err(StoreError::FormatConflict { declared, requested, .. })
        if declared == stereo && requested == MediaFormat::TELEPHONY),
        "{refused:?}"
    );
    // Its first packet does not create it again.
    assert_eq!(
        append_one(s, &call, 1, &data(1), at(3)).await,
        Ok(Appended { order: PacketOrder::InOrder, created_call: false })
    );
    // A call created by its packets takes the first format declared later.
    let implicit = id("call-implicit");
    append_seqs(s, &implicit, &[1], at(0)).await;
    assert_eq!(snapshot(s, &implicit).await.media_format, None);
    assert_eq!(
        s.open(&implicit, stereo, at(1)).await.expect("open"),
        Opened { created: false, state: CallState::InProgress }
    );
    assert_eq!(snapshot(s, &implicit).await.media_format, Some(stereo));
    // A closed call can be opened (a reconnecting stream); its state says so.
    s.complete(&implicit, at(2)).await.expect("complete");
    assert_eq!(
        s.open(&implicit, stereo, at(3)).await.expect("open"),
        Opened { created: false, state: CallState::Completed }
    );
}

/// Pages read one channel, ascending, above a cursor.
pub async fn packet_pages_read_one_channel_in_order(store: Arc<dyn CallStore>) {
    let s = &*store;
    let call = id("call-pages");
    let mut batch: Vec<NewPacket> = [5u64, 1, 3, 2, 4].iter().map(|&q| new_packet(&call, q, &data(q))).collect();
    batch.push(new_packet_on(&call, 1, 2, Payload::Text("right".into())));
    assert!(s.append(&batch, at(0)).await.expect("append").iter().all(Result::is_ok));
    let seqs = |page: Vec<StoredPacket>| page.into_iter().map(|p| (p.channel, p.sequence)).collect::<Vec<_>>();
    assert_eq!(seqs(s.packet_page(&call, 0, 0, 2).await.expect("page")), vec![(0, 1), (0, 2)]);
    assert_eq!(seqs(s.packet_page(&call, 0, 2, 10).await.expect("page")), vec![(0, 3), (0, 4), (0, 5)]);
    assert_eq!(seqs(s.packet_page(&call, 0, 5, 10).await.expect("page")), vec![]);
    assert_eq!(seqs(s.packet_page(&call, 1, 0, 10).await.expect("page")), vec![(1, 2)]);
    assert!(matches!(s.packet_page(&id("nobody"), 0, 0, 10).await, Err(StoreError::NotFound { .. })));
}
