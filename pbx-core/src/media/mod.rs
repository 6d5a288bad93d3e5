//! Call media: formats, decoding and assembly, all pure.
//!
//! A call has one [`MediaFormat`] (encoding, rate, channels). Its packets carry
//! encoded frames ([`Payload`](crate::packet::Payload)); assembling them in sequence
//! order, with silence for what is missing or undecodable, gives the PCM that both the
//! recording and the AI receive.

pub mod assemble;
pub mod audiohook;
pub mod audiosocket;
mod format;
pub mod g711;
pub mod notes;
pub mod session;
pub mod twilio;
pub mod wav;

pub use format::{Encoding, MediaFormat, MediaFormatError, SAMPLE_RATES};
mod audio;

pub use assemble::{AssembleError, Assembler, assemble};
pub use audio::{AudioStats, PcmAudio};
pub use wav::{WavError, wav_bytes, wav_header};
