//! Scripted AI. Filled in by the processor work.
