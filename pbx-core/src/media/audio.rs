//! Decoded audio: what assembly produces and what the recording and the AI consume.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What assembling a call's frames found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AudioStats {
    /// Frame slots assembled, per track: sequences 1 ..= the highest received.
    pub frames: u64,
    /// Slots with no frame (a missing sequence), played as silence.
    pub gaps: u64,
    /// Frames that could not be decoded (text payloads, a size that is not a whole
    /// number of samples), played as silence.
    pub undecodable: u64,
    /// Frames longer or shorter than the call's frame length, cut or padded to it.
    pub resized: u64,
}

impl AudioStats {
    /// Adds another track's figures.
    pub fn merge(&mut self, other: AudioStats) {
        self.frames += other.frames;
        self.gaps += other.gaps;
        self.undecodable += other.undecodable;
        self.resized += other.resized;
    }
}

/// 16-bit PCM audio, channels interleaved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PcmAudio {
    /// Samples per second of one channel.
    pub sample_rate: u32,
    /// 1 or 2.
    pub channels: u8,
    /// Samples of one channel in one frame slot (e.g. 160 for 20 ms at 8 kHz).
    pub frame_samples: usize,
    /// Interleaved samples: `samples.len()` is a multiple of `channels`.
    pub samples: Vec<i16>,
    /// What assembly found.
    pub stats: AudioStats,
}

impl PcmAudio {
    /// Samples of one channel.
    pub fn frames_per_channel(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    /// How long the audio plays.
    pub fn duration(&self) -> Duration {
        if self.sample_rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(self.frames_per_channel() as f64 / f64::from(self.sample_rate))
    }

    /// One channel's samples, de-interleaved.
    pub fn channel(&self, channel: u8) -> Vec<i16> {
        let n = usize::from(self.channels.max(1));
        self.samples.iter().skip(usize::from(channel)).step_by(n).copied().collect()
    }

    /// `true` when there is no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}
