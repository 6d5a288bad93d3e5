//! Listing: byte-order cursor pagination, state filter, limits.

use std::sync::Arc;

use super::*;
use crate::store::{ListQuery, MAX_LIST_LIMIT, StoreError};

/// Ids chosen so that byte order differs from case-insensitive or locale order:
/// `-` < `.` < digits < `:` < upper case < `_` < lower case.
const IDS: [&str; 13] = ["b", "B", "_x", "a-1", "a.1", "a1", "a:1", "A1", "-z", "zz", "Z", "a10", "a2"];

async fn pages(s: &dyn CallStore, state: Option<CallState>, limit: usize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = s.list(&ListQuery { state, limit, after: after.clone() }).await.expect("list");
        assert!(page.calls.len() <= limit);
        for c in &page.calls {
            if let Some(st) = state {
                assert_eq!(c.state, st);
            }
        }
        let ids: Vec<String> = page.calls.iter().map(|c| c.call_id.as_str().to_owned()).collect();
        if page.calls.len() == limit {
            assert_eq!(page.next.as_ref(), page.calls.last().map(|c| &c.call_id), "a full page points on");
        } else {
            assert_eq!(page.next, None, "a short page is the last");
        }
        out.push(ids);
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
        assert!(out.len() < 100, "pagination does not end");
    }
}

/// Pages walk every call once, ascending in byte order, `next` set exactly on full
/// pages; the state filter applies before the limit; summaries carry the call's
/// counters and state.
pub async fn list_pages_in_byte_order_with_state_filter(store: Arc<dyn CallStore>) {
    let s = &*store;
    for (i, name) in IDS.iter().enumerate() {
        append_seqs(s, &id(name), &[1, 3], at(i as i64)).await;
        if i % 3 == 0 {
            s.complete(&id(name), at(100)).await.expect("complete");
        }
    }
    let mut sorted: Vec<String> = IDS.iter().map(|s| s.to_string()).collect();
    sorted.sort_unstable(); // String's Ord is byte order.

    let walked = pages(s, None, 4).await;
    assert_eq!(walked.len(), 4, "13 calls in pages of 4: {walked:?}");
    assert_eq!(walked.concat(), sorted);
    // Exactly divisible: the last full page still points on, and the next is empty.
    let walked = pages(s, None, 13).await;
    assert_eq!(walked, vec![sorted.clone(), vec![]]);
    let walked = pages(s, None, MAX_LIST_LIMIT).await;
    assert_eq!(walked, vec![sorted.clone()]);

    let completed: Vec<String> =
        sorted.iter().filter(|n| IDS.iter().position(|i| i == n).is_some_and(|p| p % 3 == 0)).cloned().collect();
    assert_eq!(completed.len(), 5);
    assert_eq!(pages(s, Some(CallState::Completed), 2).await.concat(), completed);
    let in_progress: Vec<String> = sorted.iter().filter(|n| !completed.contains(n)).cloned().collect();
    assert_eq!(pages(s, Some(CallState::InProgress), 3).await.concat(), in_progress);
    assert_eq!(pages(s, Some(CallState::Archived), 3).await, vec![Vec::<String>::new()]);

    // A cursor need not name an existing call.
    let page = s.list(&ListQuery { state: None, limit: 100, after: Some(id("a3")) }).await.expect("list");
    let expect: Vec<&String> = sorted.iter().filter(|n| n.as_str() > "a3").collect();
    assert_eq!(page.calls.iter().map(|c| c.call_id.as_str()).collect::<Vec<_>>(), expect);

    let page = s.list(&ListQuery { state: None, limit: 1, after: None }).await.expect("list");
    let first = &page.calls[0];
    assert_eq!(first.call_id, id("-z"));
    assert_eq!((first.counters.received, first.counters.highest, first.attempts), (2, 3, 0));
    assert_eq!(first.state, CallState::InProgress);
    assert_eq!(first.updated_at, at(8));
}

/// A limit of 0 or above [`MAX_LIST_LIMIT`] is `InvalidArgument`.
pub async fn list_refuses_invalid_limits(store: Arc<dyn CallStore>) {
    let s = &*store;
    append_seqs(s, &id("a"), &[1], at(0)).await;
    for limit in [0, MAX_LIST_LIMIT + 1, usize::MAX] {
        let r = s.list(&ListQuery { state: None, limit, after: None }).await;
        assert!(matches!(r, Err(StoreError::InvalidArgument(_))), "limit {limit}: {r:?}");
    }
}

/// Calls per state, for operators' gauges.
pub async fn count_by_state_counts_every_call(store: Arc<dyn CallStore>) {
    let s = &*store;
    assert!(s.count_by_state().await.expect("count").iter().all(|(_, n)| *n == 0), "an empty store");
    for name in ["a", "b", "c"] {
        append_seqs(s, &id(name), &[1], at(0)).await;
    }
    s.complete(&id("c"), at(1)).await.expect("complete");
    let mut counts: Vec<(CallState, u64)> =
        s.count_by_state().await.expect("count").into_iter().filter(|(_, n)| *n > 0).collect();
    counts.sort_by_key(|(state, _)| state.as_str());
    assert_eq!(counts, vec![(CallState::Completed, 1), (CallState::InProgress, 2)]);
}
