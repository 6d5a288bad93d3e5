//! A call's recording, streamed: a WAV header whose length is known up front, then the
//! PCM slot by slot, reading the store a page at a time, so a long call is never held
//! whole in memory.

use std::collections::VecDeque;
use std::sync::Arc;

use super::GatewayError;
use crate::id::CallId;
use crate::media::assemble::{Assembler, check_length, default_frame_samples, learn_frame_samples};
use crate::media::wav::{WAV_HEADER_LEN, extend_le, wav_header};
use crate::media::{AssembleError, MediaFormat};
use crate::packet::{Payload, StoredPacket};
use crate::store::{CallSnapshot, CallStore, MAX_LIST_LIMIT};

/// Packets read from the store per page.
const PAGE: usize = 500;
/// Frame slots assembled per chunk handed to the caller.
const SLOTS_PER_CHUNK: u64 = 250;

/// One track's read position.
#[derive(Debug, Default)]
struct Track {
    buffered: VecDeque<StoredPacket>,
    /// The highest sequence read from the store so far.
    read_up_to: u64,
    /// No more packets above `read_up_to`.
    exhausted: bool,
}

/// A call's recording as a RIFF WAV (PCM 16-bit, the call's rate; one channel per
/// track, or the format's channels for a single track), produced chunk by chunk.
pub struct Recording {
    store: Arc<dyn CallStore>,
    call_id: CallId,
    format: MediaFormat,
    assembler: Assembler,
    tracks: Vec<Track>,
    highest: u64,
    next_sequence: u64,
    header: Option<[u8; WAV_HEADER_LEN]>,
    content_length: u64,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("call_id", &self.call_id)
            .field("format", &self.format)
            .field("highest", &self.highest)
            .field("next_sequence", &self.next_sequence)
            .finish_non_exhaustive()
    }
}

impl Recording {
    pub(super) async fn open(
        store: Arc<dyn CallStore>,
        snapshot: CallSnapshot,
        format: MediaFormat,
    ) -> Result<Self, GatewayError> {
        let call_id = snapshot.call_id.clone();
        let highest = snapshot.channel_ordering.iter().map(|o| o.counters.highest).max().unwrap_or(0);
        if highest == 0 {
            return Err(GatewayError::NoAudio { call_id });
        }
        let track_count = snapshot.channel_ordering.len().clamp(1, 2);
        let mut tracks: Vec<Track> = (0..track_count).map(|_| Track::default()).collect();
        // The first page of every track, from which the frame length is learned.
        for (channel, track) in tracks.iter_mut().enumerate() {
            fill(&*store, &call_id, channel as u8, track).await?;
        }
        let first = tracks.iter().flat_map(|t| t.buffered.iter().map(|p| &p.data));
        let frame_samples =
            learn_frame_samples(format, track_count as u8, first).unwrap_or(default_frame_samples(format));
        check_length(format, highest, frame_samples)?;
        let assembler = Assembler::new(format, track_count as u8, frame_samples);
        let data_len = highest * assembler.slot_bytes() as u64;
        let header = wav_header(format.sample_rate(), assembler.output_channels(), data_len).map_err(|_| {
            AssembleError::TooLong { highest, frame_samples, max_seconds: crate::media::assemble::MAX_AUDIO_SECONDS }
        })?;
        Ok(Self {
            store,
            call_id,
            format,
            assembler,
            tracks,
            highest,
            next_sequence: 1,
            header: Some(header),
            content_length: WAV_HEADER_LEN as u64 + data_len,
        })
    }

    /// Bytes of the whole file, header included.
    pub fn content_length(&self) -> u64 {
        self.content_length
    }

    /// Channels of the WAV.
    pub fn channels(&self) -> u8 {
        self.assembler.output_channels()
    }

    /// Samples per second.
    pub fn sample_rate(&self) -> u32 {
        self.format.sample_rate()
    }

    /// The call.
    pub fn call_id(&self) -> &CallId {
        &self.call_id
    }

    /// What the slots assembled so far held (complete once the last chunk is out).
    pub fn stats(&self) -> crate::media::AudioStats {
        self.assembler.stats()
    }

    /// The next chunk of the file (the header first); `None` once all of it is out.
    /// The chunks add up to exactly [`Recording::content_length`] bytes.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, GatewayError> {
        if let Some(header) = self.header.take() {
            return Ok(Some(header.to_vec()));
        }
        if self.next_sequence > self.highest {
            return Ok(None);
        }
        let last = self.highest.min(self.next_sequence + SLOTS_PER_CHUNK - 1);
        let mut samples =
            Vec::with_capacity(self.assembler.slot_bytes() / 2 * (last - self.next_sequence + 1) as usize);
        let mut slot: Vec<Option<Payload>> = vec![None; self.tracks.len()];
        for sequence in self.next_sequence..=last {
            for (channel, track) in self.tracks.iter_mut().enumerate() {
                while let Some(front) = track.buffered.front()
                    && front.sequence < sequence
                {
                    track.buffered.pop_front();
                }
                if track.buffered.is_empty() && !track.exhausted {
                    fill(&*self.store, &self.call_id, channel as u8, track).await?;
                }
                slot[channel] = track.buffered.front().filter(|p| p.sequence == sequence).map(|p| p.data.clone());
            }
            let refs: Vec<Option<&Payload>> = slot.iter().map(Option::as_ref).collect();
            self.assembler.push_slot(&refs, &mut samples);
        }
        self.next_sequence = last + 1;
        let mut bytes = Vec::with_capacity(samples.len() * 2);
        extend_le(&mut bytes, &samples);
        Ok(Some(bytes))
    }
}

/// Reads a track's next page.
async fn fill(store: &dyn CallStore, call_id: &CallId, channel: u8, track: &mut Track) -> Result<(), GatewayError> {
    let page = store.packet_page(call_id, channel, track.read_up_to, PAGE.min(MAX_LIST_LIMIT)).await?;
    track.exhausted = page.len() < PAGE;
    if let Some(last) = page.last() {
        track.read_up_to = last.sequence;
    }
    track.buffered.extend(page);
    Ok(())
}
