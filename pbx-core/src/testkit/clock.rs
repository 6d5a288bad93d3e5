//! Manual clock. Filled in by the processor work.
