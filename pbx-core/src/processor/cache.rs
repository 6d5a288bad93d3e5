//! Transcripts kept between a failed sentiment step and the call's retry.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use crate::ai::Transcript;
use crate::id::CallId;
use crate::media::AudioStats;

/// Most transcripts kept for retries; beyond it, the oldest is dropped.
const TRANSCRIPT_CACHE_LIMIT: usize = 10_000;
/// How long a kept transcript stays: past it, a retry (long after, or of a call that
/// another process finished meanwhile) transcribes again.
const TRANSCRIPT_CACHE_TTL: Duration = Duration::from_secs(15 * 60);

/// A kept transcript, with what assembling the call's audio found.
pub(super) type CachedTranscript = (Transcript, AudioStats);

/// Transcripts kept between a failed sentiment step and the call's retry in this
/// process. An optimisation only: a retry elsewhere (another process, a restart)
/// transcribes again. Bounded by size and by age: entries expire after
/// [`TRANSCRIPT_CACHE_TTL`], and when full the oldest goes, so entries of calls that
/// finished elsewhere do not pile up and a full cache keeps caching.
#[derive(Debug, Default)]
pub(super) struct TranscriptCache(Mutex<TranscriptEntries>);

#[derive(Debug, Default)]
struct TranscriptEntries {
    by_call: HashMap<CallId, (tokio::time::Instant, CachedTranscript)>,
    /// Insertion order; may hold ids already taken (skipped when evicting).
    order: VecDeque<(tokio::time::Instant, CallId)>,
}

impl TranscriptCache {
    pub(super) fn take(&self, call_id: &CallId) -> Option<CachedTranscript> {
        let now = tokio::time::Instant::now();
        let mut entries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (at, cached) = entries.by_call.remove(call_id)?;
        (now.duration_since(at) < TRANSCRIPT_CACHE_TTL).then_some(cached)
    }

    pub(super) fn put(&self, call_id: &CallId, transcript: CachedTranscript) {
        let now = tokio::time::Instant::now();
        let mut entries = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let TranscriptEntries { by_call, order } = &mut *entries;
        // Drop what expired, and the oldest while full.
        while let Some((at, id)) = order.front() {
            let expired = now.duration_since(*at) >= TRANSCRIPT_CACHE_TTL;
            if !expired && by_call.len() < TRANSCRIPT_CACHE_LIMIT && order.len() < 2 * TRANSCRIPT_CACHE_LIMIT {
                break;
            }
            if by_call.get(id).is_some_and(|(inserted, _)| inserted == at) {
                by_call.remove(id);
            }
            order.pop_front();
        }
        by_call.insert(call_id.clone(), (now, transcript));
        order.push_back((now, call_id.clone()));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).by_call.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> CachedTranscript {
        (Transcript::text(text), AudioStats::default())
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_drops_its_oldest_and_keeps_caching() {
        let cache = TranscriptCache::default();
        for i in 0..TRANSCRIPT_CACHE_LIMIT + 5 {
            cache.put(&CallId::new(format!("c{i}")).unwrap(), entry("t"));
        }
        assert_eq!(cache.len(), TRANSCRIPT_CACHE_LIMIT);
        assert!(cache.take(&CallId::new("c0").unwrap()).is_none(), "the oldest went");
        let newest = CallId::new(format!("c{}", TRANSCRIPT_CACHE_LIMIT + 4)).unwrap();
        assert_eq!(cache.take(&newest).map(|(t, _)| t.text), Some("t".to_owned()), "the newest is kept");
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_by_age() {
        let cache = TranscriptCache::default();
        let (old, fresh) = (CallId::new("old").unwrap(), CallId::new("fresh").unwrap());
        cache.put(&old, entry("old"));
        tokio::time::advance(TRANSCRIPT_CACHE_TTL).await;
        cache.put(&fresh, entry("fresh"));
        assert_eq!(cache.len(), 1, "putting drops what expired");
        assert!(cache.take(&old).is_none());
        assert!(cache.take(&fresh).is_some());
        cache.put(&fresh, entry("again"));
        tokio::time::advance(TRANSCRIPT_CACHE_TTL).await;
        assert!(cache.take(&fresh).is_none(), "an expired entry is not handed out");
    }
}
