//! Runnable programs that embed pbx-core; see `examples/`.
